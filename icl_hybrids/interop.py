"""Checkpoints of the reference code bases as our models, so that ``python -m icl_hybrids.evaluate`` scores them.

* **garg**: Garg et al. 2022 (github dtsip/in-context-learning, ``src/models.py`` ``TransformerModel``):
  ``state.pt`` = ``{"model_state_dict", "optimizer_state_dict", "train_step"}`` or ``model_<step>.pt`` (a bare
  state dict); a ``config.yaml`` of theirs beside it gives the task, head count and prompt length.
* **paper_code**: the paper's code (P, github in-context-learning-2024/in-context, ``src/models/transformer.py``
  ``GPT2`` / ``Llama`` / ``Mamba``): ``checkpoint_<step>`` files, bare state dicts of the same layout.

Both build ``_read_in`` Linear(n_dims, n_embd) -> ``_backbone`` (a transformers ``GPT2Model``; P also
``LlamaModel`` / ``MambaModel``) -> ``_read_out`` Linear(n_embd, y_dim), run on Garg's interleaved prompt
[x_1, (y_1, 0, ...), x_2, ...] and read at the x positions. That is our ``ICLModel`` for model=gpt2 / llama /
mamba exactly (read_in; the backbone = positional stage + blocks + final norm, since ``last_hidden_state`` is
taken after ``ln_f`` / ``norm``; read_out), so a checkpoint converts by renaming its tensors (HF's GPT-2
``Conv1D`` stores [in, out]: transposed; Llama's q, k, v: concatenated into our fused qkv). transformers is not
needed. The token-embedding table (``wte`` / ``embed_tokens`` / ``embeddings``) is never read by these models
(inputs_embeds) and is dropped; so are old transformers' causal-mask buffers (``attn.bias``, ``masked_bias``).

Sizes (n_dims, d_model, n_layer, y_dim, position rows, FFN width, Mamba's state / conv / expand / dt rank) come
from the tensors; the head count is not in them: ``model.n_head=`` or Garg's config.yaml. P's hybrid models
(``src/models/hybrid.py``) are not converted (one-line error).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

FORMATS = ("auto", "icl_hybrids", "garg", "paper_code")
#: their three backbones -> our model config of the same architecture
MODEL_OF = {"gpt2": "gpt2", "llama": "llama", "mamba": "mamba"}
#: Garg's task names (their config.yaml training.task) -> ours, and their task_kwargs -> our task keys
GARG_TASKS = {"linear_regression": "linear", "sparse_linear_regression": "sparse_linear",
              "relu_2nn_regression": "mlp", "decision_tree": "decision_tree"}
GARG_TASK_KWARGS = {"sparsity": "sparsity", "hidden_layer_size": "hidden", "depth": "depth"}
#: LlamaConfig's default rms_norm_eps (P passes none); GPT2 and Mamba use 1e-5, as our norms do
LLAMA_RMS_EPS = 1e-6


# ---- reading their files -----------------------------------------------------------------------------
def read(path: str | Path) -> dict | None:
    """``{"state": their model state dict, "step": int, "config": their config.yaml or None}`` for a file in
    their layout; None for anything else (our Lightning checkpoints included)."""
    obj = _load(path)
    if not isinstance(obj, dict):
        return None
    step = None
    if isinstance(obj.get("model_state_dict"), dict):  # Garg's state.pt
        state, step = obj["model_state_dict"], obj.get("train_step")
    elif "hyper_parameters" in obj and "state_dict" in obj:  # ours
        return None
    else:
        state = obj
    if not any(isinstance(k, str) and k.startswith("_read_in.") for k in state):
        return None
    if step is None:  # model_<step>.pt (Garg), checkpoint_<step> (P)
        m = re.search(r"(\d+)(\.pt)?$", Path(path).name)
        step = int(m.group(1)) if m else 0
    return {"state": state, "step": int(step), "config": _their_config(Path(path))}


def detect(path: str | Path) -> str:
    """``icl_hybrids`` or ``garg`` / ``paper_code`` (their layouts are the same for GPT-2: a file named
    ``checkpoint_<k>`` or with a Llama / Mamba backbone is P's), from the file's contents."""
    r = read(path)
    if r is None:
        return "icl_hybrids"
    kind = backbone_kind(r["state"])
    return "paper_code" if kind != "gpt2" or Path(path).name.startswith("checkpoint_") else "garg"


def _load(path):
    """The file's object, or None. mmap: a 100 MB checkpoint is looked at without reading it (zip-format files,
    torch >= 1.6); their files hold tensors, ints and dicts only (weights_only), ours more (Lightning's)."""
    for kw in ({"weights_only": True, "mmap": True}, {"weights_only": False, "mmap": True}, {"weights_only": False}):
        try:
            return torch.load(str(path), map_location="cpu", **kw)
        except Exception:  # noqa: BLE001 - an old-format file, or one that is not a tensor file at all
            continue
    return None


def _their_config(path: Path) -> dict | None:
    """Garg's run directory holds config.yaml (model: n_dims, n_embd, n_head, n_layer, n_positions; training:
    task, task_kwargs, curriculum); P's checkpoints do not come with one."""
    f = path.parent / "config.yaml"
    if not f.is_file():
        return None
    try:
        import yaml

        cfg = yaml.safe_load(f.read_text())
    except Exception:  # noqa: BLE001 - not theirs / unreadable: ignore it, the keys must be given
        return None
    return cfg if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) else None


