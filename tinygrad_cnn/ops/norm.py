"""Batch normalisation: standardise each channel over the batch, then scale and shift it.

For x of shape (N, C, H, W) (or (N, C)), channel c has m = N*H*W values x_i. In training::

    mu  = (1/m) sum_i x_i                 var = (1/m) sum_i (x_i - mu)^2      (biased)
    r   = 1 / sqrt(var + eps)             xhat_i = (x_i - mu) * r
    y_i = gamma * xhat_i + beta

(The course notes write (X - mu) / (sigma + eps); we follow PyTorch and TensorFlow and add eps to
the variance under the square root, which is smooth at var = 0.)

The backward pass. With g = dL/dy, the parameters are easy: dL/dbeta = sum_i g_i and
dL/dgamma = sum_i g_i xhat_i. For x, every xhat_i depends on every x_j of its channel, directly and
through mu and var. Using d mu / d x_j = 1/m and d var / d x_j = (2/m) (x_j - mu)::

    d xhat_i / d x_j = r (delta_ij - 1/m) - (x_i - mu) r^3 (x_j - mu) / m
                     = r (delta_ij - 1/m - xhat_i xhat_j / m)

so with d_i = g_i * gamma (the gradient reaching xhat)::

    dL/dx_j = sum_i d_i d xhat_i / d x_j = r (d_j - mean(d) - xhat_j mean(d * xhat))

Two per-channel sums of the upstream gradient, sum(g) and sum(g * xhat), serve all three gradients.
The input gradient is the upstream gradient with its channel mean and its component along xhat
removed, so an all-ones upstream gradient gives exactly zero: test with a random one.

In eval mode the statistics are the running averages, constants, so the op is an affine map per
channel: y = x * scale + shift with scale = gamma / sqrt(running_var + eps), and dx = g * scale.

Training also updates the running statistics in place, as PyTorch does::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)     (unbiased)

Implementation notes. These run every training step on the largest arrays of the network, so:

* statistics come from two per-channel sums, sum(x) and sum(x * x), as ``np.einsum`` reductions
  accumulated in float64: no temporary array, accurate for float32 inputs (the float64 sums make
  the one-pass var = E[x^2] - mu^2 safe), and fast whether x is contiguous NCHW or an NCHW view of
  channels-last memory (what conv2d returns);
* the forward is one affine map per channel, y = x * scale + shift: one new array, in x's dtype
  and memory layout;
* the backward saves x and (C,) vectors only (no normalised copy of x is kept between the passes);
  it rebuilds x - mu in the one array that becomes dx, and the sums sum(g), sum(g * xhat) are
  einsums in g's dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import check_bool, check_float, check_float_dtype, check_ndim, check_tensor_like
from ..tensor import as_tensor

__all__ = ["BatchNorm", "BatchNormEval", "batch_norm"]


def _subscripts(ndim: int) -> str:
    """einsum letters of x, the channel being "c": (N, C) -> "nc", (N, C, H, W) -> "nchw"."""
    return "nc" if ndim == 2 else "nchw"


def _count(shape: tuple) -> int:
    """Values per channel, m = N*H*W: the product of every axis but 1."""
    return math.prod(shape[:1] + shape[2:])


def _channel_sum(a: np.ndarray, dtype=None) -> np.ndarray:
    """Per-channel sum over every axis but 1: (N, C, ...) -> (C,)."""
    s = _subscripts(a.ndim)
    return np.einsum(f"{s}->c", a, dtype=dtype)


def _channel_dot(a: np.ndarray, b: np.ndarray, dtype=None) -> np.ndarray:
    """Per-channel sum of a * b, without forming a * b: (N, C, ...) x2 -> (C,)."""
    s = _subscripts(a.ndim)
    return np.einsum(f"{s},{s}->c", a, b, dtype=dtype)


def _per_channel(v: np.ndarray, ndim: int, dtype) -> np.ndarray:
    """A (C,) vector shaped to broadcast against x: (1, C) or (1, C, 1, 1), in ``dtype``."""
    return v.astype(dtype, copy=False).reshape((1, -1) + (1,) * (ndim - 2))


def _normalise(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
               eps: float) -> tuple[np.ndarray, np.ndarray]:
    """y = gamma (x - mean) / sqrt(var + eps) + beta as one affine map per channel, y = x * scale + shift
    (one new array, two passes over x). Returns y and 1 / sqrt(var + eps) (float64, (C,))."""
    inv_std = 1.0 / np.sqrt(var + eps)                               # (C,) float64
    scale = gamma * inv_std
    shift = beta - mean * scale
    y = x * _per_channel(scale, x.ndim, x.dtype)                     # x's shape, layout and dtype
    y += _per_channel(shift, x.ndim, x.dtype)
    return y, inv_std


class BatchNorm(Function):
    """Training mode: y = gamma * (x - mu) / sqrt(var + eps) + beta with the batch's mu and var.

    dx = r (d - mean(d) - xhat mean(d xhat)) with d = g gamma,   dgamma = sum(g xhat),   dbeta = sum(g),
    sums and means per channel. ``running_mean``/``running_var`` (or None) are updated in place.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, *, eps, momentum=0.1, running_mean=None, running_var=None):
        m = _count(x.shape)
        mean = _channel_sum(x, np.float64) / m                           # (C,) float64
        var = np.maximum(_channel_dot(x, x, np.float64) / m - mean * mean, 0.0)  # (C,) biased
        y, inv_std = _normalise(x, gamma, beta, mean, var, eps)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * m / (m - 1)) * var
        dt = x.dtype
        ctx.save_for_backward(x, gamma.astype(dt, copy=False), mean.astype(dt), inv_std.astype(dt))
        return y

    @staticmethod
    def backward(ctx, g):
        x, gamma, mean, inv_std = ctx.saved_tensors
        needs, nd, m = ctx.needs_input_grad, g.ndim, _count(g.shape)
        sum_g = _channel_sum(g)                                          # (C,) = dbeta
        if not (needs[0] or needs[1]):
            return None, None, sum_g
        dx = x - _per_channel(mean, nd, x.dtype)                         # xhat / r, x's layout
        dgamma = _channel_dot(g, dx) * inv_std                           # (C,) sum(g xhat)
        if needs[0]:
            # dx = r gamma (g - sum(g)/m - xhat sum(g xhat)/m), built in place in one array
            dx *= _per_channel(inv_std * dgamma / -m, nd, dx.dtype)
            dx -= _per_channel(sum_g / m, nd, dx.dtype)
            dx += g
            dx *= _per_channel(gamma * inv_std, nd, dx.dtype)
        return (dx if needs[0] else None), dgamma, sum_g


