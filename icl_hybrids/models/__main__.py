"""python -m icl_hybrids.models: the named architectures, their composition and parameter
counts at paper size (d_model 256, 12 layers, 8 heads, d=20) and at the MQAR size (128, 2 layers), under the
cleaned profile (the default) and under model/profile=paper_code (as the paper's code builds them)."""
from __future__ import annotations

import sys

from ..config import compose_config, group_options
from ..paper import model_label, model_order
from .model import build_model


def rows():
    from hydra.utils import instantiate as build_task  # = lit.build_task, without importing lightning

    for name in model_order(group_options("model")):
        out = {}
        for profile in ("cleaned", "paper_code"):
            for task in ("linear", "mqar"):
                cfg = compose_config([f"model={name}", f"task={task}", f"model/profile={profile}"])
                t = build_task(cfg.task)  # the task says its output width (MQAR: one-hot values)
                m = build_model(cfg.model, n_dims=t.n_dims, y_dim=t.y_dim, max_points=cfg.task.n_points)
                out[profile, task] = m.n_params()
        cfg = compose_config([f"model={name}"])
        c = cfg.model
        short = lambda node: (node.get("_target_", "") or "none").rsplit(".", 1)[-1] if node else "none"  # noqa: E731
        mixer = "/".join(short(x) for x in c.mixer.cycle) if "cycle" in c.mixer else short(c.mixer)
        yield (model_label(name), name, short(c.positional), mixer, short(c.ffn), short(c.norm),
               out["cleaned", "linear"], out["paper_code", "linear"], out["cleaned", "mqar"], out["paper_code", "mqar"])


def main(argv) -> int:
    from ..cli import parse_kv
    from ..config import ConfigError

    try:
        if parse_kv(list(argv), {}, prog="python -m icl_hybrids.models", doc=__doc__) is None:
            return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    header = ("id", "model", "positional", "mixer", "ffn", "norm", "params (paper size)", "paper_code (paper size)",
              "params (MQAR size)", "paper_code (MQAR size)")
    table = [header] + [tuple(str(v) if not isinstance(v, int) else f"{v:,}" for v in r) for r in rows()]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in table[1:]:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
