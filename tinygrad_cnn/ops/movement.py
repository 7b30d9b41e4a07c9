"""Movement ops: they rearrange elements without computing anything, so each backward applies the
inverse rearrangement to the gradient (reshape back, transpose by the inverse permutation, scatter
the selected elements back into zeros).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function


class Reshape(Function):
    """y = x.reshape(shape).   dx = g.reshape(x.shape)."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Transpose(Function):
    """y = x.transpose(axes) (reversed axes when ``axes`` is None).   dx = g.transpose(argsort(axes))."""

    @staticmethod
    def forward(ctx, x, axes=None):
        ctx.axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(axes)
        return x.transpose(ctx.axes)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(np.argsort(ctx.axes))


def _is_basic(index) -> bool:
    """True when ``index`` uses only ints, slices, None and Ellipsis (no element is picked twice)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts)


class GetItem(Function):
    """y = x[index] (slices, ints, None, integer/boolean arrays).

    dx = zeros with g scattered to the selected places; with integer arrays an element selected
    twice receives the sum of both gradients (``np.add.at``).
    """

    @staticmethod
    def forward(ctx, x, index):
        ctx.index, ctx.shape = index, x.shape
        return x[index]

    @staticmethod
    def backward(ctx, g):
        dx = np.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic(ctx.index):
            dx[ctx.index] = g
        else:
            np.add.at(dx, ctx.index, g)
        return dx


def flatten(x, start_dim: int = 1):
    """Merges the axes from ``start_dim`` on: (N, C, H, W) -> (N, C*H*W) with the default 1.

    >>> flatten(np.zeros((2, 3, 4, 5))).shape
    (2, 60)
    """
    from ..checks import check_axis, to_tensor

    x = to_tensor("flatten", "x", x)
    start = check_axis("flatten", "start_dim", start_dim, x.ndim)
    return Reshape.apply(x, shape=x.shape[:start] + (math.prod(x.shape[start:]),))  # no -1: fine for size 0