class BatchNormEval(Function):
    """Eval mode, fixed statistics ``mean`` and ``var`` ((C,) arrays outside the graph):
    y = gamma (x - mean) / sqrt(var + eps) + beta = x * scale + shift.
    dx = g scale,   dgamma = sum(g (x - mean)) / sqrt(var + eps),   dbeta = sum(g).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, *, mean, var, eps):
        mean, var = mean.astype(np.float64), var.astype(np.float64)  # copies: the caller may update its
        y, inv_std = _normalise(x, gamma, beta, mean, var, eps)       # running arrays before backward
        dt = x.dtype
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, mean.astype(dt), inv_std.astype(dt),
                              (gamma * inv_std).astype(dt))
        return y

    @staticmethod
    def backward(ctx, g):
        x, mean, inv_std, scale = ctx.saved_tensors
        needs, nd = ctx.needs_input_grad, g.ndim
        dx = g * _per_channel(scale, nd, g.dtype) if needs[0] else None
        dgamma = _channel_dot(g, x - _per_channel(mean, nd, x.dtype)) * inv_std if needs[1] else None
        return dx, dgamma, (_channel_sum(g) if needs[2] else None)


def _check_running(fn: str, name: str, a, channels: int, x_shape: tuple, training: bool) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be an np.ndarray (it is state, updated in place in training), "
                        f"got {type(a).__name__}")
    check_float_dtype(fn, name, a.dtype)
    if a.shape != (channels,):
        raise ValueError(f"{fn}: {name} has shape {a.shape} but x has {channels} channels (x.shape={x_shape})")
    if training and not a.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writable: training updates it in place")


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, *, training=True, momentum=0.1, eps=1e-5):
    """Batch normalisation per channel: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x: (N, C, H, W) or (N, C); gamma, beta: (C,) (Tensors or arrays); statistics per channel over all
    other axes. Returns a Tensor of x's shape and dtype (and memory layout).

    ``training=True``: mean and biased variance of this batch (N*H*W must be at least 2); the
    gradient flows through them. If ``running_mean`` and ``running_var`` are given (writable (C,)
    float ``np.ndarray``s, both or neither) they are updated **in place**:
    ``running = (1 - momentum) * running + momentum * batch``, with the unbiased batch variance,
    as in PyTorch. They are state, not part of the graph.

    ``training=False``: normalises with ``running_mean`` and ``running_var`` (required), fixed; the
    gradient reaches x, gamma and beta through the affine map; nothing is updated.

    >>> rm, rv = np.zeros(3), np.ones(3)
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (8, 3, 4, 4))
    >>> y = batch_norm(x, np.ones(3), np.zeros(3), rm, rv)   # training: batch statistics
    >>> bool(abs(y.data.mean()) < 1e-6), rm.round(1)         # rm moved 10% towards the batch mean
    (True, array([0.5, 0.5, 0.5]))
    >>> batch_norm(x, np.ones(3), np.zeros(3), rm, rv, training=False).shape
    (8, 3, 4, 4)
    """
    fn = "batch_norm"
    for name, value in (("x", x), ("gamma", gamma), ("beta", beta)):
        check_tensor_like(fn, name, value)
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    check_ndim(fn, "x", x.shape, (2, 4), "(N, C) or (N, C, H, W)")
    check_float_dtype(fn, "x", x.dtype)
    channels = x.shape[1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != (channels,):
            raise ValueError(f"{fn}: {name} has shape {p.shape} but x has {channels} channels (x.shape={x.shape})")
        check_float_dtype(fn, name, p.dtype)
    training = check_bool(fn, "training", training)
    momentum = check_float(fn, "momentum", momentum, 0.0, 1.0)
    eps = check_float(fn, "eps", eps, 0.0, low_open=True)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must be given together (or neither)")
    if running_mean is not None:
        _check_running(fn, "running_mean", running_mean, channels, x.shape, training)
        _check_running(fn, "running_var", running_var, channels, x.shape, training)

    if not training:
        if running_mean is None:
            raise ValueError(f"{fn}: training=False normalises with the running statistics, "
                             "so running_mean and running_var must be given")
        return BatchNormEval.apply(x, gamma, beta, mean=running_mean, var=running_var, eps=eps)
    per_channel = _count(x.shape)
    if per_channel < 2:
        raise ValueError(f"{fn}: training needs at least 2 values per channel to compute a variance, got "
                         f"{per_channel} (x.shape={x.shape}); use a larger batch or training=False")
    return BatchNorm.apply(x, gamma, beta, eps=eps, momentum=momentum,
                           running_mean=running_mean, running_var=running_var)
