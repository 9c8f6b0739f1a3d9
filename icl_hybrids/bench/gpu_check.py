"""The report of ``scripts/gpu_check.sh``: one JSON (``gpu_check.json``) and a short text summary
(``gpu_check.txt``) from what the script's steps left in its work folder (docs/performance.md, "GPU check").

    python icl_hybrids/bench/gpu_check.py work=DIR out=DIR mode=real|dry-run budget_s=480 wall_s=...

Run as a file by the script, not as ``-m icl_hybrids.bench.gpu_check``: it must also report when the install
step failed (no hydra, no lightning), so it uses the standard library, plus torch and icl_hybrids.paper
where they import. Inputs in ``work``: ``steps.jsonl`` (one line per step: name, rc, wall_s, status, cmd),
``pytest.xml`` (junit), ``bench_eager.json`` and ``bench_compiled.json`` (``python -m icl_hybrids.bench``),
``bench_cudagraphs.json``, ``train*/**/results.json``, ``eval/results_eval.json``, ``eval_args.json``, ``env.txt``.

Goals (issue 15, GPT-2 at paper size: 12 layers, d_model 256, 8 heads, batch 64, 82 tokens; H100 / H200):
``>= 250`` training steps/s, then ``>= 500``. The projection: GPU-hours of the paper's 72-run sweep
(12 models x 6 tasks, conf/experiment/paper_sweep.yaml) at the measured steps/s, with 500k steps per run
except sparse parity's 200k (icl_hybrids/paper.py ``STEPS``).
"""
from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

GOALS = (250.0, 500.0)
#: the paper sweep's grid (conf/experiment/paper_sweep.yaml); read from the YAML when it parses
SWEEP_TASKS = ("linear", "sparse_linear", "mlp", "decision_tree", "sparse_parity", "mqar")
SWEEP_MODELS = ("gpt2", "gpt2_rms", "gpt2_rope", "gpt2_swiglu", "gpt2_rms_swiglu", "gpt2_rms_rope", "gpt2_rope_swiglu",
                "llama", "llama_mamba_pos", "llama_mamba_ffn", "llama_mamba_pos_ffn", "mamba")
BENCH_MODELS = ("gpt2", "llama", "mamba", "llama_mamba_pos_ffn")


