"""`make demo`: train a small GPT-2 on linear regression (d=3) on the CPU, then print its ICL score and
where the plot is. Equivalent to: python -m icl_hybrids task=linear model=gpt2 experiment=demo"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .config import ConfigError


def main(argv: list[str]) -> int:
    import torch

    from .config import compose_config
    from .plots import error_curves
    from .train import run

    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nAny run override may follow, e.g. seed=3 (python -m icl_hybrids --help lists them).")
        return 0
    torch.set_num_threads(1)
    overrides = ["task=linear", "model=gpt2", "experiment=demo", *argv]
    try:
        cfg = compose_config(overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        res = run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(cfg.run_dir)
    title = f"GPT-2 ({cfg.model.n_layer} layers, d_model {cfg.model.d_model})\nlinear regression, d={cfg.task.n_dims}"
    png = error_curves(res, run_dir / "error_vs_context.png", title=title)
    print(f"\ndemo finished in {time.time() - t0:.0f} s ({res.get('steps_per_sec') or 0:.1f} steps/s)")
    print(f"ICL regression score vs least squares: {res['icl_score']:.3f} "
          f"(95% CI {res['icl_score_ci95'][0]:.3f}..{res['icl_score_ci95'][1]:.3f})")
    hist = res.get("score_history") or []
    if hist:  # the plateau and the in-context-learning transition, at a glance
        print("score by step: " + " ".join(f"{h['step']}:{h['icl_score']:.2f}" for h in hist))
    print(f"results: {run_dir / 'results.json'}\nplot:    {png}\ndata:    {png.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
