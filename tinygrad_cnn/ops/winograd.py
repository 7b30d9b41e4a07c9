"""Winograd's minimal filtering for the backward pass of a 3x3 convolution (stride 1): both of its
gradients with a quarter of im2col's multiply-adds.

In one dimension, F(m, 3) computes m outputs of a 3-tap correlation, y_i = sum_k d[i + k] g[k], from
a tile of a = m + 2 inputs with only a multiplications instead of 3m:

    y = A^T [(G g) * (B^T d)]          (* elementwise; A^T (m, a), G (a, 3), B^T (a, a))

(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015; the matrices below are
theirs). Nested for two dimensions, an m x m output tile from an a x a input tile is

    Y = A^T [U * V] A,   U = G w G^T (the filter, a x a),   V = B^T d B (the input tile, a x a),

and, summed over the input channels c for each filter f, the elementwise product is a matmul per
tile position (p, q): M[p, q] (tiles, F) = V[p, q] (tiles, C) @ U[p, q] (C, F). With m = 4 these
matmuls do a^2 / (9 m^2) = 36/144 of im2col's multiply-adds; the transforms are matmuls too, with
the Kronecker products of the small matrices (a^2 x a^2 for V, m^2 x a^2 for Y, a^2 x 9 for U).

The gradients are the adjoints of those linear steps, in reverse order:

    dM = KA^T dY,   dU[p, q] = V[p, q]^T @ dM[p, q],   dw = KG^T dU,
    dV[p, q] = dM[p, q] @ U[p, q]^T,   dd = KB^T dV, added back onto the pixels each tile came from.

So the backward cuts the padded input into overlapping a x a tiles (stride m) and transforms them
(V), cuts the upstream gradient into m x m tiles and transforms them (dM), and then needs one matmul
per position for dw and one for dx; no im2col matrix, no col2im.

Why only the backward. The transforms round, and F(4, 3)'s coefficients (up to 5 in B^T, 8 in A^T,
down to 1/24 in G) make the intermediate values far larger than the result: Winograd's outputs were
off by 5.6e-6 (relative to the largest, float32) where im2col's were off by 8.5e-7. Gradients can
take that; a forward feeding relus and max-pools cannot as well: the larger error flips more relu
masks and pool winners at near-ties (measured on cnn-bn at batch 16: one of conv2's 25,600 pooled
values changed sign against float64, none with im2col), and each flip moves a whole term of sums
whose terms largely cancel. Against float64 (largest error relative to each gradient's largest
entry): Winograd forward and backward, 1.9e-2 for conv2's weights; im2col forward and Winograd
backward, 3.0e-6 (conv2's weights) and 2.8e-6 (conv1's, through conv2's input gradient); im2col
throughout, 8.7e-7 and 5.5e-7. So the op runs conv2d's im2col forward (the loss and everything
downstream keep their bits) and Winograd's backward, whose gradients equal im2col's to rounding.
F(2, 3) (coefficients 0, +-1, +-1/2) was as accurate as im2col but no faster: its transforms take
back what its matmuls save.

Layout: the tiles live position-major, (a*a, N*TH*TW, C), so each position's matmul and the
transforms' matmuls read contiguous rows; images are channels-last (NHWC) as in conv.py.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..autograd import Function
from ..parallel import over_batch
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

# When it pays (conv2 at batch 128 and other shapes timed against conv2d's backward, one thread each):
# only when dx is needed too (for dw alone im2col's matrix is already built: 2.5-5x faster), at most
# twice as many filters as input channels (transforming dY for F = 8C cost more than it saved: 1.03-1.35x
# conv2d's time), and outputs that whole 4x4 tiles cover with at most 20 % to spare (11x11 outputs,
# 12x12 tiles: 0.72-0.84x; 13x13 or 14x14 outputs, 1.3-1.5x the area: 0.95-1.05x; 5x5, 2.6x: 1.2-1.45x).
MIN_CHANNELS = 2
MAX_FILTERS_PER_CHANNEL = 2
MAX_TILE_AREA = 1.2


def eligible(x_shape: tuple, w_shape: tuple, out_hw: tuple, stride, dilation, groups: int, dtype,
             needs_dx: bool) -> bool:
    """Whether :class:`Conv2dWinogradBackward` computes this convolution's gradients itself (else it runs
    conv2d's backward): a float 3x3 convolution with stride 1, no dilation, one group, and a shape it
    pays for (the constants above)."""
    (c, f), (oh, ow) = (x_shape[1], w_shape[0]), out_hw
    tile_area = _tile_count(oh) * _tile_count(ow) * M_OUT * M_OUT / max(oh * ow, 1)
    return (tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and groups == 1 and np.dtype(dtype).kind == "f" and needs_dx and c >= MIN_CHANNELS
            and f <= MAX_FILTERS_PER_CHANNEL * c and tile_area <= MAX_TILE_AREA)


@functools.cache
def _kron(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KA (m^2, a^2), KG (a^2, 9), KB (a^2, a^2): the 2-D transforms on row-major flattened tiles, made
    once per dtype (read-only)."""
    matrices = tuple(np.kron(t, t).astype(dtype) for t in (AT, G, BT))
    for k in matrices:
        k.setflags(write=False)
    return matrices


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