def family(model: str) -> str:
    """The benchmarked model whose step time stands for ``model`` in the projection: the GPT-2 variants
    (norm, positions, FFN swapped) -> gpt2, the Llama / Mamba hybrids -> llama_mamba_pos_ffn (the one with the
    most Mamba stages), mamba -> mamba, llama -> llama."""
    if model.startswith("llama_mamba"):
        return "llama_mamba_pos_ffn"
    if model in ("llama", "mamba"):
        return model
    return "gpt2"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(work: Path) -> dict:
    out = {}
    try:
        lines = (work / "steps.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out[rec.pop("name")] = rec
    return out


def _junit(path: Path) -> dict | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    tot["passed"] = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    skipped = sorted({(c.find("skipped").get("message") or "")[:120] for s in suites for c in s.iter("testcase")
                      if c.find("skipped") is not None})
    return {**tot, "failed": failed, "skip_reasons": skipped}


def _bench_summary(eager: dict | None, compiled: dict | None, cudagraphs: dict | None = None) -> dict:
    """Per model: steps/s of our fp32, bf16 and compiled steps, the HF comparison, MFU; the matmul peak."""
    out: dict = {"models": {}}
    for name, res in (("eager", eager), ("compiled", compiled), ("cudagraphs", cudagraphs)):
        if res:
            meta = res.get("meta", {})
            out[f"{name}_meta"] = {k: meta.get(k) for k in ("device", "device_name", "mode", "command", "matmul_peak",
                                                             "errors", "wall_s", "torch")}
    for m in BENCH_MODELS:
        rec: dict = {}
        e = (eager or {}).get(f"train_step.{m}") or {}
        if e:
            rec.update(fp32_steps_per_s=e.get("steps_per_s"), fp32_min_s=(e.get("ours") or {}).get("min_s"),
                       fp32_mfu=e.get("mfu"), fp32_gflops=e.get("gflops"), hf_steps_per_s=e.get("hf_steps_per_s"),
                       speedup_vs_hf=e.get("speedup_vs_hf"), peak_mem_mb=(e.get("ours") or {}).get("peak_mem_mb"),
                       error=e.get("error"))
        b = (eager or {}).get(f"train_step_bf16.{m}") or {}
        if b:
            rec.update(bf16_steps_per_s=b.get("steps_per_s_bf16"), bf16_speedup=b.get("speedup"),
                       bf16_mfu=b.get("mfu_bf16"), bf16_loss_finite=b.get("loss_finite"),
                       bf16_error=b.get("error"))
        c = (compiled or {}).get(f"train_step.{m}") or {}
        if c:
            rec.update(compiled_steps_per_s=c.get("compiled_steps_per_s"), compile_s=c.get("compile_s"),
                       compiled_mfu=c.get("compiled_mfu"), compile_error=c.get("compile_error") or c.get("error"))
        g = (cudagraphs or {}).get(f"train_step.{m}") or {}
        if g:
            rec.update(cudagraphs_steps_per_s=g.get("compiled_steps_per_s"), cudagraphs_compile_s=g.get("compile_s"),
                       cudagraphs_error=g.get("compile_error") or g.get("error"))
        if rec:
            out["models"][m] = {k: v for k, v in rec.items() if v is not None}
    return out


def _train_summary(work: Path, prefix: str) -> dict | None:
    found = sorted(work.glob(f"{prefix}/**/results.json"))
    if not found:
        return None
    r = _read_json(found[0]) or {}
    keys = ("status", "step", "steps_per_sec", "tokens_per_sec", "wall_s", "gpu_hours", "icl_score", "peak_memory_mb",
            "device", "fast_paths", "model", "task", "n_params")
    return {"results_json": str(found[0]), **{k: r.get(k) for k in keys if k in r}}


def _eval_summary(work: Path) -> dict | None:
    r = _read_json(work / "eval" / "results_eval.json")
    if not r:
        return None
    t = r.get("eval_time_s") or {}
    n = (_read_json(work / "eval_args.json") or {}).get("n_prompts")
    out = {"n_prompts": n, "icl_score": r.get("icl_score"), "device": r.get("device"), "eval_time_s": t}
    if n and t.get("total"):
        out["prompts_per_s"] = round(n / t["total"], 1)
    return out


def sweep_grid(root: Path) -> tuple[list[str], list[str]]:
    """(tasks, models) of conf/experiment/paper_sweep.yaml's sweeper params (the constants if it does not parse)."""
    try:
        text = (root / "conf" / "experiment" / "paper_sweep.yaml").read_text()
        params = {}
        for line in text.splitlines():
            s = line.strip()
            for key in ("task:", "model:"):
                if s.startswith(key) and "," in s:
                    params[key[:-1]] = [v.strip() for v in s[len(key):].split(",")]
        return params.get("task", list(SWEEP_TASKS)), params.get("model", list(SWEEP_MODELS))
    except OSError:
        return list(SWEEP_TASKS), list(SWEEP_MODELS)


def projection(rates: dict[str, float], root: Path, basis: str) -> dict:
    """GPU-hours of the 72-run paper sweep at ``rates`` (steps/s per benchmarked model, see ``family``).
    Every task is taken at the rate measured on the linear task at paper size: MQAR's smaller model
    (d_model 128, 2 layers) runs faster, so its share is an upper bound."""
    try:
        sys.path.insert(0, str(root))
        from icl_hybrids.paper import DEFAULT_STEPS, STEPS
    except Exception:  # noqa: BLE001 - the constants as paper.py states them
        DEFAULT_STEPS, STEPS = 500_000, {"sparse_parity": 200_000}
    tasks, models = sweep_grid(root)
    steps_per_model = sum(STEPS.get(t, DEFAULT_STEPS) for t in tasks)
    per_model, missing = {}, []
    for m in models:
        r = rates.get(family(m))
        if r:
            per_model[m] = round(steps_per_model / r / 3600, 2)
        else:
            missing.append(m)
    total_steps = steps_per_model * len(models)
    out = {"runs": len(tasks) * len(models), "tasks": tasks, "steps_per_run": {t: STEPS.get(t, DEFAULT_STEPS) for t in tasks},
           "total_steps": total_steps, "rates_steps_per_s": {k: round(v, 1) for k, v in rates.items()}, "basis": basis,
           "gpu_hours_by_model": per_model, "models_without_rate": missing,
           "gpu_hours_at_goals": {f"{g:g}_steps_per_s": round(total_steps / g / 3600, 1) for g in GOALS},
           "note": "one GPU per run; every task at the paper-size linear-task rate (MQAR's smaller model is faster)"}
    if per_model and not missing:
        out["gpu_hours"] = round(sum(per_model.values()), 1)
    return out


def _rates(bench: dict, train: dict | None) -> tuple[dict, str]:
    """Steps/s per benchmarked model for the projection. With a training run: its steps/s (the Lightning loop,
    GPT-2, bf16-mixed, data drawn on the device) for gpt2, the others scaled by their bf16 bench step times
    relative to GPT-2's. Without one: the bench's bare bf16 steps (an optimistic bound: no loop overhead)."""
    models = bench.get("models", {})
    bare = {m: v.get("bf16_steps_per_s") or v.get("fp32_steps_per_s") for m, v in models.items()}
    bare = {m: r for m, r in bare.items() if r}
    if train and train.get("steps_per_sec") and bare.get("gpt2"):
        base = float(train["steps_per_sec"])
        return ({m: base * r / bare["gpt2"] for m, r in bare.items()},
                "training run's steps/s (GPT-2, Lightning loop), other models scaled by their bf16 bench step times")
    if train and train.get("steps_per_sec"):
        return {"gpt2": float(train["steps_per_sec"])}, "training run's steps/s (GPT-2 only)"
    return bare, "bare bench steps (bf16 where measured; no training-loop overhead: optimistic)"


def _env(work: Path) -> dict:
    out: dict = {}
    try:
        import torch

        out.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            out["device_name"] = torch.cuda.get_device_name(0)
            p = torch.cuda.get_device_properties(0)
            out["device_memory_gib"] = round(p.total_memory / 2**30, 1)
            out["sm_count"] = p.multi_processor_count
    except Exception as e:  # noqa: BLE001
        out["torch_error"] = str(e)
    if "device_name" not in out:
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    out["device_name"] = "CPU: " + line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    try:
        out["env_txt"] = (work / "env.txt").read_text()[-3000:]
    except OSError:
        pass
    out["python"] = sys.version.split()[0]
    return out


def report(work: Path, out: Path, mode: str, budget_s: float, wall_s: float, root: Path) -> dict:
    steps = _steps(work)
    bench = _bench_summary(_read_json(work / "bench_eager.json"), _read_json(work / "bench_compiled.json"),
                           _read_json(work / "bench_cudagraphs.json"))
    train = _train_summary(work, "train")
    train_c = _train_summary(work, "train_compiled")
    best = max((t.get("steps_per_sec") or 0 for t in (train, train_c) if t), default=0) or None
    g = bench["models"].get("gpt2", {})
    bare = max((g.get(k) or 0 for k in ("fp32_steps_per_s", "bf16_steps_per_s", "compiled_steps_per_s",
                                         "cudagraphs_steps_per_s")), default=0)
    goals = {}
    for goal in GOALS:
        goals[f"gpt2_paper_size_b64_training_steps_per_s>={goal:g}"] = {
            "value": best, "pass": bool(best and best >= goal),
            "what": "the 2000-step training run (python -m icl_hybrids, Lightning loop), the faster of eager and "
                    "trainer.compile=true"}
        goals[f"gpt2_paper_size_b64_bare_step_steps_per_s>={goal:g}"] = {
            "value": bare or None, "pass": bool(bare and bare >= goal),
            "what": "the bench's bare train step (fixed batch, no loop), the fastest of fp32 / bf16 / compiled / "
                    "CUDA graphs"}
    if mode != "real":
        for v in goals.values():
            v["note"] = "dry-run: tiny sizes on CPU, the goals do not apply"
    rates, basis = _rates(bench, train_c if (train_c and (train_c.get("steps_per_sec") or 0) > ((train or {}).get(
        "steps_per_sec") or 0)) else train)
    env = _env(work)
    res = {"mode": mode, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device_name": env.get("device_name"),
           "env": env, "budget_s": budget_s, "wall_s": round(wall_s, 1), "steps": steps,
           "tests": _junit(work / "pytest.xml"), "bench": bench, "train": train, "train_compiled": train_c,
           "evaluate": _eval_summary(work), "goals": goals, "projection": projection(rates, root, basis) if rates else None}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "gpu_check.txt").write_text(summary_text(res))
    return res


