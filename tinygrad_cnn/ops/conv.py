"""conv2d and conv_transpose2d: cross-correlation of an NCHW batch with (F, C/G, KH, KW) filters, by
im2col and one matmul per group of channels, and its adjoint.

    y[n, f, oh, ow] = b[f] + sum_{c in group(f), i, j} w[f, c', i, j] * x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]

(c' = c mod C/G). With ``groups=G`` the C input and F output channels are cut into G consecutive
groups, and output group g sees input group g only: G independent convolutions side by side
(``groups=C`` is a depthwise convolution: one KH x KW filter per channel, or F/C of them).

im2col lays every receptive field out as a row: ``cols`` (G, N*OH*OW, KH*KW*C/G), one row per
output pixel and group. With the filters as matrices ``wmat`` (G, KH*KW*C/G, F/G), the whole
convolution is one BLAS matmul per group, ``y_g = cols_g @ wmat_g`` (``np.matmul`` over the group
axis), and so are two thirds of its backward:

    dw_g = cols_g^T @ g_g        (KH*KW*C/G, F/G)  how each weight changes every output it touched
    db = sum of g over N, OH, OW
    dcols_g = g_g @ wmat_g^T     (N*OH*OW, KH*KW*C/G), then added back onto the input pixels each row
                                 was copied from (col2im: one strided add per kernel offset)

Each group's ``cols_g`` is its own contiguous matrix (group-major), so a group's matmul streams its
own rows instead of picking C/G columns out of every row of a wide matrix. With G = 1 all of this
is the plain ungrouped im2col.

Layout. The rows of ``cols`` are built from a channels-last (NHWC) view of x, so each copy moves runs
of C/G contiguous floats instead of single pixels, and the matmul's result (N*OH*OW, F) *is* an NHWC
array: the op returns it as an NCHW *view* (a transpose, no copy). The next op receives channels-last
memory behind an NCHW shape, and its own ``transpose(0, 2, 3, 1)`` is free again. Everything stays
NCHW to the user; only the strides differ.

Transposed convolution ("backprop through a convolution"). For fixed filters, conv2d is a linear map
A_w from images z (N, C, Hz, Wz) to outputs (N, F, H, W). Its adjoint A_w^T maps (N, F, H, W) back to
(N, C, Hz, Wz) and is, by definition, what the backward pass sends to z: dz = A_w^T g. ``conv_transpose2d(x, w)``
*is* that map applied to x, with w (F, C/G, KH, KW) read as PyTorch's (in_channels, out_channels/G, KH, KW):

    forward    y  = col2im(x @ wmat^T)          conv2d's input gradient, with x as the upstream gradient
    backward   dx = im2col(g) @ wmat            conv2d's forward applied to g   (A_w applied to g)
               dw = im2col(g)^T @ x             conv2d's weight gradient with the roles of image and
                                                upstream gradient swapped
               db = sum of g over N, OH, OW

so both ops are made of the same three kernels below (``_convolve``, ``_scatter``, ``_weight_grad``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..autograd import Function
from ..checks import (check_choice, check_float_dtype, check_int, check_ndim, check_nonempty, check_pair,
                      check_tensor_like)
from ..parallel import cache_blocks, over_batch
from .channels import row_repeats, tiled, wide
from .windows import out_size, pad, resolve_padding, unpad, window

NHWC = (1, 2)  # spatial axes of a channels-last array

# Below this many channels per group an im2col row block holds only a few floats per copy; building
# the transposed matrices (G, KH*KW*C/G, N*OH*OW) writes long contiguous rows instead (measured ~6x
# faster for C=1).
_FEW_CHANNELS = 4


def _im2col(xp: np.ndarray, cols: np.ndarray, kernel, out_hw, stride, dilation) -> None:
    """Fills ``cols`` (G, N*OH*OW, KH*KW*C/G) with the receptive fields of the padded NHWC input ``xp``.

    Column order is (i, j, c): offset-major, channel-minor, matching ``_filters_as_matrix``.
    """
    (n, hp, wp, c), (kh, kw), (oh, ow), groups = xp.shape, kernel, out_hw, cols.shape[0]
    cg = c // groups
    if cg < _FEW_CHANNELS:  # cols is the transpose of (G, K/G, M) arrays: write K long contiguous rows
        rows = np.reshape(cols.transpose(0, 2, 1), (groups, kh, kw, cg, n, oh, ow), copy=False)
        planes = np.reshape(xp, (n, hp, wp, groups, cg), copy=False).transpose(3, 4, 0, 1, 2)  # (G, C/G, N, Hp, Wp)
        for i in range(kh):
            for j in range(kw):
                rows[:, i, j] = window(planes, i, j, out_hw, stride, dilation, (3, 4))
        return
    (sh, sw), (dh, dw) = stride, dilation
    fields = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=NHWC)  # (N, ., ., C, KH', KW')
    fields = fields[:, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, :, ::dh, ::dw]   # (N, OH, OW, C, KH, KW)
    fields = fields.reshape(n, oh, ow, groups, cg, kh, kw)                              # C = (G, C/G)
    np.reshape(cols, (groups, n, oh, ow, kh, kw, cg), copy=False)[...] = fields.transpose(3, 0, 1, 2, 5, 6, 4)


def _col2im(dcols: np.ndarray, dxp: np.ndarray, kernel, out_hw, stride, dilation) -> None:
    """The adjoint of ``_im2col``: adds each row of ``dcols`` (G, N*OH*OW, K/G) onto the pixels of
    ``dxp`` (N, Hp, Wp, C) it came from."""
    (n, hp, wp, c), (kh, kw), (oh, ow), groups = dxp.shape, kernel, out_hw, dcols.shape[0]
    if groups == 1:  # no size-1 group axis in every add (measured a few % faster)
        dcols = dcols.reshape(n, oh, ow, kh, kw, c)
    else:            # channels as (G, C/G) on both sides: one add per offset covers every group
        dxp = np.reshape(dxp, (n, hp, wp, groups, c // groups), copy=False)
        dcols = dcols.reshape(groups, n, oh, ow, kh, kw, c // groups).transpose(1, 2, 3, 4, 5, 0, 6)  # (.., G, C/G)
    for i in range(kh):
        for j in range(kw):
            window(dxp, i, j, out_hw, stride, dilation, NHWC)[...] += dcols[:, :, :, i, j]


def _filters_as_matrix(w: np.ndarray, groups: int) -> np.ndarray:
    """(F, C/G, KH, KW) -> (G, KH*KW*C/G, F/G), rows in im2col's (i, j, c) order."""
    f, cg, kh, kw = w.shape
    fg = f // groups
    return w.reshape(groups, fg, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(groups, kh * kw * cg, fg)


def _matrix_as_filters(wmat: np.ndarray, kernel) -> np.ndarray:
    """The inverse of ``_filters_as_matrix``: (G, KH*KW*C/G, F/G) -> (F, C/G, KH, KW)."""
    (groups, k, fg), (kh, kw) = wmat.shape, kernel
    cg = k // (kh * kw)
    return wmat.reshape(groups, kh, kw, cg, fg).transpose(0, 4, 3, 1, 2).reshape(groups * fg, cg, kh, kw)


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul`` of (G, M, K) and (G, K, N) stacks. With K = 1 (one channel and one filter per
    group: depthwise) the product is an outer product, computed as a broadcast multiply: BLAS's gemm
    with K = 1 took twice as long."""
    return np.multiply(a, b, out=out) if a.shape[-1] == 1 else np.matmul(a, b, out=out)


def _by_group(a: np.ndarray, groups: int) -> np.ndarray:
    """(M, G*q) -> the (G, M, q) view: group g's consecutive columns as its own matrix."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups).transpose(1, 0, 2)


def _nhwc_rows(ctx, a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*H*W, C), one row per pixel: free when ``a`` is channels-last in memory."""
    n, c, h, w = a.shape
    nhwc = a.transpose(0, 2, 3, 1)
    if nhwc.flags.c_contiguous:
        return nhwc.reshape(n * h * w, c)
    rows = ctx.empty((n * h * w, c), a.dtype)
    rows.reshape(n, h, w, c)[...] = nhwc
    return rows


def _new_cols(ctx, groups: int, m: int, k: int, channels_per_group: int, dtype) -> np.ndarray:
    """Memory for im2col's (G, M, K/G) matrices: group-major, each group's transposed when it has few channels."""
    if channels_per_group < _FEW_CHANNELS:
        return ctx.empty((groups, k // groups, m), dtype).transpose(0, 2, 1)
    return ctx.empty((groups, m, k // groups), dtype)


# The three kernels both ops are made of. Each works on the images ``s`` of the batch (a thread's slice)
# and writes only their rows. ``geometry`` = (kernel, out_hw, stride, dilation) of the convolution.

def _convolve(xp, wmat, cols, y, b, geometry, s: slice) -> None:
    """conv2d's forward for images ``s``: ``cols`` = im2col(xp), then (unless ``y`` is None) the rows
    ``y`` (M, F) = cols @ wmat (+ b). ``b`` is the bias tiled for rows of ``row_repeats(OH*OW, F)``
    pixels (channels.py) or None.

    One im2col and one matmul for the whole slice, not one per cache block: the backward keeps all of
    ``cols`` anyway, and BLAS is faster on long matrices than the block's cache reuse saves (conv2 of
    the reference CNN, 64 images on one thread: 0.85x the time of ~1 MB blocks, 0.87x for 16 images)."""
    out_hw = geometry[1]
    pixels, groups = out_hw[0] * out_hw[1], wmat.shape[0]
    rows = slice(s.start * pixels, s.stop * pixels)
    _im2col(xp[s], cols[:, rows], *geometry)
    if y is not None:
        _matmul(cols[:, rows], wmat, out=_by_group(y, groups)[:, rows])
        if b is not None:
            y_rows = wide(y[rows], len(b) // y.shape[1])
            np.add(y_rows, b, out=y_rows)


def _scatter(g2, wmat, dxp, geometry, s: slice, start=0) -> None:
    """conv2d's input gradient for images ``s``: ``dxp[s]`` = start + col2im(g2 @ wmat^T), where g2 is
    (M, F) (one row per output pixel) and dxp the padded NHWC input (N, Hp, Wp, C)."""
    pixels, groups = geometry[1][0] * geometry[1][1], wmat.shape[0]
    g_g, wmat_t = _by_group(g2, groups), wmat.transpose(0, 2, 1)          # (G, M, F/G), (G, F/G, K/G)
    dxp[s] = start
    for block in cache_blocks(s, pixels * groups * wmat.shape[1] * g2.itemsize):
        rows = slice(block.start * pixels, block.stop * pixels)
        _col2im(_matmul(g_g[:, rows], wmat_t), dxp[block], *geometry)  # dcols (G, rows, K/G)


def _weight_grad(cols, g2, groups: int, rows: slice) -> np.ndarray:
    """conv2d's weight gradient from the rows ``rows``: cols^T @ g2 per group, (G, K/G, F/G)."""
    return np.matmul(cols[:, rows].transpose(0, 2, 1), _by_group(g2[rows], groups))


