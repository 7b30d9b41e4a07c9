"""Batch parallelism: the heavy ops run their kernels on slices of the batch, one slice per core.

NumPy's ufuncs, copies and BLAS calls release the GIL while they work on large arrays, so plain
Python threads keep several cores busy. Without this, NumPy does everything but BLAS on one core.

BLAS itself is set to one thread, for the whole process, the first time a parallel region runs:
each of our threads runs its own matmul on its slice. Left multi-threaded, OpenBLAS keeps its
worker threads spinning after every call, and they fight ours for the same cores: measured here,
a training step took 162 ms that way against 42 ms with BLAS single-threaded (and 68 ms with no
threads at all). When ``tinygrad_cnn`` is imported before NumPy it sets ``OPENBLAS_NUM_THREADS=1``
before OpenBLAS loads, which measured steadier (40-43 ms) than capping it at run time (43-65 ms).
Set ``TINYGRAD_CNN_THREADS=1`` to leave BLAS as it is and run everything serially.

    y = np.empty_like(x)
    over_batch(lambda s: np.maximum(x[s], 0, out=y[s]), len(x), work=x.size)

Results are combined in slice order, so a run is bit-for-bit reproducible for a given thread count.
``TINYGRAD_CNN_THREADS`` sets the number of threads (default: the cores this process may use);
``1`` turns the threading off.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, TypeVar

T = TypeVar("T")

# Below this many array elements a kernel runs on the calling thread: handing work to a thread
# costs tens of microseconds, more than the work itself.
MIN_PARALLEL_WORK = 1 << 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_blas_limit = None  # threadpoolctl's limit holding BLAS at one thread, set on first parallel use
_local = threading.local()


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


def _resources(threads: int) -> ThreadPoolExecutor:
    global _pool, _blas_limit
    with _lock:
        if _pool is None or _pool._max_workers < threads - 1:
            _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinygrad_cnn")
        if _blas_limit is None:
            from threadpoolctl import ThreadpoolController

            _blas_limit = ThreadpoolController().limit(limits=1, user_api="blas")  # kept for the process
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
    pool = _resources(threads)
    slices = batch_slices(n, threads)

    def run(s: slice) -> T:
        _local.inside = True
        try:
            return kernel(s)
        finally:
            _local.inside = False

    futures = [pool.submit(run, s) for s in slices[1:]]
    try:
        first = run(slices[0])
    finally:
        wait(futures)  # never leave threads writing into arrays after an exception here
    return [first] + [f.result() for f in futures]
