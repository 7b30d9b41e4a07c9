"""Training-step throughput of the reference CNN: tinygrad_cnn next to PyTorch and TensorFlow.

    python benchmarks/train_step.py                       # both variants, batch 128, all installed frameworks
    python benchmarks/train_step.py --batch 32 128 512 --rounds 5 --json results.json
    python benchmarks/train_step.py --frameworks tinygrad_cnn torch --variant ref-bn
    python benchmarks/train_step.py --profile --variant ref-bn   # time per op of one tinygrad_cnn step
    python benchmarks/train_step.py --profile --jit --variant ref-bn  # the same, replayed by tc.jit
    python benchmarks/train_step.py --overhead                    # per-op cost of a 1,000-op chain

The step: batch B of (1, 28, 28) float32 images, forward + backward + SGD update (lr 0.01, momentum
0.9) of  conv 3x3 1->32, relu, max_pool 2; conv 3x3 32->64, relu, max_pool 2; flatten 1600;
linear 128, relu; linear 10; cross_entropy.  "ref-bn" puts batch_norm (training mode) after each conv.
tinygrad_cnn runs it the way users write it (``tc.models.get``, ``tc.value_and_grad``,
``tc.optim.sgd``); the peers are defined in ``benchmarks/peers.py``.

Method. Every measurement is a fresh subprocess (``--worker FRAMEWORK``) that builds the model, runs
--warmup steps, then --steps timed steps (fewer if --seconds runs out, at least 10), and prints JSON:
the median step time (-> img/s), its spread, the worker's peak RSS, and how many cores *other*
processes kept busy meanwhile ("bg", from /proc/stat). The frameworks take turns (one worker each per
variant and batch, start order rotated every round) for --rounds rounds, so slow drift of the
machine hits them all alike. Reported per framework: the median over rounds of img/s with its
min-max (over the undisturbed rounds, bg < 0.25 core, when there are any), GFLOP/s (the issue's
convention: forward multiply-adds x 2 flops, x 3 for forward + backward), the fraction of the matmul
bound (B / the time NumPy needs for the step's matmuls at their im2col shapes, best of every round),
and tinygrad_cnn / peer computed within each round, then the median of those ratios. On a shared
machine, --wait-quiet S waits for idle cores before each worker and reruns disturbed ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULT = "RESULT-JSON "  # a worker's last line of stdout; anything a framework prints before it is ignored

FRAMEWORKS = {  # name -> (module that must be importable, label)
    "tinygrad_cnn": ("tinygrad_cnn", "tinygrad_cnn"),
    "tinygrad_cnn-kfm": ("tinygrad_cnn", "tinygrad_cnn + keep_freed_memory()"),
    "tinygrad_cnn-jit": ("tinygrad_cnn", "tinygrad_cnn tc.jit"),
    "torch": ("torch", "PyTorch eager"),
    "tf-eager": ("tensorflow", "TensorFlow eager"),
    "tf-function": ("tensorflow", "TensorFlow tf.function"),
}
VARIANTS = {"ref": "cnn", "ref-bn": "cnn-bn"}  # variant -> tinygrad_cnn model name
MIN_STEPS = 10
QUIET = 0.25  # cores other processes may keep busy for a measurement to count as undisturbed


# ------------------------------------------------------------------------------ the step's arithmetic

def matmul_shapes(image: int = 28, channels=(1, 32, 64), hidden: int = 128, classes: int = 10) -> list:
    """The step's matmuls per image as ``(layer, rows, K, N, input needs grad)``: a conv is the im2col
    matmul (rows = output pixels, K = in_channels * 3 * 3, N = out_channels), a linear layer one row."""
    shapes, size = [], image
    for i, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        out = size - 2  # valid 3x3 convolution
        shapes.append((f"conv{i + 1}", out * out, c_in * 9, c_out, i > 0))  # the images need no gradient
        size = out // 2  # max_pool 2
    features = channels[-1] * size * size
    shapes.append(("fc1", 1, features, hidden, True))
    shapes.append(("fc2", 1, hidden, classes, True))
    return shapes


def flops_per_image() -> tuple[int, int]:
    """(forward flops, step flops) per image: 2 per multiply-add, the step counted as 3x forward."""
    forward = sum(2 * rows * k * n for _, rows, k, n, _ in matmul_shapes())
    return forward, 3 * forward


def _best_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_bound(batch: int, repeat: int = 10, best: dict | None = None) -> dict:
    """NumPy float32 time of every matmul of one step at batch ``batch``: forward ``cols @ W``, then
    ``cols.T @ dY`` (weight gradient) and ``dY @ W.T`` (input gradient, where one is needed).
    Outputs are preallocated and each matmul's best of ``repeat`` runs is kept (a bound is what the
    machine can do, not what it did while busy); with ``best`` (an earlier result), the faster of the two."""
    rng = np.random.default_rng(0)
    rows, total = [], 0.0
    for name, per_image, k, n, input_grad in matmul_shapes():
        m = batch * per_image
        cols, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (k, n), (m, n)))
        products = [("forward", cols, w, (m, n)), ("grad W", cols.T, dy, (k, n))]
        if input_grad:
            products.append(("grad input", dy, w.T, (m, k)))
        for what, a, b, out_shape in products:
            out = np.empty(out_shape, np.float32)
            seconds = _best_seconds(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), repeat)
            if best is not None:
                seconds = min(seconds, best["matmuls"][len(rows)]["ms"] / 1e3)
            rows.append({"layer": name, "matmul": what, "shape": f"({a.shape[0]},{a.shape[1]})@({b.shape[0]},"
                         f"{b.shape[1]})", "ms": seconds * 1e3, "gflops": 2 * a.shape[0] * a.shape[1] * b.shape[1]
                         / seconds / 1e9})
            total += seconds
    return {"batch": batch, "matmuls": rows, "total_ms": total * 1e3, "img_s": batch / total}


# ------------------------------------------------------------------------------------------- machine

def cpu_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (Linux /proc/stat, steal included); else None."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class BackgroundLoad:
    """How many cores *other* processes kept busy between ``start()`` and ``cores()``: all busy CPU time
    (/proc/stat) minus this process's own (all its threads), over the wall time. None off Linux."""

    def start(self) -> BackgroundLoad:
        self.busy, self.own, self.wall = cpu_busy_seconds(), sum(os.times()[:2]), time.perf_counter()
        return self

    def cores(self) -> float | None:
        busy, own, wall = cpu_busy_seconds(), sum(os.times()[:2]), time.perf_counter()
        if busy is None or self.busy is None or wall <= self.wall:
            return None
        return max(0.0, (busy - self.busy) - (own - self.own)) / (wall - self.wall)