class Conv2d(Function):
    """y = conv2d(x, w, b): x (N, C, H, W), w (F, C/G, KH, KW), b (F,) -> y (N, F, OH, OW). See the module.

    Both passes run image slices of the batch in parallel threads (``parallel.over_batch``): each
    thread builds its rows of ``cols`` and multiplies them; the weight gradients of the slices add up.
    """

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride=(1, 1), pads=((0, 0), (0, 0)), mode="zeros", dilation=(1, 1),
                groups=1):
        (n, c), (f, _, kh, kw) = x.shape[:2], w.shape
        dtype = np.result_type(x.dtype, w.dtype)
        xp = pad(x.transpose(0, 2, 3, 1), pads, mode, NHWC)                 # (N, Hp, Wp, C)
        out_hw = tuple(out_size(size, k, s, 0, d) for size, k, s, d in zip(xp.shape[1:3], (kh, kw), stride, dilation))
        m = n * out_hw[0] * out_hw[1]
        cols = _new_cols(ctx, groups, m, kh * kw * c, c // groups, dtype)   # (G, M, K/G)
        wmat = _filters_as_matrix(w, groups).astype(dtype, copy=False)      # (G, K/G, F/G)
        y = ctx.empty((m, f), dtype)                                        # (M, F): NHWC rows
        geometry = ((kh, kw), out_hw, stride, dilation)
        b_rows = None if b is None else tiled(b, row_repeats(out_hw[0] * out_hw[1], f))
        over_batch(lambda s: _convolve(xp, wmat, cols, y, b_rows, geometry, s), n, work=cols.size)
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None, wmat)
        ctx.geometry = (xp.shape, geometry, pads, mode)
        return y.reshape(n, *out_hw, f).transpose(0, 3, 1, 2)               # NCHW view of NHWC memory

    @staticmethod
    def backward(ctx, g):
        cols, wmat = ctx.saved_tensors
        padded_shape, geometry, pads, mode = ctx.geometry
        need_x, need_w, need_b = (ctx.needs_input_grad + (False,))[:3]
        (n, f), groups = g.shape[:2], wmat.shape[0]
        pixels = g.shape[2] * g.shape[3]
        g2 = _nhwc_rows(ctx, g)                                             # (M, F), free if NHWC
        dxp = ctx.empty(padded_shape, g.dtype) if need_x else None  # zeroed slice by slice in the threads
        ones = np.ones(n * pixels, g.dtype) if need_b else None

        def kernel(s: slice):
            rows = slice(s.start * pixels, s.stop * pixels)
            if need_x:
                _scatter(g2, wmat, dxp, geometry, s)
            dw = _weight_grad(cols, g2, groups, rows) if need_w else None  # (G, K/G, F/G) partial sum
            db = ones[rows] @ g2[rows] if need_b else None                 # column sums by BLAS
            return dw, db

        parts = over_batch(kernel, n, work=g2.size * groups * wmat.shape[1] // max(f, 1))
        dx = unpad(dxp, pads, mode, NHWC).transpose(0, 3, 1, 2) if need_x else None  # (N, C, H, W)
        dw = _matrix_as_filters(sum(p[0] for p in parts), geometry[0]) if need_w else None  # (F, C/G, KH, KW)
        db = sum(p[1] for p in parts) if need_b else None
        return (dx, dw) if len(ctx.needs_input_grad) == 2 else (dx, dw, db)


class ChannelBias(Function):
    """y = x + b[c] per channel: x (N, C, H, W), b (C,) -> y like x.   dx = g,   db = sum of g over N, H, W.

    conv2d's bias as an op of its own, for jit's ``bias_after_max_pool`` rewrite (rewrites.py), which
    adds it after the pooling instead of inside the convolution: on a quarter of the elements.
    """

    @staticmethod
    def forward(ctx, x, b):
        y = ctx.empty_like(x)                                                # keeps x's memory layout
        np.add(x, b.astype(x.dtype, copy=False).reshape(-1, 1, 1), out=y)
        return y

    @staticmethod
    def backward(ctx, g):
        need_x, need_b = ctx.needs_input_grad
        rows = _nhwc_rows(ctx, g) if need_b else None                       # (N*H*W, C)
        return (g if need_x else None), (np.ones(len(rows), g.dtype) @ rows if need_b else None)


class ConvTranspose2d(Function):
    """y = conv_transpose2d(x, w, b): x (N, Cin, H, W), w (Cin, Cout/G, KH, KW), b (Cout,) -> y (N, Cout, OH, OW).

    The adjoint of conv2d with filters w (read as conv2d's (F, C/G, KH, KW) = (Cin, Cout/G, KH, KW),
    a map from Cout to Cin channels): see the module docstring. With z the padded output
    (N, OH + 2*ph, OW + 2*pw, Cout), channels-last:

        forward    z = b + col2im(x @ wmat^T),  y = z without its padding      (conv2d's dx for upstream x)
        backward   cols = im2col(pad(g)),  dx = cols @ wmat,  dw = cols^T @ x,  db = sum g

    Both run image slices in parallel threads, like Conv2d.
    """

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1),
                groups=1):
        (n, _, h, wd), (_, cg_out, kh, kw) = x.shape, w.shape
        c_out = cg_out * groups
        dtype = np.result_type(x.dtype, w.dtype)
        wmat = _filters_as_matrix(w, groups).astype(dtype, copy=False)      # (G, KH*KW*Cout/G, Cin/G)
        x2 = _nhwc_rows(ctx, x)                                             # (N*H*W, Cin)
        padded = [(size - 1) * s + d * (k - 1) + 1 + op
                  for size, k, s, d, op in zip((h, wd), (kh, kw), stride, dilation, output_padding)]
        zp = ctx.empty((n, *padded, c_out), dtype)                          # (N, OH + 2ph, OW + 2pw, Cout)
        (ph, pw), out_hw = padding, (padded[0] - 2 * padding[0], padded[1] - 2 * padding[1])
        y = zp if ph == pw == 0 else ctx.empty((n, *out_hw, c_out), dtype)  # (N, OH, OW, Cout)
        geometry = ((kh, kw), (h, wd), stride, dilation)

        def kernel(s: slice) -> None:
            _scatter(x2, wmat, zp, geometry, s, 0 if b is None else b)
            if y is not zp:
                y[s] = zp[s, ph: ph + out_hw[0], pw: pw + out_hw[1]]

        over_batch(kernel, n, work=x2.size * kh * kw * cg_out)
        ctx.save_for_backward(x2 if ctx.needs_input_grad[1] else None, wmat)
        ctx.geometry = (geometry, ((ph, ph), (pw, pw)))
        return y.transpose(0, 3, 1, 2)                                      # NCHW view of NHWC memory

    @staticmethod
    def backward(ctx, g):
        x2, wmat = ctx.saved_tensors
        geometry, pads = ctx.geometry
        need_x, need_w, need_b = (ctx.needs_input_grad + (False,))[:3]
        (n, c_out), (h, wd) = g.shape[:2], geometry[1]
        (groups, kg, cg_in), pixels = wmat.shape, h * wd
        gp = pad(g.transpose(0, 2, 3, 1), pads, "zeros", NHWC)              # (N, OH + 2ph, OW + 2pw, Cout)
        dtype = np.result_type(g.dtype, wmat.dtype)
        cols = _new_cols(ctx, groups, n * pixels, groups * kg, c_out // groups, dtype) if need_x or need_w else None
        dx = ctx.empty((n * pixels, groups * cg_in), dtype) if need_x else None  # (N*H*W, Cin)

        def kernel(s: slice):
            if cols is not None:
                _convolve(gp, wmat, cols, dx, None, geometry, s)
            dw = _weight_grad(cols, x2, groups, slice(s.start * pixels, s.stop * pixels)) if need_w else None
            db = g[s].sum(axis=(0, 2, 3)) if need_b else None
            return dw, db

        parts = over_batch(kernel, n, work=n * pixels * groups * kg)
        dx = dx.reshape(n, h, wd, groups * cg_in).transpose(0, 3, 1, 2) if need_x else None
        dw = _matrix_as_filters(sum(p[0] for p in parts), geometry[0]) if need_w else None  # (Cin, Cout/G, KH, KW)
        db = sum(p[1] for p in parts) if need_b else None
        return (dx, dw) if len(ctx.needs_input_grad) == 2 else (dx, dw, db)


PADDING_MODES = ("zeros", "replicate", "circular")


def _conv_inputs(fn: str, x, w, b, w_layout: str, w_nonempty: tuple[int, ...], w_nonempty_names: str,
                 bias_size) -> list:
    """The checks both convolutions make on their tensors; returns [x, w] or [x, w, b] as Tensors.
    ``bias_size(w_shape)`` is the number of output channels b must have."""
    from ..tensor import as_tensor

    check_tensor_like(fn, "x", x)
    check_tensor_like(fn, "w", w)
    x, w = as_tensor(x), as_tensor(w)
    check_ndim(fn, "x", x.shape, 4, "(N, C, H, W)")
    check_ndim(fn, "w", w.shape, 4, w_layout)
    check_float_dtype(fn, "x", x.dtype)
    check_float_dtype(fn, "w", w.dtype)
    check_nonempty(fn, "x", x.shape, (2, 3), "H and W")
    check_nonempty(fn, "w", w.shape, w_nonempty, w_nonempty_names)
    if b is None:
        return [x, w]
    check_tensor_like(fn, "b", b)
    b = as_tensor(b)
    check_float_dtype(fn, "b", b.dtype)
    if b.shape != (bias_size(w.shape),):
        raise ValueError(f"{fn}: b must have shape ({bias_size(w.shape)},) to match w.shape={w.shape}, got {b.shape}")
    return [x, w, b]


def _check_groups(fn: str, groups, channels: int, what: str, x_shape: tuple, w_shape: tuple) -> int:
    groups = check_int(fn, "groups", groups, minimum=1)
    if channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the {channels} {what} "
                         f"(x.shape={x_shape}, w.shape={w_shape})")
    return groups