# ---- their backbone, its sizes, our keys ---------------------------------------------------------------
def backbone_kind(state: dict) -> str:
    keys = set(state)
    if any(k.startswith("_backbone.h.") for k in keys) or "_backbone.wpe.weight" in keys:
        return "gpt2"
    if "_backbone.layers.0.self_attn.q_proj.weight" in keys:
        return "llama"
    if "_backbone.layers.0.mixer.A_log" in keys:
        return "mamba"
    raise ConfigError("ckpt: a reference checkpoint whose _backbone is neither a GPT2Model, a LlamaModel nor a "
                      "MambaModel (P's hybrid models are not converted)")


def _n_layer(state: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def sizes(state: dict, kind: str) -> dict:
    """What the tensors say about the model (everything but the head count)."""
    w_in, w_out = state["_read_in.weight"], state["_read_out.weight"]
    s: dict[str, Any] = {"n_dims": int(w_in.shape[1]), "d_model": int(w_in.shape[0]), "y_dim": int(w_out.shape[0])}
    if kind == "gpt2":
        s["n_layer"] = _n_layer(state, "_backbone.h.")
        s["n_positions"] = int(state["_backbone.wpe.weight"].shape[0]) // 2
    elif kind == "llama":
        s["n_layer"] = _n_layer(state, "_backbone.layers.")
        s["ffn_hidden"] = int(state["_backbone.layers.0.mlp.gate_proj.weight"].shape[0])
    else:
        s["n_layer"] = _n_layer(state, "_backbone.layers.")
        p = "_backbone.layers.0.mixer."
        d_inner, d_state = state[p + "A_log"].shape
        s.update(d_state=int(d_state), d_conv=int(state[p + "conv1d.weight"].shape[-1]),
                 expand=int(d_inner) // s["d_model"], dt_rank=int(state[p + "dt_proj.weight"].shape[1]))
    return s


def model_overrides(kind: str, s: dict, n_head: int | None) -> list[str]:
    """Overrides of conf/config.yaml that build our model of their checkpoint's architecture and sizes."""
    ov = [f"model={MODEL_OF[kind]}", f"model.d_model={s['d_model']}", f"model.n_layer={s['n_layer']}"]
    if kind != "mamba":
        ov.append(f"model.n_head={n_head}")
    if kind == "gpt2":  # their table has 2 * n_positions rows; ours 2 * (profile.n_positions or the task's points)
        ov.append(f"model.profile.n_positions={s['n_positions']}")
    elif kind == "llama":
        ov += [f"model.ffn.hidden={s['ffn_hidden']}", f"model.norm.eps={LLAMA_RMS_EPS}"]
    else:
        ov += [f"model.mixer.d_state={s['d_state']}", f"model.mixer.d_conv={s['d_conv']}",
               f"model.mixer.expand={s['expand']}", f"++model.mixer.dt_rank={s['dt_rank']}"]
    return ov


# ---- their tensors -> ours --------------------------------------------------------------------------------
#: dropped: token tables never read (inputs_embeds), causal-mask / rotary buffers of older transformers
_IGNORED = re.compile(r"^_backbone\.(wte\.weight|embed_tokens\.weight|embeddings\.weight"
                      r"|h\.\d+\.attn\.(bias|masked_bias)|layers\.\d+\.self_attn\.rotary_emb\.inv_freq"
                      r"|rotary_emb\.inv_freq)$")


def convert_state(state: dict, kind: str, n_layer: int) -> dict:
    """Their state dict as our ICLModel's (strict: every tensor of theirs is used or known to be unused)."""
    src = {k: v for k, v in state.items() if not _IGNORED.match(k)}
    out: dict[str, torch.Tensor] = {}

    def take(theirs: str, ours: str, transpose: bool = False) -> None:
        if theirs not in src:
            raise ConfigError(f"ckpt: a {kind} reference checkpoint without {theirs}")
        t = src.pop(theirs)
        out[ours] = t.t().contiguous() if transpose else t

    for io in ("weight", "bias"):
        take(f"_read_in.{io}", f"read_in.{io}")
        take(f"_read_out.{io}", f"read_out.{io}")
    b = "_backbone."
    if kind == "gpt2":
        take(b + "wpe.weight", "positional.wpe.weight")
        for i in range(n_layer):
            h, o = f"{b}h.{i}.", f"blocks.{i}."
            for p in ("weight", "bias"):
                take(h + f"ln_1.{p}", o + f"norm1.{p}")
                take(h + f"ln_2.{p}", o + f"norm2.{p}")
            for theirs, ours in (("attn.c_attn", "mixer.qkv"), ("attn.c_proj", "mixer.out_proj"),
                                 ("mlp.c_fc", "ffn.fc_in"), ("mlp.c_proj", "ffn.out_proj")):
                take(h + theirs + ".weight", o + ours + ".weight", transpose=True)  # Conv1D: [in, out]
                take(h + theirs + ".bias", o + ours + ".bias")
        for p in ("weight", "bias"):
            take(f"{b}ln_f.{p}", f"norm_f.{p}")
    elif kind == "llama":
        for i in range(n_layer):
            h, o = f"{b}layers.{i}.", f"blocks.{i}."
            qkv = [src.pop(h + f"self_attn.{x}_proj.weight", None) for x in "qkv"]
            if any(t is None for t in qkv):
                raise ConfigError(f"ckpt: a llama reference checkpoint without {h}self_attn.q/k/v_proj.weight")
            out[o + "mixer.qkv.weight"] = torch.cat(qkv, dim=0)  # our fused projection: q, k, v rows
            for theirs, ours in (("self_attn.o_proj", "mixer.out_proj"), ("mlp.gate_proj", "ffn.gate_proj"),
                                 ("mlp.up_proj", "ffn.up_proj"), ("mlp.down_proj", "ffn.out_proj"),
                                 ("input_layernorm", "norm1"), ("post_attention_layernorm", "norm2")):
                take(h + theirs + ".weight", o + ours + ".weight")
        take(b + "norm.weight", "norm_f.weight")
    else:
        for i in range(n_layer):
            h, o = f"{b}layers.{i}.", f"blocks.{i}."
            take(h + "norm.weight", o + "norm1.weight")
            for k in [k for k in src if k.startswith(h + "mixer.")]:  # identical names (docs/mamba.md)
                take(k, o + k[len(h):])
        take(b + "norm_f.weight", "norm_f.weight")
    if src:
        raise ConfigError(f"ckpt: {len(src)} tensor(s) of the reference checkpoint have no place in our {kind} "
                          f"model (e.g. {next(iter(src))})")
    return out


# ---- a module the evaluation can score -----------------------------------------------------------------
def garg_task_overrides(their: dict | None) -> tuple[str | None, list[str], int | None]:
    """(our task, task.<key> overrides, n_head) from Garg's config.yaml, when there is one."""
    if not their:
        return None, [], None
    tr, md = their.get("training") or {}, their.get("model") or {}
    task = GARG_TASKS.get(str(tr.get("task")))
    ov = [f"task.{GARG_TASK_KWARGS[k]}={v}" for k, v in (tr.get("task_kwargs") or {}).items() if k in GARG_TASK_KWARGS]
    end = ((tr.get("curriculum") or {}).get("points") or {}).get("end")
    if end:
        ov.append(f"task.n_points={int(end)}")
    return task, ov, (int(md["n_head"]) if md.get("n_head") else None)


def load_module(path: str | Path, fmt: str, task: str | None, overrides: list[str], device: str = "cpu"):
    """An ``ICLModule`` (lit.py) holding the reference checkpoint's weights in our model, with our config for
    ``task`` (or the one Garg's config.yaml names) and ``overrides`` (``task.<key>=``, ``model.n_head=``,
    ``seed=``, ...: the command line's, which win over config.yaml's)."""
    from omegaconf import OmegaConf

    from .config import compose_config, group_options
    from .lit import ICLModule

    r = read(path)
    if r is None:
        raise ConfigError(f"ckpt_format={fmt}: {str(path)!r} is not a {fmt} checkpoint (no _read_in / _backbone / "
                          "_read_out state dict in it)")
    kind = backbone_kind(r["state"])
    s = sizes(r["state"], kind)
    their_task, their_ovs, their_heads = garg_task_overrides(r["config"]) if fmt == "garg" else (None, [], None)
    task = task or their_task
    if task is None:
        raise ConfigError(f"task=null: a {fmt} checkpoint needs task=<task> (allowed: {', '.join(group_options('task'))})")
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    heads = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "model.n_head"), None) or their_heads
    if heads is None and kind != "mamba":
        raise ConfigError(f"model.n_head=null: a {fmt} {kind} checkpoint needs model.n_head=<k> (the head count is "
                          f"not in its weights; d_model={s['d_model']})")
    for key, have in (("task.n_dims", s["n_dims"]),):
        v = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), None)
        if v is not None and int(v) != have:
            raise ConfigError(f"{key}={v}: the checkpoint reads inputs of width {have}")
    ovs = [f"task={task}", f"task.n_dims={s['n_dims']}", *model_overrides(kind, s, heads),
           *[o for o in their_ovs if o.split("=", 1)[0] not in given], f"name={fmt}-{kind}",
           *[o for o in overrides if o.split("=", 1)[0] not in ("model.n_head", "task.n_dims")]]
    try:
        cfg = OmegaConf.to_container(compose_config(ovs), resolve=True)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra / OmegaConf errors on the given keys
        raise ConfigError(f"{' '.join(overrides) or 'task=' + task}: {str(e).strip().splitlines()[0]}") from None
    module = ICLModule(cfg)
    if module.model.y_dim != s["y_dim"]:
        raise ConfigError(f"task={task}: targets of width {module.model.y_dim}; the checkpoint's read-out has width "
                          f"{s['y_dim']}")
    state = convert_state(r["state"], kind, s["n_layer"])
    try:
        module.model.load_state_dict({k: v.to(module.model.read_in.weight.dtype) for k, v in state.items()})
    except RuntimeError as e:
        raise ConfigError(f"ckpt: the weights do not fit our {kind} model ({str(e).strip().splitlines()[-1].strip()})") from None
    module.global_step_loaded = r["step"]
    module.reference_format = fmt
    return module.to(device).eval()
