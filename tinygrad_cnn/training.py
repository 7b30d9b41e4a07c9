"""Training loops over plain-function models: one step is value_and_grad, then a pure optimizer update.

    step:  loss, grads = value_and_grad(loss_fn)(params, x, y)
           params, opt_state = optimizer.update(params, grads, opt_state)

Nothing here prints: ``fit`` takes an optional ``progress`` wrapper for the batch iterator (the CLI
passes a tqdm bar) and a ``on_epoch`` callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ._malloc import kept_while
from .autograd import no_grad
from .data.batches import batches
from .models import Model
from .parallel import blas_single_threaded
from .ops.loss import cross_entropy, softmax
from .transforms import value_and_grad


@dataclass
class History:
    """What ``fit`` measured: per-epoch mean training loss/accuracy and test accuracy, and wall time."""

    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


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


def fit(model: Model, params: dict, state: dict, optimizer, train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray] | None = None, *, epochs: int, batch_size: int,
        rng: np.random.Generator, augment: Callable | None = None, dropout_rate: float = 0.0,
        progress: Callable[[Iterable, int], Iterable] | None = None,
        on_epoch: Callable[[int, History, dict], None] | None = None) -> tuple[dict, dict, History]:
    """Trains ``model`` for ``epochs`` on ``train = (x, y)``; returns ``(params, state, history)``.

    ``state`` (batch-norm running statistics) is updated in place. ``augment(x, rng)`` transforms each
    training batch. ``progress(iterable, epoch)`` may wrap the batch iterator (e.g. a tqdm bar; the bar
    receives ``set_postfix`` calls with the running loss and accuracy when it has that method).
    Stops with a ``FloatingPointError`` naming the step when the loss stops being finite.
    BLAS is held at one thread for the whole run and glibc keeps freed memory for reuse (1.3-1.5x
    faster steps); both are restored when it returns (see parallel.py and _malloc.py).
    """
    with blas_single_threaded(), kept_while():
        return _fit(model, params, state, optimizer, train, test, epochs=epochs, batch_size=batch_size, rng=rng,
                    augment=augment, dropout_rate=dropout_rate, progress=progress, on_epoch=on_epoch)


def _fit(model, params, state, optimizer, train, test, *, epochs, batch_size, rng, augment, dropout_rate, progress,
         on_epoch):
    x_train, y_train = train

    def loss_fn(p, xb, yb, key):
        logits = model.apply(p, xb, state=state, training=True, dropout_rate=dropout_rate, rng=key)
        return cross_entropy(logits, yb), logits

    step = value_and_grad(loss_fn, has_aux=True)
    opt_state = optimizer.init(params)
    history = History()
    start = time.perf_counter()
    for epoch in range(epochs):
        it = batches(x_train, y_train, batch_size, shuffle=True, rng=rng)
        bar = progress(it, epoch) if progress else it
        total_loss = total_correct = seen = 0
        for xb, yb in bar:
            if augment is not None:
                xb = augment(xb, rng)
            (loss, logits), grads = step(params, xb, yb, rng)
            if not np.isfinite(loss):
                raise FloatingPointError(f"fit: the loss became {loss} at epoch {epoch + 1}, step {history.steps + 1}")
            params, opt_state = optimizer.update(params, grads, opt_state)
            history.steps += 1
            total_loss += loss * len(yb)
            total_correct += int((logits.data.argmax(1) == yb).sum())
            seen += len(yb)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.3f}", refresh=False)
        history.train_loss.append(total_loss / max(seen, 1))
        history.train_accuracy.append(total_correct / max(seen, 1))
        if test is not None:
            history.test_accuracy.append(accuracy(model, params, test[0], test[1], state=state))
        history.seconds = time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(epoch, history, params)
    return params, state, history