def wait_until_quiet(limit_s: float, threshold: float) -> float | None:
    """Samples the background load over 1 s until it is below ``threshold`` cores or ``limit_s`` has
    passed; returns the last sample."""
    deadline = time.perf_counter() + limit_s
    while True:
        probe = BackgroundLoad().start()
        time.sleep(1.0)
        load = probe.cores()
        if load is None or load < threshold or time.perf_counter() >= deadline:
            return load


def machine_info() -> dict:
    """CPU, cores, NumPy and its BLAS (threadpoolctl), and the git state of the code being measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas_build"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: show_config has no mode=
        pass
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                        "threading_layer", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["git"] = git_state()
    info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def git_state() -> str:
    """``<short hash>`` plus how many tracked files differ from it (read-only git commands)."""
    def git(*args):
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=HERE, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}" + (f" + {len(changed)} modified tracked files in the working tree" if changed else " (clean)")


def print_machine(info: dict) -> None:
    print(f"machine: {info['cpu']}, {info['cpu_count']} logical CPUs"
          + (f" ({info['usable_cores']} usable)" if "usable_cores" in info else "")
          + f"; Python {info['python']}, NumPy {info['numpy']}"
          + (f" built with {info['numpy_blas_build']}" if "numpy_blas_build" in info else ""))
    pools = info["threadpools"]
    for p in pools if isinstance(pools, list) else []:
        print(f"  thread pool: {p['internal_api']} {p['version']} ({p['user_api']}), {p['num_threads']} threads"
              + (f", {p['threading_layer']}" if p.get("threading_layer") else "")
              + (f", {p['architecture']}" if p.get("architecture") else ""))
    print(f"code: git {info['git']}; load average {info['load_avg']}")


# ------------------------------------------------------------------------------------ the steps

def make_batches(batch: int, count: int = 4, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` pre-generated batches of random images (B, 1, 28, 28) float32 and labels, cycled."""
    rng = np.random.default_rng(seed)
    return [(rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch, dtype=np.int64))
            for _ in range(count)]


