"""How long the batch threads wait in a jitted training step: the cost of handing work to a second core.

    python benchmarks/thread_idle.py                        # ref, batch 32 and 128
    python benchmarks/thread_idle.py --variant ref-bn --batch 32 --steps 100

The step is train_step.py's tc.jit step (``tinygrad_step``). After warm-up, every ``parallel.over_batch``
call of the ops is wrapped so that each slice's kernel records when it started and ended on its
thread. Per step, reported:

- calls: over_batch calls, and how many of them ran on more than one thread;
- in calls: wall time inside over_batch calls; the rest of the step runs on the calling thread alone;
- late start: summed over the threaded calls, how long after the call began the last slice started
  (the other core's thread being woken and getting the GIL);
- uneven end: summed over the threaded calls, first slice done to last slice done (one thread waits);
- kernels: the slices' own time, summed over threads (what two cores did, GIL waits included).

The wrapping costs a little time per call, so the step is slower than in train_step.py; the ratios
are what this is for. Timestamps come from ``time.perf_counter`` on each thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import machine_info, make_batches, print_machine, tinygrad_step  # noqa: E402


def timed_calls(log: list):
    """A replacement for ``over_batch`` that appends (call start, call end, [(slice start, slice end)])."""
    from tinygrad_cnn import parallel

    original = parallel.over_batch

    def over_batch(kernel, n, *, work):
        spans = []

        def timed(s):
            start = time.perf_counter()
            try:
                return kernel(s)
            finally:
                spans.append((start, time.perf_counter()))

        begin = time.perf_counter()
        result = original(timed, n, work=work)
        log.append((begin, time.perf_counter(), spans))
        return result

    return over_batch


def measure(variant: str, batch: int, steps: int, warmup: int) -> dict:
    """Per-step averages (ms) of a jitted step of ``variant`` at ``batch``."""
    step, _ = tinygrad_step(variant == "ref-bn", make_batches(batch), jit=True)
    for _ in range(warmup):
        step()
    log: list = []
    patched = timed_calls(log)
    modules = [m for name, m in sys.modules.items() if name.startswith("tinygrad_cnn") and hasattr(m, "over_batch")]
    saved = [(m, m.over_batch) for m in modules]
    for m in modules:
        m.over_batch = patched
    try:
        begin = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - begin
    finally:
        for m, original in saved:
            m.over_batch = original
    threaded = [entry for entry in log if len(entry[2]) > 1]
    per_step = 1e3 / steps
    return {
        "step": wall * per_step,
        "calls": len(log) / steps,
        "threaded": len(threaded) / steps,
        "in calls": sum(end - begin for begin, end, _ in log) * per_step,
        "late start": sum(max(s for s, _ in spans) - begin for begin, _, spans in threaded) * per_step,
        "uneven end": sum(max(e for _, e in spans) - min(e for _, e in spans) for _, _, spans in threaded) * per_step,
        "kernels": sum(e - s for _, _, spans in log for s, e in spans) * per_step,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=["ref", "ref-bn"], default="ref")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args(argv)
    print_machine(machine_info())
    print(f"tc.jit step, {args.variant}, {args.steps} steps after {args.warmup}; ms per step")
    print("batch   step  calls (threaded)  in calls  late start  uneven end  kernels (both threads)")
    for batch in args.batch:
        r = measure(args.variant, batch, args.steps, args.warmup)
        print(f"{batch:5d} {r['step']:6.2f}  {r['calls']:5.0f} ({r['threaded']:4.0f})     {r['in calls']:7.2f}"
              f"  {r['late start']:10.2f}  {r['uneven end']:10.2f}  {r['kernels']:7.2f}")


if __name__ == "__main__":
    main()
