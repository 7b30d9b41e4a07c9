"""What training does to the rest of the process, and what the scope of the BLAS hold costs.

    python benchmarks/process_state.py            # both measurements, cnn-bn at batch 128
    python benchmarks/process_state.py --keep-freed-memory

1. The user's own float32 1024x1024 matmul (best of 20) before and after three value_and_grad steps:
   a BLAS left capped at one thread by the framework would show up here as about half the speed.
2. A step written three ways, medians of 20 steps after 5 warm-up, interleaved over 3 rounds:
   value_and_grad (one BLAS hold for the step); an eager forward then loss.backward() (each
   parallel kernel of the forward holds and restores BLAS itself); the same inside
   tc.parallel.blas_single_threaded().
Run it on an idle machine: both numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinygrad_cnn as tc
from tinygrad_cnn import parallel


def sgemm_gflops(a: np.ndarray, reps: int = 20) -> float:
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(reps))
    return 2 * a.shape[0] ** 3 / best / 1e9


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--keep-freed-memory", action="store_true", help="call tc.keep_freed_memory() first")
    args = p.parse_args()
    if args.keep_freed_memory:
        tc.keep_freed_memory()
    rng = np.random.default_rng(0)
    model = tc.models.get("cnn-bn")
    params, state = model.init(rng)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    value_and_grad = tc.value_and_grad(lambda p: tc.cross_entropy(model.apply(p, x, state=state, training=True), y))

    a = rng.random((1024, 1024), dtype=np.float32)
    before = sgemm_gflops(a)
    for _ in range(3):
        value_and_grad(params)
    after = sgemm_gflops(a)
    print(f"your sgemm 1024: {before:.0f} GFLOP/s before three training steps, {after:.0f} after "
          f"({after / before:.2f}x)")

    def eager():
        leaves = tc.pytree.tree_map(lambda v: tc.Tensor(v, requires_grad=True), params)
        tc.cross_entropy(model.apply(leaves, x, state=state, training=True), y).backward()

    def eager_in_one_block():
        with parallel.blas_single_threaded():
            eager()

    ways = {"value_and_grad": lambda: value_and_grad(params), "eager forward + backward()": eager,
            "the same in blas_single_threaded()": eager_in_one_block}
    times = {name: [] for name in ways}
    for _ in range(3):
        for name, step in ways.items():
            for _ in range(5):
                step()
            times[name].append(np.median([_timed(step) for _ in range(20)]) * 1e3)
    for name, ms in times.items():
        print(f"{name:36} {np.median(ms):6.1f} ms/step  (rounds {', '.join(f'{t:.1f}' for t in ms)})")


if __name__ == "__main__":
    main()
