"""Movement ops: they rearrange elements without computing anything, so each backward applies the
inverse rearrangement to the gradient (reshape back, transpose by the inverse permutation, scatter
the selected elements back into zeros).

An op that *copies* elements (broadcast_to, repeat, tile, replicate/circular pad) has as backward
the sum of the gradients of the copies, each added onto the element it was copied from. Where the
copies line up along axes of their own, that sum is a reshape and a sum: y = np.tile(x, 3) of a
length-n x, reshaped to (3, n), has x in every row, so dx = g.reshape(3, n).sum(0). broadcast_to
needs not even that: the engine sums every op's gradient over broadcast axes. Joining (concatenate,
stack) and cutting (split) are each other's adjoints: a joined input gets its block of g, and a
part's gradient fills its block of zeros.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import check_axes, check_axis, check_choice, check_int, describe, to_tensor
from . import windows


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
    x = to_tensor("flatten", "x", x)
    start = check_axis("flatten", "start_dim", start_dim, x.ndim)
    return Reshape.apply(x, shape=x.shape[:start] + (math.prod(x.shape[start:]),))  # no -1: fine for size 0


# ---------------------------------------------------------------------------------------------- #
# Joining, cutting, repeating and padding (NumPy's names and semantics)


class Concatenate(Function):
    """y = x_0, x_1, ... joined along ``axis`` (any number of inputs).   dx_i = the i-th block of g
    along ``axis``: g[..., o_i : o_i + n_i, ...], o_i = n_0 + ... + n_(i-1), n_i = x_i.shape[axis]."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis, ctx.cuts = axis, np.cumsum([x.shape[axis] for x in xs[:-1]], dtype=np.intp)
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        blocks = np.split(g, ctx.cuts, axis=ctx.axis)  # views of g
        return tuple(b if need else None for b, need in zip(blocks, ctx.needs_input_grad))


class Stack(Function):
    """y[..., i, ...] = x_i, a new axis at ``axis`` (any number of inputs of one shape).
    dx_i = g[..., i, ...], the i-th slice of g along that axis."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        return np.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        slices = np.moveaxis(g, ctx.axis, 0)  # (n, *x.shape): slices[i] is dx_i, a view of g
        return tuple(s if need else None for s, need in zip(slices, ctx.needs_input_grad))


class BroadcastTo(Function):
    """y = x broadcast to ``shape`` (a read-only view, as NumPy's).   dx = g summed over the axes that
    broadcasting added or stretched, which is exactly what the engine's un-broadcasting does for every op:
    g has the shape ``shape``, a broadcast of x's, so backward returns g as it is."""

    @staticmethod
    def forward(ctx, x, *, shape):
        return np.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return g


class Repeat(Function):
    """y = np.repeat(x, repeats, axis): element j along ``axis`` (of x flattened when ``axis`` is None)
    appears ``repeats`` times in a row (or ``repeats[j]`` times). dx_j = the sum of its copies in g:
    for an int r, g with ``axis`` split into (n, r) and summed over the r copies; for one count per
    element, ``np.add.reduceat`` over the starts of the runs (an element repeated 0 times gets 0)."""

    @staticmethod
    def forward(ctx, x, *, repeats, axis=None):
        ctx.shape, ctx.repeats = x.shape, repeats
        ctx.axis = 0 if axis is None else axis
        ctx.n = x.size if axis is None else x.shape[axis]
        return np.repeat(x, repeats, axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis, n, repeats = ctx.axis, ctx.n, ctx.repeats
        if isinstance(repeats, int):
            dx = g.reshape(g.shape[:axis] + (n, repeats) + g.shape[axis + 1:]).sum(axis=axis + 1)
        else:
            counts = np.asarray(repeats, dtype=np.intp)
            starts = np.cumsum(counts) - counts
            kept = counts > 0
            dx = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], dtype=g.dtype)
            if kept.any():  # (reduceat of a repeated start would return an element, not 0)
                dx[windows.along(axis, kept)] = np.add.reduceat(g, starts[kept], axis=axis)
        return dx.reshape(ctx.shape)


