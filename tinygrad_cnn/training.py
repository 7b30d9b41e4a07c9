"""Training loops over plain-function models: one step is value_and_grad, then a pure optimizer update.

    step:  loss, grads = value_and_grad(loss_fn)(params, x, y)
           params, opt_state = optimizer.update(params, grads, opt_state)

Nothing here prints: ``fit`` takes an optional ``progress`` wrapper for the batch iterator (the CLI
passes a tqdm bar) and a ``on_epoch`` callback.

Interrupting and resuming. A KeyboardInterrupt (Ctrl-C) inside ``fit`` becomes :class:`Interrupted`,
which carries the run as of its last completed step: params, optimizer state, batch-norm state (rolled
back in place if the interrupt came mid-step), the generator's state at the start of the epoch (it
rebuilds the epoch's batch order) and after that step, the epoch's running sums and the history. Given
back to ``fit`` (``opt_state=``, ``resume=``), the run skips the completed batches and ends bit for bit
where an uninterrupted one would: same batch order, dropout masks, augmentation draws and updates.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from ._malloc import kept_while
from .autograd import no_grad
from .data.batches import batches
from .models import Model
from .parallel import blas_single_threaded
from .ops.loss import cross_entropy, softmax
from .pytree import tree_leaves, tree_map
from .jit import jit as jit_function
from .transforms import value_and_grad


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch: mean training loss and accuracy over the epoch's steps,
    test accuracy and test loss (mean cross-entropy, eval mode) at its end; wall time and steps in all."""

    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    test_loss: list = field(default_factory=list)


class Interrupted(KeyboardInterrupt):
    """``fit`` was interrupted (Ctrl-C): a KeyboardInterrupt carrying ``checkpoint``, the run as of its
    last completed step, a tree that ``tc.io.save`` writes as it is::

        {"params": ..., "state": ..., "opt_state": ..., "resume": {"epoch", "step", ...}}

    ``resume`` is the position: ``epoch`` (0-based) and ``step`` (batches of it completed), the
    generator's state at the start of that epoch (``rng_epoch``) and after that step (``rng``; None
    for none yet), the epoch's running ``loss_sum``, ``correct`` and ``seen``, and ``history`` (a
    :class:`History` as a dict). Continue with the same model, optimizer, data, epochs, batch size,
    augment and dropout rate, and any generator (its state is set from ``resume``)::

        c = e.checkpoint
        fit(model, c["params"], c["state"], optimizer, train, test, epochs=..., batch_size=..., rng=rng,
            opt_state=c["opt_state"], resume=c["resume"])
    """

    def __init__(self, checkpoint: dict):
        at = checkpoint["resume"]
        super().__init__(f"fit: interrupted in epoch {at['epoch'] + 1} after {at['step']} of its steps")
        self.checkpoint = checkpoint


def random_shift_flip(x: np.ndarray, rng: np.random.Generator, shift: int = 2, flip: bool = True) -> np.ndarray:
    """Augments images x (N, C, H, W): each moved by up to ``shift`` pixels (zero fill) and, with
    ``flip``, mirrored left-right with probability 1/2. One gather for the whole batch, no loops."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)))
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)                            # (N, H)
    cols = dx[:, None] + np.arange(w)                            # (N, W)
    if flip:
        mirrored = rng.random(n) < 0.5
        cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
    batch = np.arange(n)[:, None, None, None]
    channel = np.arange(x.shape[1])[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def predict_proba(model: Model, params: dict, x: np.ndarray, *, state: dict | None = None,
                  batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, K) in eval mode, in batches, recording no graph."""
    out = []
    with no_grad(), blas_single_threaded():
        for start in range(0, len(x), batch_size):
            logits = model.apply(params, x[start:start + batch_size], state=state, training=False)
            out.append(softmax(logits).data)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def accuracy(model: Model, params: dict, x: np.ndarray, y: np.ndarray, *, state: dict | None = None,
             batch_size: int = 512) -> float:
    return float(np.mean(predict_proba(model, params, x, state=state, batch_size=batch_size).argmax(1) == y))


