"""The reference CNNs, as plain functions of a params dict.

A model is two functions: ``init(rng) -> (params, state)`` and ``apply(params, x, state=..., training=...)
-> logits``. ``params`` (what the optimizer trains) and ``state`` (batch-norm running statistics,
updated in place during training) are nested dicts of NumPy arrays, so ``value_and_grad``, the
optimizers and ``save`` work on them directly:

    model = tc.models.get("cnn-bn")
    params, state = model.init(np.random.default_rng(0))
    loss = lambda p, x, y: tc.cross_entropy(model.apply(p, x, state=state, training=True), y)
    value, grads = tc.value_and_grad(loss)(params, x, y)

The image models follow the notes' recommended block, twice, then a dense head:

    conv 3x3 -> [batch_norm] -> relu -> max_pool 2        (1x28x28 -> 32x13x13 -> 64x5x5)
    flatten -> linear 128 -> relu -> [dropout] -> linear 10

The Ising model is small (~1.3k parameters) and respects the lattice: circular padding (the lattice
is periodic) and global average pooling (the phase does not depend on where a domain sits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import init as I
from .ops.conv import conv2d
from .ops.elementwise import relu
from .ops.linalg import linear
from .ops.loss import dropout
from .ops.movement import flatten
from .ops.norm import batch_norm
from .ops.pool import max_pool2d

__all__ = ["Model", "get", "MODELS", "init_cnn", "cnn", "init_ising_cnn", "ising_cnn"]


def _conv_layer(rng, in_channels: int, out_channels: int, batch_norm: bool) -> tuple[dict, dict]:
    params = {"w": I.he_normal(rng, (out_channels, in_channels, 3, 3))}
    state = {}
    if batch_norm:  # the conv bias would be cancelled by batch norm's mean subtraction
        params.update(gamma=np.ones(out_channels, np.float32), beta=I.zeros(out_channels))
        state = {"mean": I.zeros(out_channels), "var": np.ones(out_channels, np.float32)}
    else:
        params["b"] = I.zeros(out_channels)
    return params, state


def init_cnn(rng: np.random.Generator, *, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
             channels: tuple[int, int] = (32, 64), hidden: int = 128, batch_norm: bool = True) -> tuple[dict, dict]:
    """Params and batch-norm state of :func:`cnn` for ``image_size`` x ``image_size`` inputs."""
    params, state = {}, {}
    size, c_in = image_size, in_channels
    for name, c_out in zip(("conv1", "conv2"), channels):
        params[name], layer_state = _conv_layer(rng, c_in, c_out, batch_norm)
        if layer_state:
            state[name] = layer_state
        size, c_in = (size - 2) // 2, c_out  # valid 3x3 conv, then 2x2 pooling
    params["fc1"] = {"w": I.he_normal(rng, (c_in * size * size, hidden)), "b": I.zeros(hidden)}
    params["fc2"] = {"w": I.glorot_uniform(rng, (hidden, num_classes)), "b": I.zeros(num_classes)}
    return params, state


def _block(p: dict, s: dict | None, h, *, padding=0, padding_mode="zeros", training: bool):
    """conv 3x3 -> [batch_norm] -> relu -> max_pool 2."""
    if "gamma" in p:
        if s is None:
            raise ValueError("model: these params have batch norm, so state= (the running statistics returned "
                             "with the params by init) must be given")
        h = conv2d(h, p["w"], padding=padding, padding_mode=padding_mode)
        h = batch_norm(h, p["gamma"], p["beta"], s["mean"], s["var"], training=training)
    else:
        h = conv2d(h, p["w"], p["b"], padding=padding, padding_mode=padding_mode)
    return max_pool2d(relu(h), 2)


def cnn(params: dict, x, *, state: dict | None = None, training: bool = False, dropout_rate: float = 0.0,
        rng: np.random.Generator | None = None):
    """Logits (N, num_classes) for images x (N, C, H, W) (or (N, H, W) grayscale, a channel is added).

    ``state`` holds the batch-norm running statistics (required when the params have batch norm);
    in training they are updated in place. ``dropout_rate`` applies dropout before the last layer
    (training only).
    """
    x = x[:, None] if np.ndim(x) == 3 else x
    state = state or {}
    h = x
    for name in ("conv1", "conv2"):
        h = _block(params[name], state.get(name), h, training=training)
    h = relu(linear(flatten(h), params["fc1"]["w"], params["fc1"]["b"]))
    if training and dropout_rate > 0:
        h = dropout(h, dropout_rate, rng=rng)
    return linear(h, params["fc2"]["w"], params["fc2"]["b"])


def init_ising_cnn(rng: np.random.Generator, *, channels: tuple[int, int] = (8, 16), num_classes: int = 2,
                   batch_norm: bool = False, **_) -> tuple[dict, dict]:
    """Params of :func:`ising_cnn`: conv 1->8, conv 8->16 (3x3, circular), global average, linear 16->2."""
    params, state = {}, {}
    c_in = 1
    for name, c_out in zip(("conv1", "conv2"), channels):
        params[name], layer_state = _conv_layer(rng, c_in, c_out, batch_norm)
        if layer_state:
            state[name] = layer_state
        c_in = c_out
    params["fc"] = {"w": I.glorot_uniform(rng, (c_in, num_classes)), "b": I.zeros(num_classes)}
    return params, state


def ising_cnn(params: dict, x, *, state: dict | None = None, training: bool = False, **_):
    """Logits (N, 2) (disordered, ordered) for spin configurations x (N, 1, L, L) with L divisible by 4."""
    state = state or {}
    h = x
    for name in ("conv1", "conv2"):
        h = _block(params[name], state.get(name), h, padding=1, padding_mode="circular", training=training)
    h = h.mean(axis=(2, 3))  # global average pooling: (N, C)
    return linear(h, params["fc"]["w"], params["fc"]["b"])


@dataclass(frozen=True)
class Model:
    """A named model: ``init(rng, **options) -> (params, state)`` and ``apply(params, x, **kw) -> logits``."""

    name: str
    init: Callable
    apply: Callable
    description: str


MODELS = {
    "cnn-bn": Model("cnn-bn", lambda rng, **kw: init_cnn(rng, batch_norm=True, **kw), cnn,
                    "conv-bn-relu-pool x2 (32, 64 channels), dense 128, dense 10"),
    "cnn": Model("cnn", lambda rng, **kw: init_cnn(rng, batch_norm=False, **kw), cnn,
                 "conv-relu-pool x2 (32, 64 channels), dense 128, dense 10"),
    "ising-cnn": Model("ising-cnn", init_ising_cnn, ising_cnn,
                       "circular conv-relu-pool x2 (8, 16 channels), global average, dense 2"),
}


def get(name: str) -> Model:
    """The model called ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"models.get: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]
