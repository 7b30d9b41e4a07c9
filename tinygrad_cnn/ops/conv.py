"""conv2d: cross-correlation of an NCHW batch with (F, C, KH, KW) filters, by im2col and one matmul.

    y[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j] * x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]

im2col lays every receptive field out as a row: ``cols`` (N*OH*OW, KH*KW*C), one row per output
pixel. With the filters as a matrix ``wmat`` (KH*KW*C, F), the whole convolution is one BLAS matmul,
``y = cols @ wmat``, and so are two thirds of its backward:

    dw = cols^T @ g            (KH*KW*C, F)  how each weight changes every output it touched
    db = sum of g over N, OH, OW
    dcols = g @ wmat^T         (N*OH*OW, KH*KW*C), then added back onto the input pixels each row
                               was copied from (col2im: one strided add per kernel offset)

Layout. The rows of ``cols`` are built from a channels-last (NHWC) view of x, so each copy moves runs
of C contiguous floats instead of single pixels, and the matmul's result (N*OH*OW, F) *is* an NHWC
array: the op returns it as an NCHW *view* (a transpose, no copy). The next op receives channels-last
memory behind an NCHW shape, and its own ``transpose(0, 2, 3, 1)`` is free again. Everything stays
NCHW to the user; only the strides differ.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..autograd import Function
from ..checks import check_choice, check_float_dtype, check_ndim, check_nonempty, check_pair, check_tensor_like
from ..parallel import over_batch
from .windows import out_size, pad, resolve_padding, unpad, window

NHWC = (1, 2)  # spatial axes of a channels-last array

# Below this many channels an im2col row block holds only a few floats per copy; building the
# transposed matrix (KH*KW*C, N*OH*OW) writes long contiguous rows instead (measured ~6x faster for C=1).
_FEW_CHANNELS = 4

# im2col rows are built, and col2im rows consumed, in blocks of images of about this many bytes, so
# that the matmul reads (or the scatter-add writes) what is still in the core's cache.
_BLOCK_BYTES = 1 << 20


def _blocks(s: slice, bytes_per_image: int) -> list[slice]:
    """``s`` (a slice of images) cut into consecutive blocks of about ``_BLOCK_BYTES``."""
    size = max(1, _BLOCK_BYTES // max(bytes_per_image, 1))
    return [slice(a, min(a + size, s.stop)) for a in range(s.start, s.stop, size)]


def _im2col(xp: np.ndarray, cols: np.ndarray, kernel, out_hw, stride, dilation) -> None:
    """Fills ``cols`` (N*OH*OW, KH*KW*C) with the receptive fields of the padded NHWC input ``xp``.

    Column order is (i, j, c): offset-major, channel-minor, matching ``_filters_as_matrix``.
    """
    (n, _, _, c), (kh, kw), (oh, ow) = xp.shape, kernel, out_hw
    if c < _FEW_CHANNELS:  # cols is the transpose of a (K, M) array: write K long contiguous rows
        rows = np.reshape(cols.T, (kh, kw, c, n, oh, ow), copy=False)
        for i in range(kh):
            for j in range(kw):
                rows[i, j] = window(xp, i, j, out_hw, stride, dilation, NHWC).transpose(3, 0, 1, 2)
        return
    (sh, sw), (dh, dw) = stride, dilation
    fields = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=NHWC)  # (N, ., ., C, KH', KW')
    fields = fields[:, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, :, ::dh, ::dw]   # (N, OH, OW, C, KH, KW)
    np.reshape(cols, (n, oh, ow, kh, kw, c), copy=False)[...] = fields.transpose(0, 1, 2, 4, 5, 3)


def _col2im(dcols: np.ndarray, dxp: np.ndarray, kernel, out_hw, stride, dilation) -> None:
    """The adjoint of ``_im2col``: adds each row of ``dcols`` onto the pixels of ``dxp`` it came from."""
    (n, _, _, c), (kh, kw), (oh, ow) = dxp.shape, kernel, out_hw
    dcols = dcols.reshape(n, oh, ow, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            window(dxp, i, j, out_hw, stride, dilation, NHWC)[...] += dcols[:, :, :, i, j, :]


def _filters_as_matrix(w: np.ndarray) -> np.ndarray:
    """(F, C, KH, KW) -> (KH*KW*C, F), rows in im2col's (i, j, c) order."""
    f, c, kh, kw = w.shape
    return w.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)


