"""Time to accuracy on Fashion-MNIST: the CLI's training recipe in tinygrad_cnn (tc.jit) and in PyTorch eager.

    python benchmarks/time_to_accuracy.py                                  # both frameworks, the CLI's 30 epochs
    python benchmarks/time_to_accuracy.py --json tta.json --plot docs/images/time_to_accuracy.png   # for real
    python benchmarks/time_to_accuracy.py --epochs 1 --limit 2000         # a quick check that everything runs
    python benchmarks/time_to_accuracy.py --one-after-the-other            # each framework's whole run in turn
    python benchmarks/time_to_accuracy.py --frameworks tinygrad_cnn --epochs 3 --threads 1
    python benchmarks/time_to_accuracy.py --from-json tta.json --plot tta.png --target 0.92   # no training

The recipe is what ``python -m tinygrad_cnn train --dataset fashion-mnist`` does by default, read from the
CLI itself (``cli.DEFAULTS``, its parser's defaults, ``cli._optimizer``): the model cnn-bn (conv 3x3 1->32,
batch_norm, relu, max_pool 2; conv 3x3 32->64, batch_norm, relu, max_pool 2; flatten 1600, linear 128, relu,
dropout 0.25, linear 10; mean cross-entropy), images /255 and standardised with the training set's mean
and std, batches of 128 reshuffled every epoch, each batch shifted by up to 1 pixel (zero fill) and
flipped left-right with probability 1/2, Adam with decoupled weight decay (AdamW: lr 2e-3, betas 0.9 /
0.999, eps 1e-8, weight decay 1e-4 on every parameter) with the learning rate on a cosine from 2e-3 to 0
over all the run's steps (set before every step), seed 0, 30 epochs.

Method. One NumPy generator, seeded as the CLI seeds it, draws everything random, in the order
``tc.training.fit`` draws it: tinygrad_cnn's initial weights (``models.get("cnn-bn").init``), then per
epoch the batch order (``tc.data.batches``), and per step the batch's augmentation
(``tc.training.random_shift_flip``) and the dropout mask (B x 128 float32 uniforms, kept where >= 0.25,
scaled by 1/0.75, as ``tc.dropout`` draws it). tinygrad_cnn trains with ``tc.training.fit`` itself, jit on,
as the CLI does. The PyTorch worker replays the same draws with the same package functions, so both
frameworks see byte-identical batches and masks; each worker reports its generator's state at every
epoch's end, and the benchmark fails if they differ. PyTorch trains ``peers.torch_cnn`` (the model of
``benchmarks/peers.py``) holding tinygrad_cnn's initial weights (conv weights as they are, linear
weights transposed: ours are (in, out), torch's (out, in); batch-norm gamma, beta and running
statistics, eps and momentum read from ``tc.batch_norm``'s defaults) with ``torch.optim.AdamW`` of the
same hyperparameters, its learning rate set before each step from the package's own cosine schedule;
dropout is the product with the NumPy mask. Per step both also do what ``fit`` does besides the step:
read the loss as a Python float (finite check, running mean) and count the correct predictions.

Before training, a short worker per framework runs --check-steps steps of the recipe (tinygrad_cnn's
through ``fit``): the first step's losses (same weights, same batch, same mask) must agree to 1e-5
(relative), and the mean losses over the check steps, which the optimizer and its schedule shape, to
1e-4; else the benchmark stops with exit status 1 before any timing (measured here: 2.4e-7 and 1.6e-7
for a loss of 3.4). Then each framework trains in its own fresh process, the two **taking turns epoch
by epoch**: one trains and evaluates an epoch while the other waits (blocked on its stdin, using no
CPU), then the other, the first mover alternating. This machine's speed drifts by 25-30 % over tens of
minutes, and a run of one framework after the other measured that drift instead (PyTorch's epochs
went from 31-37 s in its first half to 23-28 s in its second; --one-after-the-other does that still).
Both set up (data, model) before either trains; a worker's clock stops while it waits. Its clock
starts right before the first step (after loading the data and building the model, which are not
counted; tc.jit's traces are, in epoch 1). After every epoch the whole test set is evaluated (eval mode:
batch-norm running statistics, no dropout, batches of 512, no gradient: ``tc.training.accuracy``, and
softmax + argmax in PyTorch), timed separately. The data: --data DIR, else wherever the CLI finds it
(docs/data.md; Debian's ``/usr/share/datasets/fashion-mnist`` among the places).

Threads. tinygrad_cnn: its batch-parallel kernels use ``TINYGRAD_CNN_THREADS`` (set by --threads; by
default unset: the cores this process may use) and ``fit`` holds NumPy's BLAS at one thread while it
runs (see tinygrad_cnn/parallel.py). PyTorch: ``torch.set_num_threads(--threads)``, default the usable
cores (its intra-op pool for MKL/oneDNN/OpenMP kernels); inter-op threads at its default. Both numbers
are reported.

Reported, per framework and epoch: training and evaluation wall time, their running sums and the
wall time since the first step, mean training loss and accuracy over the epoch's steps, test accuracy,
and the cores other processes kept busy meanwhile (bg, from /proc/stat; above 0.25 a run is slowed).
Per framework: the first epoch's training time (with the traces) and the median of the others, the
wall time (and the training time alone) at the end of the first epoch whose test accuracy reached
--target (default 0.925), and the final and best accuracy; then tinygrad_cnn / PyTorch of the times to
the target, the total and the per-epoch times. --json saves the machine, the recipe, the check and
every epoch; --plot draws test accuracy against wall-clock seconds, one curve per framework, the target
as a horizontal line; --from-json redoes the summary and the plot from a saved file without training.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_step import QUIET, RESULT, BackgroundLoad, installed, machine_info, max_rss_kb, print_machine  # noqa: E402

DATASET = "fashion-mnist"
FRAMEWORKS = {"tinygrad_cnn": "tinygrad_cnn tc.jit", "torch": "PyTorch eager"}  # name -> label
DEFAULT_TARGET = 0.925
FIRST_STEP_RTOL = 1e-5   # first-step losses of the two frameworks must agree this closely
CHECK_MEAN_RTOL = 1e-4   # and the mean loss over the check steps, which the optimizer shapes, this closely
EVAL_BATCH = 512         # what tc.training.accuracy uses


# ------------------------------------------------------------------------------------------- the recipe

@dataclass
class Run:
    """Everything one worker trains with: the CLI's options, the data, the initial weights, the generator
    (already past the init draws, as in the CLI) and the optimizer ``train`` would build."""

    options: dict
    limit: int | None
    seed: int
    flip: bool
    task: object          # tasks.Task: train = (x (N, 1, 28, 28) float32, y (N,) int64), test likewise
    model: object         # tc.models.Model
    params: dict
    state: dict
    rng: np.random.Generator
    optimizer: object     # tc.optim.Optimizer (adam with a cosine schedule)
    augment: object       # x, rng -> x, or None

    def recipe(self) -> dict:
        """The recipe as JSON-friendly values."""
        hyper = {k: v for k, v in self.optimizer.hyperparams.items() if k != "lr"}
        return {"dataset": DATASET, "model": self.model.name, **self.options, "flip": self.flip, "seed": self.seed,
                "limit": self.limit,
                "optimizer": self.optimizer.name, **hyper, "schedule": "cosine per step, to 0",
                "steps": self.options["epochs"] * self.steps_per_epoch(), "train_samples": len(self.task.train[1]),
                "test_samples": len(self.task.test[1])}

    def steps_per_epoch(self) -> int:
        return -(-len(self.task.train[1]) // self.options["batch_size"])


def prepare_run(epochs: int, data: str | None, limit: int | None) -> Run:
    """What ``train --dataset fashion-mnist --epochs E [--limit N] [--data DIR]`` sets up before its first step."""
    from tinygrad_cnn import cli, models, tasks, training

    argv = ["train", "--dataset", DATASET, "--epochs", str(epochs)]
    argv += ["--limit", str(limit)] if limit else []
    args = cli.build_parser().parse_args(argv)
    if (args.optimizer, args.schedule) != ("adam", "cosine"):
        raise RuntimeError(f"time_to_accuracy.py reproduces adam + cosine in PyTorch; the CLI's default is now "
                           f"{args.optimizer} + {args.schedule}")
    options = cli._options(args)
    task = tasks.prepare(DATASET, seed=args.seed, data_path=data, limit=args.limit)
    model = models.get(args.model or tasks.DEFAULT_MODEL[DATASET])
    rng = np.random.default_rng(args.seed)
    params, state = model.init(rng)
    steps = options["epochs"] * -(-len(task.train[1]) // options["batch_size"])
    optimizer = cli._optimizer(args, options["lr"], steps, options["weight_decay"])
    augment = (functools.partial(training.random_shift_flip, shift=options["shift"], flip=args.flip)
               if options["augment"] else None)
    return Run(options, args.limit, args.seed, args.flip, task, model, params, state, rng, optimizer, augment)


def dropout_mask(rng: np.random.Generator, shape: tuple[int, int], p: float) -> np.ndarray | None:
    """The (B, H) float32 mask ``tc.dropout`` draws from ``rng`` for a C-ordered input of ``shape``:
    uniforms, kept where >= p, scaled by 1 / (1 - p). None when p is 0 (nothing drawn)."""
    if p == 0:
        return None
    if p == 1:
        return np.zeros(shape, np.float32)
    keep = rng.random(shape, dtype=np.float32) >= np.float32(p)
    return np.multiply(keep, np.float32(1 / (1 - p)))


def epoch_batches(run: Run):
    """One epoch of ``(x (B, 1, 28, 28) float32, y (B,) int64, dropout mask (B, 128) float32 or None)``,
    drawn from ``run.rng`` in fit's order: the permutation, then per batch augmentation and mask."""
    from tinygrad_cnn.data import batches

    hidden = run.params["fc1"]["w"].shape[1]
    x, y = run.task.train
    for xb, yb in batches(x, y, run.options["batch_size"], shuffle=True, rng=run.rng):
        if run.augment is not None:
            xb = run.augment(xb, run.rng)
        yield xb, yb, dropout_mask(run.rng, (len(yb), hidden), run.options["dropout"])


