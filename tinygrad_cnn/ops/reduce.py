"""Reductions over axes: sum, mean, max, min, prod, var, std, logsumexp, and argmax/argmin.

The backward of a reduction spreads the upstream gradient back over the reduced axes: ``sum``
copies it to every element, ``mean`` divides it by the number of elements, ``max`` and ``min`` send
it to the extreme element alone. ``axis`` is ``None`` (all axes), an int, or a tuple of ints; negative
axes count from the end. The Tensor methods check their arguments with :func:`reduce_args` first.

Three of them need care to be exact or finite:

* ``prod``: the derivative of x_1 x_2 ... x_n by x_i is the product of the others. Dividing y by x_i
  fails where x_i = 0; instead, for each reduced group flattened to a row, the exclusive cumulative
  products from the left (x_1 ... x_{i-1}) and from the right (x_{i+1} ... x_n) are multiplied. With
  one zero in a row only that element gets a gradient; with two or more, none does, as it should.
* ``var``/``std``: the mean is subtracted first (two passes), after shifting each group by its first
  element, so a constant group has exactly zero variance and a large offset does not cancel digits:
  var = sum(d^2) / (n - ddof), d = x - mean. Its gradient is 2 d / (n - ddof): the mean's own
  dependence on x drops out, since sum(d) = 0.
* ``logsumexp``: log sum exp(x) = m + log sum exp(x - m) with m the group's maximum, so every exponent
  is <= 0 (no overflow) and the sum is at least 1 (no log(0)). Its gradient is softmax(x) per group.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import check_axis, check_axes, check_bool, check_float_dtype, check_int, describe, to_tensor

_EMPTY = {"max": "maximum", "min": "minimum", "argmax": "maximum", "argmin": "minimum",
          "logsumexp": "log-sum-exp"}  # the reductions of nothing we refuse (what it would be "of")
_FLOATING = ("var", "std", "logsumexp")  # defined on floating inputs only (an int variance would be float64)


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, int or tuple, possibly negative) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim if ndim else 0 for a in axes))


def reduce_args(fn: str, x, axis, keepdims, ddof=None) -> dict:
    """The checked keyword arguments of the reduction ``fn`` of ``x``: ``axis`` in range and without
    repeats (``argmax``/``argmin``: None or one int, as NumPy), ``keepdims`` a bool, no empty group for
    the maximum, minimum and log-sum-exp (a maximum of nothing is undefined), a floating ``x`` for
    ``var``, ``std`` and ``logsumexp``, and for ``var``/``std`` an int ``ddof`` >= 0 below the number of
    elements in each group. ``axis`` is passed on as given (``normalize_axes`` in the forward reads it),
    so graphs show what the user wrote."""
    if fn in ("argmax", "argmin"):
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise TypeError(f"{fn}: axis must be None or an int, got {describe(axis)}")
        axes = tuple(range(x.ndim)) if axis is None else (check_axis(fn, "axis", axis, x.ndim),)
    else:
        axes = check_axes(fn, "axis", axis, x.ndim)
    keepdims = check_bool(fn, "keepdims", keepdims)
    if fn in _FLOATING:
        check_float_dtype(fn, "x", x.dtype)
    if fn in _EMPTY and any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{fn}: cannot take the {_EMPTY[fn]} over an empty axis (shape {x.shape}, axis={axis!r})")
    if fn not in ("var", "std"):
        return {"axis": axis, "keepdims": keepdims}
    ddof = check_int(fn, "ddof", ddof, minimum=0)
    n = math.prod(x.shape[a] for a in axes)
    if ddof >= n:
        raise ValueError(f"{fn}: ddof must be less than the number of elements reduced over, got ddof={ddof} for "
                         f"{n} (shape {x.shape}, axis={axis!r}): the result would divide by {n - ddof}")
    return {"axis": axis, "keepdims": keepdims, "ddof": ddof}


def _keepdims_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _grouped(x: np.ndarray, axes: tuple) -> tuple[np.ndarray, tuple]:
    """``x`` with the kept axes first and the reduced ones merged last, (*kept, n), and the permutation."""
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    n = math.prod(x.shape[a] for a in axes)                                                   # no -1: size 0
    perm = kept + axes
    return x.transpose(perm).reshape(tuple(x.shape[a] for a in kept) + (n,)), perm           # (*kept, n)


def _ungrouped(grouped: np.ndarray, shape: tuple, perm: tuple) -> np.ndarray:
    """The inverse of :func:`_grouped`: (*kept, n) back to ``shape``."""
    return grouped.reshape(tuple(shape[a] for a in perm)).transpose(np.argsort(perm))


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


def _extreme_forward(ctx, x, axis, keepdims, argextreme):
    """The forward of max (``argextreme`` = np.argmax) or min (np.argmin): the element each group's
    first extreme index points at; the index is saved for the backward."""
    axes = normalize_axes(axis, x.ndim)
    grouped, perm = _grouped(x, axes)                                                        # (*kept, n)
    index = argextreme(grouped, axis=-1)[..., None]                                          # (*kept, 1)
    y = np.take_along_axis(grouped, index, axis=-1)[..., 0]
    ctx.save_for_backward(index)
    ctx.grouped_shape, ctx.perm, ctx.shape = grouped.shape, perm, x.shape
    return y.reshape(_keepdims_shape(x.shape, axes)) if keepdims else y


def _extreme_backward(ctx, g):
    """g placed at each group's saved index, zeros elsewhere, in x's shape."""
    (index,) = ctx.saved_tensors
    dgrouped = np.zeros(ctx.grouped_shape, dtype=g.dtype)
    np.put_along_axis(dgrouped, index, g.reshape(ctx.grouped_shape[:-1] + (1,)), axis=-1)
    return _ungrouped(dgrouped, ctx.shape, ctx.perm)


class Max(Function):
    """y = max of x over ``axes``.   dx = g at the maximum of each reduced group, 0 elsewhere.

    On a tie the whole gradient goes to exactly one element: the first maximum in row-major order
    within the group (NumPy's ``argmax``), so the gradient sums to ``g`` and never splits.
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        return _extreme_forward(ctx, x, axis, keepdims, np.argmax)

    @staticmethod
    def backward(ctx, g):
        return _extreme_backward(ctx, g)


class Min(Function):
    """y = min of x over ``axes``.   dx = g at the minimum of each reduced group, 0 elsewhere.

    On a tie the whole gradient goes to the first minimum in row-major order within the group
    (NumPy's ``argmin``), as for :class:`Max`.
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        return _extreme_forward(ctx, x, axis, keepdims, np.argmin)

    @staticmethod
    def backward(ctx, g):
        return _extreme_backward(ctx, g)


class ArgMax(Function):
    """The index of the maximum along ``axis`` (into the flattened x when None), NumPy's ``argmax``: the
    first maximum on a tie; an integer array (np.intp). Not differentiable: applied to detached input."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        return np.argmax(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return None


class ArgMin(Function):
    """The index of the minimum along ``axis``, as :class:`ArgMax` (NumPy's ``argmin``)."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        return np.argmin(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return None


def _products_of_others(a: np.ndarray) -> np.ndarray:
    """out[..., i] = prod_{j != i} a[..., j] for ``a`` (..., n), without division: the exclusive
    cumulative product from the left (a_0 ... a_{i-1}) times the one from the right (a_{i+1} ... a_{n-1})."""
    before, after = np.empty_like(a), np.empty_like(a)                                       # (..., n)
    if a.shape[-1]:
        before[..., 0] = after[..., -1] = 1
        np.cumprod(a[..., :-1], axis=-1, out=before[..., 1:])                                # a_0 ... a_{i-1}
        np.cumprod(a[..., :0:-1], axis=-1, out=after[..., -2::-1])                           # a_{i+1} ... a_{n-1}
    before *= after
    return before


class Prod(Function):
    """y = x_1 x_2 ... x_n over ``axes``.   dx_i = g * prod_{j != i} x_j (exclusive cumulative products
    from both ends of each group, no division by x: exact where x has zeros)."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes = normalize_axes(axis, x.ndim)
        ctx.save_for_backward(x)
        return np.prod(x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        grouped, perm = _grouped(x, ctx.axes)                                                # (*kept, n)
        dgrouped = _products_of_others(grouped)                                              # (*kept, n)
        dgrouped *= g.reshape(grouped.shape[:-1] + (1,))
        return _ungrouped(dgrouped, x.shape, perm)


def _centered(x: np.ndarray, axes: tuple, ddof: int) -> tuple[np.ndarray, int]:
    """d = x - mean over ``axes`` (x's shape) and the divisor n - ddof. Each group is first shifted by its
    first element (exact, and exactly zero for a constant group), then by the mean of what is left."""
    first = x[tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))]     # (kept, 1 on axes)
    d = x - first
    d -= np.mean(d, axis=axes, keepdims=True)
    return d, math.prod(x.shape[a] for a in axes) - ddof


