"""Pooling: each (KH, KW) window of every channel becomes one number, its maximum or its mean.

Both ops loop over the KH*KW kernel offsets, never over pixels: for offset (i, j) the elements at
that place in every window form one strided view (see ``windows.py``), so max-pooling is a running
``np.maximum`` over KH*KW views and average pooling a running sum.

Backward, from the notes: perturbing a non-maximal pixel does not change the window's maximum, so
its gradient is 0; perturbing the maximal pixel moves the output one for one, so it receives the
whole upstream gradient. On a tie exactly one element receives it: the first maximum in row-major
order within the window. Average pooling spreads g / (KH*KW) over the window. Where windows overlap
(stride < kernel) a pixel collects the gradients of every window it belongs to.

Max-pooling's forward finds each window's winner while the images are in cache and keeps only its
kernel offset (``winner``, one byte per output); the backward then writes g * (winner == k) through
offset k's view, never reading x again: x is as large as dx, and reading it back from memory cost
more than the rest of the backward.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..checks import check_float_dtype, check_ndim, check_nonempty, check_pair, check_tensor_like
from ..parallel import cache_blocks, over_batch
from .channels import in_layout_of
from .windows import out_size, pad, unpad, window

NCHW = (2, 3)


def _geometry(x_shape, kernel, stride, pads):
    return tuple(out_size(n, k, s, p0 + p1) for n, k, s, (p0, p1) in zip(x_shape[2:], kernel, stride, pads))


def _pad_channels_last(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    """x padded (if at all) into channels-last memory, the layout conv2d produces and keeps."""
    if not any(p for pair in pads for p in pair):
        return x
    return pad(x.transpose(0, 2, 3, 1), pads, "zeros", (1, 2), value).transpose(0, 3, 1, 2)


def _channels_last(a: np.ndarray) -> bool:
    """Whether the (N, C, H, W) array ``a`` is channels-last (NHWC) in memory, as conv2d hands it on."""
    return a.transpose(0, 2, 3, 1).flags.c_contiguous and not a.flags.c_contiguous


def _offsets(kernel):
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]  # row-major: the tie-break order


def _window_maxima(views: list, out: np.ndarray, b: slice) -> None:
    """out[b] = the elementwise maximum of the windows' views (one per kernel offset) over images ``b``."""
    np.copyto(out[b], views[0][b])
    for v in views[1:]:
        np.maximum(out[b], v[b], out=out[b])


def _first_maxima(views: list, y: np.ndarray):
    """Yields (k, hit) for each view of the windows (one per kernel offset, row-major, as
    ``_window_maxima`` takes them): ``hit`` (y's shape and memory layout) marks the windows whose first
    element equal to their maximum ``y`` is the k-th, the one element of a window that receives its
    gradient."""
    unclaimed = np.ones_like(y, dtype=bool)  # windows whose maximum has not been found yet; *_like keeps
    # y's memory layout: mixing layouts in one ufunc call is several times slower
    for k, v in enumerate(views):
        if k < len(views) - 1:
            hit = v == y
            hit &= unclaimed
            unclaimed ^= hit
        else:  # every window still unclaimed has its maximum here: no comparison needed
            hit = unclaimed
        yield k, hit


def _winners(views: list, y: np.ndarray, winner: np.ndarray) -> None:
    """winner = the offset k of the view holding each window's first element equal to its maximum ``y``
    (row-major, as ``_first_maxima``), counted as the offsets after which the window is still unclaimed:
    a window first won at offset k stays unclaimed after offsets 0..k-1. (Setting k where a mask is true,
    ``np.copyto(..., where=)``, measured 8x slower than these adds.)"""
    unclaimed = np.ones_like(y, dtype=bool)
    differs = np.empty_like(unclaimed)
    winner[...] = 0
    for v in views[:-1]:  # a window unclaimed after the last offset but one has its maximum there
        np.not_equal(v, y, out=differs)
        unclaimed &= differs
        winner += unclaimed


