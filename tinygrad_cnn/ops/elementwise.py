"""Elementwise ops. Each acts on every element independently, so each backward is a pointwise
product of the upstream gradient ``g`` with the local derivative.

Binary ops broadcast like NumPy; their backward returns the broadcast-shaped gradient and the engine
sums it back to each input's shape. Ops save the least their derivative needs, often the output:
d/dx exp(x) = exp(x), d/dx sigmoid(x) = s (1 - s), d/dx tanh(x) = 1 - t^2.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..checks import check_float_dtype, to_tensor
from ..parallel import over_batch


def _over_rows(kernel, a: np.ndarray) -> None:
    """Runs ``kernel(s)`` over slices of ``a``'s first axis in parallel (all of ``a`` when 0-d)."""
    if a.ndim == 0:
        kernel(Ellipsis)
    else:
        over_batch(kernel, len(a), work=a.size)


class Add(Function):
    """y = a + b.   da = g,   db = g."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a - b.   da = g,   db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b.   da = g * b,   db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    """y = a / b.   da = g / b,   db = -g * a / b^2 = -g * y / b."""

    @staticmethod
    def forward(ctx, a, b):
        y = a / b
        ctx.save_for_backward(b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g / b
        return (ga if need_a else None), (-ga * y if need_b else None)


class Pow(Function):
    """y = a ** b.   da = g * b * a^(b-1),   db = g * y * log(a)  (taken as 0 where a <= 0)."""

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g * b * a ** (b - 1) if need_a else None
        if need_b:
            positive = a > 0
            gb = g * y * np.log(np.where(positive, a, 1)) * positive
        else:
            gb = None
        return ga, gb


class Neg(Function):
    """y = -x.   dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """y = exp(x).   dx = g * y."""

    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(Function):
    """y = log(x).   dx = g / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Sqrt(Function):
    """y = sqrt(x).   dx = g / (2 y)."""

    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)


class Relu(Function):
    """y = max(x, 0).   dx = g where x > 0, else 0 (the subgradient at 0 is taken as 0).

    Activations are large: both passes run on batch slices in parallel threads.
    """

    @staticmethod
    def forward(ctx, x):
        y = ctx.empty_like(x)
        _over_rows(lambda s: np.maximum(x[s], 0, out=y[s]), x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        dx = ctx.empty_like(g, dtype=np.result_type(g, y))
        _over_rows(lambda s: np.multiply(g[s], y[s] > 0, out=dx[s]), dx)
        return dx


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed without overflow for large |x|.   dx = g * y * (1 - y)."""

    @staticmethod
    def forward(ctx, x):
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


class Tanh(Function):
    """y = tanh(x).   dx = g * (1 - y^2)."""

    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def _float_input(fn: str, x):
    x = to_tensor(fn, "x", x)
    check_float_dtype(fn, "x", x.dtype)
    return x


def relu(x):
    """max(x, 0), elementwise; any shape. The gradient at exactly 0 is taken as 0."""
    return Relu.apply(_float_input("relu", x))


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise; stable for large |x| (no overflow warnings)."""
    return Sigmoid.apply(_float_input("sigmoid", x))


def tanh(x):
    """tanh(x), elementwise."""
    return Tanh.apply(_float_input("tanh", x))