def _variance(d: np.ndarray, axes: tuple, keepdims: bool, divisor: int) -> np.ndarray:
    return np.sum(np.square(d), axis=axes, keepdims=keepdims) / np.asarray(divisor, dtype=d.dtype)


class Var(Function):
    """y = sum(d^2) / (n - ddof) over ``axes``, d = x - mean(x).   dx = g * 2 d / (n - ddof)."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False, ddof=0):
        axes = normalize_axes(axis, x.ndim)
        d, divisor = _centered(x, axes, ddof)
        ctx.save_for_backward(d)
        ctx.kept_shape, ctx.divisor = _keepdims_shape(x.shape, axes), divisor
        return _variance(d, axes, keepdims, divisor)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return d * (g.reshape(ctx.kept_shape) * np.asarray(2 / ctx.divisor, dtype=g.dtype))


class Std(Function):
    """y = sqrt(var(x)) over ``axes`` (see :class:`Var`).   dx = g * d / ((n - ddof) y), and 0 where y = 0.

    Where a group's variance is exactly 0 (a constant group, or a single element with ddof = 0) std has
    no derivative: there std(x + t v) = |t| std(v), a kink like abs at 0. The gradient there is 0, the
    subgradient of least norm, instead of the 0 / 0 = NaN of the formula.
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False, ddof=0):
        axes = normalize_axes(axis, x.ndim)
        d, divisor = _centered(x, axes, ddof)
        y = np.sqrt(_variance(d, axes, keepdims, divisor))
        ctx.save_for_backward(d, y)
        ctx.kept_shape, ctx.divisor = _keepdims_shape(x.shape, axes), divisor
        return y

    @staticmethod
    def backward(ctx, g):
        d, y = ctx.saved_tensors
        denominator = np.reshape(y, ctx.kept_shape) * np.asarray(ctx.divisor, dtype=g.dtype)
        scale = np.divide(g.reshape(ctx.kept_shape), denominator, out=np.zeros_like(denominator),
                          where=denominator > 0)
        return d * scale