class Tile(Function):
    """y = np.tile(x, reps), ``reps`` one count per axis of y (x's shape left-padded with 1s to as
    many axes): y is r_0 x r_1 x ... copies of x. With s = x's padded shape, y reshaped to
    (r_0, s_0, r_1, s_1, ...) holds copy (k_0, k_1, ...) at [k_0, :, k_1, :, ...], so
    dx = g.reshape(r_0, s_0, r_1, s_1, ...).sum over the r axes."""

    @staticmethod
    def forward(ctx, x, *, reps):
        ctx.shape, ctx.reps = x.shape, reps
        return np.tile(x, reps)

    @staticmethod
    def backward(ctx, g):
        sizes = (1,) * (len(ctx.reps) - len(ctx.shape)) + ctx.shape                # s: x's shape, padded
        interleaved = tuple(v for pair in zip(ctx.reps, sizes) for v in pair)      # (r_0, s_0, r_1, s_1, ...)
        return g.reshape(interleaved).sum(axis=tuple(range(0, len(interleaved), 2))).reshape(ctx.shape)


class Pad(Function):
    """y = x padded by ``pad_width`` ((before, after) per axis): zeros, copies of the edge
    ("replicate") or of the opposite side ("circular"), windows.pad.   dx = windows.unpad(g): the
    border of g dropped, and for replicate/circular each padded element's gradient added onto the
    element it copied (replicate: onto the edge; circular: wrapped around to the other side)."""

    @staticmethod
    def forward(ctx, x, *, pad_width, mode="zeros"):
        ctx.pad_width, ctx.mode = pad_width, mode
        return windows.pad(x, pad_width, mode, tuple(range(x.ndim)))

    @staticmethod
    def backward(ctx, g):
        return windows.unpad(g, ctx.pad_width, ctx.mode, tuple(range(g.ndim)))


# ---------------------------------------------------------------------------------------------- #
# Public functions: check the arguments, then apply the ops


def _shape_text(shape: tuple, star: int | None = None) -> str:
    """(2, 3), or (2, *) with ``star`` = 1: a shape with one axis left free."""
    parts = ["*" if i == star else str(n) for i, n in enumerate(shape)]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _joined_inputs(fn: str, tensors) -> list:
    """``tensors`` (a list or tuple of Tensors, arrays, lists or numbers) as Tensors of one dtype.

    The dtype is NumPy's promotion of theirs (as the binary operators promote two tensors), except
    that float64 comes only from float64 (the dtype policy): int64 with float32 is float32. Inputs that
    need a gradient are floating and are never cast here (the op promotes them, and the engine casts
    each gradient back to its input's dtype); other inputs are cast as constants.
    """
    from ..tensor import Tensor

    if not isinstance(tensors, (list, tuple)):
        hint = " (to cut one tensor into parts use split; to join a few, pass them in a list)" \
            if isinstance(tensors, (Tensor, np.ndarray)) else ""
        raise TypeError(f"{fn}: tensors must be a list or tuple of tensors, got {describe(tensors)}{hint}")
    if not tensors:
        raise ValueError(f"{fn}: tensors must hold at least one tensor, got an empty {type(tensors).__name__}")
    tensors = [to_tensor(fn, f"tensors[{i}]", t) for i, t in enumerate(tensors)]
    dtype = np.result_type(*[t.dtype for t in tensors])
    if dtype == np.float64 and all(t.dtype != np.float64 for t in tensors):
        dtype = np.dtype(np.float32)
    return [t if t.dtype == dtype or t.requires_grad else Tensor(t.data, dtype=dtype) for t in tensors]


