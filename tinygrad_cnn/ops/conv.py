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
from ..checks import check_choice, check_ndim, check_pair, check_tensor_like
from .windows import out_size, pad, resolve_padding, unpad, window

NHWC = (1, 2)  # spatial axes of a channels-last array

# Below this many channels an im2col row block holds only a few floats per copy; building the
# transposed matrix (KH*KW*C, N*OH*OW) writes long contiguous rows instead (measured ~6x faster for C=1).
_FEW_CHANNELS = 4


def _im2col(xp: np.ndarray, kernel, out_hw, stride, dilation) -> np.ndarray:
    """Receptive fields of the padded NHWC input ``xp`` as rows: (N*OH*OW, KH*KW*C).

    Column order is (i, j, c): offset-major, channel-minor, matching ``_filters_as_matrix``.
    """
    (n, _, _, c), (kh, kw), (oh, ow) = xp.shape, kernel, out_hw
    if c < _FEW_CHANNELS:
        cols_t = np.empty((kh, kw, c, n, oh, ow), dtype=xp.dtype)
        for i in range(kh):
            for j in range(kw):
                cols_t[i, j] = window(xp, i, j, out_hw, stride, dilation, NHWC).transpose(3, 0, 1, 2)
        return cols_t.reshape(kh * kw * c, n * oh * ow).T  # a transposed view; BLAS reads it as is
    (sh, sw), (dh, dw) = stride, dilation
    fields = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=NHWC)  # (N, ., ., C, KH', KW')
    fields = fields[:, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, :, ::dh, ::dw]   # (N, OH, OW, C, KH, KW)
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=xp.dtype)
    cols[...] = fields.transpose(0, 1, 2, 4, 5, 3)  # one copy; runs of C contiguous floats
    return cols.reshape(n * oh * ow, kh * kw * c)


def _col2im(dcols: np.ndarray, padded_shape, kernel, out_hw, stride, dilation) -> np.ndarray:
    """The adjoint of ``_im2col``: adds each row's gradient back onto the pixels it was copied from."""
    (n, _, _, c), (kh, kw), (oh, ow) = padded_shape, kernel, out_hw
    dcols = dcols.reshape(n, oh, ow, kh, kw, c)
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            window(dxp, i, j, out_hw, stride, dilation, NHWC)[...] += dcols[:, :, :, i, j, :]
    return dxp


def _filters_as_matrix(w: np.ndarray) -> np.ndarray:
    """(F, C, KH, KW) -> (KH*KW*C, F), rows in im2col's (i, j, c) order."""
    f, c, kh, kw = w.shape
    return w.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)


class Conv2d(Function):
    """y = conv2d(x, w, b): x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW). See the module."""

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride=(1, 1), pads=((0, 0), (0, 0)), mode="zeros", dilation=(1, 1)):
        f, _, kh, kw = w.shape
        xp = pad(x.transpose(0, 2, 3, 1), pads, mode, NHWC)                  # (N, Hp, Wp, C)
        out_hw = tuple(out_size(n, k, s, 0, d) for n, k, s, d in zip(xp.shape[1:3], (kh, kw), stride, dilation))
        cols = _im2col(xp, (kh, kw), out_hw, stride, dilation)               # (N*OH*OW, KH*KW*C)
        wmat = _filters_as_matrix(w)                                         # (KH*KW*C, F)
        y = cols @ wmat                                                      # (N*OH*OW, F)
        if b is not None:
            y += b
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None, wmat)
        ctx.geometry = (xp.shape, (kh, kw), out_hw, stride, dilation, pads, mode)
        return y.reshape(x.shape[0], *out_hw, f).transpose(0, 3, 1, 2)       # NCHW view of NHWC memory

    @staticmethod
    def backward(ctx, g):
        cols, wmat = ctx.saved_tensors
        padded_shape, kernel, out_hw, stride, dilation, pads, mode = ctx.geometry
        needs = ctx.needs_input_grad
        g2 = g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1])                 # (N*OH*OW, F), free if NHWC
        dx = dw = db = None
        if needs[0]:
            dcols = g2 @ wmat.T                                              # (N*OH*OW, KH*KW*C)
            dxp = _col2im(dcols, padded_shape, kernel, out_hw, stride, dilation)
            dx = unpad(dxp, pads, mode, NHWC).transpose(0, 3, 1, 2)          # (N, C, H, W)
        if needs[1]:
            kh, kw = kernel
            dw = (cols.T @ g2).reshape(kh, kw, padded_shape[3], -1).transpose(3, 2, 0, 1)  # (F, C, KH, KW)
        if len(needs) == 3 and needs[2]:
            db = np.ones(g2.shape[0], dtype=g2.dtype) @ g2                   # column sums by BLAS
        return (dx, dw) if len(needs) == 2 else (dx, dw, db)


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
        if tensors[2].shape != (w.shape[0],):
            raise ValueError(f"{fn}: b must have shape ({w.shape[0]},) to match w.shape={w.shape}, "
                             f"got {tensors[2].shape}")
    return Conv2d.apply(*tensors, stride=stride, pads=pads, mode=padding_mode, dilation=dilation)