def tinygrad_step(batch_norm: bool, batches: list, jit: bool = False, package=None):
    """The tinygrad_cnn step exactly as a user writes it. ``step(timings=None)`` returns the loss; with
    a dict it also adds the seconds of ``value_and_grad`` and of the optimizer update to it.
    ``package``: the tinygrad_cnn module to use (compare_revisions.py passes other revisions')."""
    import tinygrad_cnn

    tc = package or tinygrad_cnn

    model = tc.models.get("cnn-bn" if batch_norm else "cnn")
    params, state = model.init(np.random.default_rng(0))
    opt = tc.optim.sgd(0.01, momentum=0.9)
    opt_state = opt.init(params)

    def loss_fn(p, x, y):
        return tc.cross_entropy(model.apply(p, x, state=state, training=True), y)

    loss_and_grads = tc.jit(tc.value_and_grad(loss_fn)) if jit else tc.value_and_grad(loss_fn)
    data = itertools.cycle(batches)

    def step(timings: dict | None = None) -> float:
        nonlocal params, opt_state
        x, y = next(data)
        start = time.perf_counter()
        loss, grads = loss_and_grads(params, x, y)
        middle = time.perf_counter()
        params, opt_state = opt.update(params, grads, opt_state)
        if timings is not None:
            timings["value_and_grad"] = timings.get("value_and_grad", 0.0) + middle - start
            timings["update"] = timings.get("update", 0.0) + time.perf_counter() - middle
        return loss

    return step, {"version": tc.__version__}


def _blas_threads() -> list:
    try:
        from threadpoolctl import threadpool_info
        return [f"{p['internal_api']}: {p['num_threads']}" for p in threadpool_info()]
    except ImportError:
        return []


def build_step(framework: str, batch_norm: bool, batches: list):
    if framework.startswith("tinygrad_cnn"):
        if framework == "tinygrad_cnn-kfm":
            import tinygrad_cnn as tc

            tc.keep_freed_memory()  # glibc keeps freed memory mapped (what the CLI's train does)
        return tinygrad_step(batch_norm, batches, jit=framework == "tinygrad_cnn-jit")
    sys.path.insert(0, str(HERE))
    import peers

    if framework == "torch":
        return peers.torch_step(batch_norm, batches)
    return peers.tf_step(batch_norm, batches, compiled=framework == "tf-function")


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def max_rss_kb() -> int:
    """This process's peak resident set, KB. Linux's ``getrusage(RUSAGE_SELF).ru_maxrss`` starts from the
    *parent's* peak when a process is made by fork/vfork + exec (the kernel carries the old address
    space's high-water mark over), so a worker would report at least the parent's size; ``VmHWM`` in
    /proc/self/status belongs to this address space alone. ru_maxrss where there is no /proc."""
    hwm = _proc_status_kb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kb() -> int:
    """Resident set size now, KB (VmRSS; the peak so far where there is no /proc)."""
    rss = _proc_status_kb("VmRSS")
    return rss if rss is not None else max_rss_kb()


def worker_step(args) -> dict:
    """One measurement (this process only): build, warm up, time; the result as a dict."""
    batches = make_batches(args.batch)
    start = time.perf_counter()
    step, info = build_step(args.worker, args.variant == "ref-bn", batches)
    rss_setup = current_rss_kb()
    losses = [float(step()) for _ in range(args.warmup)]
    setup_s = time.perf_counter() - start
    times, min_steps = [], min(args.steps, MIN_STEPS)
    background = BackgroundLoad().start()
    start = time.perf_counter()
    while len(times) < args.steps and (len(times) < min_steps or time.perf_counter() - start < args.seconds):
        t0 = time.perf_counter()
        losses.append(float(step()))
        times.append(time.perf_counter() - t0)
    background_cores = background.cores()
    ms = np.array(times) * 1e3
    median = float(np.median(ms))
    info.update(blas_threads=_blas_threads(), python_threads=threading.active_count(),
                load_avg_1min=os.getloadavg()[0])
    return {"framework": args.worker, "variant": args.variant, "batch": args.batch, "steps": len(times),
            "warmup": args.warmup, "median_ms": median, "img_s": args.batch / median * 1e3,
            "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "times_ms": [round(t, 3) for t in ms.tolist()],
            "rss_setup_kb": rss_setup, "rss_peak_kb": max_rss_kb(), "setup_s": setup_s,
            "background_cores": background_cores,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "info": info}