def _g(x):
    """A number for the text summary: 4 significant digits."""
    return f"{x:.4g}" if isinstance(x, float) else x


def summary_text(res: dict) -> str:
    L = [f"gpu_check ({res['mode']}) on {res.get('device_name')}  torch {res['env'].get('torch')} "
         f"cuda {res['env'].get('cuda')}  {res['date']}  wall {res['wall_s']} s (budget {res['budget_s']} s)"]
    L.append("steps: " + ", ".join(f"{k} {v.get('status')} ({v.get('wall_s')} s)" for k, v in res["steps"].items()))
    t = res.get("tests")
    if t:
        L.append(f"pytest -m cuda: {t['passed']} passed, {t['failures'] + t['errors']} failed, {t['skipped']} skipped"
                 + (f"; failed: {', '.join(t['failed'][:5])}" if t["failed"] else ""))
    peak = (res["bench"].get("eager_meta") or {}).get("matmul_peak") or {}
    if peak:
        L.append(f"matmul peak ({peak.get('n')}^3): fp32 {peak.get('fp32_gflops')} GFLOP/s, "
                 f"bf16 {peak.get('bf16_gflops')} GFLOP/s")
    for m, v in res["bench"]["models"].items():
        parts = [f"fp32 {v.get('fp32_steps_per_s')} steps/s (MFU {v.get('fp32_mfu')}, vs HF {v.get('speedup_vs_hf')})"]
        if "bf16_steps_per_s" in v:
            parts.append(f"bf16 {v['bf16_steps_per_s']} ({v.get('bf16_speedup')}x, MFU {v.get('bf16_mfu')})")
        if "cudagraphs_steps_per_s" in v or "cudagraphs_error" in v:
            parts.append(f"CUDA graphs {v.get('cudagraphs_steps_per_s')}"
                         + (f" (error {str(v['cudagraphs_error'])[:80]})" if v.get("cudagraphs_error") else ""))
        if "compiled_steps_per_s" in v or "compile_error" in v:
            parts.append(f"compiled {v.get('compiled_steps_per_s')} (compile {v.get('compile_s')} s"
                         + (f", error {str(v['compile_error'])[:80]}" if v.get("compile_error") else "") + ")")
        L.append(f"bench {m}: " + "; ".join(parts))
    for name in ("train", "train_compiled"):
        tr = res.get(name)
        if tr:
            L.append(f"{name}: {tr.get('step')} steps, {_g(tr.get('steps_per_sec'))} steps/s, wall {_g(tr.get('wall_s'))} s, "
                     f"icl_score {_g(tr.get('icl_score'))}, peak {_g(tr.get('peak_memory_mb'))} MB, "
                     f"paths {tr.get('fast_paths')}")
    ev = res.get("evaluate")
    if ev:
        L.append(f"evaluate: {ev.get('n_prompts')} prompts in {_g((ev.get('eval_time_s') or {}).get('total'))} s "
                 f"({ev.get('prompts_per_s')} prompts/s), icl_score {_g(ev.get('icl_score'))}")
    for k, v in res["goals"].items():
        note = f" ({v['note']})" if v.get("note") else ""
        L.append(f"goal {k}: {_g(v['value'])} -> {'PASS' if v['pass'] else 'miss'}{note}")
    p = res.get("projection")
    if p:
        L.append(f"projection: {p['runs']} runs, {p['total_steps']:,} steps: {p.get('gpu_hours')} GPU-hours "
                 f"({p['basis']}); at 250 / 500 steps/s: {p['gpu_hours_at_goals']}")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    kw = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    root = Path(kw.get("root", Path(__file__).resolve().parents[2]))
    res = report(Path(kw["work"]), Path(kw["out"]), kw.get("mode", "real"), float(kw.get("budget_s", 0)),
                 float(kw.get("wall_s", 0)), root)
    sys.stdout.write(summary_text(res))
    return 0


if __name__ == "__main__":
    # run as a file: its folder (bench/, with evaluate.py, mamba.py ...) must not shadow installed packages
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    sys.exit(main())
