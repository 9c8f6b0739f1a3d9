"""CPU settings of a training process (measurements: docs/performance.md, "bf16 on CPU" and "Allocator").

* :func:`tune_cpu_allocator`: glibc ``malloc`` keeps freed activation buffers in the process instead of
  handing every one over 128 KiB back to the kernel (``mmap``/``munmap``), which made each fresh
  ``[B*T, 4d]`` activation page-fault on first touch: at paper size the bias copy of ``addmm``, GELU,
  LayerNorm and the residual adds spent ~1 s of a 5 s fp32 step in page faults. Idempotent, process-wide,
  a no-op off glibc.
* :class:`CPUBf16MixedPrecision`: Lightning's ``MixedPrecision("bf16-mixed", "cpu")`` (``torch.autocast``,
  fp32 master weights, the loss in fp32) plus one kernel choice: attention through SDPA's math backend.
  On CPU the bf16 flash-attention kernel's backward is ~3.7x slower than its fp32 one (119 vs 32 ms fwd+bwd
  at B=64, H=8, T=82, hd=32), which ate most of the autocast gain; the math backend runs the two bf16
  matmuls (45 ms). Same function, different rounding.
* :func:`trainer_precision`: what ``train.fit`` hands to ``lightning.Trainer`` for ``trainer.precision``.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2): allocations below it come from the heap
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap instead of returning it after every step
TOP_PAD = 64 << 20
BF16_CPU = ("bf16-mixed", "bf16")


@functools.cache
def tune_cpu_allocator() -> str | None:
    """Set glibc's malloc thresholds (once per process). Returns a description, or None where not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(k, v) == 1 for k, v in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                       (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    except (OSError, AttributeError):
        return None
    if not ok:
        return None
    return (f"glibc mallopt: M_MMAP_THRESHOLD={MMAP_THRESHOLD >> 20} MiB, M_TRIM_THRESHOLD={TRIM_THRESHOLD >> 20} MiB, "
            f"M_TOP_PAD={TOP_PAD >> 20} MiB")


def on_cpu(accelerator: str) -> bool:
    return str(accelerator) == "cpu" or (str(accelerator) == "auto" and not torch.cuda.is_available())


def sdpa_math():
    """Context: scaled_dot_product_attention through the math backend (bf16 matmuls) only."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def bf16_cpu_context() -> contextlib.ExitStack:
    """The forward context of :class:`CPUBf16MixedPrecision` without Lightning (the benchmark times this)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False))  # = Lightning's
    stack.enter_context(sdpa_math())
    return stack


class CPUBf16MixedPrecision(MixedPrecision):
    """``MixedPrecision("bf16-mixed", "cpu")`` whose forward context also selects SDPA's math backend."""

    def __init__(self):
        super().__init__("bf16-mixed", "cpu")

    @contextlib.contextmanager
    def forward_context(self):
        with bf16_cpu_context():
            yield


def trainer_precision(precision: str, accelerator: str) -> tuple[str | None, list]:
    """``(precision, plugins)`` for ``lightning.Trainer``: bf16-mixed on CPU becomes the plugin above
    (precision=None then), anything else passes through unchanged."""
    if str(precision) in BF16_CPU and on_cpu(accelerator):
        return None, [CPUBf16MixedPrecision()]
    return precision, []
