"""Batch normalisation: standardise each channel over the batch, then scale and shift it.

For x of shape (N, C, H, W) (or (N, C)), channel c has m = N*H*W values x_i. In training::

    mu  = (1/m) sum_i x_i                 var = (1/m) sum_i (x_i - mu)^2      (biased)
    r   = 1 / sqrt(var + eps)             xhat_i = (x_i - mu) * r
    y_i = gamma * xhat_i + beta

(The course notes write (X - mu) / (sigma + eps); we follow PyTorch and TensorFlow and add eps to
the variance under the square root, which is smooth at var = 0.)

The backward pass. With g = dL/dy, the parameters are easy: dL/dbeta = sum_i g_i and
dL/dgamma = sum_i g_i xhat_i. For x, every xhat_i depends on every x_j of its channel, directly and
through mu and var. Using d mu / d x_j = 1/m and d var / d x_j = (2/m) (x_j - mu)::

    d xhat_i / d x_j = r (delta_ij - 1/m) - (x_i - mu) r^3 (x_j - mu) / m
                     = r (delta_ij - 1/m - xhat_i xhat_j / m)

so with d_i = g_i * gamma (the gradient reaching xhat)::

    dL/dx_j = sum_i d_i d xhat_i / d x_j = r (d_j - mean(d) - xhat_j mean(d * xhat))

Two per-channel sums of the upstream gradient, sum(g) and sum(g * xhat), serve all three gradients.
The input gradient is the upstream gradient with its channel mean and its component along xhat
removed, so an all-ones upstream gradient gives exactly zero: test with a random one.

In eval mode the statistics are the running averages, constants, so the op is an affine map per
channel: y = x * scale + shift with scale = gamma / sqrt(running_var + eps), and dx = g * scale.

Training also updates the running statistics in place, as PyTorch does::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)     (unbiased)

Implementation notes. These run every training step on the largest arrays of the network, so:

* x is viewed as (N, P, C) when it is channels-last in memory (what conv2d returns: a per-channel
  vector then broadcasts along the contiguous last axis) and as (N, C, P) otherwise: no copy either way;
* the statistics are sums of x and x*x per image (a BLAS matrix-vector product over the P pixels,
  in x's dtype), then summed over images in float64: accurate for float32 inputs and one pass;
* forward and backward are one affine map per channel each, y = x*scale + shift and
  dx = A*g + B*x + C, computed on image slices of the batch in parallel threads
  (``parallel.over_batch``), each slice contributing partial sums.

Layer and group normalisation standardise along *rows* instead of channels: each sample's own values
(layer norm: its last axes; group norm: a group of channels with their pixels), so the statistics
never mix samples and training and eval are the same computation. The derivation above holds row by
row, m being the row's length: ``dx = r (d - mean(d) - xhat mean(d * xhat))`` with means over the row.
Both ops view x as (B, R, D): B*R rows of D values, and scale and shift as (R, D) arrays broadcast
over B, then share one forward and one backward (``_standardise``, ``_standardise_backward``).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import check_bool, check_float, check_float_dtype, check_int, check_min_ndim, check_ndim, check_nonempty
from ..checks import check_tensor_like, describe
from ..parallel import cache_blocks, over_batch
from .channels import in_layout_of, row_repeats, tiled, wide
from .pool import _first_maxima, _geometry, _window_maxima
from .windows import tiles

__all__ = ["BatchNorm", "BatchNormRelu", "BatchNormMaxPool", "BatchNormEval", "batch_norm", "LayerNorm", "GroupNorm",
           "layer_norm", "group_norm"]


def _count(shape: tuple) -> int:
    """Values per channel, m = N*H*W: the product of every axis but 1."""
    return math.prod(shape[:1] + shape[2:])


class _Layout:
    """How to see an (N, C, ...) array as 3-D with the channel axis last (channels-last memory, or 2-D
    input) or in the middle (NCHW memory), without copying; and how to turn results back."""

    def __init__(self, x: np.ndarray):
        self.shape, n, c = x.shape, x.shape[0], x.shape[1]
        nhwc = x.transpose(0, *range(2, x.ndim), 1)
        self.last = x.ndim == 2 or nhwc.flags.c_contiguous
        self.view3 = (n, -1, c) if self.last else (n, c, -1)
        self.vector = (c,) if self.last else (c, 1)       # a per-channel vector broadcasting against view3
        self.repeats = row_repeats(math.prod(x.shape[2:]), c) if self.last else 1

    def view(self, a: np.ndarray) -> np.ndarray:
        """``a`` (x's shape) as 3-D in this layout, C-contiguous when channels-last (``wide`` needs it);
        a copy only if ``a`` is laid out differently."""
        if self.last:
            return np.ascontiguousarray(a.transpose(0, *range(2, a.ndim), 1).reshape(self.view3))
        return a.reshape(self.view3)

    def restore(self, a3: np.ndarray) -> np.ndarray:
        """A 3-D result in this layout back to x's shape (a view; of its first len(a3) images)."""
        n = len(a3)
        if not self.last:
            return a3.reshape((n,) + self.shape[1:])
        nhwc = a3.reshape((n,) + self.shape[2:] + self.shape[1:2])
        return nhwc.transpose(0, nhwc.ndim - 1, *range(1, nhwc.ndim - 1))

    def wide(self, a3: np.ndarray) -> np.ndarray:
        """``a3`` from ``view`` seen in long rows for ``per_channel`` vectors (channels.py): (n, P/k, k*C)
        when channels-last, ``a3`` itself otherwise."""
        return wide(a3, self.repeats) if self.last else a3

    def per_channel(self, v: np.ndarray, dtype) -> np.ndarray:
        """A (C,) vector in ``dtype``, broadcasting against ``wide`` views."""
        return tiled(v, self.repeats, dtype) if self.last else v.astype(dtype).reshape(self.vector)

    def per_image(self, a3: np.ndarray, b3: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """Per-channel sums of a (or of a*b, written into ``scratch`` if given) over each image's pixels,
        (n, C) in a's dtype (by BLAS when channels-last); an image's sums do not depend on the others'."""
        prod = a3 if b3 is None else np.multiply(a3, b3, out=scratch)
        return np.ones(prod.shape[1], prod.dtype) @ prod if self.last else prod.sum(axis=2)

    def sums(self, a3: np.ndarray, b3: np.ndarray | None = None) -> np.ndarray:
        """Per-channel sum of a (or of a*b) over a slice of images, (C,) in float64: ``per_image`` sums,
        then summed over images in float64."""
        return self.per_image(a3, b3).sum(axis=0, dtype=np.float64)



def _affine(ctx, layout: _Layout, x3: np.ndarray, scale: np.ndarray, shift: np.ndarray | None,
            g3: np.ndarray | None = None, gscale: np.ndarray | None = None, relu: bool = False) -> np.ndarray:
    """out = x*scale + shift (+ g*gscale), per channel, image slices in parallel; (C,) float64 vectors
    (``shift`` None: no shift);
    ``relu``: then max(out, 0) on the slice just written. ``out`` comes from ``ctx.empty_like`` (jit reuses it)."""
    dtype = x3.dtype
    scale = layout.per_channel(scale, dtype)
    shift = None if shift is None else layout.per_channel(shift, dtype)
    gscale = None if gscale is None else layout.per_channel(gscale, dtype)
    out = ctx.empty_like(x3)
    x_, out_, g_ = layout.wide(x3), layout.wide(out), None if g3 is None else layout.wide(g3)

    def kernel(s: slice) -> None:
        np.multiply(x_[s], scale, out=out_[s])
        if shift is not None:
            out_[s] += shift
        if g_ is not None:
            out_[s] += g_[s] * gscale
        if relu:
            np.maximum(out_[s], 0, out=out_[s])

    over_batch(kernel, len(x3), work=x3.size)
    return out


def _sums(layout: _Layout, x3: np.ndarray, y3: np.ndarray | None = None) -> np.ndarray | tuple:
    """Per-channel sum of x, or (sum x, sum x*y), in float64; image slices in parallel."""
    if y3 is None:
        return sum(over_batch(lambda s: layout.sums(x3[s]), len(x3), work=x3.size))
    parts = over_batch(lambda s: (layout.sums(x3[s]), layout.sums(x3[s], y3[s])), len(x3), work=x3.size)
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _centre(ctx, layout: _Layout, x3: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xc = x - mean and the per-channel sum of xc^2 (float64), image slices in parallel.

    Two passes (the mean first) instead of var = E[x^2] - mean^2: with a mean large against the spread
    (say 1000 +- 1) the one-pass formula cancels away every digit of float32 sums."""
    xc = ctx.empty_like(x3)
    shift, x_ = layout.per_channel(mean, x3.dtype), layout.wide(x3)

    def kernel(s: slice) -> np.ndarray:  # block by block: the squares go into a block-sized scratch
        blocks = cache_blocks(s, x3[:1].nbytes)
        squares = np.empty((blocks[0].stop - blocks[0].start, *x3.shape[1:]), x3.dtype)
        per_image = np.empty((s.stop - s.start, layout.shape[1]), x3.dtype)
        for b in blocks:
            per_image[b.start - s.start: b.stop - s.start] = _centre_block(layout, x_, shift, b, xc[b], squares)
        return per_image.sum(axis=0, dtype=np.float64)  # as layout.sums: per image, then over images

    return xc, sum(over_batch(kernel, len(x3), work=x3.size))


def _centre_block(layout: _Layout, x_: np.ndarray, shift: np.ndarray, b: slice, xc: np.ndarray,
                  squares: np.ndarray) -> np.ndarray:
    """xc = x - mean for images ``b`` (``x_`` = ``layout.wide(x3)``, ``shift`` = the mean per channel), into
    ``xc`` (``x3[b]``'s shape), and its per-image sums of squares (n, C), the squares written into the
    scratch ``squares`` (at least as many images): a cache block's worth, not a slice's."""
    np.subtract(x_[b], shift, out=layout.wide(xc))
    return layout.per_image(xc, xc, squares[: len(xc)])


class BatchNorm(Function):
    """Training mode: y = gamma * (x - mu) / sqrt(var + eps) + beta with the batch's mu and var.

    dx = r (d - mean(d) - xhat mean(d xhat)) with d = g gamma,   dgamma = sum(g xhat),   dbeta = sum(g),
    sums and means per channel. ``running_mean``/``running_var`` (or None) are updated in place.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, *, eps, momentum=0.1, running_mean=None, running_var=None):
        return _batch_norm_forward(ctx, x, gamma, beta, eps, momentum, running_mean, running_var, relu=False)

    @staticmethod
    def backward(ctx, g):
        return _batch_norm_backward(ctx, g)


class BatchNormRelu(BatchNorm):
    """relu(batch_norm(x)) as one op, for jit's ``batch_norm_relu`` rewrite (rewrites.py): the relu is
    applied to each thread's slice right after the affine map writes it (no array and no op of its
    own), and the backward (BatchNorm's, which finds relu's output saved) masks the gradient,
    g * (y > 0), first. The same products in the same order as BatchNorm then Relu: bit-identical.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, *, eps, momentum=0.1, running_mean=None, running_var=None):
        return _batch_norm_forward(ctx, x, gamma, beta, eps, momentum, running_mean, running_var, relu=True)


def _batch_norm_forward(ctx, x, gamma, beta, eps, momentum, running_mean, running_var, relu: bool):
    m, layout = _count(x.shape), _Layout(x)
    x3 = layout.view(x)
    mean = _sums(layout, x3) / m                                         # (C,) float64
    xc, total_sq = _centre(ctx, layout, x3, mean)                        # x - mu, sum (x - mu)^2
    var = total_sq / m                                                   # biased
    inv_std = 1.0 / np.sqrt(var + eps)
    y3 = _affine(ctx, layout, xc, gamma * inv_std, beta.astype(np.float64), relu=relu)
    _update_running(running_mean, running_var, mean, var, momentum, m)
    ctx.save_for_backward(xc, gamma.astype(np.float64), inv_std, y3 if relu else None)
    ctx.layout = layout
    return layout.restore(y3)


def _batch_norm_backward(ctx, g):
    xc, gamma, inv_std, relu_out = ctx.saved_tensors
    layout, m = ctx.layout, _count(g.shape)
    g3 = layout.view(g)
    if relu_out is not None:  # relu's backward, as the Relu op computes it: g * (y > 0)
        masked = ctx.empty_like(g3)
        over_batch(lambda s: np.multiply(g3[s], relu_out[s] > 0, out=masked[s]), len(g3), work=g3.size)
        g3 = masked
    sum_g, sum_g_xc = _sums(layout, g3, xc)
    sum_g_xhat = sum_g_xc * inv_std                                      # = dgamma
    # dx = A*g + B*(x - mu) + C per channel: the docstring's formula with xhat = (x - mu) r expanded
    a = gamma * inv_std
    b = -a * inv_std * sum_g_xhat / m
    c = -a * sum_g / m
    dx = layout.restore(_affine(ctx, layout, xc, b, c, g3, a)) if ctx.needs_input_grad[0] else None
    return dx, sum_g_xhat, sum_g


class BatchNormMaxPool(Function):
    """max_pool(batch_norm(x)) as one op (training mode; pooling windows that tile the image: stride =
    kernel, no padding), for jit's ``batch_norm_max_pool`` rewrite (rewrites.py). Pooling first, then
    the affine map on the pooled quarter: batch norm's output never exists at full size, either way.

    Forward. y = xc * s + beta per channel (xc = x - mu, s = gamma r) is monotonic in xc, and so is
    each float rounding step, so the maximum over a window of fl(fl(xc s) + beta) is the map applied to
    the window's largest xc where s >= 0, to its smallest where s < 0, bit for bit. With sign = -1
    where gamma < 0 (r > 0, so s has gamma's sign), else 1: ``pooled = max of sign*xc over the window``,
    ``y = pooled * (sign*s) + beta`` (negating is exact, so these are the same bits).

    Backward. The pool routes a window's gradient g to its winner (the first pixel in row-major order
    holding the maximum); batch norm's sums then only see the winners: sum(g) and sum(g xc) =
    sign * sum(g pooled), a quarter of the elements. Every pixel, winner or not, gets the statistics'
    part B xc + C (one dense pass), and a winner also A g (A, B, C as in BatchNorm.backward:
    A = gamma r, B = -A r sum(g xhat) / m, C = -A sum(g) / m).

    Memory. conv2d hands on channels-last memory, where the pixels of one window offset lie a pixel
    apart: every pass over such a strided view runs NumPy's inner loop over only C floats per pixel
    (several times slower than over contiguous memory). So the forward copies sign*xc once into
    *window-major* order (``grouped``: per image, the pixels of each kernel offset one after another,
    then those no window covers; ``windows.tiles``), and the maxima, the winners and the backward's
    dense pass all run over contiguous memory; dx goes back into image order in one copy.

    Equal to the two ops up to the order of those sums (the forward and the running statistics bit for
    bit), with one exception from rounding: where two different xc of a window map to the same float
    y, the two ops send g to the first, this op to the one with the larger (smaller, s < 0) xc, the
    true maximum.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, *, eps, momentum=0.1, running_mean=None, running_var=None, kernel, stride,
                pads):
        if any(p for pair in pads for p in pair) or tuple(stride) != tuple(kernel):
            raise ValueError("BatchNormMaxPool: only windows that tile the image (stride = kernel, no padding), "
                             f"got kernel={kernel}, stride={stride}, pads={pads}")
        m, layout = _count(x.shape), _Layout(x)
        x3 = layout.view(x)
        mean = _sums(layout, x3) / m
        sign = np.where(gamma < 0, -1.0, 1.0)
        out_hw = _geometry(x.shape, kernel, stride, pads)
        grouped, pooled, total_sq = _centre_and_pool(ctx, layout, x3, mean, sign, kernel, out_hw)
        var = total_sq / m
        inv_std = 1.0 / np.sqrt(var + eps)
        _update_running(running_mean, running_var, mean, var, momentum, m)
        pooled_nchw = pooled.transpose(0, 3, 1, 2)
        pooled_layout = _Layout(pooled_nchw)
        y3 = _affine(ctx, pooled_layout, pooled_layout.view(pooled_nchw), sign * gamma * inv_std,
                     beta.astype(np.float64))
        ctx.save_for_backward(grouped, pooled, gamma.astype(np.float64), inv_std, sign)
        ctx.geometry = (x.shape, kernel, out_hw)
        return pooled_layout.restore(y3)

    @staticmethod
    def backward(ctx, g):
        grouped, pooled, gamma, inv_std, sign = ctx.saved_tensors
        x_shape, kernel, out_hw = ctx.geometry
        pooled_nchw = pooled.transpose(0, 3, 1, 2)
        g = in_layout_of(g, pooled_nchw, ctx.empty_like)
        m, layout = _count(x_shape), _Layout(g)
        sum_g, sum_g_pooled = _sums(layout, layout.view(g), layout.view(pooled_nchw))
        sum_g_xhat = sign * sum_g_pooled * inv_std                         # = dgamma
        a = gamma * inv_std
        b = -a * inv_std * sum_g_xhat / m
        c = -a * sum_g / m
        if not ctx.needs_input_grad[0]:
            return None, sum_g_xhat, sum_g
        ga = layout.restore(_affine(ctx, layout, layout.view(g), a, None)).transpose(0, 2, 3, 1)  # (N, OH, OW, C)
        dx = _ungroup_affine(ctx, grouped, pooled, ga, sign * b, c, x_shape, kernel, out_hw)
        return dx, sum_g_xhat, sum_g


def _update_running(running_mean, running_var, mean, var, momentum, m) -> None:
    """The running statistics moved towards this batch's, in place (the unbiased variance)."""
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * m / (m - 1)) * var


def _tile_pairs(image: np.ndarray, grouped: np.ndarray, kernel, out_hw) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image part, grouped part) view pairs: ``image`` (n, H, W, C) cut by ``windows.tiles``, ``grouped``
    (n, H*W, C) into consecutive runs of pixels of the same shapes (the empty parts left out)."""
    pairs, start = [], 0
    for part in tiles(image, kernel, out_hw):
        size = part.shape[1] * part.shape[2]
        if size:
            pairs.append((part, grouped[:, start: start + size].reshape(part.shape)))
        start += size
    return pairs


def _by_offset(grouped: np.ndarray, kernel, out_hw) -> list[np.ndarray]:
    """The (n, OH*OW, C) runs of ``grouped`` holding each kernel offset's pixels."""
    q = out_hw[0] * out_hw[1]
    return [grouped[:, k * q: (k + 1) * q] for k in range(kernel[0] * kernel[1])]