def concatenate(tensors, axis: int = 0):
    """Joins tensors along an existing ``axis``, as ``np.concatenate``: every tensor has the shape of
    ``tensors[0]`` except on ``axis``. ``tensors``: a list or tuple of Tensors, arrays or lists (mixed;
    at least one, each at least 1-D); the result's dtype is their common one (as ``+`` promotes, float64
    only from float64). Each input gets its block of the gradient.

    >>> concatenate([np.zeros((2, 3)), np.ones((2, 1))], axis=1).shape
    (2, 4)
    """
    fn = "concatenate"
    tensors = _joined_inputs(fn, tensors)
    first = tensors[0].shape
    if not first:
        raise ValueError(f"{fn}: tensors[0] is 0-d (shape ()); concatenate joins along an existing axis "
                         f"(use stack to join scalars)")
    axis = check_axis(fn, "axis", axis, len(first))
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != len(first) or any(m != n for k, (m, n) in enumerate(zip(t.shape, first)) if k != axis):
            raise ValueError(f"{fn}: tensors[{i}] has shape {_shape_text(t.shape)}, expected "
                             f"{_shape_text(first, axis)} matching tensors[0] {_shape_text(first)} "
                             f"except on axis {axis}")
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0):
    """Joins tensors of one shape along a new ``axis`` (in ``[-(ndim + 1), ndim]``), as ``np.stack``:
    n tensors of shape (A, B) give (n, A, B) with axis 0, (A, B, n) with axis -1. ``tensors``: as for
    :func:`concatenate` (0-d allowed). Each input gets its slice of the gradient.

    >>> stack([np.zeros(3), np.ones(3)], axis=1).shape
    (3, 2)
    """
    fn = "stack"
    tensors = _joined_inputs(fn, tensors)
    first = tensors[0].shape
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != first:
            raise ValueError(f"{fn}: tensors[{i}] has shape {_shape_text(t.shape)}, expected "
                             f"{_shape_text(first)} as tensors[0] (stack needs equal shapes)")
    return Stack.apply(*tensors, axis=check_axis(fn, "axis", axis, len(first) + 1))