def _test_loss_and_accuracy(model: Model, params: dict, x: np.ndarray, y: np.ndarray, *, state: dict | None,
                            batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; the accuracy exactly as :func:`accuracy` computes it."""
    total, predicted = 0.0, []
    with no_grad():
        for start in range(0, len(x), batch_size):
            logits = model.apply(params, x[start:start + batch_size], state=state, training=False)
            total += cross_entropy(logits, y[start:start + batch_size]).item() * len(logits.data)
            predicted.append(softmax(logits).data.argmax(1))
    if not predicted:
        return float("nan"), float("nan")
    return total / len(x), float(np.mean(np.concatenate(predicted) == y))


def fit(model: Model, params: dict, state: dict, optimizer, train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray] | None = None, *, epochs: int, batch_size: int,
        rng: np.random.Generator, augment: Callable | None = None, dropout_rate: float = 0.0,
        progress: Callable[[Iterable, int], Iterable] | None = None,
        on_epoch: Callable[[int, History, dict], None] | None = None,
        opt_state=None, resume: dict | None = None, jit: bool = True) -> tuple[dict, dict, History]:
    """Trains ``model`` for ``epochs`` on ``train = (x, y)``; returns ``(params, state, history)``.

    ``state`` (batch-norm running statistics) is updated in place. ``augment(x, rng)`` transforms each
    training batch. ``progress(iterable, epoch)`` may wrap the batch iterator (e.g. a tqdm bar; the bar
    receives ``set_postfix`` calls with the running loss and accuracy when it has that method).
    ``on_epoch(epoch, history, params)`` is called after each epoch (``history`` has its test accuracy
    and loss when ``test`` is given).
    Stops with a ``FloatingPointError`` naming the step when the loss stops being finite.
    A KeyboardInterrupt stops it with :class:`Interrupted`, whose ``checkpoint`` continues the run:
    pass its ``opt_state`` (default: ``optimizer.init(params)``) and ``resume`` (default: start at epoch 0).
    ``jit=True`` (the default) runs each step as a ``tc.jit`` replay (eager's results to float rounding, faster;
    a new batch size, such as the last, smaller batch, traces once more); ``jit=False`` runs it eagerly.
    BLAS is held at one thread for the whole run and glibc keeps freed memory for reuse (1.3-1.5x
    faster eager steps); both are restored when it returns (see parallel.py and _malloc.py).
    """
    with blas_single_threaded(), kept_while():
        return _fit(model, params, state, optimizer, train, test, epochs=epochs, batch_size=batch_size, rng=rng,
                    augment=augment, dropout_rate=dropout_rate, progress=progress, on_epoch=on_epoch,
                    opt_state=opt_state, resume=resume, use_jit=jit)


def _rng_state(rng: np.random.Generator) -> str:
    """The generator's state as JSON text (PCG64's 128-bit integers do not fit an int64 array)."""
    return json.dumps(rng.bit_generator.state)


def _position(epoch: int, step: int, rng_epoch: str | None, rng: str | None, sums: tuple, history: History) -> dict:
    loss_sum, correct, seen = sums
    return {"epoch": epoch, "step": step, "rng_epoch": rng_epoch, "rng": rng, "loss_sum": loss_sum,
            "correct": correct, "seen": seen, "history": asdict(history)}


def _fit(model, params, state, optimizer, train, test, *, epochs, batch_size, rng, augment, dropout_rate, progress,
         on_epoch, opt_state, resume, use_jit):
    x_train, y_train = train

    def loss_fn(p, xb, yb, key):
        logits = model.apply(p, xb, state=state, training=True, dropout_rate=dropout_rate, rng=key)
        return cross_entropy(logits, yb), logits

    value_and_grads = value_and_grad(loss_fn, has_aux=True)

    def train_step(p, xb, yb, key):
        (loss, logits), grads = value_and_grads(p, xb, yb, key)
        return loss, logits.data, grads

    step = jit_function(train_step) if use_jit else train_step
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    history = History(**{key: list(value) if isinstance(value, list) else value  # a copy: resume is not changed
                         for key, value in resume["history"].items()}) if resume is not None else History()
    first = resume["epoch"] if resume is not None else 0
    start = time.perf_counter() - history.seconds
    # The last completed step, what an interrupt rolls back to: params, optimizer state, a copy of the
    # batch-norm state (a step updates it in place before it can fail) and the position. One tuple, so
    # that it is replaced all at once.
    at = dict(resume) if resume is not None else _position(0, 0, _rng_state(rng), None, (0.0, 0, 0), history)
    done = (params, opt_state, tree_map(np.copy, state), at)
    try:
        for epoch in range(first, epochs):
            if epoch == first and resume is not None:  # the same batch order, then the generator as it was
                rng.bit_generator.state = json.loads(resume["rng_epoch"])
                it = batches(x_train, y_train, batch_size, shuffle=True, rng=rng)
                if resume["rng"] is not None:
                    rng.bit_generator.state = json.loads(resume["rng"])
                it = itertools.islice(it, resume["step"], None)
                steps, sums = resume["step"], (resume["loss_sum"], resume["correct"], resume["seen"])
            else:
                at = _position(epoch, 0, _rng_state(rng), None, (0.0, 0, 0), history)
                done = (params, opt_state, done[2], at)
                it = batches(x_train, y_train, batch_size, shuffle=True, rng=rng)
                steps, sums = 0, (0.0, 0, 0)
            rng_epoch = at["rng_epoch"]
            bar = progress(it, epoch) if progress else it
            total_loss, total_correct, seen = sums
            for xb, yb in bar:
                if augment is not None:
                    xb = augment(xb, rng)
                loss, logits, grads = step(params, xb, yb, rng)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"fit: the loss became {loss} at epoch {epoch + 1}, "
                                             f"step {history.steps + 1}")
                params, opt_state = optimizer.update(params, grads, opt_state)
                history.steps += 1
                total_loss += loss * len(yb)
                total_correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
                steps += 1
                history.seconds = time.perf_counter() - start
                done = (params, opt_state, tree_map(np.copy, state),
                        _position(epoch, steps, rng_epoch, _rng_state(rng), (total_loss, total_correct, seen), history))
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.3f}", refresh=False)
            history.train_loss.append(total_loss / max(seen, 1))
            history.train_accuracy.append(total_correct / max(seen, 1))
            if test is not None:
                test_loss, test_accuracy = _test_loss_and_accuracy(model, params, test[0], test[1], state=state)
                history.test_loss.append(test_loss)
                history.test_accuracy.append(test_accuracy)
            history.seconds = time.perf_counter() - start
            if on_epoch is not None:
                on_epoch(epoch, history, params)
    except KeyboardInterrupt:
        params, opt_state, kept, at = done
        for live, saved in zip(tree_leaves(state), tree_leaves(kept)):
            np.copyto(live, saved)  # the batch-norm state as of the last completed step, in place
        raise Interrupted({"params": params, "state": state, "opt_state": opt_state, "resume": at}) from None
    return params, state, history
