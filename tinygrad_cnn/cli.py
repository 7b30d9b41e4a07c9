"""The command line: ``python -m tinygrad_cnn train | evaluate | graph`` (also installed as ``tinygrad-cnn``).

    python -m tinygrad_cnn train                            # Ising CNN, finds Tc; no download needed
    python -m tinygrad_cnn train --dataset fashion-mnist --epochs 15
    python -m tinygrad_cnn evaluate runs/<time>                # the run directory train wrote (it prints this)
    python -m tinygrad_cnn train --resume runs/<time>          # continue a run stopped by Ctrl-C
    python -m tinygrad_cnn graph --model cnn-bn --out cnn.svg
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import shlex
import sys
import time

import numpy as np

# dataset: epochs, batch size, Adam learning rate, augmentation, dropout, weight decay
DEFAULTS = {
    "ising": dict(epochs=5, batch_size=64, lr=3e-3, augment=False, dropout=0.0, weight_decay=0.0),
    "mnist": dict(epochs=12, batch_size=128, lr=2e-3, augment=False, dropout=0.25, weight_decay=1e-4),
    "fashion-mnist": dict(epochs=30, batch_size=128, lr=2e-3, augment=True, dropout=0.25, weight_decay=1e-4,
                          shift=1),
}


def _int_at_least(minimum: int):
    """argparse type for counts (epochs, batch sizes, limits, shifts): an int >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    from .models import MODELS
    from .tasks import DATASETS

    parser = argparse.ArgumentParser(
        prog="tinygrad-cnn", description="Train, evaluate and draw convolutional networks with tinygrad_cnn.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a CNN and write params, metrics and plots",
                           description="Train a reference CNN. Writes params.npz, metrics.json, curves.png "
                                       "(and phase.png for ising) into --out. Ctrl-C stops it cleanly: it saves "
                                       "the training state as resume.npz in the run directory, prints the "
                                       "command that continues it (--resume) and exits with status 130.")
    train.add_argument("--dataset", choices=DATASETS, default="ising",
                       help="ising (generated here, no download; default), mnist or fashion-mnist")
    train.add_argument("--model", choices=list(MODELS), help="default: ising-cnn for ising, else cnn-bn")
    train.add_argument("--epochs", type=_positive_int, help="default per dataset: ising 5, mnist 12, fashion-mnist 30")
    train.add_argument("--batch-size", type=_positive_int, help="default: ising 64, else 128")
    train.add_argument("--lr", type=float, help="peak learning rate (default: ising 3e-3, else 2e-3 for adam)")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    train.add_argument("--momentum", type=float, default=0.9, help="sgd momentum (default 0.9)")
    train.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine",
                       help="learning-rate schedule over the whole run (default cosine)")
    train.add_argument("--weight-decay", type=float, help="decoupled for adam, L2 for sgd")
    train.add_argument("--dropout", type=float, help="dropout before the last layer of the image CNNs")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="random shifts and left-right flips (default on for fashion-mnist)")
    train.add_argument("--shift", type=_non_negative_int,
                       help="with --augment: largest random shift in pixels (default 1 for fashion-mnist, else 2; "
                            "0 = none)")
    train.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                       help="with --augment: random left-right flips (default on)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="output directory (default: a fresh runs/<timestamp>)")
    train.add_argument("--data", help="where the MNIST / Fashion-MNIST files are (see docs/data.md)")
    train.add_argument("--limit", type=_positive_int, metavar="N",
                       help="quick runs: train on only N training samples (the first N images; N random ising "
                            "configurations). The test set is always the whole test split, as evaluate scores it")
    train.add_argument("--lattice", type=int, default=24, help="Ising lattice size L (default 24)")
    train.add_argument("--tc-method", choices=("crossing", "confusion"), default="crossing",
                       help="crossing: where P(ordered) crosses 1/2; confusion: also learning by confusion, "
                            "which does not use the exact Tc")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--no-jit", action="store_true",
                       help="run every step eagerly instead of replaying a tc.jit plan (same results, slower)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR that Ctrl-C interrupted, with the options it was started "
                            "with, to the same result as if it had not been interrupted")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="print the test accuracy of a trained run",
                              description="Print the test accuracy of a run written by train (on the whole test "
                                          "split, the one train reports), and for ising the critical temperature.")
    evaluate.add_argument("run", nargs="?", metavar="RUN_DIR",
                          help="the run directory train wrote (runs/<timestamp>, or its --out), or its params.npz")
    evaluate.add_argument("--params", metavar="RUN_DIR", help="the same, as an option")
    evaluate.add_argument("--dataset", choices=DATASETS, help="default: the one the params were trained on")
    evaluate.add_argument("--data", help="where the MNIST / Fashion-MNIST files are")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", help="classify your own images (PNG, JPEG, .npy) with a run written by train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the most probable classes of each IMAGE, with their probabilities, under the model of\n"
                    "RUN_DIR (eval mode). Each file becomes what the model was trained on:\n\n"
                    "  pictures (PNG, JPEG or any format Pillow reads; any size, colour or grey, 8 or 16 bit,\n"
                    "  transparent or not) are turned grey, resized to the model's input by area averaging\n"
                    "  (28x28 for mnist and fashion-mnist, LxL for ising; a non-square picture is stretched)\n"
                    "  and scaled like the training data: /255, then (x - mean) / std with the training set's\n"
                    "  mean and std. MNIST and Fashion-MNIST are white objects on a black background: a\n"
                    "  picture with a light border (a dark drawing on paper) is inverted, and the output says\n"
                    "  so (--invert / --no-invert decide instead). For ising, white is spin +1, black -1.\n\n"
                    "  .npy files hold arrays of the model's input size S: shape (S, S), (N, S, S) or\n"
                    "  (N, 1, S, S) of raw pixel values 0..255 (like load_mnist's uint8 images; not /255, not\n"
                    "  standardised), or for ising spins +1/-1 (like tc.data.ising's x). Each of the N arrays\n"
                    "  is classified; arrays are never resized or inverted.")
    predict.add_argument("run", metavar="RUN_DIR", help="a run directory written by train, or its params.npz")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="pictures (PNG, JPEG, ...) or .npy arrays")
    predict.add_argument("--top", type=_positive_int, default=3, metavar="K",
                         help="how many classes to print per image (default 3)")
    predict.add_argument("--invert", action=argparse.BooleanOptionalAction, default=None,
                         help="pictures: always / never turn black into white (default for mnist and "
                              "fashion-mnist: when the picture's border is light)")
    predict.set_defaults(func=cmd_predict)

    graph = sub.add_parser("graph", help="draw one training step of a reference model with Graphviz")
    graph.add_argument("--model", choices=list(MODELS),
                       help="the model drawn. Default: ising-cnn on 24x24 Ising lattices, the model train trains "
                            "by default; cnn, cnn-bn and resnet-small take 28x28 images")
    graph.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                       help="draw cnn-bn / cnn (with or without batch norm; overrides --model's cnn or cnn-bn)")
    graph.add_argument("--batch", type=_positive_int, default=8, help="batch size of the step drawn (default 8)")
    graph.add_argument("--grads", action="store_true", help="annotate each node with its gradient norm")
    graph.add_argument("--profile", action="store_true", help="annotate each op with its time and memory")
    graph.add_argument("--out", required=True, help="FILE.svg, .png, .pdf or .dot")
    graph.set_defaults(func=cmd_graph)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, OSError, FloatingPointError, RuntimeError) as e:  # OSError: missing files, bad --out
        print(f"tinygrad-cnn {args.command}: error: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------- train

def _options(args) -> dict:
    options = dict(DEFAULTS[args.dataset])
    options.setdefault("shift", 2)
    for key in ("epochs", "batch_size", "lr", "augment", "dropout", "weight_decay", "shift"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def _optimizer(args, lr: float, steps: int, weight_decay: float):
    from . import optim

    schedule = {"cosine": lambda: optim.cosine_decay(lr, steps),
                "step": lambda: optim.step_decay(lr, max(steps // 3, 1), 0.1),
                "constant": lambda: lr}[args.schedule]()
    if args.optimizer == "sgd":
        return optim.sgd(schedule, momentum=args.momentum, nesterov=args.momentum > 0, weight_decay=weight_decay)
    return optim.adam(schedule, weight_decay=weight_decay)


def _progress(args, epochs: int, per_epoch: int, resumed_at: tuple[int, int] | None = None):
    """tqdm bars on stderr (None with --no-progress): ``per_epoch`` batches each, so they show the
    percentage and the time left; the epoch a resumed run starts in begins at its completed steps."""
    if args.no_progress:
        return None
    from tqdm import tqdm

    def bar(it, epoch):
        done = resumed_at[1] if resumed_at is not None and epoch == resumed_at[0] else 0
        return tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", total=per_epoch, initial=done, unit="batch",
                    leave=True, dynamic_ncols=True, file=sys.stderr)
    return bar


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _json_safe(value):
    """``value`` with every non-finite float (a failed Tc estimate is nan) replaced by None: strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_json(path: str, data: dict) -> None:
    from .files import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(_json_safe(data), f, indent=2, allow_nan=False)


@contextlib.contextmanager
def _data_flag():
    """Missing MNIST / Fashion-MNIST files explained in command-line terms: ``--data DIR``, not ``path=``."""
    try:
        yield
    except FileNotFoundError as e:
        if not hasattr(e, "worded_for"):  # not the loaders' explanation
            raise
        raise FileNotFoundError(e.worded_for("--data")) from None


def _command(*words: str) -> str:
    return " ".join(["python -m tinygrad_cnn", *map(shlex.quote, words)])


# what a run needs to be continued by --resume (--out is the run directory itself, --no-progress is free)
TRAIN_OPTIONS = ("dataset", "model", "epochs", "batch_size", "lr", "optimizer", "momentum", "schedule", "weight_decay",
                 "dropout", "augment", "shift", "flip", "seed", "data", "limit", "lattice", "tc_method")


def _resumed_args(args, stored: dict) -> argparse.Namespace:
    """The options the interrupted run was started with; flags given along with --resume must agree
    with them (except --data, which may point to where the files are now)."""
    defaults = build_parser().parse_args(["train"])
    for key, value in stored.items():
        given = getattr(args, key)
        if key != "data" and given != getattr(defaults, key) and given != value:
            raise ValueError(f"--resume continues {args.resume} with the options it was started with, and "
                             f"--{key.replace('_', '-')} {given} is not one of them (the run has {value}); "
                             f"leave it out, or start a new run without --resume")
    if args.out is not None and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise ValueError(f"--resume writes into {args.resume} itself; leave out --out")
    return argparse.Namespace(**{**vars(args), **stored, "out": args.resume, "data": args.data or stored["data"]})


def _interrupt_hook(optimizer):
    """For tests: ``TINYGRAD_CNN_INTERRUPT_AFTER_STEPS=k`` interrupts this process in the middle of its step
    ``k + 1``, as a Ctrl-C at the worst moment would: after the forward and backward passes (which updated
    the batch-norm statistics and drew the dropout masks) and the optimizer's update, before fit keeps it."""
    after = os.environ.get("TINYGRAD_CNN_INTERRUPT_AFTER_STEPS")
    if not after:
        return optimizer
    from .optim import Optimizer

    calls = [0]

    def update(params, grads, state):
        new = optimizer.update(params, grads, state)
        calls[0] += 1
        if calls[0] > int(after):
            raise KeyboardInterrupt
        return new

    return Optimizer(optimizer.name, optimizer.hyperparams, optimizer.init, update)


def cmd_train(args) -> int:
    from . import runs

    resumed = None
    if args.resume:
        resumed = runs.load_resume(args.resume)
        args = _resumed_args(args, resumed["args"])
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    try:
        return _train(args, out, resumed)
    except KeyboardInterrupt:  # before the first step, or a second Ctrl-C while the state was being saved
        print("\ntinygrad-cnn train: interrupted before anything new was saved", file=sys.stderr)
        if os.path.isfile(os.path.join(out, runs.RESUME)):
            print(f"resume with: {_command('train', '--resume', out)}", file=sys.stderr)
        return 130


def _train(args, out: str, resumed: dict | None) -> int:
    from . import io, models, plots, tasks, training
    from ._malloc import keep_freed_memory
    from .pytree import tree_leaves, tree_paths

    if os.environ.get("TINYGRAD_CNN_MALLOPT") != "0":
        keep_freed_memory()  # this process is ours: 1.3-1.5x faster steps (docs/performance.md)
    options = _options(args)
    epochs = options["epochs"]
    model_name = args.model or tasks.DEFAULT_MODEL[args.dataset]
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    with _data_flag():
        task = tasks.prepare(args.dataset, seed=args.seed, data_path=args.data, lattice=args.lattice,
                             limit=args.limit)
    model = models.get(model_name)
    rng = np.random.default_rng(args.seed)
    params, state = model.init(rng, **tasks.model_options(task))
    per_epoch = -(-len(task.train[1]) // options["batch_size"])
    optimizer = _interrupt_hook(_optimizer(args, options["lr"], epochs * per_epoch, options["weight_decay"]))
    print(f"training {model_name} on {args.dataset}: {len(task.train[1])} train / {len(task.test[1])} test samples, "
          f"{sum(p.size for p in _leaves(params)):,} parameters, {_plural(epochs, 'epoch')} -> {out}")
    meta = {**task.meta, "model": model_name}
    checkpoint_path, saved_epoch = os.path.join(out, "params.npz"), [0]
    opt_state = position = resumed_at = None
    if resumed is not None:
        params, state, opt_state, position = (resumed[k] for k in ("params", "state", "opt_state", "resume"))
        resumed_at = position["epoch"], position["step"]
        saved_epoch[0] = len(position["history"]["train_loss"])
        print(f"resuming from {os.path.join(out, 'resume.npz')}: " + (
            f"epoch {resumed_at[0] + 1} of {epochs}, after {resumed_at[1]} of its {per_epoch} steps"
            if resumed_at[0] < epochs else "training is done, the results are written next"))

    def checkpoint(epoch, history, current):
        """Saves each completed epoch (atomically), unless its weights are no longer finite: a run that
        diverges keeps the params.npz of the last good epoch."""
        trees = {"params": current, "state": state}
        bad = [name for name, leaf in zip(tree_paths(trees), tree_leaves(trees)) if not np.isfinite(leaf).all()]
        if bad:
            raise FloatingPointError(f"the weights became non-finite in epoch {epoch + 1} ({', '.join(bad[:3])})")
        io.save(checkpoint_path, {"params": current, "state": state, "meta": meta})
        saved_epoch[0] = epoch + 1
        print(f"epoch {epoch + 1}: train loss {history.train_loss[-1]:.4f}, test loss {history.test_loss[-1]:.4f}, "
              f"test accuracy {history.test_accuracy[-1]:.4f}")

    def interrupted(saved: dict) -> int:
        """Ctrl-C: the training state goes to resume.npz (atomically), and the way back is printed."""
        path = os.path.join(out, "resume.npz")
        io.save(path, {**saved, "meta": meta, "args": {key: getattr(args, key) for key in TRAIN_OPTIONS}})
        at = saved["resume"]
        where = (f"in epoch {at['epoch'] + 1} of {epochs} after {at['step']} of its {per_epoch} steps"
                 if at["epoch"] < epochs else "after training, before the results were written")
        print(f"\ninterrupted {where}; saved the training state to {path}", file=sys.stderr)
        print(f"resume with: {_command('train', '--resume', out)}", file=sys.stderr)
        return 130

    augment = None
    if options["augment"]:
        augment = functools.partial(training.random_shift_flip, shift=options["shift"], flip=args.flip)
    try:
        params, state, history = training.fit(
            model, params, state, optimizer, task.train, task.test, epochs=epochs,
            batch_size=options["batch_size"], rng=rng, augment=augment, dropout_rate=options["dropout"],
            progress=_progress(args, epochs, per_epoch, resumed_at), on_epoch=checkpoint,
            opt_state=opt_state, resume=position, jit=not args.no_jit)
    except training.Interrupted as stop:
        return interrupted(stop.checkpoint)
    except FloatingPointError as e:  # a NaN/inf loss or weights: say which checkpoint survives
        kept = (f"kept {checkpoint_path} from epoch {saved_epoch[0]}, the last good one" if saved_epoch[0]
                else "no epoch completed, so no checkpoint was written")
        raise FloatingPointError(f"{e}; {kept}") from e
    try:
        metrics = {"dataset": args.dataset, "model": model_name, "epochs": epochs,
                   "options": {**options, "optimizer": args.optimizer, "schedule": args.schedule, "seed": args.seed,
                               "limit": args.limit, **({"flip": args.flip} if options["augment"] else {})},
                   "train_loss": history.train_loss, "train_accuracy": history.train_accuracy,
                   "test_loss": history.test_loss, "test_accuracy": history.test_accuracy,
                   "final_test_accuracy": history.test_accuracy[-1], "training_seconds": history.seconds,
                   "images_per_second": history.steps * options["batch_size"] / max(history.seconds, 1e-9)}
        plots.plot_curves(history, os.path.join(out, "curves.png"), f"{model_name} on {args.dataset}")
        if args.dataset == "ising":
            _ising_results(args, task, model, params, state, metrics, out)
        metrics["seconds"] = time.perf_counter() - start
        _write_json(os.path.join(out, "metrics.json"), metrics)
    except KeyboardInterrupt:  # params.npz is final; keep what is needed to write the results
        return interrupted({"params": params, "state": state, "opt_state": None,
                            "resume": {"epoch": epochs, "step": 0, "history": dataclasses.asdict(history)}})
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(out, "resume.npz"))  # the run is complete: nothing left to resume
    print(f"test accuracy {metrics['final_test_accuracy']:.4f} in {metrics['seconds']:.1f} s; wrote {out}")
    print(f"evaluate with: {_command('evaluate', out)}")
    return 0


def _ising_results(args, task, model, params, state, metrics: dict, out: str) -> None:
    from . import plots, tasks

    p = tasks.p_ordered(model, params, state, task.test[0])
    tc_est = tasks.crossing_temperature(task.test_temperature, p)
    metrics.update(critical_temperature=tc_est, exact_critical_temperature=tasks.TC,
                   critical_temperature_error=(tc_est - tasks.TC) / tasks.TC)
    print(f"critical temperature (P(ordered) = 1/2): {tc_est:.4f}  exact {tasks.TC:.4f}  "
          f"({100 * (tc_est - tasks.TC) / tasks.TC:+.2f}%)")
    confusion = None
    if args.tc_method == "confusion":
        confusion = tasks.confusion_tc(task, model_name=model.name, seed=args.seed)
        metrics["confusion"] = confusion
        metrics["confusion_critical_temperature"] = confusion["critical_temperature"]
        print(f"critical temperature (learning by confusion): {confusion['critical_temperature']:.4f}  "
              f"({100 * (confusion['critical_temperature'] - tasks.TC) / tasks.TC:+.2f}%)")
    plots.plot_phase(task.test_temperature, p, tc_est, tasks.TC, os.path.join(out, "phase.png"), confusion)


def _leaves(tree):
    from .pytree import tree_leaves

    return tree_leaves(tree)


# ---------------------------------------------------------------------------------------------- evaluate

def cmd_evaluate(args) -> int:
    from . import models, runs, tasks, training

    if args.run and args.params and args.run != args.params:
        raise ValueError(f"two runs given ({args.run} and --params {args.params}); give one")
    run = args.run or args.params
    if run is None:
        raise ValueError("which run? give the directory train wrote, e.g. python -m tinygrad_cnn evaluate runs/<time> "
                         "(train prints the command at its end)")
    saved = runs.load_run(run)
    meta = saved["meta"]
    dataset = args.dataset or meta["dataset"]
    model = models.get(meta["model"])
    if dataset == "ising":
        task = tasks.prepare("ising", seed=meta.get("seed", 0), lattice=meta.get("lattice", 24),
                             ising_options=meta.get("ising_options") or None)
        test = task.test
    elif "mean" in meta:  # the training set's normalisation, as train used it
        with _data_flag():
            _, (x_test, y_test) = tasks.IMAGE_LOADERS[dataset](args.data)
        test = (tasks.normalize_images(x_test, meta["mean"], meta["std"]), y_test.astype(np.int64))
    else:
        with _data_flag():
            test = tasks.prepare(dataset, data_path=args.data).test
    acc = training.accuracy(model, saved["params"], *test, state=saved["state"])
    print(f"{meta['model']} on {dataset} ({runs.checkpoint_path(run)}): test accuracy {acc:.4f} "
          f"({len(test[1])} samples)")
    if dataset == "ising":
        p = tasks.p_ordered(model, saved["params"], saved["state"], task.test[0])
        print(f"critical temperature (P(ordered) = 1/2): {tasks.crossing_temperature(task.test_temperature, p):.4f}"
              f"  exact {tasks.TC:.4f}")
    return 0


# ---------------------------------------------------------------------------------------------- predict

def cmd_predict(args) -> int:
    from .predict import classify
    from .runs import checkpoint_path

    meta, predictions = classify(args.run, args.images, invert=args.invert)
    print(f"{meta['model']} trained on {meta['dataset']} ({checkpoint_path(args.run)}): "
          f"top {min(args.top, len(predictions[0].ranking))} of {len(predictions[0].ranking)} classes")
    for prediction in predictions:
        print(f"{prediction.source} ({prediction.note})")
        for name, p in prediction.ranking[:args.top]:
            print(f"  {p:.4f}  {name}")
    return 0


# ---------------------------------------------------------------------------------------------- graph

def cmd_graph(args) -> int:
    from . import models, viz
    from .ops.loss import cross_entropy

    name = args.model
    if args.batch_norm is not None and name in (None, "cnn", "cnn-bn"):
        name = "cnn-bn" if args.batch_norm else "cnn"
    name = name or "ising-cnn"  # what train trains by default
    model = models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng)
    if name == "ising-cnn":  # spins +-1 on train's default 24x24 lattice, two phases
        x, what = rng.choice(np.array([-1.0, 1.0], np.float32), (args.batch, 1, 24, 24)), "24x24 Ising lattices"
    else:
        x, what = rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32), "28x28 images"
    y = rng.integers(0, 2 if name == "ising-cnn" else 10, args.batch)
    def step():
        loss = cross_entropy(model.apply(viz.param_tensors(params), x, state=state, training=True), y)
        loss.backward(retain_graph=True)
        return loss

    recorder = viz.profile() if args.profile else None
    if recorder is not None:
        step()  # warm-up: the first call of each op pays for allocations and imports
    with recorder if recorder is not None else contextlib.nullcontext():
        loss = step()
    graph = viz.draw_graph(loss, show_grads=args.grads, profile=recorder)
    viz.save_graph(graph, args.out)
    print(f"wrote {args.out}: one training step of {name} (a batch of {args.batch} {what})")
    return 0
