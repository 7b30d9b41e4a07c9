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

``resnet-small`` is a small residual network (He et al. 2016) with batch norm, ~78k parameters:

    stem:    conv 3x3 16 -> batch_norm -> relu                              (1x28x28 -> 16x28x28)
    blocks:  16 (28x28), 32 (stride 2: 14x14), 64 (stride 2: 7x7), one basic block per stage
    head:    global average pool -> [dropout] -> linear 10

A basic block adds a learned correction to its input: ``relu(bn(conv(relu(bn(conv(x))))) + s(x))``.
The shortcut ``s`` is the identity, or, in the block that starts a later stage and halves the size
(stride 2 in its first conv), a 1x1 stride-2 conv with batch norm that also changes the width. Through
an identity shortcut the gradient reaches the block's input unchanged, whatever the branch does
(d(x + f(x))/dx = 1 + f'(x)), which is what lets residual networks grow deep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import init as I
from .checks import check_int
from .ops.conv import conv2d
from .ops.elementwise import relu
from .ops.linalg import linear
from .ops.loss import dropout
from .ops.movement import expand_dims, flatten
from .ops.norm import batch_norm
from .ops.pool import max_pool2d
from .ops.resample import adaptive_avg_pool2d

__all__ = ["Model", "get", "MODELS", "init_cnn", "cnn", "init_ising_cnn", "ising_cnn", "init_resnet", "resnet"]


def _conv_layer(rng, in_channels: int, out_channels: int, batch_norm: bool, kernel: int = 3) -> tuple[dict, dict]:
    params = {"w": I.he_normal(rng, (out_channels, in_channels, kernel, kernel))}
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


def _with_channel_axis(x):
    """(N, H, W) grayscale images as (N, 1, H, W), by an op: ``x[:, None]`` on an array would be NumPy
    outside the graph, which tc.jit's trace would freeze as a constant."""
    return expand_dims(x, 1) if np.ndim(x) == 3 else x


def cnn(params: dict, x, *, state: dict | None = None, training: bool = False, dropout_rate: float = 0.0,
        rng: np.random.Generator | None = None):
    """Logits (N, num_classes) for images x (N, C, H, W) (or (N, H, W) grayscale, a channel is added).

    ``state`` holds the batch-norm running statistics (required when the params have batch norm);
    in training they are updated in place. ``dropout_rate`` applies dropout before the last layer
    (training only).
    """
    state = state or {}
    h = _with_channel_axis(x)
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


def _int_tuple(fn: str, name: str, value, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"{fn}: {name} must be a non-empty tuple of ints, got {value!r}")
    return tuple(check_int(fn, name, v, minimum) for v in value)


def init_resnet(rng: np.random.Generator, *, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] = (1, 1, 1),
                zero_init_residual: bool = False) -> tuple[dict, dict]:
    """Params and batch-norm state of :func:`resnet`.

    ``widths[i]`` channels in stage ``i``, which has ``blocks[i]`` basic blocks; every stage after the
    first starts with a stride-2 block. ``image_size`` is checked but changes no shape: global average
    pooling makes the params the same for any input size (the image models share these options).
    Convs are He normal without bias (batch norm's beta is the bias), the head Glorot uniform.
    Params: ``stem``, ``block1`` ... ``blockB`` (each ``conv1``, ``conv2`` and, when it downsamples,
    ``shortcut``; conv params ``w``, ``gamma``, ``beta``), ``fc`` (``w`` (widths[-1], num_classes), ``b``);
    the state mirrors the convs with ``mean`` and ``var``.

    ``zero_init_residual=True`` starts each block's last batch-norm gamma at 0 (Goyal et al. 2017): every
    block then starts as its shortcut, the network as a shallow one, which steadies very deep networks
    trained by SGD with large learning rates. Off by default: with three blocks there is no depth to
    steady, and Adam moves a gamma by about ``lr`` per step, so the branches take hundreds of steps to
    switch on (on 3,200 Fashion-MNIST images, 2 epochs of Adam at 2e-3: train accuracy 0.58 with it,
    0.76 without).
    """
    fn = "init_resnet"
    in_channels = check_int(fn, "in_channels", in_channels, 1)
    check_int(fn, "image_size", image_size, 1)
    num_classes = check_int(fn, "num_classes", num_classes, 1)
    widths, blocks = _int_tuple(fn, "widths", widths, 1), _int_tuple(fn, "blocks", blocks, 1)
    if len(widths) != len(blocks):
        raise ValueError(f"{fn}: widths and blocks need one entry per stage, got {len(widths)} widths {widths} "
                         f"and {len(blocks)} block counts {blocks}")
    params, state = {}, {}
    params["stem"], state["stem"] = _conv_layer(rng, in_channels, widths[0], batch_norm=True)
    c_in, k = widths[0], 0
    for stage, (c_out, count) in enumerate(zip(widths, blocks)):
        for i in range(count):
            k += 1
            p, s = {}, {}
            p["conv1"], s["conv1"] = _conv_layer(rng, c_in, c_out, batch_norm=True)
            p["conv2"], s["conv2"] = _conv_layer(rng, c_out, c_out, batch_norm=True)
            if zero_init_residual:
                p["conv2"]["gamma"][:] = 0
            if stage > 0 and i == 0:  # downsamples: the shortcut is a 1x1 stride-2 conv with batch norm
                p["shortcut"], s["shortcut"] = _conv_layer(rng, c_in, c_out, batch_norm=True, kernel=1)
            params[f"block{k}"], state[f"block{k}"] = p, s
            c_in = c_out
    params["fc"] = {"w": I.glorot_uniform(rng, (c_in, num_classes)), "b": I.zeros(num_classes)}
    return params, state