def _centre_and_pool(ctx, layout: _Layout, x3: np.ndarray, mean: np.ndarray, sign: np.ndarray, kernel, out_hw):
    """One pass over x, block by block while the block is in cache: xc = x - mean in x's own order (its
    squares summed per image exactly as ``_centre`` sums them), then sign*xc copied window-major into
    ``grouped`` and the windows' maxima taken there. Returns grouped (N, H*W, C), pooled (N, OH, OW, C)
    and sum xc^2 (C,) in float64."""
    (n, c, h, w), dtype = layout.shape, x3.dtype
    grouped = ctx.empty((n, h * w, c), dtype)
    pooled = ctx.empty((n, *out_hw, c), dtype)
    shift, x_ = layout.per_channel(mean, dtype), layout.wide(x3)
    flip = None if (sign > 0).all() else layout.per_channel(sign, dtype)
    windows, pooled3 = _by_offset(grouped, kernel, out_hw), pooled.reshape(n, -1, c)

    def kernel_(s: slice) -> np.ndarray:
        blocks = cache_blocks(s, x3[:1].nbytes)
        scratch = np.empty((2, blocks[0].stop - blocks[0].start, *x3.shape[1:]), dtype)
        per_image = np.empty((s.stop - s.start, c), dtype)
        for b in blocks:
            xc, squares = scratch[:, : b.stop - b.start]
            per_image[b.start - s.start: b.stop - s.start] = _centre_block(layout, x_, shift, b, xc, squares)
            if flip is not None:
                layout.wide(xc)[...] *= flip
            image = np.moveaxis(layout.restore(xc), 1, -1)  # (n, H, W, C)
            for image_part, grouped_part in _tile_pairs(image, grouped[b], kernel, out_hw):
                np.copyto(grouped_part, image_part)
            _window_maxima(windows, pooled3, b)
        return per_image.sum(axis=0, dtype=np.float64)

    total_sq = sum(over_batch(kernel_, n, work=x3.size))
    return grouped, pooled, total_sq