def rng_digest(rng: np.random.Generator) -> str:
    """A short fingerprint of the generator's state: equal in two workers = the same draws were made."""
    return hashlib.sha1(json.dumps(rng.bit_generator.state, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ timing

TURN = "TURN-DONE"  # a worker taking turns prints this after each epoch, then waits for a line on stdin


class Clock:
    """Per-epoch wall times of one run: ``start()`` before the first step, ``trained()`` when an epoch's
    steps are done, ``evaluated(**values)`` after its evaluation (appends the epoch's row and prints it).
    With ``turns``, the run waits for its turn (a line on stdin) before each epoch and hands the turn
    back after it; the time spent waiting is not counted."""

    def __init__(self, framework: str, epochs: int, turns: bool = False):
        self.framework, self.epochs, self.rows, self.turns = framework, epochs, [], turns
        self.cum_train = self.cum_eval = self.waited = 0.0

    def _wait_for_turn(self) -> None:
        if self.turns:
            start = time.perf_counter()
            if not sys.stdin.readline():
                sys.exit("the benchmark stopped giving turns")
            self.waited += time.perf_counter() - start

    def start(self) -> None:
        if self.turns:
            print(TURN, flush=True)  # set up: ready for the first turn
        self._wait_for_turn()
        self.waited = 0.0  # from here on (the first wait came before the clock started)
        self.begin = self.mark = time.perf_counter()
        self.load = BackgroundLoad().start()

    def trained(self) -> None:
        now = time.perf_counter()
        self.train_s, self.mark = now - self.mark, now

    def evaluated(self, **values) -> None:
        now = time.perf_counter()
        eval_s = now - self.mark
        self.cum_train += self.train_s
        self.cum_eval += eval_s
        row = {"epoch": len(self.rows) + 1, "train_s": self.train_s, "eval_s": eval_s, "cum_train_s": self.cum_train,
               "cum_eval_s": self.cum_eval, "wall_s": now - self.begin - self.waited,
               "background_cores": self.load.cores(), **values}
        self.rows.append(row)
        print(f"{FRAMEWORKS[self.framework]} epoch {row['epoch']}/{self.epochs}: train {row['train_s']:.1f} s, "
              f"eval {eval_s:.1f} s, wall {row['wall_s']:.1f} s, train loss {row['train_loss']:.4f}, "
              f"test accuracy {row['test_accuracy']:.4f}", file=sys.stderr, flush=True)
        if self.turns and len(self.rows) < self.epochs:
            print(TURN, flush=True)
            self._wait_for_turn()
        self.load = BackgroundLoad().start()
        self.mark = time.perf_counter()


# ------------------------------------------------------------------------------------------ tinygrad_cnn

def tinygrad_fit(run: Run, epochs: int, **kwargs):
    """``tc.training.fit`` as the CLI calls it (jit on), without a test set (evaluated by the callers)."""
    from tinygrad_cnn import training

    return training.fit(run.model, run.params, run.state, run.optimizer, run.task.train, None, epochs=epochs,
                        batch_size=run.options["batch_size"], rng=run.rng, augment=run.augment,
                        dropout_rate=run.options["dropout"], jit=True, **kwargs)


def tinygrad_info() -> dict:
    import tinygrad_cnn as tc
    from tinygrad_cnn.parallel import num_threads

    setting = os.environ.get("TINYGRAD_CNN_THREADS")
    return {"version": tc.__version__, "threads": num_threads(),
            "threads_setting": f"TINYGRAD_CNN_THREADS={setting}" if setting else "default (usable cores)",
            "blas_threads": "1 inside fit (blas_single_threaded)"}


def tinygrad_check(args) -> dict:
    """The recipe's first step, and its first ``--check-steps`` steps, each run by fit from a fresh start:
    the mean training loss of a one-step epoch is that step's loss."""
    losses = []
    for steps in sorted({1, args.check_steps}):
        run = prepare_run(args.epochs, args.data, args.limit)
        _, _, history = tinygrad_fit(run, 1, progress=lambda it, epoch, n=steps: itertools.islice(it, n))
        losses.append(history.train_loss[0])
    return {"first_step_loss": losses[0], "mean_loss": losses[-1], "steps": args.check_steps, "info": tinygrad_info()}


def tinygrad_train(args) -> dict:
    from tinygrad_cnn import training

    start = time.perf_counter()
    run = prepare_run(args.epochs, args.data, args.limit)
    clock = Clock("tinygrad_cnn", args.epochs, args.turns)

    def on_epoch(epoch, history, params):
        clock.trained()
        accuracy = training.accuracy(run.model, params, *run.task.test, state=run.state, batch_size=EVAL_BATCH)
        clock.evaluated(train_loss=history.train_loss[-1], train_accuracy=history.train_accuracy[-1],
                        test_accuracy=accuracy, rng=rng_digest(run.rng))

    setup_s = time.perf_counter() - start
    clock.start()
    tinygrad_fit(run, args.epochs, on_epoch=on_epoch)
    return {"framework": "tinygrad_cnn", "recipe": run.recipe(), "setup_s": setup_s, "epochs": clock.rows,
            "rss_peak_kb": max_rss_kb(), "info": tinygrad_info()}


# ------------------------------------------------------------------------------------------------ PyTorch

def _assign(torch, dst, src: np.ndarray, what: str) -> None:
    if tuple(dst.shape) != src.shape:
        raise RuntimeError(f"copying {what}: torch has shape {tuple(dst.shape)}, tinygrad_cnn {src.shape}")
    dst.copy_(torch.from_numpy(np.ascontiguousarray(src)))


def copy_weights(torch, model, params: dict, state: dict) -> None:
    """tinygrad_cnn's cnn-bn params and batch-norm state into ``peers.torch_cnn(batch_norm=True)``; batch
    norm's eps and momentum set to ``tc.batch_norm``'s defaults (the ones cnn-bn uses)."""
    from torch import nn

    from tinygrad_cnn import batch_norm

    defaults = inspect.signature(batch_norm).parameters
    convs, norms, linears = ([m for m in model if isinstance(m, kind)]
                             for kind in (nn.Conv2d, nn.BatchNorm2d, nn.Linear))
    with torch.no_grad():
        for name, conv, norm in zip(("conv1", "conv2"), convs, norms, strict=True):
            _assign(torch, conv.weight, params[name]["w"], f"{name}.w")   # (out, in, 3, 3) in both
            _assign(torch, norm.weight, params[name]["gamma"], f"{name}.gamma")
            _assign(torch, norm.bias, params[name]["beta"], f"{name}.beta")
            _assign(torch, norm.running_mean, state[name]["mean"], f"{name} running mean")
            _assign(torch, norm.running_var, state[name]["var"], f"{name} running var")
            norm.eps, norm.momentum = defaults["eps"].default, defaults["momentum"].default
        for name, linear in zip(("fc1", "fc2"), linears, strict=True):
            _assign(torch, linear.weight, params[name]["w"].T, f"{name}.w transposed")  # ours (in, out)
            _assign(torch, linear.bias, params[name]["b"], f"{name}.b")


def torch_trainer(run: Run, threads: int):
    """``(step, evaluate, info)`` for PyTorch: ``step(x, y, mask) -> (loss, correct)`` trains on one batch
    of ``epoch_batches``, ``evaluate(x, y) -> accuracy`` in eval mode."""
    import torch
    import torch.nn.functional as F

    import peers

    torch.set_num_threads(threads)
    if run.optimizer.name != "adam" or "gamma" not in run.params["conv1"]:
        raise RuntimeError("torch_trainer reproduces cnn-bn trained with adam")
    model = peers.torch_cnn(batch_norm=True)
    copy_weights(torch, model, run.params, run.state)
    model.train()
    body, head = model[:-1], model[-1]  # dropout sits between them
    hyper = run.optimizer.hyperparams
    schedule = hyper["lr"]  # the package's cosine schedule: step -> lr
    opt = torch.optim.AdamW(model.parameters(), lr=schedule(0), betas=(hyper["b1"], hyper["b2"]), eps=hyper["eps"],
                            weight_decay=hyper["weight_decay"])
    steps = 0

    def step(xb: np.ndarray, yb: np.ndarray, mask: np.ndarray | None) -> tuple[float, int]:
        nonlocal steps
        for group in opt.param_groups:
            group["lr"] = schedule(steps)
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        opt.zero_grad(set_to_none=True)
        h = body(x)
        logits = head(h if mask is None else h * torch.from_numpy(mask))
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        steps += 1
        return loss.item(), int((logits.argmax(1) == y).sum())

    def evaluate(x: np.ndarray, y: np.ndarray) -> float:
        model.eval()
        with torch.no_grad():
            predicted = [torch.softmax(model(torch.from_numpy(x[s:s + EVAL_BATCH])), 1).argmax(1)
                         for s in range(0, len(x), EVAL_BATCH)]
        model.train()
        return float(np.mean(torch.cat(predicted).numpy() == y))

    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "threads_setting": f"torch.set_num_threads({threads})",
            "interop_threads": torch.get_num_interop_threads()}
    return step, evaluate, info


def torch_check(args) -> dict:
    run = prepare_run(args.epochs, args.data, args.limit)
    step, _, info = torch_trainer(run, args.threads or usable_cores())
    losses, sizes = [], []
    for xb, yb, mask in itertools.islice(epoch_batches(run), args.check_steps):
        losses.append(step(xb, yb, mask)[0])
        sizes.append(len(yb))
    mean = sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes)  # as fit's running mean
    return {"first_step_loss": losses[0], "mean_loss": mean, "steps": args.check_steps, "info": info}


