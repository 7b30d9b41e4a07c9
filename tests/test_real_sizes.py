"""The ops at real sizes, against direct float64 references written here in plain NumPy.

The property tests (test_conv, test_pool, test_norm) keep shapes tiny, so some code never runs in them:

* conv2d's sliding-window im2col, taken only with at least ``conv._FEW_CHANNELS`` input channels;
* im2col / col2im cut into several blocks of images (``parallel.BLOCK_BYTES`` each);
* the threaded kernels: ``parallel.over_batch`` hands slices to threads only past
  ``parallel.MIN_PARALLEL_WORK`` elements.

Here the batch is 64 images of 28x28 or 14x14 with 4 to 64 channels, and every test asserts that the path
it is about really ran: the channel count against ``_FEW_CHANNELS``, the number of im2col blocks (a spy on
``conv.cache_blocks``), and work handed to pool threads (a spy on ``parallel._Worker.submit``). The
references are independent of the ops' code: conv as a loop over kernel offsets of float64 tensordots,
its backward by the adjoint formulas, padding by ``np.pad`` (and its adjoint by the padding matrices
``np.pad`` makes of an identity), pooling by ``sliding_window_view`` reductions, argmax routing and
pooling matrices, batch norm by the step-by-step chain rule.

Then the same forward and backward passes, and a whole training step of the reference CNN, run with
``TINYGRAD_CNN_THREADS=1`` and ``=2``. ``parallel`` promises bit-for-bit results for a given thread count
(slices combined in order), not across counts. Across counts: pooling and relu, elementwise per image,
agree bit for bit; conv2d agrees to float32 rounding even per image (a BLAS row's rounding depends on where
it sits in its block, and the blocks move with the slices); sums over the batch (weight gradients,
batch-norm statistics) agree to float32 rounding. A second run with two threads must repeat every bit.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn import parallel
from tinygrad_cnn.ops import conv

NP_PAD_MODE = {"zeros": "constant", "replicate": "edge", "circular": "wrap"}


# ---------------------------------------------------------------------------------------------- #
# spies: proof that the code paths ran


class ThreadSpy:
    """Counts the slices ``over_batch`` hands to pool threads and records the threads that ran them."""

    def __init__(self):
        self.submitted = 0
        self.workers: set[int] = set()

    def ran_threaded(self, since: int) -> bool:
        return self.submitted > since and bool(self.workers) and threading.get_ident() not in self.workers


@pytest.fixture
def threads(monkeypatch):
    """Two threads for the batch kernels (whatever the machine), and a spy on the pool's submit."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    spy = ThreadSpy()
    submit = parallel._Worker.submit

    def spying_submit(worker, kernel, s):
        def traced(s):
            spy.workers.add(threading.get_ident())
            return kernel(s)

        spy.submitted += 1
        return submit(worker, traced, s)

    monkeypatch.setattr(parallel._Worker, "submit", spying_submit)
    return spy


@pytest.fixture
def blocks(monkeypatch):
    """The number of col2im blocks each call of ``conv.cache_blocks`` cut its slice of images into (the
    backward's input gradient; the forward is not blocked)."""
    counts: list[int] = []
    original = conv.cache_blocks

    def spying_blocks(s, bytes_per_image):
        out = original(s, bytes_per_image)
        counts.append(len(out))
        return out

    monkeypatch.setattr(conv, "cache_blocks", spying_blocks)
    return counts


def assert_close(actual, expected, what, rtol=1e-4, atol_frac=1e-5):
    """float32 ``actual`` against float64 ``expected``: relative error, plus an absolute floor scaled to the
    largest value (sums of thousands of float32 terms cancel to values near 0)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}"
    atol = atol_frac * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def channels_last(a):
    """``a`` (N, C, H, W) as a view of NHWC memory: the layout conv2d returns and the next ops receive."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------- #
