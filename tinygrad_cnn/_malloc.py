"""Keeps freed memory in the process instead of handing it back to the OS after every step.

A training step allocates and frees the same large temporaries (activations, im2col matrices,
gradients) every time. glibc returns big blocks to the kernel at once (they are mmap'ed above a
128 KiB threshold, and the heap top is trimmed above 128 KiB free), so the next step maps them
again and the kernel zeroes every page on first touch: measured here, about a third of a training
step went to those page faults. Raising both thresholds lets glibc reuse the memory.

Done once at import on Linux/glibc; set ``TINYGRAD_CNN_MALLOPT=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30      # glibc clamps it to its own maximum (32 MiB on 64-bit)
_TRIM_THRESHOLD = 1 << 30      # keep up to 1 GiB of free heap before trimming


def keep_freed_memory() -> bool:
    """Raises glibc's mmap and trim thresholds; returns True when it did."""
    if os.environ.get("TINYGRAD_CNN_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