def torch_train(args) -> dict:
    start = time.perf_counter()
    run = prepare_run(args.epochs, args.data, args.limit)
    step, evaluate, info = torch_trainer(run, args.threads or usable_cores())
    clock = Clock("torch", args.epochs, args.turns)
    setup_s = time.perf_counter() - start
    clock.start()
    for _ in range(args.epochs):
        total_loss, correct, seen = 0.0, 0, 0
        for xb, yb, mask in epoch_batches(run):
            loss, right = step(xb, yb, mask)
            if not np.isfinite(loss):
                raise FloatingPointError(f"PyTorch: the loss became {loss}")
            total_loss, correct, seen = total_loss + loss * len(yb), correct + right, seen + len(yb)
        clock.trained()
        accuracy = evaluate(*run.task.test)
        clock.evaluated(train_loss=total_loss / seen, train_accuracy=correct / seen, test_accuracy=accuracy,
                        rng=rng_digest(run.rng))
    return {"framework": "torch", "recipe": run.recipe(), "setup_s": setup_s, "epochs": clock.rows,
            "rss_peak_kb": max_rss_kb(), "info": info}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ------------------------------------------------------------------------------------------ orchestration

WORKERS = {("tinygrad_cnn", "check"): tinygrad_check, ("tinygrad_cnn", "train"): tinygrad_train,
           ("torch", "check"): torch_check, ("torch", "train"): torch_train}