def _ungroup_affine(ctx, grouped, pooled, ga, b, c, x_shape, kernel, out_hw) -> np.ndarray:
    """dx (N, C, H, W), channels-last memory: B' * grouped + C everywhere (B' = sign*B, so that is
    B xc + C), + A g at each window's first pixel holding ``pooled``, computed window-major block by
    block and copied back into image order. ``ga`` = A g (N, OH, OW, C); B', C per channel, float64; the
    ops of BatchNorm.backward in its order (A g added last)."""
    (n, ch, h, w), dtype = x_shape, grouped.dtype
    dx = ctx.empty((n, h, w, ch), dtype)
    repeats = row_repeats(h * w, ch)
    scale, shift = tiled(b, repeats, dtype), tiled(c, repeats, dtype)
    windows = _by_offset(grouped, kernel, out_hw)
    pooled3, ga3 = pooled.reshape(n, -1, ch), ga.reshape(n, -1, ch)

    def kernel_(s: slice) -> None:
        blocks = cache_blocks(s, grouped[:1].nbytes)
        scratch = np.empty((blocks[0].stop - blocks[0].start, *grouped.shape[1:]), dtype)
        for block in blocks:
            d = scratch[: block.stop - block.start]
            np.multiply(wide(grouped[block], repeats), scale, out=wide(d, repeats))
            wide(d, repeats)[...] += shift
            d_windows = _by_offset(d, kernel, out_hw)
            routed = np.empty_like(ga3[block])
            for k, hit in _first_maxima([v[block] for v in windows], pooled3[block]):
                d_windows[k] += np.multiply(ga3[block], hit, out=routed)  # (``where=hit`` measured 3x slower)
            for image_part, grouped_part in _tile_pairs(dx[block], d, kernel, out_hw):
                np.copyto(image_part, grouped_part)

    over_batch(kernel_, n, work=grouped.size)
    return dx.transpose(0, 3, 1, 2)


