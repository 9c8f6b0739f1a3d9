"""python -m icl_hybrids task=<task> model=<model> [experiment=smoke] [key=value ...]"""
from __future__ import annotations


from .cli import hydra_entry

if __name__ == "__main__":
    hydra_entry("config", "icl_hybrids.train:run")
