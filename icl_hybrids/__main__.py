"""python -m icl_hybrids task=<task> model=<model> [experiment=smoke] [key=value ...]"""
from __future__ import annotations

from .cli import hydra_entry

if __name__ == "__main__":
    # train.preflight validates everything (and the run directory's state) before Hydra creates anything
    hydra_entry("config", "icl_hybrids.train:run", check="icl_hybrids.train:preflight")