def _tile(image: np.ndarray, tiles6: np.ndarray) -> None:
    """``tiles6`` (m, m, N, TH, TW, F) = ``image``'s (N, OH, OW, F) pixels cut into m x m tiles, zeros
    past its edge (the adjoint of laying output tiles side by side)."""
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


def _padded_into(xb: np.ndarray, x: np.ndarray, pads, mode: str) -> None:
    """``xb`` (n, >= Hp, >= Wp, C) = the NHWC images ``x`` padded as conv2d pads them, zeros beyond: zero
    padding is written around x in place (no padded copy of x, which conv2d's forward made already)."""
    (top, _), (left, _) = pads
    if mode != "zeros":  # replicate / circular: these images padded by conv2d's own pad
        x, top, left = pad(x, pads, mode, NHWC), 0, 0
    h, w = x.shape[1:3]
    xb[:, :top] = 0
    xb[:, top + h:] = 0
    xb[:, top: top + h, :left] = 0
    xb[:, top: top + h, left + w:] = 0
    xb[:, top: top + h, left: left + w] = x


def _backward_images(x, pads, mode, g2, arrays, U, kron, need_w: bool, geometry,
                     images: slice) -> np.ndarray | None:
    """A thread's slice ``images`` of the backward: dM = KA^T dY from the upstream gradient's tiles; if
    dw is needed, V = KB d from the padded input's tiles d and (returned) dU = V^T dM per position; then
    dV = dM U^T and dd = KB^T dV added back onto ``xe`` (N, m*TH + m, m*TW + m, C), whose first Hp x Wp
    pixels are then the padded input's gradient."""
    xe, D, V, dYt, dMo = arrays
    (th, tw), (oh, ow) = geometry
    ka, _, kb = kron
    f, nb, rows = U.shape[2], images.stop - images.start, slice(images.start * th * tw, images.stop * th * tw)
    dyt = _flat(dYt[:, rows])
    _tile(g2[images.start * oh * ow: images.stop * oh * ow].reshape(nb, oh, ow, f),
          dyt.reshape(M_OUT, M_OUT, nb, th, tw, f))
    np.matmul(ka.T, dyt, out=_flat(dMo[:, rows]))
    d, v, xb, dU = _flat(D[:, rows]), _flat(V[:, rows]), xe[images], None   # d, v: (a^2, tiles*C)
    if need_w:
        _padded_into(xb, x[images], pads, mode)
        np.reshape(d, (A_IN, A_IN, nb, th, tw, -1), copy=False)[...] = \
            _overlapping_tiles(xb, (th, tw)).transpose(3, 4, 0, 1, 2, 5)
        np.matmul(kb, d, out=v)
        dU = np.matmul(V[:, rows].transpose(0, 2, 1), dMo[:, rows])
    np.matmul(dMo[:, rows], U.transpose(0, 2, 1), out=V[:, rows])          # dV into V's memory
    np.matmul(kb.T, v, out=d)                                              # dd into d's
    _add_tiles(d.reshape(A_IN, A_IN, nb, th, tw, -1), xb)                  # dx into xe's
    return dU


def _flat(a: np.ndarray) -> np.ndarray:
    """(a^2, tiles, C) rows of a position-major array -> the (a^2, tiles*C) view the transforms multiply."""
    return np.reshape(a, (len(a), -1), copy=False)


