"""An op's or a jitted training step's speed in two revisions of tinygrad_cnn, in one process, taking turns.

    python benchmarks/compare_revisions.py eededad HEAD                        # BatchNormMaxPool at the step's shapes
    python benchmarks/compare_revisions.py eededad HEAD --shapes 32x32x26 --rounds 100
    python benchmarks/compare_revisions.py eededad WORKTREE                    # against uncommitted changes
    python benchmarks/compare_revisions.py eededad HEAD --step ref-bn --batch 32 128   # the tc.jit SGD step
    python benchmarks/compare_revisions.py HEAD WORKTREE --op batch_norm          # plain batch_norm, same shapes

This machine's speed drifts by 25-30 % within hours and by +-10 % between processes, which hides a
change of a few percent in any comparison of separate runs. Here both revisions live in one process:
each is exported from git (``git archive``; ``WORKTREE`` is the working tree as it is) under its own
package name, and the two take turns call by call, so drift hits both alike.

For each shape N x C x H (x: (N, C, H, H) float32, channels-last memory as conv2d hands it on, gamma
of mixed signs), the op's forward and its backward (through ``Tensor.backward``) are timed --rounds
times per revision, the first 5 dropped; reported: the medians and new / old of forward + backward,
with a 95 % bootstrap interval over the rounds (an interval holding 1.0: no change the run can tell
from noise).
Default shapes: batch norm + max-pool 2 of the reference CNN's two blocks at batch 128 and 32.
``--op batch_norm`` times ``tc.batch_norm`` (training mode, running statistics updated) instead.

``--step``: instead, the reference CNN's training step as ``benchmarks/train_step.py`` runs it for
tinygrad_cnn-jit (its ``tinygrad_step``: ``jit(value_and_grad(loss))``, SGD with momentum, four cycled
batches of random images), in each revision, timed the same way.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ["128x32x26", "128x64x11", "32x32x26", "32x64x11"]


def export(revision: str, into: Path) -> str:
    """The package at ``revision`` importable as ``tinygrad_cnn_<n>`` from ``into``; returns that name."""
    name = f"tinygrad_cnn_{len(list(into.iterdir()))}"
    if revision == "WORKTREE":
        shutil.copytree(ROOT / "tinygrad_cnn", into / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "tinygrad_cnn"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        (into / "tinygrad_cnn").rename(into / name)
    return name


def batch_norm_max_pool(package, shape: tuple[int, int, int], rng):
    """A function timing one forward and one backward of the fused op: (forward s, backward s)."""
    from importlib import import_module

    norm = import_module(package.__name__ + ".ops.norm")
    n, c, h = shape
    x = rng.standard_normal((n, h, h, c)).astype(np.float32).transpose(0, 3, 1, 2)
    gamma = (rng.uniform(0.5, 1.5, c) * np.where(np.arange(c) % 7 == 0, -1, 1)).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    upstream = rng.standard_normal((n, c, h // 2, h // 2)).astype(np.float32)
    pool = dict(kernel=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)))

    def run() -> tuple[float, float]:
        xt = package.Tensor(x, requires_grad=True)
        start = time.perf_counter()
        y = norm.BatchNormMaxPool.apply(xt, gamma, beta, eps=1e-5, **pool)
        middle = time.perf_counter()
        y.backward(upstream)
        return middle - start, time.perf_counter() - middle

    return run


def batch_norm(package, shape: tuple[int, int, int], rng):
    """A function timing one forward and one backward of ``batch_norm`` in training mode: (forward s, backward s)."""
    n, c, h = shape
    x = rng.standard_normal((n, h, h, c)).astype(np.float32).transpose(0, 3, 1, 2)
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    running_mean, running_var = np.zeros(c, np.float32), np.ones(c, np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)

    def run() -> tuple[float, float]:
        xt = package.Tensor(x, requires_grad=True)
        start = time.perf_counter()
        y = package.batch_norm(xt, gamma, beta, running_mean, running_var, training=True)
        middle = time.perf_counter()
        y.backward(upstream)
        return middle - start, time.perf_counter() - middle

    return run


OPS = {"batch_norm_max_pool": batch_norm_max_pool, "batch_norm": batch_norm}


def jitted_step(package, batch_norm: bool, batch: int):
    """A function timing one step of train_step.py's tinygrad_cnn-jit (value and gradients, then the
    SGD update) in ``package``: (s,)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_step

    step, _ = train_step.tinygrad_step(batch_norm, train_step.make_batches(batch), jit=True, package=package)

    def run() -> tuple[float]:
        start = time.perf_counter()
        step()
        return (time.perf_counter() - start,)

    return run


def ratio_interval(old: np.ndarray, new: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    """A 95 % bootstrap interval of median(new) / median(old): the rounds (each an old and a new call
    taken one after the other) resampled with replacement. An interval that holds 1.0 is no change
    this run could tell apart from the machine's noise."""
    rounds = np.random.default_rng(0).integers(0, len(old), size=(resamples, len(old)))
    ratios = np.median(new[rounds], axis=1) / np.median(old[rounds], axis=1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", help="git revision (or WORKTREE)")
    p.add_argument("new", help="git revision (or WORKTREE)")
    p.add_argument("--shapes", nargs="+", default=SHAPES, help="N x C x H, default: " + " ".join(SHAPES))
    p.add_argument("--rounds", type=int, default=60, help="timed calls per revision and shape (default 60)")
    p.add_argument("--op", choices=list(OPS), default="batch_norm_max_pool", help="the op timed at --shapes")
    p.add_argument("--step", choices=["ref", "ref-bn"], help="time the jitted training step of this variant instead")
    p.add_argument("--batch", type=int, nargs="+", default=[128], help="with --step: batch sizes (default 128)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        packages = [importlib.import_module(export(rev, Path(tmp))) for rev in (args.old, args.new)]
        print(f"old {args.old}, new {args.new}; {args.rounds} calls each, taking turns; medians in ms")
        if args.step:
            cases = [(f"{args.step} b{b}", [jitted_step(pkg, args.step == "ref-bn", b) for pkg in packages])
                     for b in args.batch]
        else:
            cases = [(text, [OPS[args.op](pkg, tuple(int(v) for v in text.split("x")), np.random.default_rng(0))
                             for pkg in packages])
                     for text in args.shapes]
        for label, runs in cases:
            times = [[], []]
            with packages[0].parallel.blas_single_threaded(), packages[1].parallel.blas_single_threaded():
                for r in range(args.rounds + 5):
                    for which in ((0, 1) if r % 2 else (1, 0)):
                        times[which].append(runs[which]())
            kept = [np.array(t[5:]) for t in times]                       # (rounds, parts) seconds
            old, new = (np.median(t, axis=0) * 1e3 for t in kept)
            low, high = ratio_interval(kept[0].sum(axis=1), kept[1].sum(axis=1))
            parts = ["step"] if args.step else ["forward", "backward"]
            print(f"{label:>10}: old " + " ".join(f"{n} {v:6.2f}" for n, v in zip(parts, old)) + " | new "
                  + " ".join(f"{n} {v:6.2f}" for n, v in zip(parts, new))
                  + f" | new / old {new.sum() / old.sum():.3f} (95 % interval {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