def time_chain(x, n_ops: int, repeat: int, warmup: int = 3) -> tuple[list, list]:
    """Seconds of building (forward) and differentiating (backward) ``y = x; y = y * 1.0001; y = y + 1e-4; ...``
    (``n_ops`` ops) then ``y.sum()``: the same code for a tinygrad_cnn Tensor and a torch tensor."""
    forward, backward = [], []
    for i in range(warmup + repeat):
        t0 = time.perf_counter()
        y = x
        for _ in range(n_ops // 2):
            y = y * 1.0001
            y = y + 1e-4
        loss = y.sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if i >= warmup:
            forward.append(t1 - t0)
            backward.append(t2 - t1)
    return forward, backward


def worker_overhead(args) -> dict:
    if args.worker == "tinygrad_cnn":
        import tinygrad_cnn as tc

        x, info = tc.Tensor(np.ones(4, np.float32), requires_grad=True), {"version": tc.__version__}
    else:
        sys.path.insert(0, str(HERE))
        import peers

        x, info = peers.torch_chain_input()
    n_ops = 2 * (args.chain_ops // 2) + 1  # the chain and the final sum
    background = BackgroundLoad().start()
    forward, backward = time_chain(x, args.chain_ops, args.repeat)
    fwd_us, bwd_us = (float(np.median(t)) / n_ops * 1e6 for t in (forward, backward))
    return {"framework": args.worker, "ops": n_ops, "forward_us_per_op": fwd_us, "backward_us_per_op": bwd_us,
            "total_us_per_op": fwd_us + bwd_us, "rss_peak_kb": max_rss_kb(), "info": info,
            "background_cores": background.cores()}


# ------------------------------------------------------------------------------------- orchestration

def installed(framework: str) -> bool:
    """Whether the framework's module can be found (without importing it)."""
    try:
        return importlib.util.find_spec(FRAMEWORKS[framework][0]) is not None
    except (ImportError, ValueError):
        return False


def run_worker(extra: list[str], timeout: float) -> dict:
    """Runs this file as a worker in a fresh interpreter; its JSON result, or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"error": f"timed out after {timeout:.0f} s", "stderr": err[-3000:]}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    return {"error": f"worker exited with code {proc.returncode} and no result", "stderr": proc.stderr[-3000:]}


def measure(args, worker_args: list[str]) -> dict:
    """One worker run; with --wait-quiet, each attempt waits for a quiet machine first, and a run that
    other processes disturbed (bg >= QUIET cores) is retried up to twice, keeping the least disturbed."""
    best = None
    for attempt in range(3 if args.wait_quiet > 0 else 1):
        if args.wait_quiet > 0:
            wait_until_quiet(args.wait_quiet, QUIET)
        res = run_worker(worker_args, args.timeout)
        res["attempts"] = attempt + 1
        if "error" in res:
            return res
        bg = res.get("background_cores")
        if best is None or (bg is not None and bg < best.get("background_cores", float("inf"))):
            best = res
        if bg is None or bg < QUIET:
            break
    return best


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _spread(values: list[float], digits: int = 0) -> str:
    return f"{_fmt(min(values), digits)}-{_fmt(max(values), digits)}" if len(values) > 1 else "-"


def benchmark(args, frameworks: list[str], variants: list[str]) -> dict:
    step_mflop = flops_per_image()[1] / 1e6
    missing = [f for f in frameworks if not installed(f)]
    present = [f for f in frameworks if f not in missing]
    for f in missing:
        print(f"{FRAMEWORKS[f][1]}: not installed (module {FRAMEWORKS[f][0]!r} not found), skipped")
    print(f"\n{args.rounds} rounds x {len(args.batch)} batch sizes x {len(variants)} variants x "
          f"{len(present)} frameworks, one fresh process each; {args.warmup} warm-up steps, then up to "
          f"{args.steps} timed steps (at least {min(args.steps, MIN_STEPS)}, --seconds {args.seconds:g}); "
          f"'bg' = cores kept busy by other processes during the timed steps")
    runs, bounds = [], {}
    for r in range(args.rounds):
        for batch in args.batch:  # re-measured every round, the best kept: a quiet moment is enough
            if args.wait_quiet > 0:
                wait_until_quiet(args.wait_quiet, QUIET)
            bounds[batch] = matmul_bound(batch, best=bounds.get(batch))
        shift = r % max(len(present), 1)
        order = present[shift:] + present[:shift]  # rotate who goes first
        for batch in args.batch:
            for variant in variants:
                for fw in order:
                    res = measure(args, ["--worker", fw, "--variant", variant, "--batch", str(batch),
                                         "--warmup", str(args.warmup), "--steps", str(args.steps),
                                         "--seconds", str(args.seconds)])
                    res.update(framework=fw, variant=variant, batch=batch, round=r + 1)
                    runs.append(res)
                    head = f"  round {r + 1}/{args.rounds}  {variant:6} b{batch:<4} {FRAMEWORKS[fw][1]:24}"
                    if "error" in res:
                        print(f"{head} FAILED: {res['error']}", flush=True)
                        continue
                    bg = res.get("background_cores")
                    print(f"{head} {_fmt(res['img_s']):>7} img/s  ({res['median_ms']:.1f} ms, IQR "
                          f"{res['p25_ms']:.1f}-{res['p75_ms']:.1f}, {res['steps']} steps)  peak RSS "
                          f"{res['rss_peak_kb'] / 1024:.0f} MB  loss {res['loss_first']:.3f}->{res['loss_last']:.3f}"
                          + (f"  bg {bg:.2f}" if bg is not None else ""), flush=True)
    print()
    for batch in args.batch:
        print(f"matmul bound at batch {batch}: {bounds[batch]['total_ms']:.2f} ms of NumPy float32 matmuls per "
              f"step (best of {args.rounds} rounds) = {_fmt(bounds[batch]['img_s'])} img/s")
    summary = summarise(runs, present, variants, args.batch, bounds, step_mflop, args.base)
    print_summary(summary, runs, missing, step_mflop)
    return {"bounds": bounds, "runs": runs, "summary": summary, "not_installed": missing}


def _quiet(run: dict) -> bool:
    bg = run.get("background_cores")
    return bg is None or bg < QUIET


def _usable(by_round: dict) -> tuple[dict, bool]:
    """The undisturbed runs (bg < QUIET) if there are any, else all of them; and whether they are quiet."""
    quiet = {k: r for k, r in by_round.items() if _quiet(r)}
    return (quiet, True) if quiet else (by_round, False)


def summarise(runs, frameworks, variants, batches, bounds, step_mflop, base="tinygrad_cnn") -> list[dict]:
    """Per batch, variant and framework: medians over the undisturbed rounds (all rounds if none was);
    ratios over the rounds where both tinygrad_cnn and the peer were undisturbed (else all rounds)."""
    rows = []
    for batch in batches:
        for variant in variants:
            ok = defaultdict(dict)  # framework -> round -> run
            for run in runs:
                if run["batch"] == batch and run["variant"] == variant and "error" not in run:
                    ok[run["framework"]][run["round"]] = run
            tc_runs = ok.get(base, {})
            for fw in frameworks:
                if not ok.get(fw):
                    rows.append({"batch": batch, "variant": variant, "framework": fw, "failed": True})
                    continue
                usable, quiet = _usable(ok[fw])
                done = list(usable.values())
                img_s = [r["img_s"] for r in done]
                median = float(np.median(img_s))
                row = {"batch": batch, "variant": variant, "framework": fw, "rounds": len(done),
                       "rounds_total": len(ok[fw]), "quiet": quiet,
                       "img_s": median, "img_s_min": min(img_s), "img_s_max": max(img_s),
                       "ms": float(np.median([r["median_ms"] for r in done])),
                       "step_iqr_pct": float(np.median([(r["p75_ms"] - r["p25_ms"]) / r["median_ms"] * 100
                                                        for r in done])),
                       "gflops": median * step_mflop / 1e3, "bound_fraction": median / bounds[batch]["img_s"],
                       "rss_peak_mb": float(np.median([r["rss_peak_kb"] for r in done])) / 1024,
                       "background_cores": [r.get("background_cores") for r in done],
                       "rss_step_mb": float(np.median([r["rss_peak_kb"] - r["rss_setup_kb"] for r in done])) / 1024,
                       "version": done[0]["info"].get("version"), "threads": done[0]["info"].get("threads"),
                       "blas_threads": done[0]["info"].get("blas_threads"),
                       "python_threads": done[0]["info"].get("python_threads")}
                pairs = [k for k in ok[fw] if k in tc_runs]
                quiet_pairs = [k for k in pairs if _quiet(ok[fw][k]) and _quiet(tc_runs[k])]
                ratios = [tc_runs[k]["img_s"] / ok[fw][k]["img_s"] for k in (quiet_pairs or pairs)]
                if fw != base and ratios:
                    row.update(ratio=float(np.median(ratios)), ratio_min=min(ratios), ratio_max=max(ratios),
                               ratio_rounds=len(ratios), ratio_quiet=bool(quiet_pairs))
                rows.append(row)
    return rows


def _max_bg(row: dict) -> str:
    loads = [b for b in row.get("background_cores", []) if b is not None]
    return f"{max(loads):.2f}" if loads else "-"


def _rounds(row: dict) -> str:
    """``used/total`` rounds, starred when no undisturbed round existed and all were used."""
    return f"{row['rounds']}/{row['rounds_total']}" + ("" if row["quiet"] else "*")


def print_summary(summary, runs, missing, step_mflop) -> None:
    print(f"\nimg/s: median over the undisturbed rounds (bg < {QUIET}; 'rounds' = used/run, * = none was "
          f"undisturbed, all used) and their min-max;\nstep-time IQR as % of the median step; "
          f"GFLOP/s at {step_mflop:.2f} MFLOP per image;\nRSS: the worker's peak (+ its growth over the RSS just "
          f"before the first step); tinygrad_cnn / this (--base): median of the per-round ratios (their range) and "
          f"how many rounds")
    header = (f"{'batch':>5} {'variant':7} {'framework':28} {'img/s':>7} {'(min-max)':>15} {'ms/step':>8} "
              f"{'IQR %':>6} {'GFLOP/s':>8} {'bound %':>8} {'RSS MB':>13} {'tinygrad_cnn / this':>26} "
              f"{'rounds':>6}")
    print(header)
    print("-" * len(header))
    for row in summary:
        fw = row["framework"]
        label = FRAMEWORKS[fw][1] + (f" {row['version'].split('+')[0]}" if row.get("version") and fw != "tinygrad_cnn"
                                     else "")
        if row.get("failed"):
            print(f"{row['batch']:>5} {row['variant']:7} {label:28} failed (see below)")
            continue
        ratio = (f"{row['ratio']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) {row['ratio_rounds']}"
                 + ("" if row["ratio_quiet"] else "*") if "ratio" in row else "")
        print(f"{row['batch']:>5} {row['variant']:7} {label:28} {_fmt(row['img_s']):>7} "
              f"{'(' + _spread([row['img_s_min'], row['img_s_max']]) + ')':>15} {row['ms']:8.1f} "
              f"{row['step_iqr_pct']:6.1f} {row['gflops']:8.1f} {row['bound_fraction'] * 100:7.1f}% "
              f"{row['rss_peak_mb']:6.0f} (+{row['rss_step_mb']:.0f}) {ratio:>26} {_rounds(row):>6}")
    threads = {}
    for row in summary:
        if not row.get("failed"):
            threads[row["framework"]] = (row.get("threads"), row.get("blas_threads"), row.get("python_threads"))
    for fw, (t, blas, py) in threads.items():
        print(f"threads, {FRAMEWORKS[fw][1]}: " + ", ".join(
            ([f"intra-op {t}"] if t else []) + ([f"BLAS {', '.join(blas)}"] if blas else [])
            + [f"Python threads alive after the steps {py}"]))
    for fw in missing:
        print(f"{FRAMEWORKS[fw][1]}: not installed")
    loads = [run["background_cores"] for run in runs if run.get("background_cores") is not None]
    if loads and max(loads) >= QUIET:
        print(f"other processes kept {min(loads):.2f}-{max(loads):.2f} of the {os.cpu_count()} cores busy during "
              f"the timed steps ('bg'): runs with bg above {QUIET} are slowed (PyTorch's OpenMP threads and "
              f"OpenBLAS up to 10x); rerun on a quiet machine, or with --wait-quiet 30 and more --rounds")
    for run in runs:
        if "error" in run:
            print(f"\n{FRAMEWORKS[run['framework']][1]} {run['variant']} batch {run['batch']} round {run['round']} "
                  f"failed: {run['error']}\n--- stderr (tail) ---\n{run.get('stderr', '').strip()}")


def overhead(args) -> dict:
    frameworks = [f for f in ("tinygrad_cnn", "torch") if f in args.frameworks]
    missing = [f for f in frameworks if not installed(f)]
    present = [f for f in frameworks if f not in missing]
    results = defaultdict(list)
    for _ in range(args.rounds):
        for fw in present:
            res = measure(args, ["--worker", fw, "--task", "overhead", "--chain-ops", str(args.chain_ops),
                                 "--repeat", str(args.repeat)])
            if "error" in res:
                print(f"{FRAMEWORKS[fw][1]} overhead worker failed: {res['error']}\n{res.get('stderr', '')}")
                continue
            results[fw].append(res)
    print(f"\nper-op overhead: a chain of {args.chain_ops} elementwise ops (y*1.0001, y+1e-4 alternating) on a "
          f"(4,) float32 tensor, then sum and backward; median of {args.repeat} repeats per process, median "
          f"of {args.rounds} processes")
    print(f"{'framework':28} {'forward us/op':>14} {'backward us/op':>15} {'total us/op':>12} {'bg max':>7}")
    summary = {}
    for fw, rs in results.items():
        row = {k: float(np.median([r[k] for r in rs])) for k in
               ("forward_us_per_op", "backward_us_per_op", "total_us_per_op")}
        row["version"] = rs[0]["info"].get("version")
        row["background_cores"] = [r.get("background_cores") for r in rs]
        summary[fw] = row
        print(f"{FRAMEWORKS[fw][1] + ' ' + str(row['version']).split('+')[0]:28} {row['forward_us_per_op']:14.2f} "
              f"{row['backward_us_per_op']:15.2f} {row['total_us_per_op']:12.2f} {_max_bg(row):>7}")
    if "tinygrad_cnn" in summary and "torch" in summary:
        print(f"tinygrad_cnn / PyTorch per-op time: "
              f"{summary['tinygrad_cnn']['total_us_per_op'] / summary['torch']['total_us_per_op']:.2f}x")
    for fw in missing:
        print(f"{FRAMEWORKS[fw][1]}: not installed")
    return {"overhead": summary, "overhead_runs": results}


def profile(args, variant: str, batch: int) -> dict:
    """Time per op type of ``--profile-steps`` tinygrad_cnn steps (after warm-up), in this process."""
    from tinygrad_cnn.autograd import record_profile

    step, _ = tinygrad_step(variant == "ref-bn", make_batches(batch), jit=args.jit)
    for _ in range(args.warmup):
        step()
    n = args.profile_steps
    table = defaultdict(lambda: [0, 0.0])

    def record(op, phase, seconds, ctx):
        entry = table[(op.__name__, phase)]
        entry[0] += 1
        entry[1] += seconds

    timings = {}
    background = BackgroundLoad().start()
    with record_profile(record):
        start = time.perf_counter()
        for _ in range(n):
            step(timings)
        wall = (time.perf_counter() - start) / n
    bg = background.cores()
    rows = sorted(((op, phase, count / n, total / n) for (op, phase), (count, total) in table.items()),
                  key=lambda r: -r[3])
    in_ops = {ph: sum(r[3] for r in rows if r[1] == ph) for ph in ("forward", "backward")}
    vg, update = timings["value_and_grad"] / n, timings["update"] / n
    outside = vg - in_ops["forward"] - in_ops["backward"]
    print(f"\ntinygrad_cnn{' tc.jit' if args.jit else ''} profile: {variant}, batch {batch}, float32; "
          f"{'one step' if n == 1 else f'mean of {n} steps'}"
          f" after {args.warmup} warm-up steps; code: git {git_state()}")
    print(f"step wall time {wall * 1e3:.1f} ms ({_fmt(batch / wall)} img/s, with the profiler's own small cost)"
          + (f"; other processes kept {bg:.2f} cores busy meanwhile" if bg is not None else ""))
    print(f"{'op':16} {'phase':9} {'count':>5} {'total ms':>9} {'% of step':>10}")
    for op, phase, count, total in rows:
        print(f"{op:16} {phase:9} {count:5.0f} {total * 1e3:9.2f} {total / wall * 100:9.1f}%")
    print(f"{'inside ops':26} {sum(in_ops.values()) * 1e3:15.2f} {sum(in_ops.values()) / wall * 100:9.1f}%"
          f"   (forward {in_ops['forward'] * 1e3:.2f} ms, backward {in_ops['backward'] * 1e3:.2f} ms)")
    print(f"{'engine + Python overhead':26} {outside * 1e3:15.2f} {outside / wall * 100:9.1f}%"
          + ("   (the replay outside the ops: gradient sums and copies, instruction dispatch)" if args.jit else
             "   (value_and_grad outside any op: graph, topological order, un-broadcast, accumulation)"))
    print(f"{'optimizer update (sgd)':26} {update * 1e3:15.2f} {update / wall * 100:9.1f}%")
    return {"variant": variant, "batch": batch, "steps": n, "wall_ms": wall * 1e3, "update_ms": update * 1e3,
            "background_cores": bg,
            "outside_ops_ms": outside * 1e3, "ops": [{"op": op, "phase": ph, "count": c, "ms": t * 1e3}
                                                     for op, ph, c, t in rows]}


# ------------------------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["ref", "ref-bn", "both"], default="both")
    p.add_argument("--batch", type=int, nargs="+", default=[128], help="one or more batch sizes (default 128)")
    p.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS),
                   help="default: all; missing ones are reported as not installed")
    p.add_argument("--base", choices=[f for f in FRAMEWORKS if f.startswith("tinygrad_cnn")], default="tinygrad_cnn",
                   help="the tinygrad_cnn configuration the ratios are computed for (default tinygrad_cnn)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per process (default 30)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help=f"stop timing after this many seconds once {MIN_STEPS} steps are done (default 3)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a worker is given up")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help=f"before each worker, wait up to S seconds for other processes to use < {QUIET} core; "
                   "rerun (twice at most) a worker that was disturbed anyway")
    p.add_argument("--json", metavar="OUT", help="save machine info, every run and the summary as JSON")
    p.add_argument("--profile", action="store_true", help="time per op of one tinygrad_cnn step, in process")
    p.add_argument("--profile-steps", type=int, default=1, help="with --profile: average over this many steps")
    p.add_argument("--jit", action="store_true", help="with --profile: profile the tc.jit replay of the step")
    p.add_argument("--overhead", action="store_true", help="per-op overhead of a long chain on tiny arrays")
    p.add_argument("--chain-ops", type=int, default=1000, help="with --overhead: chain length (default 1000)")
    p.add_argument("--repeat", type=int, default=20, help="with --overhead: repeats per process (default 20)")
    p.add_argument("--worker", choices=list(FRAMEWORKS), help=argparse.SUPPRESS)
    p.add_argument("--task", choices=["step", "overhead"], default="step", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:  # inside a measurement subprocess: one result, as the last line of stdout
        if args.task == "step":
            args.variant, args.batch = ("ref" if args.variant == "both" else args.variant), args.batch[0]
            result = worker_step(args)
        else:
            result = worker_overhead(args)
        print(RESULT + json.dumps(result), flush=True)
        return
    info = machine_info()
    print_machine(info)
    forward, step = flops_per_image()
    print(f"work per image: forward {forward / 1e6:.3f} MFLOP (2 per multiply-add of conv/linear layers), "
          f"step {step / 1e6:.2f} MFLOP (3x forward)")
    variants = ["ref", "ref-bn"] if args.variant == "both" else [args.variant]
    out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k not in ("worker", "task")},
           "mflop_per_image": step / 1e6}
    if args.profile:
        out["profile"] = [profile(args, v, b) for b in args.batch for v in variants]
    if args.overhead:
        out.update(overhead(args))
    if not (args.profile or args.overhead):
        out.update(benchmark(args, args.frameworks, variants))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