class Conv2d(Function):
    """y = conv2d(x, w, b): x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW). See the module.

    Both passes run image slices of the batch in parallel threads (``parallel.over_batch``): each
    thread builds its rows of ``cols`` and multiplies them; the weight gradients of the slices add up.
    """

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride=(1, 1), pads=((0, 0), (0, 0)), mode="zeros", dilation=(1, 1)):
        (n, c), (f, _, kh, kw) = x.shape[:2], w.shape
        dtype = np.result_type(x.dtype, w.dtype)
        xp = pad(x.transpose(0, 2, 3, 1), pads, mode, NHWC)                 # (N, Hp, Wp, C)
        out_hw = tuple(out_size(size, k, s, 0, d) for size, k, s, d in zip(xp.shape[1:3], (kh, kw), stride, dilation))
        pixels = out_hw[0] * out_hw[1]                                      # output pixels per image
        m, k = n * pixels, kh * kw * c
        cols = ctx.empty((k, m), dtype).T if c < _FEW_CHANNELS else ctx.empty((m, k), dtype)  # (M, K)
        wmat = _filters_as_matrix(w).astype(dtype, copy=False)              # (K, F)
        y = ctx.empty((m, f), dtype)                                        # (M, F): NHWC rows

        def kernel(s: slice) -> None:
            for block in _blocks(s, pixels * k * cols.itemsize):
                rows = slice(block.start * pixels, block.stop * pixels)
                _im2col(xp[block], cols[rows], (kh, kw), out_hw, stride, dilation)
                np.matmul(cols[rows], wmat, out=y[rows])
                if b is not None:
                    y[rows] += b

        over_batch(kernel, n, work=cols.size)
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None, wmat)
        ctx.geometry = (xp.shape, (kh, kw), out_hw, stride, dilation, pads, mode)
        return y.reshape(n, *out_hw, f).transpose(0, 3, 1, 2)               # NCHW view of NHWC memory

    @staticmethod
    def backward(ctx, g):
        cols, wmat = ctx.saved_tensors
        padded_shape, ksize, out_hw, stride, dilation, pads, mode = ctx.geometry
        need_x, need_w, need_b = (ctx.needs_input_grad + (False,))[:3]
        n, f = g.shape[:2]
        pixels = out_hw[0] * out_hw[1]
        g2 = g.transpose(0, 2, 3, 1).reshape(-1, f)                         # (M, F), free if NHWC
        dxp = ctx.empty(padded_shape, g.dtype) if need_x else None  # zeroed slice by slice in the threads
        ones = np.ones(n * pixels, g.dtype) if need_b else None

        def kernel(s: slice):
            rows = slice(s.start * pixels, s.stop * pixels)
            gs = g2[rows]
            if need_x:
                dxp[s] = 0
                for block in _blocks(s, pixels * wmat.shape[0] * g2.itemsize):
                    block_rows = slice(block.start * pixels, block.stop * pixels)
                    _col2im(g2[block_rows] @ wmat.T, dxp[block], ksize, out_hw, stride, dilation)  # dcols @ wmat^T
            dw = cols[rows].T @ gs if need_w else None                      # (K, F) partial sum
            db = ones[rows] @ gs if need_b else None                        # column sums by BLAS
            return dw, db

        parts = over_batch(kernel, n, work=g2.size * wmat.shape[0] // max(f, 1))
        dx = unpad(dxp, pads, mode, NHWC).transpose(0, 3, 1, 2) if need_x else None  # (N, C, H, W)
        dw = db = None
        if need_w:
            kh, kw = ksize
            dw = sum(p[0] for p in parts).reshape(kh, kw, -1, f).transpose(3, 2, 0, 1)  # (F, C, KH, KW)
        if need_b:
            db = sum(p[1] for p in parts)
        return (dx, dw) if len(ctx.needs_input_grad) == 2 else (dx, dw, db)


PADDING_MODES = ("zeros", "replicate", "circular")


def conv2d(x, w, b=None, *, stride=1, padding=0, padding_mode="zeros", dilation=1):
    """2-D cross-correlation (no kernel flip), as in every deep-learning framework.

    Args:
        x: input (N, C, H, W).
        w: filters (F, C, KH, KW).
        b: optional bias (F,).
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int or (h, w) pair (>= 0, on both sides), ``"valid"`` (no padding) or ``"same"``
            (output size ceil(H / stride); total padding max((out-1)*stride + (k-1)*dilation + 1 - H, 0),
            the odd pixel at the bottom/right, TensorFlow's rule for any stride).
        padding_mode: ``"zeros"``; ``"replicate"`` repeats the edge pixel (the notes' "same-padding");
            ``"circular"`` wraps around (periodic lattices, e.g. the Ising model).

    Returns:
        (N, F, OH, OW) with OH = floor((H + pad_h - dilation*(KH-1) - 1) / stride) + 1. The array is
        channels-last in memory (see the module docstring); its values and shape are plain NCHW.

    The notes' example, the filter [[1, 2], [-1, 0]] on a 3x4 image:

    >>> image = np.array([[5, 2, 2, 3], [3, 1, 2, 1], [9, 0, 4, 5]], dtype=np.float32)
    >>> conv2d(image[None, None], np.array([[[[1, 2], [-1, 0]]]], dtype=np.float32)).data[0, 0]
    array([[ 6.,  5.,  6.],
           [-4.,  5.,  0.]], dtype=float32)
    """
    from ..tensor import as_tensor

    fn = "conv2d"
    check_tensor_like(fn, "x", x)
    check_tensor_like(fn, "w", w)
    x, w = as_tensor(x), as_tensor(w)
    check_ndim(fn, "x", x.shape, 4, "(N, C, H, W)")
    check_ndim(fn, "w", w.shape, 4, "(out_channels, in_channels, KH, KW)")
    check_float_dtype(fn, "x", x.dtype)
    check_float_dtype(fn, "w", w.dtype)
    check_nonempty(fn, "x", x.shape, (2, 3), "H and W")
    check_nonempty(fn, "w", w.shape, (0, 2, 3), "out_channels, KH and KW")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{fn}: x has {x.shape[1]} channels but w expects {w.shape[1]} "
                         f"(x.shape={x.shape}, w.shape={w.shape})")
    stride, dilation = check_pair(fn, "stride", stride), check_pair(fn, "dilation", dilation)
    check_choice(fn, "padding_mode", padding_mode, PADDING_MODES)
    kernel = w.shape[2:]
    pads = resolve_padding(fn, padding, x.shape[2:], kernel, stride, dilation)
    for axis, n, k, d, (p0, p1) in zip("HW", x.shape[2:], kernel, dilation, pads):
        if n + p0 + p1 < d * (k - 1) + 1:
            raise ValueError(f"{fn}: the kernel spans {d * (k - 1) + 1} pixels along {axis} but the padded input "
                             f"has only {n + p0 + p1} (x.shape={x.shape}, w.shape={w.shape}, padding={padding!r})")
        if padding_mode == "circular" and max(p0, p1) > n:
            raise ValueError(f"{fn}: circular padding of {max(p0, p1)} along {axis} wraps more than once around an "
                             f"input of size {n}")
    tensors = [x, w]
    if b is not None:
        check_tensor_like(fn, "b", b)
        tensors.append(as_tensor(b))
        check_float_dtype(fn, "b", tensors[2].dtype)
        if tensors[2].shape != (w.shape[0],):
            raise ValueError(f"{fn}: b must have shape ({w.shape[0]},) to match w.shape={w.shape}, "
                             f"got {tensors[2].shape}")
    return Conv2d.apply(*tensors, stride=stride, pads=pads, mode=padding_mode, dilation=dilation)
