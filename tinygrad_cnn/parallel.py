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

**Workers.** Each extra thread is a :class:`_Worker` that waits on a queue of slices; a call hands one
slice to each worker, runs the first itself and then collects the workers' results. A call that
does nothing costs 49 us that way against 58 us through ``concurrent.futures`` (its Future objects and
bookkeeping; the two taking turns in one process), most of the rest being the operating system waking
the other core's thread; a batch-32 training step makes about a dozen such calls. While one of
the user's threads is using the workers, a second runs its slices one after another itself (the
same slices, so the same bits) instead of waiting for them.

**fork.** A child process forked after the workers started inherits worker objects whose threads do
not exist there; the workers and the locks are reset in the child (``os.register_at_fork``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from queue import SimpleQueue
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["num_threads", "batch_slices", "cache_blocks", "over_batch", "blas_single_threaded"]

# Below this many array elements a kernel runs on the calling thread: handing work to a thread
# costs tens of microseconds, more than the work itself.
MIN_PARALLEL_WORK = 1 << 16

_lock = threading.Lock()
_workers: list[_Worker] = []    # the threads besides the caller's, started on first use
_in_use = threading.Lock()      # held by the thread whose slices the workers are running
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
# makes several passes over the same images (a matmul then col2im, or a pass per pooling window), so
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


class _Worker:
    """A daemon thread running the slices handed to it, one at a time, in order. Each result goes back
    tagged with its job number, so a result left over from a call interrupted while it waited (Ctrl-C)
    is recognised and dropped by the next call's :meth:`result`."""

    def __init__(self, name: str):
        self._jobs: SimpleQueue = SimpleQueue()
        self._results: SimpleQueue = SimpleQueue()
        self._submitted = 0
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        _local.inside = True  # a kernel's own over_batch calls run serially here
        while True:
            job, kernel, s = self._jobs.get()
            try:
                outcome = (job, True, kernel(s))
            except BaseException as error:  # handed to the caller, raised there
                outcome = (job, False, error)
            self._results.put(outcome)
            del kernel, outcome  # nothing of the call kept alive while idle

    def submit(self, kernel: Callable[[slice], T], s: slice) -> int:
        """Queues ``kernel(s)``; returns the job number :meth:`result` takes."""
        self._submitted += 1
        self._jobs.put((self._submitted, kernel, s))
        return self._submitted

    def result(self, job: int) -> tuple[bool, object]:
        """Waits for ``job``: (True, its value) or (False, the exception it raised)."""
        while True:
            done, ok, value = self._results.get()
            if done == job:
                return ok, value


def _start_workers(count: int) -> list[_Worker]:
    with _lock:
        while len(_workers) < count:
            _workers.append(_Worker(f"tinygrad_cnn_{len(_workers)}"))
        return _workers[:count]


def _serially(kernel: Callable[[slice], T], slices: list[slice]) -> list[T]:
    was_inside, _local.inside = getattr(_local, "inside", False), True
    try:
        return [kernel(s) for s in slices]
    finally:
        _local.inside = was_inside


def over_batch(kernel: Callable[[slice], T], n: int, *, work: int) -> list[T]:
    """``[kernel(s) for s in slices of range(n)]``, the slices run in parallel threads.

    ``work`` (elements touched) decides whether threads pay off. ``kernel`` must only write to the
    parts of shared arrays that belong to its slice, and return what must be combined (partial sums).
    Nested calls (a kernel calling ``over_batch``) run serially.
    """
    threads = min(num_threads(), n)
    if threads <= 1 or work < MIN_PARALLEL_WORK or getattr(_local, "inside", False):
        return [kernel(slice(0, n))]
    slices = batch_slices(n, threads)
    workers = _start_workers(len(slices) - 1)
    if not _in_use.acquire(blocking=False):  # another thread of the user's has the workers
        with blas_single_threaded():
            return _serially(kernel, slices)
    try:
        with blas_single_threaded():
            jobs = [worker.submit(kernel, s) for worker, s in zip(workers, slices[1:])]
            try:
                first = _serially(kernel, slices[:1])[0]
            finally:  # never leave threads writing into arrays after an exception here
                outcomes = [worker.result(job) for worker, job in zip(workers, jobs)]
    finally:
        _in_use.release()
    for ok, value in outcomes:
        if not ok:
            raise value
    return [first] + [value for _, value in outcomes]


def _after_fork_in_child() -> None:
    """The parent's worker threads do not exist in a forked child: start afresh there. Only the forking
    thread survives, so only its BLAS block (if it was inside one) still holds the limit."""
    global _lock, _in_use, _workers, _blas_holders, _blas_limit
    _lock, _in_use, _workers = threading.Lock(), threading.Lock(), []
    _local.inside = False
    forker_holds = getattr(_local, "holds_blas", False)
    if _blas_holders and not forker_holds:
        _blas_limit.restore_original_limits()
        _blas_limit = None
    _blas_holders = 1 if forker_holds else 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
