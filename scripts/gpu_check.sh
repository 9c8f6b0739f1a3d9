#!/usr/bin/env bash
# One prepared GPU check (issue 15; docs/performance.md, "GPU check"): on a bare CUDA machine with its own
# CUDA torch and no network, install the pure-Python wheels carried in a folder (make gpu-wheels), then,
# within one time budget (default 8 minutes, install included):
#   1. pytest -m cuda                    the CUDA tests (flash-attn / mamba-ssm tests skip when absent)
#   2. bench, eager                      gpt2 / llama / mamba / llama_mamba_pos_ffn at paper size: fp32 (vs
#                                        transformers), bf16 autocast, roofline (MFU against the matmul peak)
#   3. train                             2000 paper-size GPT-2 steps (python -m icl_hybrids, bf16-mixed): steps/s
#   4. evaluate                          that checkpoint at a large prompt count (default 1,048,576)
#   5. train_compiled                    the same 2000 steps with trainer.compile=true
#   6. bench, compiled                   torch.compile'd gpt2 / llama / mamba train steps, then GPT-2's
#                                        with CUDA graphs (compile_mode=reduce-overhead)
# Each step runs under `timeout` with what is left of the budget; a step that fails or runs out is recorded
# and the next one still runs. The bench rewrites its JSON after every entry, so a killed step keeps what it
# measured. Output: gpu_check.json (everything, the device name included), gpu_check.txt (a short summary)
# and gpu_check.log (every step's output) in --out (default: $OUT if set, else gpu_check_out/).
#
#   scripts/gpu_check.sh [--wheels DIR] [--out DIR] [--budget SECONDS] [--eval-prompts N] [--python PY]
#   scripts/gpu_check.sh --dry-run [--out DIR]   # the same steps on CPU at tiny sizes, with the current python;
#                                                # installs nothing, skips what needs CUDA (tests/test_gpu_check.py)
set -uo pipefail

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
DRY=0
WHEELS=gpu_wheels
OUTDIR=""
BUDGET=480
EVAL_PROMPTS=1048576
PY="${PYTHON:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) OUTDIR="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --eval-prompts) EVAL_PROMPTS="$2"; shift ;;
    --python) PY="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see scripts/gpu_check.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
OUTDIR="${OUTDIR:-${OUT:-gpu_check_out}}"
mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
# Step outputs (bench JSONs, run directories) stay out of --out: the device tool brings back at most 8 files.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
if [ "$DRY" = 1 ]; then
  MODE=dry-run
  PY="${PY:-$(command -v python || command -v python3)}"  # the current environment's python; nothing installed
else
  MODE=real
  PY="${PY:-python3}"  # the machine's python, the one with its CUDA torch
fi
# never reach for a network: transformers' hub, W&B
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
# the repo is importable even if the editable install below fails
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

record() {  # record NAME RC WALL_S STATUS NOTE: one line of $WORK/steps.jsonl (read by the report)
  "$PY" -c 'import json, sys; n, rc, w, s, note = sys.argv[1:6]
print(json.dumps({"name": n, "rc": None if rc == "" else int(rc), "wall_s": float(w), "status": s, "note": note}))' \
    "$1" "$2" "$3" "$4" "$5" >> "$WORK/steps.jsonl"
}

skip() {  # skip NAME WHY
  echo "=== [$1] skipped: $2" | tee -a "$LOG"
  record "$1" "" 0 skipped "$2"
}

step() {  # step NAME CAP_S CMD...: CMD under a timeout of min(CAP_S, what is left of the budget)
  local name=$1 cap=$2
  shift 2
  local left t rc status t0 t1
  left=$(( BUDGET - ($(date +%s) - START) ))
  t=$(( cap < left ? cap : left ))
  if [ "$t" -lt 10 ]; then
    skip "$name" "no time left in the ${BUDGET} s budget"
    return 1
  fi
  echo "=== [$name] timeout ${t}s: $*" | tee -a "$LOG"
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$t" "$@" >> "$LOG" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  status=ok
  [ "$rc" -ne 0 ] && status=failed
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && status=timeout
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  echo "=== [$name] $status (rc $rc, ${wall}s)" | tee -a "$LOG"
  record "$name" "$rc" "$wall" "$status" "$*"
  return "$rc"
}

