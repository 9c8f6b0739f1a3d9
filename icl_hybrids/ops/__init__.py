"""Compute kernels (``mamba_ssm.ops`` style): the selective scans used by the Mamba mixer.

``selective_scan_fn`` is the fast path (a fused C++ kernel on CPU, compiled on first use, with the
pure-PyTorch loop scan as fallback); ``selective_scan_ref`` is the plain sequential reference that
the tests and the benchmark compare against.
"""
from .selective_scan import (
    AUTO_SCAN,
    SCAN_IMPLS,
    cpu_kernel_available,
    scan_blc,
    selective_scan_chunked,
    selective_scan_fn,
    selective_scan_loop,
    selective_scan_ref,
)

__all__ = ["selective_scan_fn", "selective_scan_ref", "selective_scan_loop", "selective_scan_chunked",
           "scan_blc", "cpu_kernel_available", "SCAN_IMPLS", "AUTO_SCAN"]
