"""What importing and running the package does to the process (issue 10, items 1-3): nothing global at
import, BLAS held at one thread only while our work runs, the thread pool survives fork, and the
base install (no Hypothesis) imports and trains.

Most checks run in fresh interpreters, since what they test is process state at start-up."""

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import tinygrad_cnn as tc
from tinygrad_cnn import Function, parallel


def run_python(code: str, **env: str | None) -> str:
    """Runs ``code`` in a fresh interpreter with ``env`` added (None: removed); its stdout (stripped). Fails the
    test on a non-zero exit."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, env=full_env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


# ---------------------------------------------------------------------------------------------- #
# 1. import needs only the base dependencies and changes nothing

def test_import_and_a_training_step_need_no_hypothesis():
    out = run_python("""
        import sys
        class NoHypothesis:                      # as on a base install: hypothesis cannot be imported
            def find_spec(self, name, path=None, target=None):
                if name == "hypothesis" or name.startswith("hypothesis."):
                    raise ModuleNotFoundError("No module named 'hypothesis'", name=name)
        sys.meta_path.insert(0, NoHypothesis())
        import numpy as np
        import tinygrad_cnn as tc
        model = tc.models.get("cnn")
        params, state = model.init(np.random.default_rng(0), image_size=12)
        x, y = np.zeros((4, 1, 12, 12), np.float32), np.arange(4)
        loss, grads = tc.value_and_grad(lambda p: tc.cross_entropy(model.apply(p, x, state=state), y))(params)
        try:
            tc.testing
        except ImportError as e:
            print("testing:", e)
        print("hypothesis" in sys.modules, round(loss, 3))
    """)
    assert out.splitlines()[-1] == "False 2.303"
    assert "tinygrad_cnn.testing needs Hypothesis: pip install hypothesis" in out


def test_import_sets_no_environment_variable_and_leaves_blas_threads_alone():
    out = run_python("""
        import os, json
        before = dict(os.environ)
        import tinygrad_cnn                      # before NumPy, the case that used to set OPENBLAS_NUM_THREADS
        from threadpoolctl import threadpool_info
        changed = {k: v for k, v in os.environ.items() if before.get(k) != v}
        print(json.dumps([changed, [lib["num_threads"] for lib in threadpool_info()]]))
    """, OPENBLAS_NUM_THREADS=None, TINYGRAD_CNN_THREADS=None)
    changed, threads = json.loads(out)
    numpy_alone = run_python("""
        import numpy, json
        from threadpoolctl import threadpool_info
        print(json.dumps([lib["num_threads"] for lib in threadpool_info()]))
    """, OPENBLAS_NUM_THREADS=None)
    assert changed == {}
    assert threads == json.loads(numpy_alone)


def test_import_does_not_keep_freed_memory_resident():
    """glibc tuning is an explicit call (keep_freed_memory), not an import side effect: a freed 100 MiB array
    goes back to the OS."""
    out = run_python("""
        import numpy as np, tinygrad_cnn as tc
        def rss_mib():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
        a = np.ones(100 * 2**20 // 4, np.float32)
        held = rss_mib()
        del a
        freed = rss_mib()
        tc.keep_freed_memory()                   # opted in: the memory stays
        b = np.ones(100 * 2**20 // 4, np.float32)
        del b
        kept = rss_mib()
        tc.keep_freed_memory(False)              # and opting out returns it
        print(held - freed, kept - freed, kept - rss_mib())
    """)
    released, kept, returned = map(int, out.split())
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert released >= 90 and kept >= 90 and returned >= 90


def test_fit_keeps_freed_memory_only_while_it_runs():
    out = run_python("""
        import numpy as np, tinygrad_cnn as tc
        def rss_mib():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
        def kept_after_free():
            before = rss_mib()
            a = np.ones(100 * 2**20 // 4, np.float32)
            del a
            return rss_mib() - before
        model = tc.models.get("cnn")
        rng = np.random.default_rng(0)
        params, state = model.init(rng, image_size=12)
        x, y = rng.random((16, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, 16)
        inside = []
        tc.training.fit(model, params, state, tc.optim.sgd(0.01), (x, y), None, epochs=1, batch_size=16, rng=rng,
                        on_epoch=lambda *_: inside.append(kept_after_free()))
        print(inside[0], kept_after_free())
    """)
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    inside, after = map(int, out.split())
    assert inside >= 90 and after < 10


# ---------------------------------------------------------------------------------------------- #
# 2. BLAS: one thread inside our work, the user's setting outside it

class BlasThreadsSeen(Function):
    """Identity that records the BLAS thread count while its forward and backward run."""
    seen: list = []

    @staticmethod
    def forward(ctx, x):
        BlasThreadsSeen.seen.append(("forward", blas_threads()))
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        BlasThreadsSeen.seen.append(("backward", blas_threads()))
        return g


@pytest.fixture
def two_blas_threads(monkeypatch):
    """BLAS at 2 threads and our kernels at 2 threads, as on a 2-core machine, whatever this one has."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    BlasThreadsSeen.seen = []
    with threadpool_limits(2, user_api="blas"):
        if blas_threads() != [2]:
            pytest.skip(f"BLAS here cannot be set to 2 threads: {threadpool_info()}")
        yield


def test_value_and_grad_holds_blas_at_one_thread_and_restores_it(two_blas_threads):
    x = np.ones((2, 3), np.float32)
    tc.value_and_grad(lambda p: BlasThreadsSeen.apply(p).sum())(x)
    assert BlasThreadsSeen.seen == [("forward", [1]), ("backward", [1])]
    assert blas_threads() == [2]                 # the user's own a @ b runs on both cores again


def test_backward_alone_holds_blas_and_restores_it(two_blas_threads):
    x = tc.Tensor(np.ones(3, np.float32), requires_grad=True)
    y = BlasThreadsSeen.apply(x).sum()           # an eager forward outside any block: the user's setting
    y.backward()
    assert BlasThreadsSeen.seen == [("forward", [2]), ("backward", [1])]
    assert blas_threads() == [2]


def test_an_eager_parallel_kernel_holds_blas_only_while_it_runs(two_blas_threads):
    seen = []
    parallel.over_batch(lambda s: seen.append(blas_threads()), 64, work=1 << 20)
    assert seen == [[1], [1]] and blas_threads() == [2]


def test_blas_is_restored_after_an_exception_and_blocks_nest(two_blas_threads):
    with pytest.raises(ZeroDivisionError):
        with parallel.blas_single_threaded():
            with parallel.blas_single_threaded():
                assert blas_threads() == [1]
            assert blas_threads() == [1]         # the inner block does not restore early
            raise ZeroDivisionError
    assert blas_threads() == [2]


def test_fit_holds_blas_for_the_run_and_restores_it(two_blas_threads):
    model = tc.models.get("cnn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=12)
    x, y = rng.random((32, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, 32)
    seen = []
    tc.training.fit(model, params, state, tc.optim.sgd(0.01), (x, y), (x, y), epochs=1, batch_size=16, rng=rng,
                    on_epoch=lambda *_: seen.append(blas_threads()))
    assert seen == [[1]] and blas_threads() == [2]


def test_threads_one_leaves_blas_alone(two_blas_threads, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "1")
    x = np.ones((2, 3), np.float32)
    tc.value_and_grad(lambda p: BlasThreadsSeen.apply(p).sum())(x)
    assert BlasThreadsSeen.seen == [("forward", [2]), ("backward", [2])]


# ---------------------------------------------------------------------------------------------- #
# 3. Same seed, same bits, whatever the import order and the BLAS setting the process started with

DIGEST = """
import hashlib
import numpy as np
import tinygrad_cnn as tc

rng = np.random.default_rng(0)
model = tc.models.get("cnn-bn")
params, state = model.init(rng, image_size=16)
x, y = rng.standard_normal((160, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 160)
params, state, _ = tc.training.fit(model, params, state, tc.optim.adam(1e-3), (x, y), None, epochs=1,
                                   batch_size=16, rng=rng, dropout_rate=0.25)
print(hashlib.sha256(b"".join(a.tobytes() for a in tc.pytree.tree_leaves((params, state)))).hexdigest())
"""


def test_same_seed_same_bits_whatever_the_import_order_and_blas_start_setting():
    numpy_first = run_python(DIGEST, TINYGRAD_CNN_THREADS="2")
    package_first = run_python("import tinygrad_cnn\n" + DIGEST, TINYGRAD_CNN_THREADS="2")
    blas_started_single = run_python(DIGEST, TINYGRAD_CNN_THREADS="2", OPENBLAS_NUM_THREADS="1")
    blas_started_double = run_python(DIGEST, TINYGRAD_CNN_THREADS="2", OPENBLAS_NUM_THREADS="2")
    assert numpy_first == package_first == blas_started_single == blas_started_double


# ---------------------------------------------------------------------------------------------- #
# 4. fork: a child forked after the parent used the pool runs parallel kernels

def _conv_in_child(queue):
    x = np.ones((64, 8, 16, 16), np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    queue.put(float(tc.conv2d(x, w).data.sum()))


def test_conv2d_in_a_forked_child_after_the_parent_used_the_pool(monkeypatch):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    x = np.ones((64, 8, 16, 16), np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    expected = float(tc.conv2d(x, w).data.sum())  # starts the parent's pool
    assert parallel._workers
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_conv_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("conv2d hung in the forked child")
    assert child.exitcode == 0 and queue.get(timeout=5) == expected



def test_over_batch_waits_for_every_slice_before_raising(monkeypatch):
    """When the calling thread's slice raises, the other slices still finish before the exception leaves
    over_batch: no thread may go on writing into the caller's arrays afterwards."""
    import time

    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    finished = []

    def kernel(s: slice):
        if s.start == 0:
            raise ValueError("first slice fails")
        time.sleep(0.2)
        finished.append(s)

    with pytest.raises(ValueError, match="first slice fails"):
        parallel.over_batch(kernel, 4, work=parallel.MIN_PARALLEL_WORK)
    assert finished == [slice(2, 4)]


def test_a_second_user_thread_runs_its_slices_itself_while_the_workers_are_busy(monkeypatch):
    """Two of the user's threads call over_batch at once: the one that finds the workers in use runs the
    same slices one after another in its own thread (so the same partial sums), instead of waiting."""
    import threading

    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    first_inside, second_done = threading.Event(), threading.Event()
    seen: dict[str, list] = {"first": [], "second": []}

    def kernel_for(name: str):
        def kernel(s: slice):
            seen[name].append((s, threading.get_ident()))
            if name == "first" and s.start == 0:  # hold the workers until the second call has finished
                first_inside.set()
                assert second_done.wait(10)
            return s.stop - s.start
        return kernel

    results = {}
    first = threading.Thread(target=lambda: results.setdefault(
        "first", parallel.over_batch(kernel_for("first"), 8, work=parallel.MIN_PARALLEL_WORK)))
    first.start()
    assert first_inside.wait(10)
    second_caller = threading.get_ident()
    results["second"] = parallel.over_batch(kernel_for("second"), 8, work=parallel.MIN_PARALLEL_WORK)
    second_done.set()
    first.join(10)
    assert results == {"first": [4, 4], "second": [4, 4]}
    assert seen["second"] == [(slice(0, 4), second_caller), (slice(4, 8), second_caller)]
    assert {ident for _, ident in seen["first"]} != {second_caller} and len(seen["first"]) == 2


def test_a_result_left_by_an_interrupted_call_is_not_taken_for_the_next_ones(monkeypatch):
    """A call interrupted (Ctrl-C) while it waited leaves its worker's result behind: the next call must
    get its own slices' results, not that one."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    worker = parallel._start_workers(1)[0]
    worker.submit(lambda s: "stale", slice(0, 1))  # never collected, as after an interrupt
    out = parallel.over_batch(lambda s: (s.start, s.stop), 6, work=parallel.MIN_PARALLEL_WORK)
    assert out == [(0, 3), (3, 6)]


def test_an_exception_in_a_worker_slice_reaches_the_caller_and_the_workers_keep_working(monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")

    def kernel(s: slice):
        if s.start > 0:
            raise KeyError(f"slice {s.start}:{s.stop}")
        return s.stop

    with pytest.raises(KeyError, match="slice 2:4"):
        parallel.over_batch(kernel, 4, work=parallel.MIN_PARALLEL_WORK)
    assert parallel.over_batch(lambda s: (s.start, s.stop), 4, work=parallel.MIN_PARALLEL_WORK) == [(0, 2), (2, 4)]


def test_two_user_threads_training_at_once_get_the_results_each_gets_alone(monkeypatch):
    """Two of the user's threads run value_and_grad of the reference CNN at batch 64 at the same time, with
    two batch threads: whichever finds the workers busy runs its slices itself, and every result matches
    the same call made alone (to float rounding: OpenBLAS's last bits depend on operand addresses)."""
    import threading

    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    model = tc.models.get("cnn")
    rng = np.random.default_rng(4)
    params, state = model.init(rng)
    batches = [(rng.standard_normal((64, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 64)) for _ in range(6)]

    def loss_and_grads(x, y):
        return tc.value_and_grad(lambda p: tc.cross_entropy(model.apply(p, x, state=state), y))(params)

    alone = [loss_and_grads(x, y) for x, y in batches]
    together: dict[int, tuple] = {}

    def run(indices):
        for i in indices:
            together[i] = loss_and_grads(*batches[i])

    threads = [threading.Thread(target=run, args=(r,)) for r in ([0, 2, 4, 0], [1, 3, 5, 1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(together) == list(range(6))
    for i, (loss, grads) in together.items():
        assert loss == pytest.approx(alone[i][0], rel=1e-5)
        for name in grads:
            for key in grads[name]:
                np.testing.assert_allclose(grads[name][key], alone[i][1][name][key], rtol=1e-4, atol=1e-6)
