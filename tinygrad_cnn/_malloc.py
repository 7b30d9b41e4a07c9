"""keep_freed_memory(): an explicit, process-wide speed-up for training loops on Linux/glibc.

A training step allocates and frees the same large temporaries (activations, im2col matrices,
gradients) every time. glibc hands blocks above 128 KiB back to the kernel as soon as they are
freed (they are mmap'ed, and the heap top is trimmed above 128 KiB free), so the next step maps
them again and the kernel zeroes every page on first touch. Raising both thresholds to 1 GiB lets
glibc reuse the memory instead.

The cost: up to 1 GiB of freed memory stays resident in the process, the user's own freed arrays
included (a freed 100 MiB array stays in RSS until the heap is trimmed). So importing the package
does not do this. ``fit`` does it for the length of the run only (:func:`kept_while`: glibc's defaults
and the memory come back when it returns); the CLI's ``train`` and a training script that loops over
``value_and_grad`` itself may call ``keep_freed_memory()`` (docs/performance.md has the figures).
``keep_freed_memory(False)`` puts glibc's defaults back and returns the kept memory.
``TINYGRAD_CNN_MALLOPT=0`` makes ``fit`` and ``train`` leave malloc alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from typing import Iterator

__all__ = ["keep_freed_memory", "kept_while"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30            # glibc 2.36 accepts 1 GiB for both thresholds
_GLIBC_DEFAULT = 128 << 10  # both thresholds' defaults (the mmap one then grows by itself; set, it stays)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_lock = threading.Lock()
_explicit = False   # keep_freed_memory() was called: kept_while leaves the setting alone
_holders = 0        # kept_while blocks running (in any thread)


def keep_freed_memory(enable: bool = True) -> bool:
    """Keeps up to 1 GiB of freed memory mapped in the process (``enable=False``: glibc's defaults
    again, and the kept memory returned to the OS). Process-wide; returns False where there is no
    glibc (macOS, musl), where it does nothing."""
    global _explicit
    with _lock:
        _explicit = enable
        return _set(enable)


@contextlib.contextmanager
def kept_while() -> Iterator[None]:
    """Freed memory is kept inside the block (a training run) and handed back when the last block
    ends; nothing changes if ``keep_freed_memory()`` was called, or with ``TINYGRAD_CNN_MALLOPT=0``."""
    global _holders
    if os.environ.get("TINYGRAD_CNN_MALLOPT") == "0":
        yield
        return
    with _lock:
        if _holders == 0 and not _explicit:
            _set(True)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and not _explicit:
                _set(False)


def _set(enable: bool) -> bool:
    libc = _libc()
    if libc is None:
        return False
    value = _KEEP if enable else _GLIBC_DEFAULT
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, value))
    if not enable:
        libc.malloc_trim(0)
    return done
