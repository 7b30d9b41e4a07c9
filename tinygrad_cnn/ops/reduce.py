"""Reductions over axes: sum, mean, max.

The backward of a reduction spreads the upstream gradient back over the reduced axes: ``sum``
copies it to every element, ``mean`` divides it by the number of elements, ``max`` sends it to the
maximum alone. ``axis`` is ``None`` (all axes), an int, or a tuple of ints; negative axes count from
the end. The Tensor methods check their arguments with :func:`reduce_args` first.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import check_axes, check_bool


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, int or tuple, possibly negative) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim if ndim else 0 for a in axes))


def reduce_args(fn: str, x, axis, keepdims) -> dict:
    """The checked keyword arguments of a reduction of ``x``: ``axis`` in range and without repeats,
    ``keepdims`` a bool, and for ``max`` no empty group (a maximum of nothing is undefined). ``axis`` is
    passed on as given (``normalize_axes`` in the forward reads it), so graphs show what the user wrote."""
    axes = check_axes(fn, "axis", axis, x.ndim)
    keepdims = check_bool(fn, "keepdims", keepdims)
    if fn == "max" and any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{fn}: cannot take the maximum over an empty axis (shape {x.shape}, axis={axis!r})")
    return {"axis": axis, "keepdims": keepdims}


def _keepdims_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """y = sum of x over ``axes``.   dx = g broadcast back to x's shape."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes, ctx.shape = normalize_axes(axis, x.ndim), x.shape
        return np.sum(x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return np.broadcast_to(g.reshape(_keepdims_shape(ctx.shape, ctx.axes)), ctx.shape)


class Mean(Function):
    """y = sum(x) / n over ``axes`` (n elements each).   dx = g / n broadcast back to x's shape."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes, ctx.shape = normalize_axes(axis, x.ndim), x.shape
        return np.mean(x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        count = int(np.prod([ctx.shape[a] for a in ctx.axes]))
        g = g.reshape(_keepdims_shape(ctx.shape, ctx.axes)) / np.asarray(count, dtype=g.dtype)
        return np.broadcast_to(g, ctx.shape)


class Max(Function):
    """y = max of x over ``axes``.   dx = g at the maximum of each reduced group, 0 elsewhere.

    On a tie the whole gradient goes to exactly one element: the first maximum in row-major order
    within the group (NumPy's ``argmax``), so the gradient sums to ``g`` and never splits.
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        axes = normalize_axes(axis, x.ndim)
        kept = tuple(a for a in range(x.ndim) if a not in axes)
        n = math.prod(x.shape[a] for a in axes)                                               # no -1: size 0
        grouped = x.transpose(kept + axes).reshape(tuple(x.shape[a] for a in kept) + (n,))   # (*kept, n)
        index = grouped.argmax(axis=-1)[..., None]                                           # (*kept, 1)
        y = np.take_along_axis(grouped, index, axis=-1)[..., 0]
        ctx.save_for_backward(index)
        ctx.grouped_shape, ctx.perm, ctx.axes, ctx.shape = grouped.shape, kept + axes, axes, x.shape
        return y.reshape(_keepdims_shape(x.shape, axes)) if keepdims else y

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        dgrouped = np.zeros(ctx.grouped_shape, dtype=g.dtype)
        kept_shape = ctx.grouped_shape[:-1]
        np.put_along_axis(dgrouped, index, g.reshape(kept_shape + (1,)), axis=-1)
        permuted_shape = tuple(ctx.shape[a] for a in ctx.perm)
        return dgrouped.reshape(permuted_shape).transpose(np.argsort(ctx.perm))