class BatchNormEval(Function):
    """Eval mode, fixed statistics ``mean`` and ``var`` ((C,) arrays outside the graph):
    y = gamma (x - mean) / sqrt(var + eps) + beta = x * scale + shift.
    dx = g scale,   dgamma = sum(g (x - mean)) / sqrt(var + eps),   dbeta = sum(g).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, *, mean, var, eps):
        layout = _Layout(x)
        mean = mean.astype(np.float64)  # a copy: the caller may update its running arrays before backward
        inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
        scale = gamma * inv_std
        x3 = layout.view(x)
        ctx.save_for_backward(x3 if ctx.needs_input_grad[1] else None, mean, inv_std, scale)
        ctx.layout = layout
        return layout.restore(_affine(ctx, layout, x3, scale, beta - mean * scale))  # x * scale + shift

    @staticmethod
    def backward(ctx, g):
        x3, mean, inv_std, scale = ctx.saved_tensors
        layout, needs = ctx.layout, ctx.needs_input_grad
        g3 = layout.view(g)
        zero = np.zeros_like(scale)
        dx = layout.restore(_affine(ctx, layout, g3, scale, zero)) if needs[0] else None
        sum_g = _sums(layout, g3)
        dgamma = None
        if needs[1]:  # sum(g (x - mean)), centred first for accuracy (see _centre)
            xc, _ = _centre(ctx, layout, x3, mean)
            dgamma = _sums(layout, g3, xc)[1] * inv_std
        return dx, dgamma, sum_g


def _check_running(fn: str, name: str, a, channels: int, x_shape: tuple, training: bool) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be an np.ndarray (it is state, updated in place in training), "
                        f"got {type(a).__name__}")
    check_float_dtype(fn, name, a.dtype)
    if a.shape != (channels,):
        raise ValueError(f"{fn}: {name} has shape {a.shape} but x has {channels} channels (x.shape={x_shape})")
    if training and not a.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writable: training updates it in place")


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, *, training=True, momentum=0.1, eps=1e-5):
    """Batch normalisation per channel: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x: (N, C, H, W) or (N, C); gamma, beta: (C,) (Tensors or arrays); statistics per channel over all
    other axes. Returns a Tensor of x's shape and dtype (and memory layout).

    ``training=True``: mean and biased variance of this batch (N*H*W must be at least 2); the
    gradient flows through them. If ``running_mean`` and ``running_var`` are given (writable (C,)
    float ``np.ndarray``s, both or neither) they are updated **in place**:
    ``running = (1 - momentum) * running + momentum * batch``, with the unbiased batch variance,
    as in PyTorch. They are state, not part of the graph.

    ``training=False``: normalises with ``running_mean`` and ``running_var`` (required), fixed; the
    gradient reaches x, gamma and beta through the affine map; nothing is updated.

    >>> rm, rv = np.zeros(3), np.ones(3)
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (8, 3, 4, 4))
    >>> y = batch_norm(x, np.ones(3), np.zeros(3), rm, rv)   # training: batch statistics
    >>> bool(abs(y.data.mean()) < 1e-6), rm.round(1)         # rm moved 10% towards the batch mean
    (True, array([0.5, 0.5, 0.5]))
    >>> batch_norm(x, np.ones(3), np.zeros(3), rm, rv, training=False).shape
    (8, 3, 4, 4)
    """
    from ..tensor import as_tensor

    fn = "batch_norm"
    for name, value in (("x", x), ("gamma", gamma), ("beta", beta)):
        check_tensor_like(fn, name, value)
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    check_ndim(fn, "x", x.shape, (2, 4), "(N, C) or (N, C, H, W)")
    check_float_dtype(fn, "x", x.dtype)
    check_nonempty(fn, "x", x.shape, (1,), "channels C")
    channels = x.shape[1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != (channels,):
            raise ValueError(f"{fn}: {name} has shape {p.shape} but x has {channels} channels (x.shape={x.shape})")
        check_float_dtype(fn, name, p.dtype)
    training = check_bool(fn, "training", training)
    momentum = check_float(fn, "momentum", momentum, 0.0, 1.0)
    eps = check_float(fn, "eps", eps, 0.0, low_open=True)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must be given together (or neither)")
    if running_mean is not None:
        _check_running(fn, "running_mean", running_mean, channels, x.shape, training)
        _check_running(fn, "running_var", running_var, channels, x.shape, training)

    if not training:
        if running_mean is None:
            raise ValueError(f"{fn}: training=False normalises with the running statistics, "
                             "so running_mean and running_var must be given")
        return BatchNormEval.apply(x, gamma, beta, mean=running_mean, var=running_var, eps=eps)
    per_channel = _count(x.shape)
    if per_channel < 2:
        raise ValueError(f"{fn}: training needs at least 2 values per channel to compute a variance, got "
                         f"{per_channel} (x.shape={x.shape}); use a larger batch or training=False")
    return BatchNorm.apply(x, gamma, beta, eps=eps, momentum=momentum,
                           running_mean=running_mean, running_var=running_var)


# ---------------------------------------------------------------------------------------------- #
# Layer and group normalisation: the same standardisation, along the rows of a (B, R, D) view


def _standardise(ctx, x3: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row x3[b, r, :] standardised: xhat = (x - mean) / sqrt(var + eps), var biased.

    Two passes per row slice (centre, then square: see ``_centre``), sums in float64. Returns xhat
    (x3's shape and dtype, C order) and r = 1 / sqrt(var + eps), (B, R, 1) float64."""
    d = x3.shape[2]
    xhat = ctx.empty(x3.shape, x3.dtype)
    inv_std = np.empty(x3.shape[:2] + (1,))

    def kernel(s: slice) -> None:
        mean = x3[s].sum(axis=2, keepdims=True, dtype=np.float64) / d
        np.subtract(x3[s], mean.astype(x3.dtype), out=xhat[s])                       # x - mean
        var = np.square(xhat[s]).sum(axis=2, keepdims=True, dtype=np.float64) / d
        inv_std[s] = 1.0 / np.sqrt(var + eps)
        xhat[s] *= inv_std[s].astype(x3.dtype)

    over_batch(kernel, len(x3), work=x3.size)
    return xhat, inv_std