class LogSumExp(Function):
    """y = m + log sum exp(x - m) over ``axes``, m the group's maximum.   dx = g * exp(x - y) (softmax).

    A group whose maximum is +-inf or NaN is not shifted (m = 0), so the result is +inf, -inf or NaN
    as log sum exp(x) is.
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        axes = normalize_axes(axis, x.ndim)
        m = np.max(x, axis=axes, keepdims=True)                                          # (kept, 1 on axes)
        m = np.where(np.isfinite(m), m, np.zeros_like(m))
        p = np.asarray(x - m)                                                            # <= 0 (a 0-d x too)
        np.exp(p, out=p)                                                                 # <= 1
        s = np.sum(p, axis=axes, keepdims=True)                                          # in [1, n]
        p /= s                                                                           # softmax
        ctx.save_for_backward(p)
        ctx.kept_shape = m.shape
        y = np.log(s) + m
        return y if keepdims else np.squeeze(y, axis=axes)

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        return p * g.reshape(ctx.kept_shape)


# -- the functions behind the Tensor methods (and tc.logsumexp, tc.prod) ----------------------------------

def prod(x, axis=None, keepdims=False):
    """The product of ``x``'s elements over ``axis`` (None: all; an int or a tuple; negative counts from
    the end), as ``np.prod`` (an empty group gives 1; the dtype is np.prod's). The gradient of each
    element is the product of the others in its group, computed without division, so it is exact
    where x has zeros: with one zero in a group only that element gets a gradient, with two none does.

    >>> prod(np.array([[2.0, 0.0], [3.0, 4.0]]), axis=1).data
    array([ 0., 12.])
    """
    x = to_tensor("prod", "x", x)
    return Prod.apply(x, **reduce_args("prod", x, axis, keepdims))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over ``axis`` (None: all; an int or a tuple), computed as
    m + log(sum(exp(x - m))) with m the maximum: finite for inputs of any size. Floating ``x``, dtype
    kept; an empty group is a ValueError. The gradient is softmax(x) over each group.

    >>> logsumexp(np.array([1e4, 1e4], dtype=np.float32)).data
    array(10000.693, dtype=float32)
    """
    x = to_tensor("logsumexp", "x", x)
    return LogSumExp.apply(x, **reduce_args("logsumexp", x, axis, keepdims))


def var(x, axis=None, keepdims=False, ddof=0):
    """The variance over ``axis``: sum((x - mean)^2) / (n - ddof), n the elements in each group (ddof=0:
    the biased variance, NumPy's default; 1: the unbiased). Floating ``x``, dtype kept; ``ddof`` an int
    with 0 <= ddof < n (else a ValueError, where NumPy gives inf or NaN)."""
    x = to_tensor("var", "x", x)
    return Var.apply(x, **reduce_args("var", x, axis, keepdims, ddof))


def std(x, axis=None, keepdims=False, ddof=0):
    """sqrt(var(x, axis, keepdims, ddof)). Where the variance is exactly 0 the gradient is 0 (a
    subgradient: std has no derivative there; PyTorch and TensorFlow give NaN)."""
    x = to_tensor("std", "x", x)
    return Std.apply(x, **reduce_args("std", x, axis, keepdims, ddof))


def argmax(x, axis=None, keepdims=False):
    """The index of the first maximum along ``axis`` (None: into the flattened x), as ``np.argmax``:
    an integer Tensor (np.intp) with no gradient, like a comparison's boolean Tensor."""
    x = to_tensor("argmax", "x", x)
    return ArgMax.apply(x.detach(), **reduce_args("argmax", x, axis, keepdims))


def argmin(x, axis=None, keepdims=False):
    """The index of the first minimum along ``axis``, as :func:`argmax` (``np.argmin``)."""
    x = to_tensor("argmin", "x", x)
    return ArgMin.apply(x.detach(), **reduce_args("argmin", x, axis, keepdims))