def worker_command(framework: str, task: str, args, turns: bool = False) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--task", task,
           "--epochs", str(args.epochs), "--check-steps", str(args.check_steps)] + (["--turns"] if turns else [])
    for flag, value in (("--limit", args.limit), ("--data", args.data), ("--threads", args.threads)):
        cmd += [flag, str(value)] if value else []
    return cmd


def _result(stdout: str, returncode) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    return {"error": f"worker exited with code {returncode} and no result (its stderr is above)"}


def run_worker(framework: str, task: str, args) -> dict:
    """This file as a worker in a fresh interpreter; its JSON result, or ``{"error": ...}``. The worker's
    stderr (its progress, and any traceback) goes straight to ours."""
    try:
        proc = subprocess.run(worker_command(framework, task, args), stdout=subprocess.PIPE, text=True,
                              timeout=args.timeout or None)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    return _result(proc.stdout, proc.returncode)


def train_taking_turns(frameworks: list[str], args) -> dict:
    """Training workers for ``frameworks``, started together, each training one epoch per turn while
    the others wait; the first mover rotates every epoch. Their results, as ``run_worker`` gives them."""
    procs = {fw: subprocess.Popen(worker_command(fw, "train", args, turns=True), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for fw in frameworks}
    outputs, failed = {fw: [] for fw in frameworks}, set()

    def until_turn(fw: str) -> None:
        """Reads fw's stdout until it hands the turn back (or ends: after its last epoch, or failing)."""
        for line in procs[fw].stdout:
            outputs[fw].append(line)
            if line.strip() == TURN:
                return
        failed.add(fw)

    for fw in frameworks:  # every worker set up (data, model) before anyone trains
        until_turn(fw)
    for epoch in range(args.epochs):
        order = frameworks[epoch % len(frameworks):] + frameworks[:epoch % len(frameworks)]
        for fw in order:
            if fw not in failed:
                procs[fw].stdin.write("go\n")
                procs[fw].stdin.flush()
                until_turn(fw)
    results = {}
    for fw, proc in procs.items():
        rest, _ = proc.communicate()  # closes its stdin: a worker still waiting for a turn stops
        results[fw] = _result("".join(outputs[fw]) + rest, proc.returncode)
    return results


def check_first_steps(args, frameworks: list[str]) -> dict:
    """Runs the check workers and prints their losses; exits with status 1 unless the first steps agree."""
    print(f"\ncheck: the recipe's first {args.check_steps} steps from the same weights, batches and dropout masks")
    results = {fw: run_worker(fw, "check", args) for fw in frameworks}
    for fw, res in results.items():
        if "error" in res:
            sys.exit(f"check: the {FRAMEWORKS[fw]} worker failed: {res['error']}")
        print(f"  {FRAMEWORKS[fw]:20} first-step loss {res['first_step_loss']:.8f}   mean loss over "
              f"{res['steps']} steps {res['mean_loss']:.8f}")
    if len(results) == 2:
        ours, theirs = results["tinygrad_cnn"], results["torch"]
        diff = abs(ours["first_step_loss"] - theirs["first_step_loss"])
        mean_diff = abs(ours["mean_loss"] - theirs["mean_loss"])
        print(f"  |difference|: first step {diff:.2e} (must be <= {FIRST_STEP_RTOL:g} relative), mean over "
              f"{args.check_steps} steps {mean_diff:.2e} (<= {CHECK_MEAN_RTOL:g})")
        if not diff <= FIRST_STEP_RTOL * max(1.0, abs(theirs["first_step_loss"])):
            sys.exit("check FAILED: the first-step losses differ, so the two frameworks do not train the same "
                     "recipe (weights, batch, dropout mask, model or loss differ); no timing was run")
        if not mean_diff <= CHECK_MEAN_RTOL * max(1.0, abs(theirs["mean_loss"])):
            sys.exit("check FAILED: the first steps agree but the later ones do not: the optimizer or its "
                     "learning rate differ; no timing was run")
    return results


def compare_draws(runs: dict) -> str | None:
    """None if the workers' generators were in the same state after every epoch, else what differed."""
    if len(runs) < 2 or any("epochs" not in r for r in runs.values()):
        return None
    ours, theirs = (runs[fw]["epochs"] for fw in ("tinygrad_cnn", "torch"))
    for a, b in zip(ours, theirs):
        if a["rng"] != b["rng"]:
            return f"the generators differ after epoch {a['epoch']}: the batches or masks were not the same"
    return None


def benchmark(args) -> dict:
    missing = [fw for fw in args.frameworks if not installed(fw)]
    present = [fw for fw in args.frameworks if fw not in missing]
    for fw in missing:
        print(f"{FRAMEWORKS[fw]}: not installed (no module {fw!r}), skipped")
    if not present:
        sys.exit("nothing to run")
    check = check_first_steps(args, present)
    if len(present) > 1 and not args.one_after_the_other:
        print(f"\ntraining with {' and '.join(FRAMEWORKS[fw] for fw in present)} ({_plural(args.epochs, 'epoch')} "
              f"each, fresh processes taking turns epoch by epoch)", flush=True)
        runs = train_taking_turns(present, args)
    else:
        runs = {}
        for fw in present:
            print(f"\ntraining with {FRAMEWORKS[fw]} ({_plural(args.epochs, 'epoch')}, a fresh process)", flush=True)
            runs[fw] = run_worker(fw, "train", args)
    for fw, run in runs.items():
        if "error" in run:
            print(f"{FRAMEWORKS[fw]} FAILED: {run['error']}")
    return {"check": check, "runs": runs, "not_installed": missing}


# ------------------------------------------------------------------------------------------------ summary

def summarise(runs: dict, target: float) -> dict:
    """Per framework: times per epoch, totals, time to ``target``; and tinygrad_cnn / PyTorch ratios."""
    summary = {}
    for fw, run in runs.items():
        rows = run.get("epochs")
        if not rows:
            continue
        hit = next((r for r in rows if r["test_accuracy"] >= target), None)
        train = [r["train_s"] for r in rows]
        summary[fw] = {"epochs": len(rows), "first_epoch_train_s": train[0],
                       "median_epoch_train_s": float(np.median(train[1:] or train)),
                       "median_epoch_eval_s": float(np.median([r["eval_s"] for r in rows])),
                       "total_s": rows[-1]["wall_s"], "total_train_s": rows[-1]["cum_train_s"],
                       "total_eval_s": rows[-1]["cum_eval_s"], "final_accuracy": rows[-1]["test_accuracy"],
                       "best_accuracy": max(r["test_accuracy"] for r in rows),
                       "target_epoch": hit["epoch"] if hit else None,
                       "time_to_target_s": hit["wall_s"] if hit else None,
                       "train_time_to_target_s": hit["cum_train_s"] if hit else None,
                       "max_background_cores": max((r["background_cores"] for r in rows
                                                    if r["background_cores"] is not None), default=None)}
    if "tinygrad_cnn" in summary and "torch" in summary:
        ours, theirs = summary["tinygrad_cnn"], summary["torch"]
        ratios = {}
        for key in ("time_to_target_s", "train_time_to_target_s", "total_s", "median_epoch_train_s",
                    "median_epoch_eval_s"):
            if ours[key] is not None and theirs[key] is not None:
                ratios[key] = ours[key] / theirs[key]
        summary["ratio_tinygrad_cnn_over_torch"] = ratios
    return summary


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _label(fw: str, run: dict) -> str:
    version = run.get("info", {}).get("version", "")
    return FRAMEWORKS[fw] + (f" {version.split('+')[0]}" if fw != "tinygrad_cnn" and version else "")


def print_epochs(runs: dict) -> None:
    done = {fw: run["epochs"] for fw, run in runs.items() if run.get("epochs")}
    if not done:
        return
    print("\nper epoch: its training and evaluation s, wall s since the first step, test accuracy, bg (cores kept "
          "busy by other processes)")
    columns = f"{'train s':>7} {'eval s':>6} {'wall s':>8} {'test acc':>8} {'bg':>5}"
    print(f"{'':5} | " + " | ".join(f"{_label(fw, runs[fw]):{len(columns)}}" for fw in done))
    print(f"{'epoch':5} | " + " | ".join(columns for _ in done))
    for i in range(max(len(rows) for rows in done.values())):
        cells = []
        for rows in done.values():
            if i >= len(rows):
                cells.append(" " * len(columns))
                continue
            r, bg = rows[i], rows[i]["background_cores"]
            cells.append(f"{r['train_s']:7.1f} {r['eval_s']:6.1f} {r['wall_s']:8.1f} {r['test_accuracy']:8.4f} "
                         + (f"{bg:5.2f}" if bg is not None else f"{'-':>5}"))
        print(f"{i + 1:5} | " + " | ".join(cells))


def print_summary(runs: dict, summary: dict, target: float, check: dict | None = None) -> None:
    print_epochs(runs)
    print(f"\n{'framework':24} {'epoch 1 s':>9} {'epoch s':>8} {'eval s':>7} {'total s':>8} {'final acc':>9} "
          f"{'best acc':>8}  time to {target:g}: wall s (training s), epoch")
    for fw, run in runs.items():
        if fw not in summary:
            print(f"{_label(fw, run):24} failed: {run.get('error', 'no epochs')}")
            continue
        s = summary[fw]
        reached = (f"{s['time_to_target_s']:8.1f} ({s['train_time_to_target_s']:.1f}), epoch {s['target_epoch']}"
                   if s["target_epoch"] else f"not reached in {_plural(s['epochs'], 'epoch')}")
        print(f"{_label(fw, run):24} {s['first_epoch_train_s']:9.1f} {s['median_epoch_train_s']:8.1f} "
              f"{s['median_epoch_eval_s']:7.1f} {s['total_s']:8.1f} {s['final_accuracy']:9.4f} "
              f"{s['best_accuracy']:8.4f}  {reached}")
    print("(epoch 1 s: the first epoch's training, with tc.jit's traces; epoch s: median of the later epochs' "
          "training; eval s: median of all evaluations)")
    ratios = summary.get("ratio_tinygrad_cnn_over_torch")
    if ratios is not None:
        names = {"time_to_target_s": f"time to {target:g} (wall)", "train_time_to_target_s": "its training time",
                 "total_s": "whole run", "median_epoch_train_s": "training epoch", "median_epoch_eval_s": "evaluation"}
        print("tinygrad_cnn / PyTorch: " + ", ".join(f"{names[k]} {v:.2f}x" for k, v in ratios.items())
              + ("" if "time_to_target_s" in ratios else f"; time to {target:g}: not reached by one or both"))
    for fw, res in (check or {}).items():
        print(f"check, {FRAMEWORKS[fw]}: first-step loss {res['first_step_loss']:.8f}")
    for fw, run in runs.items():
        info = run.get("info", {})
        if info:
            print(f"threads, {FRAMEWORKS[fw]}: {info.get('threads')} ({info.get('threads_setting')})"
                  + (f", BLAS {info['blas_threads']}" if "blas_threads" in info else "")
                  + (f", inter-op {info['interop_threads']}" if "interop_threads" in info else ""))
    busy = [s["max_background_cores"] for s in summary.values() if isinstance(s, dict)
            and s.get("max_background_cores") is not None]
    if busy and max(busy) >= QUIET:
        print(f"other processes kept up to {max(busy):.2f} cores busy in some epochs (bg): those epochs were slowed; "
              f"rerun on an idle machine")


def plot(runs: dict, summary: dict, target: float, path: str, machine: dict | None) -> None:
    """Test accuracy against wall-clock seconds, one curve per framework, the target as a horizontal line."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend

    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    accuracies = [target]
    for fw, run in runs.items():
        if fw not in summary:
            continue
        rows, s = run["epochs"], summary[fw]
        accuracies += [r["test_accuracy"] for r in rows]
        reached = (f"{target:g} at {s['time_to_target_s']:.0f} s (epoch {s['target_epoch']})" if s["target_epoch"]
                   else f"{target:g} not reached")
        (line,) = ax.plot([r["wall_s"] for r in rows], [r["test_accuracy"] for r in rows], "o-", ms=3,
                          label=f"{_label(fw, run)}: {reached}")
        if s["target_epoch"]:
            ax.axvline(s["time_to_target_s"], color=line.get_color(), ls=":", lw=1)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
    recipe = next((r["recipe"] for r in runs.values() if "recipe" in r), {})
    title = (f"{recipe.get('model', 'cnn-bn')} on Fashion-MNIST, the CLI's recipe, "
             f"{_plural(recipe.get('epochs', 0), 'epoch')}"
             + (f", {recipe['train_samples']} training images" if recipe.get("limit") else ""))
    ratio = summary.get("ratio_tinygrad_cnn_over_torch", {}).get("time_to_target_s")
    if ratio is not None:
        title += f"\ntinygrad_cnn / PyTorch time to {target:g}: {ratio:.2f}x"
    if machine:
        title += f"\n{machine.get('cpu', '')}, {machine.get('usable_cores', machine.get('cpu_count'))} cores"
    ax.set(xlabel="wall-clock seconds since the first step (training + evaluation after each epoch)",
           ylabel="test accuracy", title=title)
    ax.title.set_fontsize(10)
    ax.set_xlim(0, 1.04 * max((r["wall_s"] for fw in summary if fw in runs for r in runs[fw]["epochs"]), default=1))
    ax.set_ylim(max(0.0, min(accuracies) - 0.01), min(1.0, max(accuracies) + 0.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


# ------------------------------------------------------------------------------------------------ main

def parse_args(argv=None):
    from tinygrad_cnn.cli import DEFAULTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS),
                   help="default: both; PyTorch is skipped with a message when it is not installed")
    p.add_argument("--epochs", type=int, default=DEFAULTS[DATASET]["epochs"],
                   help=f"default: the CLI's for fashion-mnist ({DEFAULTS[DATASET]['epochs']})")
    p.add_argument("--limit", type=int, metavar="N", help="train on the first N training images (quick checks)")
    p.add_argument("--data", metavar="DIR", help="where the Fashion-MNIST files are (default: where the CLI looks)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="TINYGRAD_CNN_THREADS and torch.set_num_threads (default: ours unset, torch the usable cores)")
    p.add_argument("--target", type=float, help=f"test accuracy to reach (default {DEFAULT_TARGET})")
    p.add_argument("--check-steps", type=int, default=3, help="steps of the pre-training check (default 3)")
    p.add_argument("--timeout", type=float, default=0, help="seconds before a worker is given up (default: none)")
    p.add_argument("--json", metavar="PATH", help="save the machine, recipe, check, every epoch and the summary")
    p.add_argument("--plot", metavar="PATH", help="test accuracy vs wall-clock seconds (e.g. docs/images/...png)")
    p.add_argument("--from-json", metavar="PATH", help="summary and --plot from a saved --json, without training")
    p.add_argument("--one-after-the-other", action="store_true",
                   help="train the frameworks one whole run after the other instead of taking turns by epoch")
    p.add_argument("--worker", choices=list(FRAMEWORKS), help=argparse.SUPPRESS)
    p.add_argument("--turns", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--task", choices=["check", "train"], default="train", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("epochs", "limit", "threads", "check_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:  # inside a fresh process: one result, as the last line of stdout
        if args.worker == "tinygrad_cnn" and args.threads:
            os.environ["TINYGRAD_CNN_THREADS"] = str(args.threads)  # before tinygrad_cnn's pool starts
        print(RESULT + json.dumps(WORKERS[args.worker, args.task](args)), flush=True)
        return
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        target = args.target if args.target is not None else saved.get("target", DEFAULT_TARGET)
        summary = summarise(saved["runs"], target)
        print(f"from {args.from_json} (git {saved.get('machine', {}).get('git', '?')})")
        print_summary(saved["runs"], summary, target, saved.get("check"))
        if args.plot:
            plot(saved["runs"], summary, target, args.plot, saved.get("machine"))
        return
    target = args.target if args.target is not None else DEFAULT_TARGET
    info = machine_info()
    print_machine(info)
    out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k not in ("worker", "task")},
           "target": target, **benchmark(args)}
    out["summary"] = summarise(out["runs"], target)
    print_summary(out["runs"], out["summary"], target)
    mismatch = compare_draws(out["runs"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"saved {args.json}")
    if args.plot:
        plot(out["runs"], out["summary"], target, args.plot, info)
    if mismatch:
        sys.exit(f"FAILED: {mismatch}")


if __name__ == "__main__":
    main()