def conv2d(x, w, b=None, *, stride=1, padding=0, padding_mode="zeros", dilation=1, groups=1):
    """2-D cross-correlation (no kernel flip), as in every deep-learning framework.

    Args:
        x: input (N, C, H, W).
        w: filters (F, C // groups, KH, KW).
        b: optional bias (F,).
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int or (h, w) pair (>= 0, on both sides), ``"valid"`` (no padding) or ``"same"``
            (output size ceil(H / stride); total padding max((out-1)*stride + (k-1)*dilation + 1 - H, 0),
            the odd pixel at the bottom/right, TensorFlow's rule for any stride).
        padding_mode: ``"zeros"``; ``"replicate"`` repeats the edge pixel (the notes' "same-padding");
            ``"circular"`` wraps around (periodic lattices, e.g. the Ising model).
        groups: G >= 1 dividing C and F. The channels are cut into G consecutive groups and output
            channels ``g*F/G .. (g+1)*F/G - 1`` see input channels ``g*C/G .. (g+1)*C/G - 1`` only, as
            in PyTorch. ``groups=C`` is a depthwise convolution (F/C filters per channel).

    Returns:
        (N, F, OH, OW) with OH = floor((H + pad_h - dilation*(KH-1) - 1) / stride) + 1. The array is
        channels-last in memory (see the module docstring); its values and shape are plain NCHW.

    The notes' example, the filter [[1, 2], [-1, 0]] on a 3x4 image:

    >>> image = np.array([[5, 2, 2, 3], [3, 1, 2, 1], [9, 0, 4, 5]], dtype=np.float32)
    >>> conv2d(image[None, None], np.array([[[[1, 2], [-1, 0]]]], dtype=np.float32)).data[0, 0]
    array([[ 6.,  5.,  6.],
           [-4.,  5.,  0.]], dtype=float32)

    A depthwise convolution: each of two channels summed over its own 2x2 windows.

    >>> conv2d(np.ones((1, 2, 3, 3), np.float32), np.ones((2, 1, 2, 2), np.float32), groups=2).shape
    (1, 2, 2, 2)
    """
    fn = "conv2d"
    tensors = _conv_inputs(fn, x, w, b, "(out_channels, in_channels // groups, KH, KW)", (0, 2, 3),
                           "out_channels, KH and KW", lambda shape: shape[0])
    x, w = tensors[:2]
    groups = _check_groups(fn, groups, x.shape[1], "input channels of x", x.shape, w.shape)
    if x.shape[1] != w.shape[1] * groups:
        per_group = w.shape[1]
        expects = str(per_group) if groups == 1 else f"{per_group} per group x groups={groups} = {per_group * groups}"
        raise ValueError(f"{fn}: x has {x.shape[1]} channels but w expects {expects} "
                         f"(x.shape={x.shape}, w.shape={w.shape})")
    if w.shape[0] % groups:
        raise ValueError(f"{fn}: groups={groups} must divide w's {w.shape[0]} output channels "
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
    return Conv2d.apply(*tensors, stride=stride, pads=pads, mode=padding_mode, dilation=dilation, groups=groups)


def conv_transpose2d(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution: the adjoint of :func:`conv2d` (PyTorch's ``conv_transpose2d``).

    ``conv_transpose2d(x, w)`` is the gradient that ``conv2d(z, w, stride=, padding=, dilation=,
    groups=)`` sends back to its input z when its upstream gradient is x ("backprop through a
    convolution"), so ``<conv2d(z, w), x> == <z, conv_transpose2d(x, w)>`` for all z and x. Each
    input pixel adds a copy of the filter, scaled by its value, into the output at ``stride`` steps:
    with stride 2 it upsamples by 2 (the decoder half of an autoencoder or a U-Net).

    Args:
        x: input (N, Cin, H, W).
        w: filters (Cin, Cout // groups, KH, KW), PyTorch's layout (conv2d's (F, C // groups, KH, KW)
            for the convolution it is the adjoint of, which maps Cout channels to Cin).
        b: optional bias (Cout,).
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int or (h, w) pair >= 0: the padding of that convolution, cropped from each side here.
        output_padding: int or (h, w) pair >= 0, smaller than stride or dilation: extra rows/columns at
            the bottom/right (they pick the output size when stride > 1 makes several sizes convolve to H).
        groups: G >= 1 dividing Cin; as in conv2d, input group g feeds output group g only.

    Returns:
        (N, Cout, OH, OW) with OH = (H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1,
        in ``np.result_type(x, w)``, channels-last in memory like conv2d's result.

    A 2x2 filter of ones with stride 2 stamps each pixel onto a 2x2 block:

    >>> conv_transpose2d(np.array([[[[1, 2], [3, 4]]]], np.float32), np.ones((1, 1, 2, 2), np.float32),
    ...                  stride=2).data[0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]], dtype=float32)
    """
    fn = "conv_transpose2d"
    groups = check_int(fn, "groups", groups, minimum=1)
    tensors = _conv_inputs(fn, x, w, b, "(in_channels, out_channels // groups, KH, KW)", (1, 2, 3),
                           "out_channels // groups, KH and KW", lambda shape: shape[1] * groups)
    x, w = tensors[:2]
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"{fn}: x has {x.shape[1]} channels but w expects {w.shape[0]} (w is (in_channels, "
                         f"out_channels // groups, KH, KW); x.shape={x.shape}, w.shape={w.shape})")
    groups = _check_groups(fn, groups, x.shape[1], "input channels of x", x.shape, w.shape)
    stride, dilation = check_pair(fn, "stride", stride), check_pair(fn, "dilation", dilation)
    padding = check_pair(fn, "padding", padding, minimum=0)
    output_padding = check_pair(fn, "output_padding", output_padding, minimum=0)
    for axis, n, k, s, p, op, d in zip("HW", x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation):
        if op >= s and op >= d:
            raise ValueError(f"{fn}: output_padding must be smaller than stride or dilation, got "
                             f"output_padding={op} along {axis} with stride={s} and dilation={d}")
        size = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        if size < 1:
            raise ValueError(f"{fn}: the output would have {size} pixels along {axis}: (H - 1)*stride - 2*padding "
                             f"+ dilation*(KH - 1) + output_padding + 1 with H={n}, stride={s}, padding={p}, "
                             f"dilation={d}, KH={k}, output_padding={op} (x.shape={x.shape}, w.shape={w.shape})")
    return ConvTranspose2d.apply(*tensors, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=groups)