def _conv_bn(p: dict, s: dict, h, *, stride: int = 1, training: bool):
    """conv (kernel K, stride, padding K // 2, no bias) -> batch_norm: (N, C, H, W) -> (N, C', H', W')."""
    h = conv2d(h, p["w"], stride=stride, padding=p["w"].shape[-1] // 2)
    return batch_norm(h, p["gamma"], p["beta"], s["mean"], s["var"], training=training)


def _residual_block(p: dict, s: dict, h, *, training: bool):
    """relu(conv-bn-relu-conv-bn(h) + shortcut(h)). A block with a ``shortcut`` conv halves the size
    (stride 2 in conv1 and the shortcut: H -> ceil(H / 2) in both); one without keeps size and width."""
    stride = 2 if "shortcut" in p else 1
    branch = relu(_conv_bn(p["conv1"], s["conv1"], h, stride=stride, training=training))
    branch = _conv_bn(p["conv2"], s["conv2"], branch, training=training)
    shortcut = _conv_bn(p["shortcut"], s["shortcut"], h, stride=2, training=training) if "shortcut" in p else h
    return relu(branch + shortcut)


def _block_names(params: dict) -> list[str]:
    """``block1``, ``block2``, ... in order (by number: a loaded checkpoint may sort block10 before block2)."""
    return sorted((k for k in params if k.startswith("block")), key=lambda k: int(k[len("block"):]))


def resnet(params: dict, x, *, state: dict | None = None, training: bool = False, dropout_rate: float = 0.0,
           rng: np.random.Generator | None = None):
    """Logits (N, num_classes) for images x (N, C, H, W) of any size (or (N, H, W), a channel is added).

    ``state`` (the batch-norm running statistics init returned) is required; in training it is updated
    in place. ``dropout_rate`` applies dropout to the pooled features before the head (training only).

    >>> params, state = init_resnet(np.random.default_rng(0))
    >>> resnet(params, np.zeros((2, 1, 28, 28), np.float32), state=state).shape
    (2, 10)
    """
    if state is None:
        raise ValueError("resnet: state= (the batch-norm running statistics returned with the params by init) "
                         "must be given")
    h = _with_channel_axis(x)
    h = relu(_conv_bn(params["stem"], state["stem"], h, training=training))
    for name in _block_names(params):
        h = _residual_block(params[name], state[name], h, training=training)
    h = flatten(adaptive_avg_pool2d(h, 1))  # global average pooling: (N, C, H, W) -> (N, C)
    if training and dropout_rate > 0:
        h = dropout(h, dropout_rate, rng=rng)
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
    "resnet-small": Model("resnet-small", init_resnet, resnet,
                          "conv-bn-relu 16, residual blocks 16, 32 /2, 64 /2 with batch norm, global average, "
                          "dense 10"),
}


def get(name: str) -> Model:
    """The model called ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"models.get: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]