# ---- environment ----------------------------------------------------------------------------------------
{
  echo "mode: $MODE   python: $PY   root: $ROOT   work: $WORK"
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"
  nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc: not found"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} > "$WORK/env.txt" 2>&1
cat "$WORK/env.txt" | tee -a "$LOG"

# ---- 0. install (real mode only) ------------------------------------------------------------------------
install_wheels() {
  # Install a carried wheel when its distribution is missing, or installed outside pyproject.toml's range;
  # keep what the machine already has otherwise (its torch, numpy, ... are never touched: --no-deps).
  "$PY" - "$WHEELS" <<'PYEOF'
import importlib.metadata as md
import pathlib
import re
import subprocess
import sys

folder = pathlib.Path(sys.argv[1])
wheels = sorted(folder.glob("*.whl"))
if not wheels:
    sys.exit(f"no wheels in {folder}/: run `make gpu-wheels` on a machine with network and copy the folder")
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
ranges = {}
borrowed = None
try:  # the direct dependencies' ranges (tomllib: Python >= 3.11; packaging: the machine's, else the carried wheel's)
    import tomllib

    try:
        import packaging.requirements  # noqa: F401
    except ImportError:  # a wheel is a zip archive Python imports from
        borrowed = str(next(folder.glob("packaging-*.whl")))
        sys.path.append(borrowed)
    from packaging.requirements import Requirement
    for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
        q = Requirement(r)
        ranges[canon(q.name)] = q.specifier
except Exception as e:  # noqa: BLE001
    print(f"(no range check: {e})")
finally:  # off the path again: its metadata must not count as an installed packaging below
    if borrowed:
        sys.path.remove(borrowed)
todo = {}
for w in wheels:
    name, ver = w.name.split("-")[:2]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    spec = ranges.get(canon(name))
    need = have is None or (spec is not None and not spec.contains(have, prereleases=True))
    print(f"{canon(name)} {ver}: installed {have}{f' (wants {spec})' if spec else ''} -> {'install' if need else 'keep'}")
    if need:
        todo[canon(name)] = f"{canon(name)}=={ver}"  # by name: pip picks the file that fits this python
if todo:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--find-links", str(folder), *todo.values()])
PYEOF
}

if [ "$DRY" = 1 ]; then
  skip install "dry-run: the current python ($PY), nothing installed"
else
  export -f install_wheels
  export PY WHEELS
  step install_wheels 120 bash -c install_wheels
  # the project itself, editable; its build backend (setuptools >= 77) comes from the wheel folder too
  step install_project 120 "$PY" -m pip install -q --no-deps --no-index --find-links "$WHEELS" -e .
fi
step imports 60 "$PY" -c "import hydra, omegaconf, lightning, torchmetrics, icl_hybrids.train, icl_hybrids.bench; print('imports ok')"

# ---- 1. CUDA tests ---------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then  # the plumbing only: the CUDA module, whose tests all skip here
  step pytest_cuda 120 "$PY" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$WORK/pytest.xml" tests/test_models_cuda.py
else
  step pytest_cuda 120 "$PY" -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$WORK/pytest.xml" tests
fi

# ---- 2. bench, eager: fp32 vs HF, bf16 vs fp32, roofline ----------------------------------------------
EAGER="train_step.gpt2,train_step.llama,train_step.mamba,train_step.llama_mamba_pos_ffn,train_step_bf16.gpt2,train_step_bf16.llama,train_step_bf16.mamba,train_step_bf16.llama_mamba_pos_ffn"
if [ "$DRY" = 1 ]; then
  step bench_eager 180 "$PY" -m icl_hybrids.bench tiny=true reps=1 only="$EAGER" json="$WORK/bench_eager.json"
else
  step bench_eager 180 "$PY" -m icl_hybrids.bench reps=20 only="$EAGER" json="$WORK/bench_eager.json"
fi

# ---- 3./5. training runs ---------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  TRAIN=(task=linear model=gpt2 experiment=smoke trainer=cpu trainer.max_steps=20 trainer.progress_bar=false)
else  # paper size (linear: d=20, 41 points; GPT-2 12 x 256, 8 heads; batch 64), no curriculum: every step full size
  TRAIN=(task=linear model=gpt2 trainer=gpu trainer.devices=1 curriculum=none trainer.max_steps=2000
         trainer.progress_bar=false trainer.log_every_n_steps=100 eval.every_n_steps=2000)
fi
step train 150 "$PY" -m icl_hybrids "${TRAIN[@]}" out_root="$WORK/train" name=gpt2

# ---- 4. evaluation at a large prompt count --------------------------------------------------------------
CKPT="$(find "$WORK/train" -name last.ckpt 2>/dev/null | head -n 1)"
if [ "$DRY" = 1 ]; then
  EVAL=(device=cpu baseline_device=cpu eval.n_prompts=512 eval.batch_size=256)
  EVAL_N=512
else
  EVAL=(device=cuda baseline_device=cuda eval.n_prompts="$EVAL_PROMPTS" eval.batch_size=4096)
  EVAL_N=$EVAL_PROMPTS
fi
echo "{\"n_prompts\": $EVAL_N}" > "$WORK/eval_args.json"
if [ -n "$CKPT" ]; then
  step evaluate 120 "$PY" -m icl_hybrids.evaluate ckpt="$CKPT" "${EVAL[@]}" plot=false baseline_cache=null out="$WORK/eval"
else
  skip evaluate "no checkpoint: the train step did not finish"
fi

if [ "$DRY" = 1 ]; then
  skip train_compiled "dry-run: inductor's CPU compile takes about a minute per model"
  skip bench_compiled "dry-run: inductor's CPU compile takes about a minute per model"
  skip bench_cudagraphs "dry-run: CUDA graphs need CUDA"
else
  step train_compiled 150 "$PY" -m icl_hybrids "${TRAIN[@]}" trainer.compile=true out_root="$WORK/train_compiled" name=gpt2
  step bench_compiled 240 "$PY" -m icl_hybrids.bench reps=20 compile=true \
    only=train_step.gpt2,train_step.llama,train_step.mamba json="$WORK/bench_compiled.json"
  # last, with whatever time is left: GPT-2's step with CUDA graphs (the launch overhead of ~1000 small kernels
  # per step is what stands between an eager step and the 500 steps/s goal)
  step bench_cudagraphs 120 "$PY" -m icl_hybrids.bench reps=20 compile=true compile_mode=reduce-overhead \
    only=train_step.gpt2 json="$WORK/bench_cudagraphs.json"
fi

# ---- report -----------------------------------------------------------------------------------------------
WALL=$(( $(date +%s) - START ))
"$PY" "$ROOT/icl_hybrids/bench/gpu_check.py" work="$WORK" out="$OUTDIR" mode="$MODE" budget_s="$BUDGET" \
  wall_s="$WALL" root="$ROOT" | tee -a "$LOG"
rc=${PIPESTATUS[0]}
echo "gpu_check: $OUTDIR/gpu_check.json, $OUTDIR/gpu_check.txt, $OUTDIR/gpu_check.log (work files: $WORK)"
exit "$rc"
