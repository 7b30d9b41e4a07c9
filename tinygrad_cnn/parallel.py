"""Batch parallelism: the heavy ops run their kernels on slices of the batch, one slice per core.

NumPy's ufuncs, copies and BLAS calls release the GIL while they work on large arrays, so plain
Python threads keep several cores busy. Without this, NumPy does everything but BLAS on one core.

    y = np.empty_like(x)
    over_batch(lambda s: np.maximum(x[s], 0, out=y[s]), len(x), work=x.size)

Results are combined in slice order, so a run is bit-for-bit reproducible for a given thread count.
``TINYGRAD_CNN_THREADS`` sets the number of threads (default: the cores this process may use);
``1`` turns the threading off and leaves BLAS alone.

**BLAS, one thread while our work runs.** Each of our threads runs its own matmul on its slice. Left
multi-threaded, OpenBLAS keeps its worker threads spinning after every call and they fight ours for
the cores: measured here, a training step took 162 ms that way against 42 ms with BLAS single-threaded.
So BLAS is held at one thread inside :func:`blas_single_threaded` and given back to the user's setting
when the outermost such block ends. The block is wide, not per kernel: capping and restoring around
every kernel let OpenBLAS's workers wake in between and cost a third of the speed. ``value_and_grad``,
``Tensor.backward``, ``fit`` and ``predict_proba`` each run inside one; a parallel kernel called
outside any (an eager op in the user's own loop) opens one for itself. Every matmul of ours inside a
block runs single-threaded, so results do not depend on the BLAS setting the process started with.

**fork.** A child process forked after the pool was used inherits a pool object whose threads do not
exist there; the pool and its lock are reset in the child (``os.register_at_fork``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["num_threads", "batch_slices", "cache_blocks", "over_batch", "blas_single_threaded"]

# Below this many array elements a kernel runs on the calling thread: handing work to a thread
# costs tens of microseconds, more than the work itself.
MIN_PARALLEL_WORK = 1 << 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_local = threading.local()      # .inside: a pool kernel runs here; .holds_blas: inside a BLAS block
_blas = None                    # threadpoolctl's controller of the BLAS libraries NumPy loaded
_blas_holders = 0               # threads inside a blas_single_threaded block
_blas_limit = None              # the active limit (restores the user's setting), while holders > 0


def num_threads() -> int:
    """Threads used for batch-parallel kernels (``TINYGRAD_CNN_THREADS``, else the usable cores)."""
    value = os.environ.get("TINYGRAD_CNN_THREADS")
    if value:
        return max(int(value), 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def batch_slices(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering range(n), sizes differing by at most one."""
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# A thread's slice of the batch is cut into blocks of images of about this many bytes where a kernel
# makes several passes over the same images (im2col then matmul, or a pass per pooling window), so
# that the later passes read what the first left in the core's cache.
BLOCK_BYTES = 1 << 20


def cache_blocks(s: slice, bytes_per_image: int) -> list[slice]:
    """``s`` (a slice of images) cut into consecutive blocks of about ``BLOCK_BYTES``."""
    size = max(1, BLOCK_BYTES // max(bytes_per_image, 1))
    return [slice(a, min(a + size, s.stop)) for a in range(s.start, s.stop, size)]


def _blas_controller():
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas


@contextlib.contextmanager
def blas_single_threaded() -> Iterator[None]:
    """Holds BLAS at one thread inside the block, then restores the setting found on entry.

    Nested and concurrent blocks (several threads) share one limit, taken by the first block to
    start and released by the last to end. Does nothing when ``TINYGRAD_CNN_THREADS=1``.
    """
    global _blas_holders, _blas_limit
    if getattr(_local, "holds_blas", False) or num_threads() <= 1:  # nested, or no threads of ours
        yield
        return
    with _lock:
        if _blas_holders == 0:
            _blas_limit = _blas_controller().limit(limits=1)
        _blas_holders += 1
    _local.holds_blas = True
    try:
        yield
    finally:
        _local.holds_blas = False
        with _lock:
            _blas_holders -= 1
            if _blas_holders == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < threads - 1:
            _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinygrad_cnn")
    return _pool


def over_batch(kernel: Callable[[slice], T], n: int, *, work: int) -> list[T]:
    """``[kernel(s) for s in slices of range(n)]``, the slices run in parallel threads.

    ``work`` (elements touched) decides whether threads pay off. ``kernel`` must only write to the
    parts of shared arrays that belong to its slice, and return what must be combined (partial sums).
    Nested calls (a kernel calling ``over_batch``) run serially.
    """
    threads = min(num_threads(), n)
    if threads <= 1 or work < MIN_PARALLEL_WORK or getattr(_local, "inside", False):
        return [kernel(slice(0, n))]
    pool = _thread_pool(threads)
    slices = batch_slices(n, threads)

    def run(s: slice) -> T:
        _local.inside = True
        try:
            return kernel(s)
        finally:
            _local.inside = False

    with blas_single_threaded():
        futures = [pool.submit(run, s) for s in slices[1:]]
        try:
            first = run(slices[0])
        finally:
            for future in futures:  # never leave threads writing into arrays after an exception here:
                future.exception()  # waits without raising (concurrent.futures.wait cost 45 us more)
    return [first] + [f.result() for f in futures]


def _after_fork_in_child() -> None:
    """The parent's pool threads do not exist in a forked child: start afresh there. Only the forking
    thread survives, so only its BLAS block (if it was inside one) still holds the limit."""
    global _lock, _pool, _blas_holders, _blas_limit
    _lock, _pool = threading.Lock(), None
    _local.inside = False
    forker_holds = getattr(_local, "holds_blas", False)
    if _blas_holders and not forker_holds:
        _blas_limit.restore_original_limits()
        _blas_limit = None
    _blas_holders = 1 if forker_holds else 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