# conv2d


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_pads(padding, size, kernel, stride, dilation):
    """((top, bottom), (left, right)); "same" by TensorFlow's rule: ceil(n / s) outputs, odd pixel last."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def padding_matrix(n, before, after, mode):
    """P (n + before + after, n) with x_padded = P @ x along one axis: ``np.pad`` of the identity."""
    return np.pad(np.eye(n), ((before, after), (0, 0)), mode=NP_PAD_MODE[mode])


def offset_view(xp, i, j, out_hw, stride, dilation):
    """xp[:, :, oh*sh + i*dh, ow*sw + j*dw] for every output position (oh, ow)."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def ref_conv(x, w, b, g, *, stride, padding, padding_mode, dilation):
    """y = conv2d(x, w, b) and, for upstream g, dx, dw, db: all in float64, one tensordot per kernel offset.

    y[n, f] = b[f] + sum_{i, j} w[:, :, i, j] . xp[n, :, window (i, j)]; dw[f, c, i, j] = sum g[n, f] xp[n, c];
    dxp[window (i, j)] += w[:, :, i, j]^T g; dx = Ph^T dxp Pw (the adjoint of the padding)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    stride, dilation = pair(stride), pair(dilation)
    (n, _, h, wd), (f, _, kh, kw) = x.shape, w.shape
    pads = ref_pads(padding, (h, wd), (kh, kw), stride, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), *pads), mode=NP_PAD_MODE[padding_mode])
    out_hw = tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(xp.shape[2:], (kh, kw), stride, dilation))
    y = np.zeros((n, *out_hw, f))
    for i in range(kh):
        for j in range(kw):
            y += np.tensordot(offset_view(xp, i, j, out_hw, stride, dilation), w[:, :, i, j], axes=([1], [1]))
    y = y.transpose(0, 3, 1, 2) + (0.0 if b is None else b.astype(np.float64)[:, None, None])
    if g is None:
        return y, None
    g = g.astype(np.float64)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            offset_view(dxp, i, j, out_hw, stride, dilation)[...] += np.tensordot(
                g, w[:, :, i, j], axes=([1], [0])).transpose(0, 3, 1, 2)
            dw[:, :, i, j] = np.tensordot(g, offset_view(xp, i, j, out_hw, stride, dilation),
                                          axes=([0, 2, 3], [0, 2, 3]))
    ph, pw = (padding_matrix(size, *p, padding_mode) for size, p in zip((h, wd), pads))
    dx = np.tensordot(np.tensordot(dxp, ph, axes=([2], [0])), pw, axes=([2], [0]))  # (N, C, W, H) then (N, C, H, W)
    return y, (dx, dw, None if b is None else g.sum(axis=(0, 2, 3)))


def conv_inputs(seed, n, c, f, hw, k, bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32) if bias else None
    return x, w, b


# (N, C, F, H=W, kernel, bias, conv2d keyword arguments)
CONV_CASES = {
    "c8-28-k3-same-zeros": (64, 8, 16, 28, 3, True, dict(stride=1, padding="same", padding_mode="zeros", dilation=1)),
    "c16-28-k5-s2-p2-replicate": (64, 16, 32, 28, 5, False,
                                  dict(stride=2, padding=2, padding_mode="replicate", dilation=1)),
    "c32-14-k3-p2-d2-circular": (64, 32, 64, 14, 3, True,
                                 dict(stride=1, padding=2, padding_mode="circular", dilation=2)),
    "c64-14-k3-s21-same-replicate": (64, 64, 32, 14, 3, True,
                                     dict(stride=(2, 1), padding="same", padding_mode="replicate", dilation=1)),
    "c4-28-k5-s12-p12-d12-circular": (64, 4, 8, 28, 5, False,
                                      dict(stride=(1, 2), padding=(1, 2), padding_mode="circular", dilation=(1, 2))),
    "c24-14-k5-s3-d2-same-zeros-n61": (61, 24, 16, 14, 5, True,
                                       dict(stride=3, padding="same", padding_mode="zeros", dilation=2)),
    "c3-28-k5-s2-same-replicate": (64, 3, 16, 28, 5, True,
                                   dict(stride=2, padding="same", padding_mode="replicate", dilation=1)),
}


def run_conv(x, w, b, g, kw):
    tensors = [Tensor(a, requires_grad=True) for a in ((x, w) if b is None else (x, w, b))]
    y = tc.conv2d(*tensors, **kw)
    forward = y.data.copy()
    y.backward(g)
    return forward, [t.grad for t in tensors]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_direct_float64_reference(case, threads, blocks):
    n, c, f, hw, k, bias, kw = CONV_CASES[case]
    x, w, b = conv_inputs(1, n, c, f, hw, k, bias)
    tensors = [Tensor(a, requires_grad=True) for a in ((x, w) if b is None else (x, w, b))]

    y = tc.conv2d(*tensors, **kw)
    assert threads.ran_threaded(0), "forward did not run in threads"
    forward_blocks = list(blocks)
    g = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    submitted = threads.submitted
    y.backward(g)
    assert threads.ran_threaded(submitted), "backward did not run in threads"
    backward_blocks = blocks[len(forward_blocks):]

    # the forward builds each thread slice's im2col matrix at once (the backward keeps it); the backward's
    # col2im makes one cache_blocks call per thread slice, each slice cut into several blocks of images
    assert forward_blocks == [] and len(backward_blocks) == 2
    assert min(backward_blocks) > 1, backward_blocks
    if case.startswith("c3-"):
        assert c < conv._FEW_CHANNELS  # the transposed-im2col branch, at a real size
    else:
        assert c >= conv._FEW_CHANNELS  # the sliding-window im2col branch

    ref_y, ref_grads = ref_conv(x, w, b, g, **kw)
    assert_close(y.data, ref_y, "y")
    for name, t, ref in zip(("dx", "dw", "db"), tensors, ref_grads):
        assert_close(t.grad, ref, name)


@pytest.mark.parametrize("channels, block_images", [(8, 3), (1, 5)])
def test_conv2d_small_blocks_with_a_ragged_last_block(monkeypatch, threads, blocks, channels, block_images):
    """parallel.BLOCK_BYTES shrunk to a few images, so each thread's 32 images end in a partial block of the
    backward's col2im (32 = 10*3 + 2, 32 = 6*5 + 2); with C=1 a 1 MiB block never splits at 28x28."""
    n, f, hw, k = 64, 16, 28, 3
    kw = dict(stride=1, padding=1, padding_mode="replicate", dilation=1)
    x, w, b = conv_inputs(3, n, channels, f, hw, k, True)
    bytes_per_image = hw * hw * k * k * channels * 4
    default_split = len(conv.cache_blocks(slice(0, 32), bytes_per_image))
    assert default_split == (1 if channels == 1 else 8)  # 1 MiB: 42 images of one channel, 4 of eight
    monkeypatch.setattr(parallel, "BLOCK_BYTES", block_images * bytes_per_image + 1)
    blocks.clear()
    g = np.random.default_rng(4).standard_normal((n, f, hw, hw)).astype(np.float32)

    y, grads = run_conv(x, w, b, g, kw)
    assert threads.ran_threaded(0)
    assert blocks == [-(-32 // block_images)] * 2  # the backward's 2 slices (the forward is not blocked)
    ref_y, ref_grads = ref_conv(x, w, b, g, **kw)
    assert_close(y, ref_y, "y")
    for name, grad, ref in zip(("dx", "dw", "db"), grads, ref_grads):
        assert_close(grad, ref, name)


def test_conv2d_first_layer_of_the_cnn(threads):
    """One channel, 64 images of 28x28, 32 filters: the few-channels im2col at the size the CNN uses."""
    x, w, b = conv_inputs(5, 64, 1, 32, 28, 3, True)
    kw = dict(stride=1, padding=0, padding_mode="zeros", dilation=1)
    g = np.random.default_rng(6).standard_normal((64, 32, 26, 26)).astype(np.float32)
    y, grads = run_conv(x, w, b, g, kw)
    assert threads.ran_threaded(0)
    ref_y, ref_grads = ref_conv(x, w, b, g, **kw)
    assert_close(y, ref_y, "y")
    for name, grad, ref in zip(("dx", "dw", "db"), grads, ref_grads):
        assert_close(grad, ref, name)


# ---------------------------------------------------------------------------------------------- #
# pooling


def ref_pool(x, g, kind, kernel_size, stride, padding):
    """Pooling of x and its input gradient for upstream g, float64.

    max: the maximum of each window of x padded with -inf, its gradient routed to the first maximum in
    row-major order (np.argmax); avg: the window means with zeros padded, its gradient A_h^T g A_w / (KH*KW)
    with A the 0/1 matrix of which (unpadded) pixels each output window covers."""
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    sh, sw = pair(stride)
    x, g = x.astype(np.float64), g.astype(np.float64)
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # (N, C, OH, OW, KH, KW)
    oh, ow = windows.shape[2:4]
    flat = windows.reshape(n, c, oh, ow, kh * kw)
    if kind == "avg":
        y = flat.mean(axis=-1)
        cover = lambda size, out, k, s, p: np.array(  # noqa: E731
            [[o * s <= q + p < o * s + k for q in range(size)] for o in range(out)], dtype=np.float64)
        ah, aw = cover(h, oh, kh, sh, ph), cover(w, ow, kw, sw, pw)
        return y, np.einsum("ph,ncpq,qw->nchw", ah, g, aw, optimize=True) / (kh * kw)
    y = flat.max(axis=-1)
    first = flat.argmax(axis=-1)
    rows = np.arange(oh)[:, None] * sh + first // kw
    cols = np.arange(ow)[None, :] * sw + first % kw
    hp, wp = xp.shape[2:]
    index = ((np.arange(n)[:, None, None, None] * c + np.arange(c)[None, :, None, None]) * hp + rows) * wp + cols
    dxp = np.bincount(index.ravel(), weights=g.ravel(), minlength=xp.size).reshape(xp.shape)
    return y, dxp[:, :, ph: ph + h, pw: pw + w]


def distinct_values(rng, shape):
    """Every value different (a permutation of integers, exact in float32): no ties anywhere."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size // 2).astype(np.float32) * np.float32(2.0 ** -16)).reshape(shape)


def tied_values(rng, shape):
    """relu of values rounded to halves: most windows hold several equal maxima (zeros, or x.5s)."""
    return np.maximum(np.round(2 * rng.standard_normal(shape)) / 2, 0).astype(np.float32)


# (shape, kernel_size, stride, padding, memory layout)
POOL_CASES = {
    "k2-tiled-28": ((64, 32, 28, 28), 2, 2, 0, "nhwc"),
    "k2-tiled-13-border": ((64, 64, 13, 13), 2, 2, 0, "nhwc"),
    "k3-s2-p1-overlap-28": ((64, 16, 28, 28), 3, 2, 1, "nchw"),
    "k3-tiled-14-two-border-rows": ((64, 32, 14, 14), 3, 3, 0, "nhwc"),
    "k23-tiled-p1-14": ((64, 32, 14, 14), (2, 3), (2, 3), 1, "nchw"),
    "k3-s1-p1-overlap-14": ((64, 32, 14, 14), 3, 1, 1, "nhwc"),
    "k3-s32-p1-overlap-along-w-14": ((64, 32, 14, 14), 3, (3, 2), 1, "nchw"),
}


@pytest.mark.parametrize("kind, values", [("max", "distinct"), ("max", "ties"), ("avg", "distinct")])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_matches_direct_float64_reference(case, kind, values, threads):
    shape, kernel_size, stride, padding, layout = POOL_CASES[case]
    rng = np.random.default_rng(7)
    x = (distinct_values if values == "distinct" else tied_values)(rng, shape)
    x = channels_last(x) if layout == "nhwc" else x
    pool = tc.max_pool2d if kind == "max" else tc.avg_pool2d
    t = Tensor(x, requires_grad=True)

    y = pool(t, kernel_size, stride, padding)
    assert threads.ran_threaded(0), "forward did not run in threads"
    g = rng.standard_normal(y.shape).astype(np.float32)
    submitted = threads.submitted
    y.backward(g)
    if kind == "max":  # (average pooling's backward is one serial pass)
        assert threads.ran_threaded(submitted), "backward did not run in threads"

    ref_y, ref_dx = ref_pool(x, g, kind, kernel_size, stride, padding)
    if kind == "max":  # a maximum and its routing are exact; only overlapping windows add (in float32)
        assert y.dtype == t.grad.dtype == np.float32
        np.testing.assert_array_equal(y.data, ref_y)
        if all(s >= k for s, k in zip(pair(stride), pair(kernel_size))):
            np.testing.assert_array_equal(t.grad, ref_dx)
        else:
            assert_close(t.grad, ref_dx, "dx", rtol=1e-6, atol_frac=1e-6)
    else:
        assert_close(y.data, ref_y, "y", rtol=1e-6, atol_frac=1e-7)
        assert_close(t.grad, ref_dx, "dx", rtol=1e-6, atol_frac=1e-7)


# ---------------------------------------------------------------------------------------------- #
# batch norm and relu


def ref_batch_norm(x, gamma, beta, g, eps, rm, rv, momentum):
    """Training-mode batch norm and its gradients in float64 by the chain rule, one stage at a time:
    xhat = (x - mu) / sqrt(var + eps) through var, then mu, then x."""
    x, gamma, beta, g = (a.astype(np.float64) for a in (x, gamma, beta, g))
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=axes, keepdims=True)
    std = np.sqrt(var + eps)
    xhat = xc / std
    y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    dxhat = g * gamma.reshape(shape)
    dvar = (dxhat * xc).sum(axis=axes, keepdims=True) * -0.5 * std ** -3
    dmu = -(dxhat / std).sum(axis=axes, keepdims=True) + dvar * (-2.0 * xc).mean(axis=axes, keepdims=True)
    dx = dxhat / std + dvar * 2.0 * xc / m + dmu / m
    running = ((1 - momentum) * rm + momentum * mu.ravel(), (1 - momentum) * rv + momentum * var.ravel() * m / (m - 1))
    return y, (dx, (g * xhat).sum(axis=axes), g.sum(axis=axes)), running


def bn_inputs(seed, shape, layout):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.normal(3.0, 2.0, shape).astype(np.float32) + rng.normal(0, 5, (1, c) + (1,) * (len(shape) - 2)).astype(
        np.float32)
    x = channels_last(x) if layout == "nhwc" else x
    gamma, beta = rng.normal(1.0, 0.5, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    return x, gamma, beta, g


BN_CASES = {"64x32x28x28-nhwc": ((64, 32, 28, 28), "nhwc"), "64x64x14x14-nchw": ((64, 64, 14, 14), "nchw"),
            "256x512": ((256, 512), "nchw")}


@pytest.mark.parametrize("case", BN_CASES)
def test_batch_norm_training_matches_direct_float64_reference(case, threads):
    shape, layout = BN_CASES[case]
    x, gamma, beta, g = bn_inputs(8, shape, layout)
    c, momentum, eps = shape[1], 0.1, 1e-5
    rm, rv = np.linspace(-1, 1, c).astype(np.float32), np.linspace(0.5, 2, c).astype(np.float32)
    ref_y, ref_grads, ref_running = ref_batch_norm(x, gamma, beta, g, eps, rm, rv, momentum)
    tensors = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]

    y = tc.batch_norm(*tensors, rm, rv, momentum=momentum, eps=eps)
    assert threads.ran_threaded(0), "forward did not run in threads"
    submitted = threads.submitted
    y.backward(g)
    assert threads.ran_threaded(submitted), "backward did not run in threads"

    if layout == "nhwc":
        assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous  # channels-last in, channels-last out
        assert tensors[0].grad.transpose(0, 2, 3, 1).flags.c_contiguous
    assert_close(y.data, ref_y, "y")
    for name, t, ref in zip(("dx", "dgamma", "dbeta"), tensors, ref_grads):
        assert_close(t.grad, ref, name)
    assert_close(rm, ref_running[0], "running_mean", rtol=1e-5)
    assert_close(rv, ref_running[1], "running_var", rtol=1e-5)


def test_batch_norm_eval_matches_direct_float64_reference(threads):
    x, gamma, beta, g = bn_inputs(9, (64, 32, 14, 14), "nhwc")
    rng = np.random.default_rng(10)
    rm, rv = (x.mean(axis=(0, 2, 3)) + rng.normal(0, 0.1, 32)).astype(np.float32), rng.uniform(3, 5, 32).astype(
        np.float32)
    tensors = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    y = tc.batch_norm(*tensors, rm, rv, training=False, eps=1e-3)
    assert threads.ran_threaded(0)
    submitted = threads.submitted
    y.backward(g)
    assert threads.ran_threaded(submitted)

    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    c = lambda v: v.astype(np.float64)[:, None, None]  # noqa: E731
    inv_std = 1 / np.sqrt(c(rv) + 1e-3)
    assert_close(y.data, (x64 - c(rm)) * inv_std * c(gamma) + c(beta), "y")
    assert_close(tensors[0].grad, g64 * inv_std * c(gamma), "dx")
    assert_close(tensors[1].grad, (g64 * (x64 - c(rm)) * inv_std).sum(axis=(0, 2, 3)), "dgamma")
    assert_close(tensors[2].grad, g64.sum(axis=(0, 2, 3)), "dbeta")


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_relu_is_exact_at_real_size(layout, threads):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 32, 28, 28)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = 0.0  # the gradient at exactly 0 is 0
    x = channels_last(x) if layout == "nhwc" else x
    g = rng.standard_normal(x.shape).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    y = tc.relu(t)
    assert threads.ran_threaded(0)
    submitted = threads.submitted
    y.backward(g)
    assert threads.ran_threaded(submitted)
    np.testing.assert_array_equal(y.data, np.where(x > 0, x, 0))
    np.testing.assert_array_equal(t.grad, np.where(x > 0, g, 0))
    assert y.dtype == t.grad.dtype == np.float32


@pytest.mark.parametrize("leading", [(256,), (8, 32)], ids=["batch", "batch-and-sequence"])
def test_linear_threaded_matches_float64_reference(leading, threads):
    """The reference CNN's first dense layer (1600 -> 128) on 256 rows, cut into threads' slices over
    every leading index: y, dx, and dw and db summed over the slices, against float64."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((*leading, 1600)).astype(np.float32)
    w = (rng.standard_normal((1600, 128)) / 40).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    g = rng.standard_normal((*leading, 128)).astype(np.float32)
    tensors = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    y = tc.linear(*tensors)
    assert threads.ran_threaded(0)
    submitted = threads.submitted
    y.backward(g)
    assert threads.ran_threaded(submitted)
    x64, w64, g64 = (a.astype(np.float64).reshape(-1, a.shape[-1]) for a in (x, w, g))
    assert_close(y.data.reshape(-1, 128), x64 @ w64 + b, "y")
    assert_close(tensors[0].grad.reshape(-1, 1600), g64 @ w64.T, "dx")
    assert_close(tensors[1].grad, x64.T @ g64, "dw")
    assert_close(tensors[2].grad, g64.sum(axis=0), "db")
    assert y.shape == (*leading, 128) and tensors[0].grad.shape == x.shape
    assert all(t.grad.dtype == np.float32 for t in tensors)


# ---------------------------------------------------------------------------------------------- #
# threaded against serial


def with_threads(monkeypatch, spy, count, fn):
    """fn() with TINYGRAD_CNN_THREADS=count, checking that it did (2) or did not (1) use the pool."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", str(count))
    before = spy.submitted
    out = fn()
    assert (spy.submitted > before) == (count > 1), f"threads={count}: {spy.submitted - before} slices submitted"
    return out


def assert_same_bits(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a, b, err_msg=what)


def test_threads_agree_with_serial_for_conv2d(monkeypatch, threads, blocks):
    """Each image's rows are computed on their own, yet y and dx are not bit-identical across thread counts:
    serially the forward's matrix holds images 0-63 and the backward's blocks 0-17, 18-35, 36-53, 54-63,
    with two threads the matrices 0-31 and 32-63 and the blocks 0-17, 18-31, 32-49, 50-63, and OpenBLAS
    computes a row differently depending on where it sits in the matrix (the rows past the last full
    tile of M take other micro-kernels), and serially BLAS may run its own threads. So: equal
    to float32 rounding across counts, bit for bit for the same count (what ``parallel`` promises)."""
    x, w, b = conv_inputs(12, 64, 8, 16, 14, 3, True)
    kw = dict(stride=1, padding="same", padding_mode="zeros", dilation=1)
    g = np.random.default_rng(13).standard_normal((64, 16, 14, 14)).astype(np.float32)
    runs = [with_threads(monkeypatch, threads, k, lambda: run_conv(x, w, b, g, kw)) for k in (1, 2, 2)]
    assert blocks == [4] + [2] * 4  # the backward's col2im: serial, then 2 slices in each threaded run
    serial, threaded, again = ([y, *grads] for y, grads in runs)
    for name, one, two, two_again in zip(("y", "dx", "dw", "db"), serial, threaded, again):
        assert_same_bits(two, two_again, f"{name} (same thread count)")
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6 * np.abs(one).max(), err_msg=name)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_threads_agree_with_serial_for_pooling(monkeypatch, threads, kind):
    rng = np.random.default_rng(14)
    x = channels_last(tied_values(rng, (64, 32, 28, 28)))
    g = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)
    pool = tc.max_pool2d if kind == "max" else tc.avg_pool2d

    def run():
        t = Tensor(x, requires_grad=True)
        y = pool(t, 3, 2, 1)
        y.backward(g)
        return y.data, t.grad

    (y1, dx1), (y2, dx2) = (with_threads(monkeypatch, threads, k, run) for k in (1, 2))
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")


def test_threads_agree_with_serial_for_relu(monkeypatch, threads):
    rng = np.random.default_rng(15)
    x, g = rng.standard_normal((2, 64, 32, 28, 28)).astype(np.float32)

    def run():
        t = Tensor(x, requires_grad=True)
        y = tc.relu(t)
        y.backward(g)
        return y.data, t.grad

    (y1, dx1), (y2, dx2) = (with_threads(monkeypatch, threads, k, run) for k in (1, 2))
    assert_same_bits(y1, y2, "y")
    assert_same_bits(dx1, dx2, "dx")


@pytest.mark.parametrize("training", [True, False])
def test_threads_agree_with_serial_for_batch_norm(monkeypatch, threads, training):
    """The statistics are sums over the batch, split differently: equal to rounding across thread counts,
    equal bit for bit when the same thread count runs twice."""
    x, gamma, beta, g = bn_inputs(16, (64, 32, 28, 28), "nhwc")

    def run():
        rm, rv = np.zeros(32, np.float32), np.ones(32, np.float32)
        tensors = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
        y = tc.batch_norm(*tensors, rm, rv, training=training)
        y.backward(g)
        return [y.data] + [t.grad for t in tensors] + [rm, rv]

    serial, threaded, again = (with_threads(monkeypatch, threads, k, run) for k in (1, 2, 2))
    for name, a, b, c in zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"), serial, threaded, again):
        assert_same_bits(b, c, name)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max(), err_msg=name)


@pytest.mark.parametrize("name", ["cnn-bn", "cnn"])
def test_threads_agree_with_serial_for_a_training_step(monkeypatch, threads, name):
    """value_and_grad of the reference CNN on a batch of 64: every op above, chained, at the size it trains."""
    model = tc.models.get(name)
    params, state0 = model.init(np.random.default_rng(17))
    rng = np.random.default_rng(18)
    images = rng.random((64, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 64)

    def step():
        state = {layer: {k: v.copy() for k, v in s.items()} for layer, s in state0.items()}
        loss = lambda p: tc.cross_entropy(model.apply(p, images, state=state, training=True), labels)  # noqa: E731
        value, grads = tc.value_and_grad(loss)(params)
        return value, grads, state

    serial, threaded, again = (with_threads(monkeypatch, threads, k, step) for k in (1, 2, 2))
    assert threaded[0] == again[0]
    np.testing.assert_allclose(threaded[0], serial[0], rtol=1e-5)
    for layer in params:
        for key in params[layer]:
            a, b, c = (run[1][layer][key] for run in (serial, threaded, again))
            assert_same_bits(b, c, f"{layer}.{key} (same thread count)")
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max(), err_msg=f"{layer}.{key}")
    for layer in state0:
        for key in state0[layer]:
            a, b, c = (run[2][layer][key] for run in (serial, threaded, again))
            assert_same_bits(b, c, f"state {layer}.{key}")
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"state {layer}.{key}")