def _scale_shift(ctx, xhat: np.ndarray, scale: np.ndarray | None, shift: np.ndarray | None) -> np.ndarray:
    """y = xhat * scale + shift, scale and shift (R, D) broadcast over B; xhat itself when both are None."""
    if scale is None:
        return xhat
    y = ctx.empty(xhat.shape, xhat.dtype)
    scale, shift = scale.astype(xhat.dtype, copy=False), shift.astype(xhat.dtype, copy=False)

    def kernel(s: slice) -> None:
        np.multiply(xhat[s], scale, out=y[s])
        y[s] += shift

    over_batch(kernel, len(y), work=y.size)
    return y


def _standardise_backward(ctx, g3: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, scale: np.ndarray | None,
                          sums: bool) -> tuple:
    """dx = r (d - mean(d) - xhat mean(d * xhat)) per row, d = g * scale (g without a scale), means in
    float64; and, if ``sums``, the float64 sums over B of g * xhat and of g, (R, D) each (the gradients
    of scale and shift). Returns (dx, sum_g_xhat, sum_g)."""
    d, dtype = g3.shape[2], g3.dtype
    scale = None if scale is None else scale.astype(dtype, copy=False)
    dx = ctx.empty(g3.shape, dtype)

    def kernel(s: slice) -> tuple:
        g, xh, r = g3[s], xhat[s], inv_std[s]
        dxh = g if scale is None else g * scale                                       # d = dL/dxhat
        mean_d = dxh.sum(axis=2, keepdims=True, dtype=np.float64) / d
        mean_d_xhat = (dxh * xh).sum(axis=2, keepdims=True, dtype=np.float64) / d
        np.multiply(dxh, r.astype(dtype), out=dx[s])
        dx[s] -= (r * mean_d).astype(dtype)
        dx[s] -= xh * (r * mean_d_xhat).astype(dtype)
        if not sums:
            return None, None
        return (g * xh).sum(axis=0, dtype=np.float64), g.sum(axis=0, dtype=np.float64)

    parts = over_batch(kernel, len(g3), work=g3.size)
    if not sums:
        return dx, None, None
    return dx, sum(p[0] for p in parts), sum(p[1] for p in parts)