def _cut_points(fn: str, indices_or_sections, x_shape: tuple, axis: int) -> list[int]:
    """NumPy's split points [0, i_1, ..., i_k, n] along ``axis`` (indices taken as slice bounds)."""
    n = x_shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)) and not isinstance(indices_or_sections, bool):
        sections = check_int(fn, "indices_or_sections", indices_or_sections, minimum=1)
        if n % sections:
            raise ValueError(f"{fn}: {sections} sections do not divide axis {axis} of length {n} "
                             f"(x.shape={x_shape}); pass the indices where to cut instead")
        return [k * (n // sections) for k in range(sections + 1)]
    if isinstance(indices_or_sections, np.ndarray) and indices_or_sections.ndim == 1:
        indices_or_sections = indices_or_sections.tolist()
    if not isinstance(indices_or_sections, (list, tuple)):
        raise TypeError(f"{fn}: indices_or_sections must be an int (the number of equal parts) or a list of "
                        f"ints (the indices where to cut), got {describe(indices_or_sections)}")
    cuts = [check_int(fn, f"indices_or_sections[{i}]", c) for i, c in enumerate(indices_or_sections)]
    return [0, *cuts, n]


def split(x, indices_or_sections, axis: int = 0) -> list:
    """Cuts ``x`` along ``axis`` into a list of Tensors, as ``np.split``. ``indices_or_sections``: an
    int N (N equal parts; N must divide the axis length, else ValueError) or a list of indices
    [i_1, ..., i_k] giving the k + 1 parts x[:i_1], x[i_1:i_2], ..., x[i_k:] along ``axis`` (Python's
    slice rules: negative indices count from the end, indices past the end or out of order give empty
    parts). Each part is an indexing op (``GetItem``) on x, so in the backward each part's gradient
    is a zero array of x's shape with its block filled in (k + 1 passes over x's size).

    >>> [p.shape for p in split(np.zeros((2, 6)), [1, 4], axis=1)]
    [(2, 1), (2, 3), (2, 2)]
    """
    fn = "split"
    x = to_tensor(fn, "x", x)
    axis = check_axis(fn, "axis", axis, x.ndim)
    points = _cut_points(fn, indices_or_sections, x.shape, axis)
    return [GetItem.apply(x, index=windows.along(axis, slice(start, stop))) for start, stop in zip(points, points[1:])]


def squeeze(x, axis=None):
    """Removes axes of size 1, as ``np.squeeze``: all of them (``axis=None``) or those named (an int or
    a tuple; naming an axis whose size is not 1 is a ValueError). A reshape.

    >>> squeeze(np.zeros((1, 3, 1)), axis=0).shape
    (3, 1)
    """
    fn = "squeeze"
    x = to_tensor(fn, "x", x)
    axes = tuple(k for k, n in enumerate(x.shape) if n == 1) if axis is None else check_axes(fn, "axis", axis, x.ndim)
    for k in axes:
        if x.shape[k] != 1:
            raise ValueError(f"{fn}: axis {k} has size {x.shape[k]}, not 1 (x.shape={x.shape}); "
                             f"only axes of size 1 can be removed")
    return Reshape.apply(x, shape=tuple(n for k, n in enumerate(x.shape) if k not in axes))


def expand_dims(x, axis):
    """Inserts axes of size 1 at the positions ``axis`` (an int or a tuple of ints) of the result, as
    ``np.expand_dims``: (2, 3) with axis=(0, -1) gives (1, 2, 3, 1). A reshape.

    >>> expand_dims(np.zeros((2, 3)), 1).shape
    (2, 1, 3)
    """
    fn = "expand_dims"
    x = to_tensor(fn, "x", x)
    if axis is None:
        raise TypeError(f"{fn}: axis must be an int or a tuple of ints, got None")
    count = len(axis) if isinstance(axis, (tuple, list)) else 1
    new = check_axes(fn, "axis", axis, x.ndim + count)
    sizes = iter(x.shape)
    return Reshape.apply(x, shape=tuple(1 if k in new else next(sizes) for k in range(x.ndim + count)))


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape`` (an int or a tuple of ints >= 0), as ``np.broadcast_to``: NumPy's
    rules, aligning trailing axes; each axis of x has the target's size or 1. The result's data is a
    read-only view of x's. The gradient is g summed over the broadcast axes (by the engine).

    >>> broadcast_to(np.array([1.0, 2.0]), (3, 2)).data
    array([[1., 2.],
           [1., 2.],
           [1., 2.]])
    """
    fn = "broadcast_to"
    x = to_tensor(fn, "x", x)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fn}: shape must be an int or a tuple of ints, got {describe(shape)}")
    shape = tuple(check_int(fn, "shape", n, minimum=0) for n in shape)
    extra = len(shape) - x.ndim
    if extra < 0:
        raise ValueError(f"{fn}: cannot broadcast x of shape {x.shape} to {shape}, which has fewer axes")
    for k, n in enumerate(x.shape):
        if n != 1 and n != shape[extra + k]:
            raise ValueError(f"{fn}: cannot broadcast x of shape {x.shape} to {shape}: axis {k} of x has size "
                             f"{n}, which is neither 1 nor {shape[extra + k]}")
    return BroadcastTo.apply(x, shape=shape)


def _counts(fn: str, name: str, value) -> int | tuple[int, ...]:
    """An int >= 0, or a list/tuple/1-D array of them (as a tuple)."""
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(check_int(fn, f"{name}[{i}]", v, minimum=0) for i, v in enumerate(value))
    return check_int(fn, name, value, minimum=0)


def repeat(x, repeats, axis=None):
    """Repeats each element, as ``np.repeat``: along ``axis`` each element ``repeats`` times in a row
    ([a, b] -> [a, a, b, b] for 2), or ``repeats[j]`` times for element j (one count per element, or a
    single one); with ``axis=None`` x is flattened first and the result is 1-D. Counts are ints >= 0.
    Each element's gradient is the sum over its copies. (Not PyTorch's ``repeat``, which is :func:`tile`.)

    >>> repeat(np.array([[1.0, 2.0]]), [1, 2], axis=1).data
    array([[1., 2., 2.]])
    """
    fn = "repeat"
    x = to_tensor(fn, "x", x)
    repeats = _counts(fn, "repeats", repeats)
    if axis is not None:
        axis = check_axis(fn, "axis", axis, x.ndim)
    if isinstance(repeats, tuple):
        n = x.size if axis is None else x.shape[axis]
        if len(repeats) == 1:
            repeats = repeats[0]
        elif len(repeats) != n:
            where = f"x has {n} elements (flattened, as axis is None)" if axis is None else \
                f"axis {axis} of x has {n} elements"
            raise ValueError(f"{fn}: repeats has {len(repeats)} counts but {where} (x.shape={x.shape}); "
                             f"give one count per element, or one int")
    return Repeat.apply(x, repeats=repeats, axis=axis)


def tile(x, reps):
    """``x`` repeated as a whole ``reps`` times along each axis, as ``np.tile``: ``reps`` an int or a
    tuple of ints >= 0; x's shape and ``reps`` are left-padded with 1s to the same length, so (2, 3)
    tiled by (2,) is (2, 6) and by (2, 1, 1) is (2, 2, 3). The gradient sums the copies.

    >>> tile(np.array([1.0, 2.0]), 2).data
    array([1., 2., 1., 2.])
    """
    fn = "tile"
    x = to_tensor(fn, "x", x)
    reps = _counts(fn, "reps", reps)
    reps = (reps,) if isinstance(reps, int) else reps
    return Tile.apply(x, reps=(1,) * (x.ndim - len(reps)) + reps)


def _pad_widths(fn: str, pad_width, x_shape: tuple) -> tuple[tuple[int, int], ...]:
    """NumPy's pad_width forms as one (before, after) pair per axis: an int (all sides), one pair
    (every axis), or a pair per axis (also (n,) per axis, both sides): what broadcasts to (ndim, 2)."""
    ndim = len(x_shape)
    try:
        given = np.asarray(pad_width)
        widths = np.broadcast_to(given, (ndim, 2)) if given.dtype != object else None
    except ValueError:  # ragged, or does not broadcast to (ndim, 2)
        widths = None
    if widths is None:
        raise ValueError(f"{fn}: pad_width must be an int, a (before, after) pair, or one such pair per axis "
                         f"({ndim} for x.shape={x_shape}), got {pad_width!r}")
    if given.size and given.dtype.kind not in "iu":
        raise TypeError(f"{fn}: pad_width must hold ints, got {pad_width!r}")
    if (widths < 0).any():
        raise ValueError(f"{fn}: pad_width must be >= 0 (NumPy refuses negative widths too; to crop, index "
                         f"with slices), got {pad_width!r}")
    return tuple((int(before), int(after)) for before, after in widths)


def pad(x, pad_width, mode: str = "zeros"):
    """``x`` padded on every axis, as ``np.pad``: ``pad_width`` is NumPy's (an int n for n on every
    side, one (before, after) pair for every axis, or one pair per axis; ints >= 0). ``mode``, as
    conv2d's ``padding_mode``: ``"zeros"`` (np.pad's "constant"), ``"replicate"`` (the edge element
    copied outward, np.pad's "edge"; an empty axis cannot be padded so) or ``"circular"`` (the axis
    wraps around, np.pad's "wrap"; at most the axis length on each side, as PyTorch and conv2d: it
    would wrap more than once). The gradient of each padded element goes to the element it copied.

    >>> pad(np.array([1.0, 2.0, 3.0]), (2, 1), mode="circular").data
    array([2., 3., 1., 2., 3., 1.])
    """
    fn = "pad"
    x = to_tensor(fn, "x", x)
    check_choice(fn, "mode", mode, windows.PAD_MODES)
    widths = _pad_widths(fn, pad_width, x.shape)
    for axis, (n, (before, after)) in enumerate(zip(x.shape, widths)):
        if mode == "replicate" and n == 0 and before + after:
            raise ValueError(f"{fn}: mode 'replicate' cannot pad axis {axis} of size 0 (x.shape={x.shape}): "
                             f"there is no edge to copy")
        if mode == "circular" and max(before, after) > n:
            raise ValueError(f"{fn}: circular padding of {max(before, after)} on axis {axis} wraps more than "
                             f"once around its {n} elements (x.shape={x.shape}); at most the axis length, as in "
                             f"PyTorch and conv2d")
    return Pad.apply(x, pad_width=widths, mode=mode)