def _scratch(ctx, spare: np.ndarray | None, dtype, *shapes: tuple) -> list[np.ndarray]:
    """Arrays of ``shapes``: consecutive views into ``spare`` (memory the op no longer reads: the forward's
    im2col matrix) while it has room, ``ctx.empty`` after that."""
    free, out = (np.empty(0, dtype) if spare is None else spare.reshape(-1)), []
    for shape in shapes:
        size = int(np.prod(shape))
        if size <= free.size:
            out.append(free[:size].reshape(shape))
            free = free[size:]
        else:
            out.append(ctx.empty(shape, dtype))
    return out


class Conv2dWinogradBackward(Function):
    """conv2d (x (N, C, H, W), w (F, C, 3, 3), b (F,) -> y (N, F, OH, OW)) whose forward is Conv2d's
    im2col and whose backward is Winograd's F(4x4, 3x3) (see the module). Takes Conv2d's keywords and
    runs Conv2d's backward for what it does not handle or would not speed up (``eligible``)."""

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride=(1, 1), pads=((0, 0), (0, 0)), mode="zeros", dilation=(1, 1),
                groups=1):
        y = Conv2d.forward(ctx, x, w, b, stride=stride, pads=pads, mode=mode, dilation=dilation, groups=groups)
        ctx.im2col = not eligible(x.shape, w.shape, y.shape[2:], stride, dilation, groups, y.dtype,
                                  ctx.needs_input_grad[0])
        if not ctx.im2col:  # keep x (its NHWC view, padded in the backward), not im2col's matrix
            ctx.spare = ctx.saved_tensors[0]  # that matrix's memory (if saved): scratch for the backward
            (c, f), kron = w.shape[1::-1], _kron(np.dtype(y.dtype))
            U = np.matmul(kron[1], w.transpose(2, 3, 1, 0).reshape(9, c * f).astype(y.dtype)).reshape(-1, c, f)
            ctx.save_for_backward(x.transpose(0, 2, 3, 1), U)
            ctx.kron = kron
        return y

    @staticmethod
    def backward(ctx, g):
        if ctx.im2col:
            return Conv2d.backward(ctx, g)
        x, U = ctx.saved_tensors                                                # x: (N, H, W, C)
        (padded_shape, _, pads, mode), kron = ctx.geometry, ctx.kron            # Conv2d.forward's
        need_w, need_b = (ctx.needs_input_grad + (False,))[1:3]  # and dx: ``eligible`` asks for it
        (n, f), (oh, ow), (a2, c, _) = g.shape[:2], g.shape[2:], U.shape
        th, tw = _tile_count(oh), _tile_count(ow)
        geometry, tiles = ((th, tw), (oh, ow)), n * th * tw
        g2 = _nhwc_rows(ctx, g)                                                 # (M, F)
        dMo, D, V, dYt, xe = _scratch(ctx, ctx.spare, g.dtype, (a2, tiles, f), (a2, tiles, c), (a2, tiles, c),
                                      (M_OUT * M_OUT, tiles, f), (n, M_OUT * th + M_OUT, M_OUT * tw + M_OUT, c))
        arrays = (xe, D, V, dYt, dMo)  # xe: x's tiles, then dx; D: d, then dd; V: V, then dV
        ones = np.ones(n * oh * ow, g.dtype) if need_b else None

        def kernel(s: slice):
            dU = _backward_images(x, pads, mode, g2, arrays, U, kron, need_w, geometry, s)
            pixels = slice(s.start * oh * ow, s.stop * oh * ow)
            return dU, (ones[pixels] @ g2[pixels] if need_b else None)

        parts = over_batch(kernel, n, work=arrays[4].size)
        dw = db = None
        dx = unpad(xe[:, : padded_shape[1], : padded_shape[2]], pads, mode, NHWC).transpose(0, 3, 1, 2)
        if need_w:
            dU = sum(p[0] for p in parts).reshape(a2, c * f)
            dw = np.matmul(kron[1].T, dU).reshape(3, 3, c, f).transpose(3, 2, 0, 1)
        if need_b:
            db = sum(p[1] for p in parts)
        return (dx, dw) if len(ctx.needs_input_grad) == 2 else (dx, dw, db)
