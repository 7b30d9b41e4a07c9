"""Resampling images: adaptive average pooling and interpolation (nearest, bilinear), NCHW.

All three are *separable linear maps*: each output row mixes input rows with fixed weights, and each
output column mixes input columns, independently. Writing the weights of one axis as a small matrix
A_h (OH, H) and of the other as A_w (OW, W), every (H, W) image of the batch becomes::

    y = A_h @ x @ A_w^T          (OH, OW)
    dx = A_h^T @ g @ A_w         (H, W)      the adjoint: the same weights, read the other way

For adaptive pooling row i of A_h holds 1/|bin| on its bin, for bilinear interpolation the two
linear weights of its source position, for nearest interpolation a single 1. Two matrix products per
image (BLAS, no loop over pixels) do the forward, two more the backward.

Two common cases are faster as reshapes: adaptive pooling to a size that divides the input is
avg_pool2d with kernel = stride = (H/OH, W/OW), so y is a sum over the tiles of a 6-D view of x; and
nearest upsampling by integer factors copies each pixel into an (sh, sw) tile, so its gradient is
that same tile sum of g. Both keep the input's memory layout (conv2d's channels-last output stays
channels-last) and run on image slices of the batch in parallel (``parallel.over_batch``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..autograd import Function
from ..checks import check_choice, check_float, check_float_dtype, check_ndim, check_nonempty, check_pair
from ..checks import check_tensor_like, describe
from ..parallel import over_batch

__all__ = ["AdaptiveAvgPool2d", "InterpolateNearest", "InterpolateBilinear", "adaptive_avg_pool2d", "interpolate"]


# ---------------------------------------------------------------------------------------------- #
# The weight matrices of one axis, (out, n) float64, cached and read-only


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=256)
def bin_matrix(n: int, out: int) -> np.ndarray:
    """Row i averages the bin [floor(i n / out), ceil((i + 1) n / out)) of an axis of length n (PyTorch's
    adaptive bins: they cover the axis, differ in size by at most one, and may overlap by one)."""
    i = np.arange(out)
    start, end = i * n // out, -(-(i + 1) * n // out)
    cols = np.arange(n)
    inside = (cols >= start[:, None]) & (cols < end[:, None])     # (out, n)
    return _frozen(inside / (end - start)[:, None])


def nearest_index(n: int, out: int, scale: float) -> np.ndarray:
    """The source of each output position: min(floor(o / scale), n - 1) (PyTorch's "nearest")."""
    return np.minimum(np.floor(np.arange(out) / scale).astype(np.intp), n - 1)


@functools.lru_cache(maxsize=256)
def nearest_matrix(n: int, out: int, scale: float) -> np.ndarray:
    """Row o is one-hot at ``nearest_index``: used for the gradient only (the forward gathers, so an
    inf pixel stays an inf pixel instead of becoming 0 * inf = NaN everywhere along its row)."""
    return _frozen((np.arange(n) == nearest_index(n, out, scale)[:, None]).astype(np.float64))


@functools.lru_cache(maxsize=256)
def linear_matrix(n: int, out: int, scale: float) -> np.ndarray:
    """Row o holds the linear-interpolation weights of source position p = max((o + 0.5) / scale - 0.5, 0)
    (align_corners=False: pixel centres line up): 1 - f at floor(p) and f = p - floor(p) at
    min(floor(p) + 1, n - 1). Past the last centre both weights land on the edge pixel."""
    p = np.maximum((np.arange(out) + 0.5) / scale - 0.5, 0.0)
    lo = np.minimum(np.floor(p).astype(np.intp), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = (p - lo)[:, None]
    cols = np.arange(n)
    return _frozen((1 - frac) * (cols == lo[:, None]) + frac * (cols == hi[:, None]))


def out_len(n: int, scale: float | int) -> int:
    """Output length for a scale factor: floor(n * scale), as PyTorch."""
    return n * scale if isinstance(scale, int) else math.floor(n * scale)


# ---------------------------------------------------------------------------------------------- #
# Kernels on (N, C, H, W) arrays in either memory layout


def _channels_last(a: np.ndarray) -> bool:
    """``a`` (N, C, H, W) is stored NHWC (conv2d's output) and not also NCHW (as with C == 1)."""
    return not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def _empty(ctx, shape: tuple, like: np.ndarray) -> np.ndarray:
    """``ctx.empty`` of NCHW ``shape`` in ``like``'s dtype and layout (channels-last, or C order)."""
    if not _channels_last(like):
        return ctx.empty(shape, like.dtype)
    n, c, h, w = shape
    return ctx.empty((n, h, w, c), like.dtype).transpose(0, 3, 1, 2)


def separable(ctx, a: np.ndarray, a_h: np.ndarray, a_w: np.ndarray) -> np.ndarray:
    """a_h @ image @ a_w.T for every image of a (N, C, H, W) -> (N, C, OH, OW), a_h (OH, H), a_w (OW, W).

    Channels-last input gives channels-last output: the matrices then multiply (W, C) and (H, OW*C)
    blocks, whose rows are contiguous, so BLAS needs no copy in either layout."""
    n, c, h, w = a.shape
    a_h, a_w = a_h.astype(a.dtype, copy=False), a_w.astype(a.dtype, copy=False)
    oh, ow = len(a_h), len(a_w)
    if _channels_last(a):
        src = a.transpose(0, 2, 3, 1)                                    # (N, H, W, C), contiguous
        out = ctx.empty((n, oh, ow, c), a.dtype)

        def kernel(s: slice) -> None:
            t = a_w @ src[s]                                               # (n, H, OW, C)
            k = len(t)
            np.matmul(a_h, t.reshape(k, h, ow * c), out=out[s].reshape(k, oh, ow * c))

        over_batch(kernel, n, work=a.size)
        return out.transpose(0, 3, 1, 2)
    src = np.ascontiguousarray(a)
    out = ctx.empty((n, c, oh, ow), a.dtype)

    def kernel(s: slice) -> None:
        t = src[s].reshape(-1, w) @ a_w.T                                  # (n*C*H, OW): one product
        np.matmul(a_h, t.reshape(-1, c, h, ow), out=out[s])                # (n, C, OH, OW)

    over_batch(kernel, n, work=a.size)
    return out


def tile_sum(ctx, a: np.ndarray, tile: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """``scale`` times the sum of each (kh, kw) tile of a (N, C, H, W) -> (N, C, H/kh, W/kw), in a's layout.

    Summed as avg_pool2d sums, over strided views, but separably: the kw column offsets first, then
    the kh row offsets (kh + kw additions, not kh*kw). One whole-image tile is a plain reduction."""
    (n, c, h, w), (kh, kw) = a.shape, tile
    scale = a.dtype.type(scale)
    out = _empty(ctx, (n, c, h // kh, w // kw), a)
    cols = None if (kh, kw) == (h, w) else _empty(ctx, (n, c, h, w // kw), a)

    def kernel(s: slice) -> None:
        if cols is None:
            np.sum(a[s], axis=(2, 3), keepdims=True, out=out[s])
        else:
            np.copyto(cols[s], a[s, :, :, 0::kw])
            for j in range(1, kw):
                cols[s] += a[s, :, :, j::kw]
            np.copyto(out[s], cols[s, :, 0::kh])
            for i in range(1, kh):
                out[s] += cols[s, :, i::kh]
        if scale != 1:
            out[s] *= scale

    over_batch(kernel, n, work=a.size)
    return out


def tile_copy(ctx, a: np.ndarray, tile: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """Each pixel of a (N, C, H, W), times ``scale``, copied into a (kh, kw) tile -> (N, C, H*kh, W*kw),
    in a's layout: into every kw-th column first, then those rows into every kh-th row."""
    (n, c, h, w), (kh, kw) = a.shape, tile
    scale = a.dtype.type(scale)
    out = _empty(ctx, (n, c, h * kh, w * kw), a)
    cols = None if h == w == 1 else _empty(ctx, (n, c, h, w * kw), a)

    def kernel(s: slice) -> None:
        src = a[s] if scale == 1 else a[s] * scale
        if cols is None:                                                     # 1x1 images: a broadcast
            np.copyto(out[s], src)
            return
        for j in range(kw):
            cols[s, :, :, j::kw] = src
        for i in range(kh):
            out[s, :, i::kh] = cols[s]

    over_batch(kernel, n, work=out.size)
    return out


# ---------------------------------------------------------------------------------------------- #
# The ops


class AdaptiveAvgPool2d(Function):
    """y[n, c, i, j] = mean of x[n, c, h0(i):h1(i), w0(j):w1(j)], h0(i) = floor(i H / OH),
    h1(i) = ceil((i + 1) H / OH) (likewise for columns): x (N, C, H, W) -> y (N, C, OH, OW).

    y = A_h x A_w^T with A_h (OH, H) = 1/|bin| on each bin;   dx = A_h^T g A_w.
    When OH divides H and OW divides W the bins are avg_pool2d's tiles, kernel = stride = (H/OH, W/OW):
    y = tile sums / (kh kw),   dx = g / (kh kw) copied over each tile.
    """

    @staticmethod
    def forward(ctx, x, *, output_size):
        (h, w), (oh, ow) = x.shape[2:], output_size
        if h % oh == 0 and w % ow == 0:
            ctx.tile = (h // oh, w // ow)
            return tile_sum(ctx, x, ctx.tile, 1 / (h // oh * (w // ow)))
        ctx.tile, ctx.matrices = None, (bin_matrix(h, oh), bin_matrix(w, ow))
        return separable(ctx, x, *ctx.matrices)

    @staticmethod
    def backward(ctx, g):
        if ctx.tile is not None:
            kh, kw = ctx.tile
            return tile_copy(ctx, g, ctx.tile, 1 / (kh * kw))
        a_h, a_w = ctx.matrices
        return separable(ctx, g, a_h.T, a_w.T)


class InterpolateNearest(Function):
    """y[n, c, i, j] = x[n, c, src_h(i), src_w(j)], src(o) = min(floor(o / s), n - 1) (PyTorch's "nearest"):
    x (N, C, H, W) -> y (N, C, floor(H sh), floor(W sw)).

    dx[n, c, h, w] = the sum of g over the output pixels copied from x[n, c, h, w] (none when s < 1
    skips it): dx = S_h^T g S_w with one-hot rows S[o, src(o)] = 1.
    Integer factors: each pixel becomes an (sh, sw) tile, and dx = tile sums of g.
    """

    @staticmethod
    def forward(ctx, x, *, scale_factor):
        sh, sw = scale_factor
        if isinstance(sh, int) and isinstance(sw, int):
            ctx.tile = (sh, sw)
            return tile_copy(ctx, x, ctx.tile)
        (h, w), (oh, ow) = x.shape[2:], (out_len(x.shape[2], sh), out_len(x.shape[3], sw))
        rows, cols = nearest_index(h, oh, sh), nearest_index(w, ow, sw)
        y = _empty(ctx, x.shape[:2] + (oh, ow), x)
        # gather in memory order: NHWC views (spatial axes 1, 2) when x is channels-last
        src, dst, axes = (x.transpose(0, 2, 3, 1), y.transpose(0, 2, 3, 1), (1, 2)) if _channels_last(x) \
            else (x, y, (2, 3))

        def kernel(s: slice) -> None:
            np.take(np.take(src[s], rows, axis=axes[0]), cols, axis=axes[1], out=dst[s])

        over_batch(kernel, len(x), work=y.size)
        ctx.tile, ctx.matrices = None, (nearest_matrix(h, oh, sh), nearest_matrix(w, ow, sw))
        return y

    @staticmethod
    def backward(ctx, g):
        if ctx.tile is not None:
            return tile_sum(ctx, g, ctx.tile)
        s_h, s_w = ctx.matrices
        return separable(ctx, g, s_h.T, s_w.T)


class InterpolateBilinear(Function):
    """y = B_h x B_w^T, x (N, C, H, W) -> y (N, C, floor(H sh), floor(W sw)); row o of B_h (OH, H) holds
    the weights 1 - f and f at floor(p) and floor(p) + 1 of source position
    p = max((o + 0.5) / sh - 0.5, 0), f = p - floor(p) (align_corners=False).   dx = B_h^T g B_w.
    """

    @staticmethod
    def forward(ctx, x, *, scale_factor):
        (h, w), (sh, sw) = x.shape[2:], scale_factor
        ctx.matrices = linear_matrix(h, out_len(h, sh), sh), linear_matrix(w, out_len(w, sw), sw)
        return separable(ctx, x, *ctx.matrices)

    @staticmethod
    def backward(ctx, g):
        b_h, b_w = ctx.matrices
        return separable(ctx, g, b_h.T, b_w.T)


# ---------------------------------------------------------------------------------------------- #
# Public functions


def _image(fn: str, x):
    from ..tensor import as_tensor

    check_tensor_like(fn, "x", x)
    x = as_tensor(x)
    check_ndim(fn, "x", x.shape, 4, "(N, C, H, W)")
    check_float_dtype(fn, "x", x.dtype)
    check_nonempty(fn, "x", x.shape, (2, 3), "H and W")
    return x


def adaptive_avg_pool2d(x, output_size):
    """Average pooling of x (N, C, H, W) to a fixed output size (N, C, OH, OW), whatever H and W.

    ``output_size``: an int or an (oh, ow) pair, each >= 1 (larger than the input is allowed: bins
    then repeat pixels). Output row i averages rows floor(i H / OH) to ceil((i + 1) H / OH) - 1, as in
    PyTorch; columns likewise. ``output_size=1`` is global average pooling. Where OH divides H (and
    OW divides W) this is ``avg_pool2d`` with kernel = stride = (H/OH, W/OW), and computed as such;
    otherwise as two small matrix products per image (then a non-finite pixel makes its whole output
    row and column NaN, 0 * inf). Keeps x's dtype and memory layout; the gradient spreads each output's
    gradient evenly over its bin.

    >>> adaptive_avg_pool2d(np.ones((2, 8, 7, 7)), 1).shape
    (2, 8, 1, 1)
    >>> adaptive_avg_pool2d(np.arange(5.0).reshape(1, 1, 1, 5), (1, 3)).data
    array([[[[0.5, 2. , 3.5]]]])
    """
    fn = "adaptive_avg_pool2d"
    x = _image(fn, x)
    return AdaptiveAvgPool2d.apply(x, output_size=check_pair(fn, "output_size", output_size))


def _scale(fn: str, value) -> tuple:
    """``scale_factor`` as an (h, w) pair of positive numbers; whole numbers become ints (the fast path)."""
    parts = value if isinstance(value, (tuple, list)) else (value, value)
    if len(parts) != 2:
        raise ValueError(f"{fn}: scale_factor must be a number or an (h, w) pair, got {value!r}")
    pair = []
    for v in parts:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{fn}: scale_factor must be a number or an (h, w) pair of numbers, got {describe(value)}")
        v = check_float(fn, "scale_factor", v, 0.0, low_open=True)
        if v == math.inf:
            raise ValueError(f"{fn}: scale_factor must be finite, got {value!r}")
        pair.append(int(v) if v.is_integer() else v)
    return tuple(pair)


def interpolate(x, scale_factor, mode="nearest"):
    """Resizes images x (N, C, H, W) by ``scale_factor`` -> (N, C, floor(H sh), floor(W sw)).

    ``scale_factor``: a positive number or an (h, w) pair (2, 0.5, (2, 3), 1.5); whole numbers are
    the common case and the fastest. ``mode``, as PyTorch's ``F.interpolate``:

    - ``"nearest"``: output pixel o copies input pixel min(floor(o / s), H - 1); an integer factor
      repeats each pixel s times (``np.repeat`` along both axes). The gradient of an input pixel is
      the sum of the gradients of its copies.
    - ``"bilinear"`` (align_corners=False): output pixel o samples source position
      (o + 0.5) / s - 0.5, clamped at 0, linearly between its two neighbours (the edge pixel past
      the last centre); no antialiasing when shrinking. The gradient is the transposed weighting.

    Keeps x's dtype and memory layout (conv2d's channels-last output stays channels-last).

    >>> interpolate(np.array([[[[1.0, 2.0]]]]), 2).data
    array([[[[1., 1., 2., 2.],
             [1., 1., 2., 2.]]]])
    """
    fn = "interpolate"
    x = _image(fn, x)
    mode = check_choice(fn, "mode", mode, ("nearest", "bilinear"))
    scale = _scale(fn, scale_factor)
    for axis, n, s in zip("HW", x.shape[2:], scale):
        if out_len(n, s) < 1:
            raise ValueError(f"{fn}: scale_factor {s} leaves no pixel of the {n} along {axis} "
                             f"(floor({n} * {s}) = 0; x.shape={x.shape})")
    op = InterpolateNearest if mode == "nearest" else InterpolateBilinear
    return op.apply(x, scale_factor=scale)