class LayerNorm(Function):
    """Each sample standardised over its last axes, then scaled and shifted elementwise:
    x (..., *S) with S = ``normalized_shape`` (D = prod(S) values a row), gamma and beta of shape S::

        y = gamma * (x - mean) / sqrt(var + eps) + beta,   mean and biased var over the D values

    dx = r (d - mean(d) - xhat mean(d xhat)) per row with d = g gamma,   dgamma = sum(g xhat),
    dbeta = sum(g), both summed over the leading axes. gamma and beta are both given or both left out.
    """

    @staticmethod
    def forward(ctx, x, gamma=None, beta=None, *, normalized_shape, eps=1e-5):
        x3 = x.reshape(-1, 1, math.prod(normalized_shape))                          # (B, 1, D)
        xhat, inv_std = _standardise(ctx, x3, eps)
        scale = None if gamma is None else gamma.reshape(1, -1)                      # (1, D)
        shift = None if beta is None else beta.reshape(1, -1)
        ctx.save_for_backward(xhat, inv_std, scale)
        ctx.normalized_shape = normalized_shape
        return _scale_shift(ctx, xhat, scale, shift).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, inv_std, scale = ctx.saved_tensors
        sums = scale is not None and any(ctx.needs_input_grad[1:])
        dx, dgamma, dbeta = _standardise_backward(ctx, g.reshape(xhat.shape), xhat, inv_std, scale, sums)
        if scale is None:
            return (dx.reshape(g.shape),)
        params = [None if v is None else v.reshape(ctx.normalized_shape) for v in (dgamma, dbeta)]
        return dx.reshape(g.shape), *params


