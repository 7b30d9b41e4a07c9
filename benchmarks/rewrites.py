"""What each tc.jit rewrite buys: the jitted training step with a rewrite on and off, side by side.

    python benchmarks/rewrites.py                          # every rewrite, ref and ref-bn, batch 128
    python benchmarks/rewrites.py --batch 32 --rounds 7 --steps 40

The step is train_step.py's (forward + backward + SGD update of a model on (B, 1, 28, 28) images: by
default the reference CNN without ("cnn") and with batch norm ("cnn-bn"), and "resnet-small"), on the
same pre-generated batches. For each rewrite, two jitted steps are
built in one process: one with ``rewrites.DEFAULT`` plus or minus that rewrite, one without. They take
turns, ``--steps`` timed steps each per round, for ``--rounds`` rounds (the order alternating), so a
busy moment of the machine hits both. Reported: the median step time of each, and "saved", the median
over rounds of (without - with) / without. A rewrite that does not apply to a model (no batch norm, no
biased conv before a pool) is reported as such. ``unneeded_gradients`` is measured on a step that also
differentiates the images and returns only the parameters' gradients, the case it is for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import machine_info, make_batches, print_machine  # noqa: E402

import tinygrad_cnn as tc  # noqa: E402
from tinygrad_cnn import rewrites  # noqa: E402


def jitted_step(model_name: str, batches: list, names: tuple, image_grads: bool):
    """A jitted SGD step of ``model_name`` with the rewrites ``names``, traced: (step, its forward ops, plan length)."""
    model = tc.models.get(model_name)
    params, state = model.init(np.random.default_rng(0))
    opt = tc.optim.sgd(0.01, momentum=0.9)
    opt_state = opt.init(params)

    def loss_fn(p, x, y):
        return tc.cross_entropy(model.apply(p, x, state=state, training=True), y)

    if image_grads:  # gradients of the images too, then dropped: what unneeded_gradients is for
        both = tc.value_and_grad(loss_fn, argnums=(0, 1))

        def value_and_grad(p, x, y):
            loss, (grads, _) = both(p, x, y)
            return loss, grads
    else:
        value_and_grad = tc.value_and_grad(loss_fn)
    loss_and_grads = tc.jit(value_and_grad, rewrites=names)
    k = [0]

    def step() -> None:
        nonlocal params, opt_state
        x, y = batches[k[0] % len(batches)]
        k[0] += 1
        loss, grads = loss_and_grads(params, x, y)
        params, opt_state = opt.update(params, grads, opt_state)

    step()
    plan = next(iter(loss_and_grads._plans.values()))
    return step, [what[0].__name__ for kind, what, _, _ in plan.program if kind == "forward"], len(plan.program)


def timed(step, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(name: str, model_name: str, args) -> dict:
    batches = make_batches(args.batch)
    with_names = tuple(n for n in rewrites.REWRITES if n in rewrites.DEFAULT or n == name)
    without_names = tuple(n for n in with_names if n != name)
    image_grads = name == "unneeded_gradients"
    with_step, with_ops, with_len = jitted_step(model_name, batches, with_names, image_grads)
    without_step, without_ops, without_len = jitted_step(model_name, batches, without_names, image_grads)
    if with_ops == without_ops and with_len == without_len:
        return {"rewrite": name, "model": model_name, "applies": False}
    for step in (with_step, without_step):  # warm-up: traces, first replays, arenas
        for _ in range(args.warmup):
            step()
    on, off, saved = [], [], []
    for r in range(args.rounds):
        pair = [(with_step, on), (without_step, off)]
        for step, times in (pair if r % 2 == 0 else pair[::-1]):
            times.append(timed(step, args.steps))
        saved.append((off[-1] - on[-1]) / off[-1])
    return {"rewrite": name, "model": model_name, "applies": True, "with_ms": 1e3 * statistics.median(on),
            "without_ms": 1e3 * statistics.median(off), "saved": statistics.median(saved),
            "saved_range": (min(saved), max(saved))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per step function per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rewrites", nargs="+", choices=list(rewrites.REWRITES), default=list(rewrites.REWRITES))
    parser.add_argument("--models", nargs="+", choices=list(tc.models.MODELS),
                        default=["cnn", "cnn-bn", "resnet-small"])
    args = parser.parse_args(argv)
    print_machine(machine_info())
    print(f"jitted SGD step, batch {args.batch}, float32; {args.rounds} alternating rounds of {args.steps} steps")
    print(f"{'rewrite':22} {'model':7} {'with ms':>8} {'without':>8} {'saved':>7}  (min..max over rounds)")
    for name in args.rewrites:
        for model_name in args.models:
            r = compare(name, model_name, args)
            if not r["applies"]:
                print(f"{name:22} {model_name:7} {'does not apply':>26}")
                continue
            low, high = r["saved_range"]
            print(f"{name:22} {model_name:7} {r['with_ms']:8.1f} {r['without_ms']:8.1f} {r['saved']:7.1%}  "
                  f"({low:.1%}..{high:.1%})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
