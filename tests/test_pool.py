"""max_pool2d and avg_pool2d: values and gradients against a direct definition, finite differences and
TensorFlow over random kernels, strides, padding and overlap; the max-pool gradient's routing rules."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import arrays, pool_configs

POOLS = {"max": (tc.max_pool2d, np.max, -np.inf), "avg": (tc.avg_pool2d, np.mean, 0.0)}


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def reference_pool(x, reduce, fill, kernel_size, stride, padding):
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    sh, sw = (kh, kw) if stride is None else pair(stride)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.empty(x.shape[:2] + (oh, ow))
    for r in range(oh):
        for q in range(ow):
            y[:, :, r, q] = reduce(xp[:, :, r * sh: r * sh + kh, q * sw: q * sw + kw], axis=(2, 3))
    return y


def pool_kwargs(cfg):
    return {k: cfg[k] for k in ("kernel_size", "stride", "padding")}


@pytest.mark.parametrize("kind", POOLS)
@given(cfg=pool_configs(), data=st.data())
def test_pool_matches_direct_definition_and_gradcheck(kind, cfg, data):
    pool, reduce, fill = POOLS[kind]
    x = data.draw(arrays(cfg["x_shape"], distinct=True))  # no ties: finite differences stay smooth
    kw = pool_kwargs(cfg)
    np.testing.assert_allclose(pool(x, **kw).data, reference_pool(x, reduce, fill, **kw), rtol=1e-12)
    assert tc.gradcheck(lambda t: pool(t, **kw), x)


def tf_pool(tf, kind, x, kernel_size, stride, padding):
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    strides = (kh, kw) if stride is None else pair(stride)
    xh = tf.pad(tf.transpose(x, (0, 2, 3, 1)), [[0, 0], [ph, ph], [pw, pw], [0, 0]],
                constant_values=-np.inf if kind == "max" else 0.0)
    pool = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
    return tf.transpose(pool(xh, (kh, kw), strides, "VALID"), (0, 3, 1, 2))


@pytest.mark.parametrize("kind", POOLS)
@given(cfg=pool_configs(), data=st.data())
def test_pool_against_tensorflow(tf, kind, cfg, data):
    x = data.draw(arrays(cfg["x_shape"], distinct=True))
    kw = pool_kwargs(cfg)
    t = Tensor(x, requires_grad=True)
    ours = POOLS[kind][0](t, **kw)
    upstream = np.random.default_rng(0).standard_normal(ours.shape)
    ours.backward(upstream)
    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        theirs = tf_pool(tf, kind, v, **kw)
        loss = tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-12)
    np.testing.assert_allclose(t.grad, tape.gradient(loss, v).numpy(), rtol=1e-10, atol=1e-12)


@given(x=arrays(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
                .map(lambda s: (s[0], s[1], 2 * s[2], 2 * s[3])), distinct=True), seed=st.integers(0, 99))
def test_max_pool_window_gradient_sums_to_upstream_and_is_zero_off_the_maximum(x, seed):
    t = Tensor(x, requires_grad=True)
    y = tc.max_pool2d(t, 2)
    g = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(g)
    windows = t.grad.reshape(*y.shape[:2], y.shape[2], 2, y.shape[3], 2)
    np.testing.assert_allclose(windows.sum(axis=(3, 5)), g)
    is_max = x == np.repeat(np.repeat(y.data, 2, axis=2), 2, axis=3)
    assert np.all(t.grad[~is_max] == 0)


def test_max_pool_tie_goes_to_the_first_element_in_row_major_order():
    x = Tensor(np.array([[[[1.0, 3.0], [3.0, 3.0]]]]), requires_grad=True)
    tc.max_pool2d(x, 2).backward(np.array([[[[5.0]]]]))
    np.testing.assert_array_equal(x.grad[0, 0], [[0, 5], [0, 0]])


def test_max_pool_overlapping_windows_add_gradients():
    x = Tensor(np.array([[[[0.0, 9.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]]), requires_grad=True)
    y = tc.max_pool2d(x, 2, stride=1)  # the 9 is the maximum of both top windows
    y.backward(np.ones(y.shape))
    assert x.grad[0, 0, 0, 1] == 2.0 and x.grad.sum() == 4.0


def test_padded_positions_never_win():
    x = -np.ones((1, 1, 2, 2)) * np.array([[1.0, 2.0], [3.0, 4.0]])
    y = tc.max_pool2d(x, 2, stride=1, padding=1)
    assert np.all(np.isfinite(y.data)) and y.data.max() == -1.0


def test_notes_max_pooling_halves_64x64():
    assert tc.max_pool2d(np.zeros((1, 3, 64, 64), np.float32), 2).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kind", POOLS)
def test_pool_float32_and_channels_last_layout(kind):
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    t = Tensor(channels_last, requires_grad=True)
    y = POOLS[kind][0](t, 2)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, POOLS[kind][0](x, 2).data)
    y.sum().backward()
    assert t.grad.dtype == np.float32


@pytest.mark.parametrize("pool", [tc.max_pool2d, tc.avg_pool2d])
def test_pool_errors(pool):
    name = pool.__name__
    with pytest.raises(ValueError, match=rf"{name}: x must be 4-D \(N, C, H, W\), got shape \(3, 4, 4\)"):
        pool(np.zeros((3, 4, 4)), 2)
    with pytest.raises(ValueError, match=rf"{name}: kernel_size 5 along H is larger than the padded input"):
        pool(np.zeros((1, 1, 4, 4)), 5)
    with pytest.raises(ValueError, match=rf"{name}: kernel_size must be >= 1, got 0"):
        pool(np.zeros((1, 1, 4, 4)), 0)
    with pytest.raises(ValueError, match=rf"{name}: padding must be at most half the kernel size"):
        pool(np.zeros((1, 1, 4, 4)), 2, padding=2)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 3, 0), (2, 1, 0)])
def test_max_pool_gradient_with_many_ties_at_real_size(layout, kernel, stride, padding, monkeypatch):
    """Batch 64, 32 channels, values from {0, 1, 2} (most windows tie), two threads: the forward's winners
    (one byte per window) route g exactly as np.argmax over each window (its first maximum in row-major
    order) does, overlapping windows add up, and dx keeps x's memory layout (unpadded)."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", "2")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (64, 32, 15, 15)).astype(np.float32)
    stored = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if layout == "nhwc" else x
    t = Tensor(stored, requires_grad=True)
    y = tc.max_pool2d(t, kernel, stride=stride, padding=padding)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)

    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    fields = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    fields = fields.reshape(*fields.shape[:4], kernel * kernel)       # (N, C, OH, OW, K*K), row-major offsets
    np.testing.assert_array_equal(y.data, fields.max(axis=-1))
    first = fields.argmax(axis=-1)                                     # the first maximum of each window
    expected = np.zeros_like(padded, dtype=np.float64)
    n, c, oh, ow = np.indices(y.shape)
    rows, cols = oh * stride + first // kernel, ow * stride + first % kernel
    np.add.at(expected, (n, c, rows, cols), g)
    expected = expected[:, :, padding:padding + 15, padding:padding + 15]
    np.testing.assert_allclose(t.grad, expected, rtol=0, atol=1e-5)
    if padding == 0:  # (with padding, dx is the unpadded copy: NCHW)
        assert t.grad.strides == stored.strides