class GroupNorm(Function):
    """Channels split into G groups; each sample's group (C/G channels and all their pixels) standardised,
    then every channel scaled and shifted: x (N, C, *spatial), gamma and beta (C,)::

        y[n, c] = gamma[c] * (x[n, c] - mean[n, group(c)]) / sqrt(var[n, group(c)] + eps) + beta[c]

    dx = r (d - mean(d) - xhat mean(d xhat)) per (n, group) with d = g gamma[c],
    dgamma[c] = sum over n and pixels of g xhat,   dbeta[c] = sum of g.   gamma, beta: both or neither.
    """

    @staticmethod
    def forward(ctx, x, gamma=None, beta=None, *, num_groups, eps=1e-5):
        n, c = x.shape[:2]
        pixels = math.prod(x.shape[2:])
        x3 = x.reshape(n, num_groups, c // num_groups * pixels)                      # (N, G, C/G * P)
        xhat, inv_std = _standardise(ctx, x3, eps)

        def per_channel(v):  # (C,) -> (G, C/G * P): each channel's value repeated over its pixels
            return None if v is None else np.repeat(v, pixels).reshape(num_groups, -1)

        scale = per_channel(gamma)
        ctx.save_for_backward(xhat, inv_std, scale)
        ctx.channels = (c, pixels)
        return _scale_shift(ctx, xhat, scale, per_channel(beta)).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, inv_std, scale = ctx.saved_tensors
        sums = scale is not None and any(ctx.needs_input_grad[1:])
        dx, dscale, dshift = _standardise_backward(ctx, g.reshape(xhat.shape), xhat, inv_std, scale, sums)
        if scale is None:
            return (dx.reshape(g.shape),)
        per_channel = [None if v is None else v.reshape(ctx.channels).sum(axis=1) for v in (dscale, dshift)]
        return dx.reshape(g.shape), *per_channel


def _affine_params(fn: str, x, gamma, beta, shape: tuple, what: str) -> tuple:
    """(gamma, beta) as Tensors of ``shape``, or () when both are None; a missing one of the two becomes
    the constant 1 (gamma) or 0 (beta). ``what`` says where ``shape`` comes from, for the message."""
    from ..tensor import Tensor, as_tensor

    if gamma is None and beta is None:
        return ()
    params = []
    for name, p, fill in (("gamma", gamma, 1.0), ("beta", beta, 0.0)):
        if p is None:
            params.append(Tensor(np.full(shape, fill, x.dtype)))
            continue
        check_tensor_like(fn, name, p)
        p = as_tensor(p)
        if p.shape != shape:
            raise ValueError(f"{fn}: {name} must have shape {shape} ({what}), got {p.shape} (x.shape={x.shape})")
        check_float_dtype(fn, name, p.dtype)
        params.append(p)
    return tuple(params)


def _normalized_shape(fn: str, value) -> tuple[int, ...]:
    shape = (value,) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fn}: normalized_shape must be an int or a tuple of ints, got {describe(value)}")
    if not shape:
        raise ValueError(f"{fn}: normalized_shape must name at least one axis, got {value!r}")
    return tuple(check_int(fn, "normalized_shape", n, minimum=1) for n in shape)


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """Layer normalisation: each sample standardised over its last axes, y = gamma * xhat + beta.

    x: (..., *normalized_shape), floating; ``normalized_shape`` an int or a tuple of ints, the sizes
    of x's last axes (as PyTorch's ``F.layer_norm``: ``(C, H, W)`` for a whole image, ``(W,)`` for
    each row). Over those D = prod(normalized_shape) values of every leading index,
    xhat = (x - mean) / sqrt(var + eps) with the biased variance, accumulated in float64 after
    centring. ``gamma``, ``beta``: optional, of shape ``normalized_shape`` (elementwise affine); a
    missing one acts as 1 or 0. The same in training and eval (no running statistics). Returns x's
    shape and dtype; gradients reach x, gamma and beta.

    >>> y = layer_norm(np.arange(6.0).reshape(2, 3), 3)
    >>> y.data.round(4)
    array([[-1.2247,  0.    ,  1.2247],
           [-1.2247,  0.    ,  1.2247]])
    """
    from ..tensor import as_tensor

    fn = "layer_norm"
    check_tensor_like(fn, "x", x)
    x = as_tensor(x)
    check_float_dtype(fn, "x", x.dtype)
    shape = _normalized_shape(fn, normalized_shape)
    check_min_ndim(fn, "x", x.shape, len(shape), f"(..., {', '.join(map(str, shape))})")
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"{fn}: the last {len(shape)} axes of x must be normalized_shape {shape}, "
                         f"got x.shape={x.shape}")
    params = _affine_params(fn, x, gamma, beta, shape, "normalized_shape")
    eps = check_float(fn, "eps", eps, 0.0, low_open=True)
    return LayerNorm.apply(x, *params, normalized_shape=shape, eps=eps)


