"""Winograd's minimal filtering: a 3x3 convolution (stride 1) with fewer multiplications than im2col.

In one dimension, F(m, 3) computes m outputs of a 3-tap correlation, y_i = sum_k d[i + k] g[k], from
a tile of a = m + 2 inputs with only a multiplications instead of 3m:

    y = A^T [(G g) * (B^T d)]          (* elementwise; A^T (m, a), G (a, 3), B^T (a, a))

(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015; the matrices below are
theirs). Nested for two dimensions, an m x m output tile from an a x a input tile is

    Y = A^T [U * V] A,   U = G w G^T (the filter, a x a),   V = B^T d B (the input tile, a x a),

and, summed over input channels c for each filter f, the elementwise product becomes a matmul per
tile position (p, q): M[p, q] (tiles, F) = V[p, q] (tiles, C) @ U[p, q] (C, F). So a convolution is:
cut the padded image into overlapping a x a tiles (stride m), transform them (V), one matmul per
position, transform back (Y) and lay the m x m tiles side by side. With m = 4 the matmuls do
a^2 / (9 m^2) = 36/144 of im2col's multiply-adds; the transforms are matmuls too, with the
Kronecker products of the small matrices (a^2 x a^2 for V, m^2 x a^2 for Y, a^2 x 9 for U).

The backward is the adjoint of each of those linear steps, in reverse order (so the gradient is the
exact gradient of the forward as computed):

    dM = KA^T dY,   dU[p, q] = V[p, q]^T @ dM[p, q],   dV[p, q] = dM[p, q] @ U[p, q]^T,
    dd = KB^T dV, added back onto the pixels each tile came from,   dw = KG^T dU.

Accuracy. Not bit for bit im2col's result: the transforms round, and F(4, 3)'s coefficients (up to 5
in B^T, 8 in A^T, down to 1/24 in G) make the intermediate values much larger than the result. The
outputs stay within a few units in the sixth significant digit of the largest in float32
(tests/test_winograd.py), but a result that is a small difference of large terms loses more: behind a
batch norm, whose backward makes the weight gradient of the conv before it cancel, conv2's weight
gradient in cnn-bn came out 1.9e-2 off (relative to its largest entry, against float64) where
im2col's was 8.7e-7. F(2, 3) (coefficients 0, +-1, +-1/2) was as accurate as im2col but no faster
here: its matmuls do 4/9 of im2col's work but its transforms cost as much as they save. Hence an
opt-in jit rewrite (rewrites.winograd_conv), not conv2d's algorithm.

Layout: the tiles live position-major, (a*a, N*TH*TW, C), so each position's matmul and the
transforms' matmuls read contiguous rows; images are channels-last (NHWC) as in conv.py.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..autograd import Function
from ..parallel import over_batch
from .channels import row_repeats, tiled, wide
from .conv import NHWC, Conv2d, _nhwc_rows
from .windows import pad, unpad

# F(4, 3): A^T (4, 6), G (6, 3), B^T (6, 6), interpolation points 0, 1, -1, 2, -2 and infinity.
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)
M_OUT, A_IN = AT.shape  # m = 4 outputs per tile side from a = 6 inputs

# Below this many input channels the per-position matmuls are too thin to pay for the transforms.
MIN_CHANNELS = 8


def eligible(x_shape: tuple, w_shape: tuple, stride, dilation, groups: int, dtype) -> bool:
    """Whether :class:`WinogradConv2d` computes this convolution itself (else it runs conv2d's im2col)."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and groups == 1 and x_shape[1] >= MIN_CHANNELS and np.dtype(dtype).kind == "f")


def _kron(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KA (m^2, a^2), KG (a^2, 9), KB (a^2, a^2): the 2-D transforms on row-major flattened tiles."""
    return tuple(np.kron(t, t).astype(dtype) for t in (AT, G, BT))


def _tile_count(size: int) -> int:
    return -(-size // M_OUT)


def _overlapping_tiles(xe: np.ndarray, tiles_hw: tuple[int, int]) -> np.ndarray:
    """The (N, TH, TW, a, a, C) read-only view of the a x a input tiles of ``xe`` (N, H, W, C), stride m."""
    n, h, w, c = xe.strides
    return as_strided(xe, (len(xe), *tiles_hw, A_IN, A_IN, xe.shape[3]),
                      (n, M_OUT * h, M_OUT * w, h, w, c), writeable=False)


def _pieces(size: int) -> list[tuple[slice, int, slice]]:
    """An image axis of ``size`` pixels as tiles of m: (tile slice, pixels per tile, pixel slice) for the
    full tiles, then the last, partial one if any."""
    full, rest = divmod(size, M_OUT)
    pieces = [(slice(0, full), M_OUT, slice(0, full * M_OUT))] if full else []
    return pieces + ([(slice(full, full + 1), rest, slice(full * M_OUT, size))] if rest else [])


def _tile_pairs(image: np.ndarray, tiles6: np.ndarray):
    """Matching views: (image region as (N, tiles, i, tiles, j, F), the tiles' (N, tiles, i, tiles, j, F)
    view), for the pieces of ``image`` (N, OH, OW, F) and ``tiles6`` (m, m, N, TH, TW, F)."""
    n, oh, ow, f = image.shape
    for rows, ri, ys in _pieces(oh):
        for cols, cj, xs in _pieces(ow):
            region = np.reshape(image[:, ys, xs], (n, rows.stop - rows.start, ri, cols.stop - cols.start, cj, f),
                                copy=False)
            yield region, tiles6[:ri, :cj, :, rows, cols].transpose(2, 3, 0, 4, 1, 5)


def _untile(tiles6: np.ndarray, image: np.ndarray) -> None:
    """``image`` (N, OH, OW, F) = the output tiles (m, m, N, TH, TW, F) side by side, cut to OH x OW."""
    for region, part in _tile_pairs(image, tiles6):
        region[...] = part


def _tile(image: np.ndarray, tiles6: np.ndarray) -> None:
    """The adjoint of :func:`_untile`: ``tiles6`` = ``image``'s pixels, zeros past its edge."""
    oh, ow = image.shape[1:3]
    tiles6[:, :, :, oh // M_OUT:] = 0  # the partial tiles (if any) are zero where no pixel lands
    tiles6[:, :, :, :, ow // M_OUT:] = 0
    for region, part in _tile_pairs(image, tiles6):
        part[...] = region


def _add_tiles(dtiles6: np.ndarray, dxe: np.ndarray) -> None:
    """The adjoint of :func:`_overlapping_tiles`: ``dxe`` (N, m*TH + m, m*TW + m, C) = the sum of the
    a x a tiles (a, a, N, TH, TW, C) over the pixels each covers. Tiles overlap by a - m pixels, so the
    offsets are split into [0, m), which tile the image without overlap (one assignment), and [m, a),
    added on top."""
    n, th, tw, c = dtiles6.shape[2:]
    dxe[:, M_OUT * th:] = 0
    dxe[:, :, M_OUT * tw:] = 0
    for (r0, r1), (c0, c1) in (((0, M_OUT), (0, M_OUT)), ((M_OUT, A_IN), (0, M_OUT)),
                               ((0, M_OUT), (M_OUT, A_IN)), ((M_OUT, A_IN), (M_OUT, A_IN))):
        region = np.reshape(dxe[:, r0: r0 + M_OUT * th, c0: c0 + M_OUT * tw], (n, th, M_OUT, tw, M_OUT, c),
                            copy=False)[:, :, : r1 - r0, :, : c1 - c0]
        part = dtiles6[r0:r1, c0:c1].transpose(2, 3, 0, 4, 1, 5)
        if r0 == c0 == 0:
            region[...] = part
        else:
            region += part


def _forward_images(xp, arrays, U, kron, y, b, geometry, images: slice) -> None:
    """A thread's slice ``images`` of the forward: tiles d of the padded input, V = KB d, M = V @ U per
    position, Y = KA M, laid out into the (M, F) rows of ``y`` (+ ``b``, tiled as conv.py's bias)."""
    xe, D, V, Mo, Yt = arrays
    (th, tw), (oh, ow) = geometry
    ka, _, kb = kron
    f = U.shape[2]
    nb, rows = images.stop - images.start, slice(images.start * th * tw, images.stop * th * tw)
    xb, (hp, wp) = xe[images], xp.shape[1:3]
    xb[:, :hp, :wp] = xp[images]
    xb[:, hp:] = 0
    xb[:, :hp, wp:] = 0
    d = D[:, rows]                                                           # (a^2, tiles, C)
    np.reshape(d, (A_IN, A_IN, nb, th, tw, -1), copy=False)[...] = \
        _overlapping_tiles(xb, (th, tw)).transpose(3, 4, 0, 1, 2, 5)
    np.matmul(kb, _flat(d), out=_flat(V[:, rows]))
    np.matmul(V[:, rows], U, out=Mo[:, rows])
    yt = _flat(Yt[:, rows])
    np.matmul(ka, _flat(Mo[:, rows]), out=yt)
    image = y[images.start * oh * ow: images.stop * oh * ow]
    _untile(yt.reshape(M_OUT, M_OUT, nb, th, tw, f), image.reshape(nb, oh, ow, f))
    if b is not None:
        wide_rows = wide(image, len(b) // f)
        np.add(wide_rows, b, out=wide_rows)


def _backward_images(g2, arrays, U, kron, need_w: bool, geometry, images: slice) -> np.ndarray | None:
    """A thread's slice ``images`` of the backward: dM = KA^T dY; (when the arrays for it are given)
    dV = dM U^T, dd = KB^T dV added back onto ``dxe``. Returns the slice's dU = V^T dM per position (if
    ``need_w``)."""
    V, dYt, dMo, dV, dD, dxe = arrays
    (th, tw), (oh, ow) = geometry
    ka, _, kb = kron
    f, nb, rows = U.shape[2], images.stop - images.start, slice(images.start * th * tw, images.stop * th * tw)
    dyt = _flat(dYt[:, rows])
    _tile(g2[images.start * oh * ow: images.stop * oh * ow].reshape(nb, oh, ow, f),
          dyt.reshape(M_OUT, M_OUT, nb, th, tw, f))
    np.matmul(ka.T, dyt, out=_flat(dMo[:, rows]))
    dU = np.matmul(V[:, rows].transpose(0, 2, 1), dMo[:, rows]) if need_w else None
    if dxe is not None:
        np.matmul(dMo[:, rows], U.transpose(0, 2, 1), out=dV[:, rows])
        dd = _flat(dD[:, rows])
        np.matmul(kb.T, _flat(dV[:, rows]), out=dd)
        _add_tiles(dd.reshape(A_IN, A_IN, nb, th, tw, -1), dxe[images])
    return dU


def _flat(a: np.ndarray) -> np.ndarray:
    """(a^2, tiles, C) rows of a position-major array -> the (a^2, tiles*C) view the transforms multiply."""
    return np.reshape(a, (len(a), -1), copy=False)


class WinogradConv2d(Function):
    """conv2d by Winograd's F(4x4, 3x3) (see the module): x (N, C, H, W), w (F, C, 3, 3), b (F,) ->
    y (N, F, OH, OW) as an NCHW view of channels-last memory, like Conv2d. Takes Conv2d's keywords and
    runs Conv2d itself for what it does not handle (``eligible``: other kernels, strides, dilations,
    groups, fewer than ``MIN_CHANNELS`` input channels)."""

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride=(1, 1), pads=((0, 0), (0, 0)), mode="zeros", dilation=(1, 1),
                groups=1):
        dtype = np.result_type(x.dtype, w.dtype)
        ctx.im2col = not eligible(x.shape, w.shape, stride, dilation, groups, dtype)
        if ctx.im2col:
            return Conv2d.forward(ctx, x, w, b, stride=stride, pads=pads, mode=mode, dilation=dilation,
                                  groups=groups)
        (n, c), f = x.shape[:2], w.shape[0]
        xp = pad(x.transpose(0, 2, 3, 1), pads, mode, NHWC)                    # (N, Hp, Wp, C)
        oh, ow = xp.shape[1] - 2, xp.shape[2] - 2
        th, tw = _tile_count(oh), _tile_count(ow)
        kron = _kron(dtype)
        U = np.matmul(kron[1], w.transpose(2, 3, 1, 0).reshape(9, c * f).astype(dtype)).reshape(-1, c, f)
        tiles = n * th * tw
        arrays = (ctx.empty((n, M_OUT * th + M_OUT, M_OUT * tw + M_OUT, c), dtype),  # xe: whole tiles (+ dx's margin)
                  ctx.empty((A_IN * A_IN, tiles, c), dtype),                   # d
                  ctx.empty((A_IN * A_IN, tiles, c), dtype),                   # V
                  ctx.empty((A_IN * A_IN, tiles, f), dtype),                   # M
                  ctx.empty((M_OUT * M_OUT, tiles, f), dtype))                 # Y
        y = ctx.empty((n * oh * ow, f), dtype)
        b_rows = None if b is None else tiled(b.astype(dtype, copy=False), row_repeats(oh * ow, f))
        geometry = ((th, tw), (oh, ow))
        over_batch(lambda s: _forward_images(xp, arrays, U, kron, y, b_rows, geometry, s), n, work=arrays[3].size)
        ctx.save_for_backward(arrays[2], U)
        ctx.scratch = (arrays[0], arrays[1], arrays[3], arrays[4])  # the backward writes dx, dd, dM, dY there
        ctx.geometry = (xp.shape, geometry, pads, mode, kron)
        return y.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        if ctx.im2col:
            return Conv2d.backward(ctx, g)
        V, U = ctx.saved_tensors
        padded_shape, geometry, pads, mode, kron = ctx.geometry
        need_x, need_w, need_b = (ctx.needs_input_grad + (False,))[:3]
        (th, tw), (oh, ow) = geometry
        (n, f), (a2, tiles, c) = g.shape[:2], V.shape
        g2 = _nhwc_rows(ctx, g)                                                 # (M, F)
        dxe, dD, dMo, dYt = ctx.scratch         # the forward's scratch arrays, of the shapes needed here
        dV = ctx.empty((a2, tiles, c), g.dtype) if need_x else None
        arrays = (V, dYt, dMo, dV, dD, dxe if need_x else None)
        ones = np.ones(n * oh * ow, g.dtype) if need_b else None

        def kernel(s: slice):
            dU = _backward_images(g2, arrays, U, kron, need_w, geometry, s)
            pixels = slice(s.start * oh * ow, s.stop * oh * ow)
            return dU, (ones[pixels] @ g2[pixels] if need_b else None)

        parts = over_batch(kernel, n, work=arrays[2].size)
        dx = dw = db = None
        if need_x:
            dxp = dxe[:, : padded_shape[1], : padded_shape[2]]
            dx = unpad(dxp, pads, mode, NHWC).transpose(0, 3, 1, 2)
        if need_w:
            dU = sum(p[0] for p in parts).reshape(a2, c * f)
            dw = np.matmul(kron[1].T, dU).reshape(3, 3, c, f).transpose(3, 2, 0, 1)
        if need_b:
            db = sum(p[1] for p in parts)
        return (dx, dw) if len(ctx.needs_input_grad) == 2 else (dx, dw, db)