class MaxPool2d(Function):
    """y[n, c, oh, ow] = max over the window at (oh*sh, ow*sw) of x padded with -inf."""

    @staticmethod
    def forward(ctx, x, *, kernel, stride, pads):
        xp = _pad_channels_last(x, pads, value=-np.inf)
        out_hw = _geometry(x.shape, kernel, stride, pads)
        offsets = _offsets(kernel)
        views = [window(xp, i, j, out_hw, stride, axes=NCHW) for i, j in offsets]
        y = ctx.empty_like(views[0])  # keeps the input's memory layout (NHWC stays NHWC)
        winner = ctx.empty_like(y, np.uint8 if len(offsets) <= 256 else np.uint16)  # y's layout too

        def kernel_(s: slice) -> None:
            for b in cache_blocks(s, xp[:1].nbytes):  # strided passes per offset, while the block is in cache
                _window_maxima(views, y, b)
                _winners([v[b] for v in views], y[b], winner[b])

        over_batch(kernel_, len(x), work=xp.size)
        ctx.save_for_backward(winner)
        ctx.geometry = (xp.shape, _channels_last(xp), kernel, stride, pads, out_hw)
        return y

    @staticmethod
    def backward(ctx, g):
        (winner,) = ctx.saved_tensors
        (n, c, hp, wp), channels_last, kernel, stride, pads, out_hw = ctx.geometry
        g = in_layout_of(g, winner, ctx.empty_like)  # e.g. NCHW from a flatten's backward, y channels-last
        dxp = (ctx.empty((n, hp, wp, c), g.dtype).transpose(0, 3, 1, 2) if channels_last  # x's layout
               else ctx.empty((n, c, hp, wp), g.dtype))
        overlapping = stride[0] < kernel[0] or stride[1] < kernel[1]
        tiled = tuple(stride) == tuple(kernel)  # the windows write every pixel they cover
        offsets = _offsets(kernel)

        def kernel_(s: slice) -> None:
            if not tiled:
                dxp[s] = 0
            else:  # only the rows and columns past the last window are never written
                dxp[s, :, out_hw[0] * kernel[0]:] = 0
                dxp[s, :, :, out_hw[1] * kernel[1]:] = 0
            for b in cache_blocks(s, dxp[:1].nbytes):
                hit = np.empty_like(winner[b], dtype=bool)
                for k, (i, j) in enumerate(offsets):
                    np.equal(winner[b], k, out=hit)
                    target = window(dxp[b], i, j, out_hw, stride, axes=NCHW)
                    if overlapping:
                        target += g[b] * hit
                    else:  # each input pixel lies in one window: write instead of add
                        np.multiply(g[b], hit, out=target)

        over_batch(kernel_, len(dxp), work=dxp.size)
        return unpad(dxp, pads, "zeros", NCHW)


class AvgPool2d(Function):
    """y = mean of each window of x padded with zeros (padded zeros count in the divisor)."""

    @staticmethod
    def forward(ctx, x, *, kernel, stride, pads):
        xp = _pad_channels_last(x, pads)
        out_hw = _geometry(x.shape, kernel, stride, pads)
        views = [window(xp, i, j, out_hw, stride, axes=NCHW) for i, j in _offsets(kernel)]
        y = ctx.empty_like(views[0])
        share = x.dtype.type(1 / (kernel[0] * kernel[1]))

        def kernel_(s: slice) -> None:
            np.copyto(y[s], views[0][s])
            for v in views[1:]:
                y[s] += v[s]
            y[s] *= share

        over_batch(kernel_, len(x), work=xp.size)
        ctx.geometry = (xp.shape, kernel, stride, pads, out_hw)
        return y

    @staticmethod
    def backward(ctx, g):
        padded_shape, kernel, stride, pads, out_hw = ctx.geometry
        share = g * g.dtype.type(1 / (kernel[0] * kernel[1]))
        n, c, hp, wp = padded_shape
        dxp = np.zeros((n, hp, wp, c), dtype=g.dtype).transpose(0, 3, 1, 2)  # channels-last, like g
        for i, j in _offsets(kernel):
            window(dxp, i, j, out_hw, stride, axes=NCHW)[...] += share
        return unpad(dxp, pads, "zeros", NCHW)


def _pool_args(fn, x, kernel_size, stride, padding):
    from ..tensor import as_tensor

    check_tensor_like(fn, "x", x)
    x = as_tensor(x)
    check_ndim(fn, "x", x.shape, 4, "(N, C, H, W)")
    check_float_dtype(fn, "x", x.dtype)
    check_nonempty(fn, "x", x.shape, (2, 3), "H and W")
    kernel = check_pair(fn, "kernel_size", kernel_size)
    stride = kernel if stride is None else check_pair(fn, "stride", stride)
    ph, pw = check_pair(fn, "padding", padding, minimum=0)
    if 2 * ph > kernel[0] or 2 * pw > kernel[1]:
        raise ValueError(f"{fn}: padding must be at most half the kernel size, got padding={padding!r} "
                         f"for kernel_size={kernel_size!r}")
    for axis, n, k, p in zip("HW", x.shape[2:], kernel, (ph, pw)):
        if n + 2 * p < k:
            raise ValueError(f"{fn}: kernel_size {k} along {axis} is larger than the padded input ({n + 2 * p}) "
                             f"(x.shape={x.shape})")
    return x, dict(kernel=kernel, stride=stride, pads=((ph, ph), (pw, pw)))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling of x (N, C, H, W) -> (N, C, OH, OW), OH = floor((H + 2*pad - KH) / stride) + 1.

    ``kernel_size``, ``stride`` (default: ``kernel_size``) and ``padding`` take an int or an (h, w)
    pair; padded positions never win (they act as -inf; padding is at most half the kernel). The
    gradient of each window goes to its maximum only; on a tie to exactly one element, the first
    maximum in row-major order within the window. Overlapping windows add their gradients.

    >>> max_pool2d(np.zeros((1, 3, 64, 64)), 2).shape
    (1, 3, 32, 32)
    """
    x, kw = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d.apply(x, **kw)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling of x (N, C, H, W) -> (N, C, OH, OW); arguments as :func:`max_pool2d`.

    Padded zeros count in the divisor (every window divides by KH*KW, PyTorch's default).
    """
    x, kw = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, **kw)