def group_norm(x, num_groups, gamma=None, beta=None, eps=1e-5):
    """Group normalisation: the C channels of x (N, C, ...) in ``num_groups`` groups of C/G consecutive
    channels; each sample's group standardised over its channels and all their pixels, then
    y = gamma[c] * xhat + beta[c] per channel (PyTorch's ``F.group_norm``).

    ``num_groups`` must divide C: 1 group normalises the whole sample (layer norm over (C, H, W) with
    per-channel parameters), C groups each channel alone (instance norm). ``gamma``, ``beta``:
    optional, (C,); a missing one acts as 1 or 0. Biased variance, float64 sums after centring; the same
    in training and eval. Returns x's shape and dtype.

    >>> x = np.random.default_rng(0).normal(3.0, 2.0, (2, 4, 5, 5))
    >>> y = group_norm(x, 2, np.ones(4), np.zeros(4)).data.reshape(2, 2, -1)
    >>> bool(np.allclose(y.mean(axis=2), 0) and np.allclose(y.var(axis=2), 1, atol=1e-4))
    True
    """
    from ..tensor import as_tensor

    fn = "group_norm"
    check_tensor_like(fn, "x", x)
    x = as_tensor(x)
    check_min_ndim(fn, "x", x.shape, 2, "(N, C, ...)")
    check_float_dtype(fn, "x", x.dtype)
    check_nonempty(fn, "x", x.shape, tuple(range(1, x.ndim)), "C and every spatial size")
    groups = check_int(fn, "num_groups", num_groups, minimum=1)
    channels = x.shape[1]
    if channels % groups:
        raise ValueError(f"{fn}: num_groups={groups} must divide the {channels} channels of x (x.shape={x.shape})")
    params = _affine_params(fn, x, gamma, beta, (channels,), "one per channel of x")
    eps = check_float(fn, "eps", eps, 0.0, low_open=True)
    return GroupNorm.apply(x, *params, num_groups=groups, eps=eps)
