"""adaptive_avg_pool2d and interpolate (nearest, bilinear): values against direct loop definitions (the
slow twins, PyTorch's formulas written out pixel by pixel), gradients against finite differences and
TensorFlow (avg_pool2d for divisible sizes, tf.image.resize), both memory layouts, real sizes, errors."""

import doctest
import functools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops import resample
from tinygrad_cnn.testing import arrays
from reference import our_grads, random_upstream, tf_grads


def pair(v):
    return (v, v) if not isinstance(v, (tuple, list)) else tuple(v)


def channels_last(x):
    """x with the same values, stored NHWC (what conv2d returns)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------- #
# the slow twins: one output pixel at a time, as PyTorch's kernels define them


def ref_adaptive(x, output_size):
    (n, c, h, w), (oh, ow) = x.shape, pair(output_size)
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        h0, h1 = i * h // oh, math.ceil((i + 1) * h / oh)
        for j in range(ow):
            w0, w1 = j * w // ow, math.ceil((j + 1) * w / ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def ref_nearest(x, scale):
    (n, c, h, w), (sh, sw) = x.shape, pair(scale)
    oh, ow = math.floor(h * sh), math.floor(w * sw)
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = x[:, :, min(math.floor(i / sh), h - 1), min(math.floor(j / sw), w - 1)]
    return y


def ref_bilinear(x, scale):
    (n, c, h, w), (sh, sw) = x.shape, pair(scale)

    def source(o, s, size):  # upsample_bilinear2d, align_corners=False
        p = max((o + 0.5) / s - 0.5, 0.0)
        i0 = int(p)
        i1 = i0 + (1 if i0 < size - 1 else 0)
        return i0, i1, 1 - (p - i0), p - i0

    y = np.empty((n, c, math.floor(h * sh), math.floor(w * sw)))
    for i in range(y.shape[2]):
        h0, h1, a0, a1 = source(i, sh, h)
        for j in range(y.shape[3]):
            w0, w1, b0, b1 = source(j, sw, w)
            y[:, :, i, j] = (a0 * (b0 * x[:, :, h0, w0] + b1 * x[:, :, h0, w1])
                             + a1 * (b0 * x[:, :, h1, w0] + b1 * x[:, :, h1, w1]))
    return y


REFERENCE = {"nearest": ref_nearest, "bilinear": ref_bilinear}

image_shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7))
sizes = st.one_of(st.integers(1, 8), st.tuples(st.integers(1, 8), st.integers(1, 8)))
factors = st.sampled_from([1, 2, 3, 0.5, 0.75, 1.5, 2.5, 1 / 3])
scales = st.one_of(factors, st.tuples(factors, factors))


# ---------------------------------------------------------------------------------------------- #
# adaptive_avg_pool2d


@given(shape=image_shapes, output_size=sizes, data=st.data())
def test_adaptive_avg_pool_matches_direct_definition_and_gradcheck(shape, output_size, data):
    x = data.draw(arrays(shape))
    y = tc.adaptive_avg_pool2d(x, output_size)
    np.testing.assert_allclose(y.data, ref_adaptive(x, output_size), rtol=1e-12, atol=1e-14)
    assert tc.gradcheck(lambda t: tc.adaptive_avg_pool2d(t, output_size), x)


@given(shape=image_shapes, output_size=sizes, data=st.data())
def test_adaptive_avg_pool_channels_last_gives_the_same_values_and_gradients(shape, output_size, data):
    x = data.draw(arrays(shape))
    upstream = random_upstream(tc.adaptive_avg_pool2d(x, output_size).shape)
    value, (grad,) = our_grads(lambda t: tc.adaptive_avg_pool2d(t, output_size), x, upstream=upstream)
    value_cl, (grad_cl,) = our_grads(lambda t: tc.adaptive_avg_pool2d(t, output_size), channels_last(x),
                                     upstream=channels_last(upstream))
    np.testing.assert_allclose(value_cl, value, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(grad_cl, grad, rtol=1e-14, atol=1e-15)


def test_adaptive_bins_of_pytorch():
    """5 -> 3: bins [0, 2), [1, 4), [3, 5) overlap by one; 3 -> 5: bins repeat pixels."""
    np.testing.assert_allclose(tc.adaptive_avg_pool2d(np.arange(5.0).reshape(1, 1, 1, 5), (1, 3)).data,
                               [[[[0.5, 2.0, 3.5]]]])
    np.testing.assert_allclose(tc.adaptive_avg_pool2d(np.arange(3.0).reshape(1, 1, 1, 3), (1, 5)).data,
                               [[[[0.0, 0.5, 1.0, 1.5, 2.0]]]])


@pytest.mark.parametrize("shape, output_size", [((2, 3, 8, 6), (4, 3)), ((2, 3, 8, 6), 1), ((1, 2, 6, 6), 6),
                                                ((2, 2, 9, 4), (3, 2))])
def test_adaptive_avg_pool_of_a_divisor_is_avg_pool2d(shape, output_size):
    x = np.random.default_rng(0).standard_normal(shape)
    oh, ow = pair(output_size)
    kernel = (shape[2] // oh, shape[3] // ow)
    np.testing.assert_allclose(tc.adaptive_avg_pool2d(x, output_size).data, tc.avg_pool2d(x, kernel).data,
                               rtol=1e-13)


@given(shape=image_shapes, data=st.data())
def test_adaptive_avg_pool_against_tensorflow_avg_pool(tf, shape, data):
    n, c, h, w = shape
    kh, kw = data.draw(st.sampled_from([d for d in range(1, h + 1) if h % d == 0])), \
        data.draw(st.sampled_from([d for d in range(1, w + 1) if w % d == 0]))
    x = data.draw(arrays(shape))
    output_size = (h // kh, w // kw)
    upstream = random_upstream((n, c) + output_size)
    value, grads = our_grads(lambda t: tc.adaptive_avg_pool2d(t, output_size), x, upstream=upstream)

    def tf_pool(t):
        return tf.transpose(tf.nn.avg_pool2d(tf.transpose(t, (0, 2, 3, 1)), (kh, kw), (kh, kw), "VALID"),
                            (0, 3, 1, 2))

    tf_value, tf_g = tf_grads(tf, tf_pool, x, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads[0], tf_g[0], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------- #
# interpolate


def fits(shape, scale):
    return all(math.floor(n * s) >= 1 for n, s in zip(shape[2:], pair(scale)))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@given(shape=image_shapes, scale=scales, data=st.data())
def test_interpolate_matches_direct_definition_and_gradcheck(mode, shape, scale, data):
    if not fits(shape, scale):
        with pytest.raises(ValueError, match="interpolate: scale_factor .* leaves no pixel"):
            tc.interpolate(np.zeros(shape), scale, mode)
        return
    x = data.draw(arrays(shape))
    y = tc.interpolate(x, scale, mode)
    np.testing.assert_allclose(y.data, REFERENCE[mode](x, scale), rtol=1e-12, atol=1e-14)
    assert tc.gradcheck(lambda t: tc.interpolate(t, scale, mode), x)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@given(shape=image_shapes, scale=scales, data=st.data())
def test_interpolate_channels_last_gives_the_same_values_and_gradients(mode, shape, scale, data):
    if not fits(shape, scale):
        return
    x = data.draw(arrays(shape))
    upstream = random_upstream(tc.interpolate(x, scale, mode).shape)
    value, (grad,) = our_grads(lambda t: tc.interpolate(t, scale, mode), x, upstream=upstream)
    t = Tensor(channels_last(x), requires_grad=True)
    y = tc.interpolate(t, scale, mode)
    if not t.data.flags.c_contiguous:  # (a 1x1 image, or one channel, is both layouts at once)
        assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous  # the layout is kept
    y.backward(upstream)
    np.testing.assert_allclose(y.data, value, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(t.grad, grad, rtol=1e-14, atol=1e-15)


@given(shape=image_shapes, scale=st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       seed=st.integers(0, 99))
def test_nearest_integer_factor_is_np_repeat_and_its_gradient_sums_each_tile(shape, scale, seed):
    (sh, sw), rng = pair(scale), np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    y = tc.interpolate(x, scale)
    np.testing.assert_array_equal(y.data, np.repeat(np.repeat(x.data, sh, axis=2), sw, axis=3))
    g = rng.standard_normal(y.shape)
    y.backward(g)
    n, c, h, w = shape
    # atol: a tile's sum may cancel to ~1e-15, where summing in another order differs relatively
    np.testing.assert_allclose(x.grad, g.reshape(n, c, h, sh, w, sw).sum(axis=(3, 5)), rtol=1e-13, atol=1e-14)


def test_bilinear_of_pytorch_and_nearest_keeps_infinities_local():
    row = np.array([[[[1.0, 2.0, 3.0, 4.0]]]])
    np.testing.assert_allclose(tc.interpolate(row, (1, 2), mode="bilinear").data,
                               [[[[1.0, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.0]]]])
    np.testing.assert_array_equal(tc.interpolate(row, (1, 0.5)).data, [[[[1.0, 3.0]]]])  # o -> floor(o / s)
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = np.inf
    for scale, copies in ((2, 4), (1.5, 1)):
        y = tc.interpolate(x, scale).data
        assert np.isinf(y).sum() == copies and not np.isnan(y).any()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@given(shape=image_shapes, scale=st.sampled_from([1, 2, 3, (2, 3), (3, 1), 0.5]), data=st.data())
def test_interpolate_against_tensorflow_resize(tf, mode, shape, scale, data):
    """TF's half-pixel resize equals PyTorch's for integer factors (nearest) and for factors where
    H * s is whole (bilinear; TF computes bilinear in float32)."""
    (sh, sw), (n, c, h, w) = pair(scale), shape
    whole = float(h * sh).is_integer() and float(w * sw).is_integer()
    if not whole or not fits(shape, scale) or (mode == "nearest" and min(sh, sw) < 1):
        return
    x = data.draw(arrays(shape))
    size = (int(h * sh), int(w * sw))
    upstream = random_upstream((n, c) + size)
    value, grads = our_grads(lambda t: tc.interpolate(t, scale, mode), x, upstream=upstream)

    def tf_resize(t):
        nhwc = tf.image.resize(tf.transpose(t, (0, 2, 3, 1)), size, method=mode)
        return tf.cast(tf.transpose(nhwc, (0, 3, 1, 2)), tf.float64)

    tf_value, tf_g = tf_grads(tf, tf_resize, x, upstream=upstream)
    tol = dict(rtol=1e-12, atol=1e-14) if mode == "nearest" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, tf_value, **tol)
    np.testing.assert_allclose(grads[0], tf_g[0], **tol)


# ---------------------------------------------------------------------------------------------- #
# real sizes, float32, graph labels, jit


REAL_SIZE = {"adaptive 1": (lambda x: tc.adaptive_avg_pool2d(x, 1), lambda x: x.mean(axis=(2, 3), keepdims=True)),
             "adaptive 4": (lambda x: tc.adaptive_avg_pool2d(x, 4), lambda x: ref_adaptive(x, 4)),
             "adaptive (5, 7)": (lambda x: tc.adaptive_avg_pool2d(x, (5, 7)), lambda x: ref_adaptive(x, (5, 7))),
             "nearest 2": (lambda x: tc.interpolate(x, 2), lambda x: np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)),
             "nearest 1.5": (lambda x: tc.interpolate(x, 1.5), lambda x: ref_nearest(x, 1.5)),
             "bilinear 2": (lambda x: tc.interpolate(x, 2, mode="bilinear"), lambda x: ref_bilinear(x, 2))}


@functools.lru_cache(maxsize=None)
def real_size_data(name):
    """x (64, 32, 16, 16) float64, a probe of x's shape, and the reference op of both (shared by both layouts)."""
    rng = np.random.default_rng(7)
    x, probe = rng.standard_normal((64, 32, 16, 16)), rng.standard_normal((64, 32, 16, 16))
    reference = REAL_SIZE[name][1]
    return x, probe, reference(x), reference(probe)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("name", REAL_SIZE)
def test_real_size_float32(name, layout):
    """N=64, C=32, 16x16 float32: float32 out and back, values and gradients against float64 references
    (the gradient of a linear op is the forward of its transpose: checked as <dx, p> = <g, op(p)>)."""
    x64, probe, expected, expected_probe = real_size_data(name)
    x32 = x64.astype(np.float32)
    t = Tensor(channels_last(x32) if layout == "nhwc" else x32, requires_grad=True)
    y = REAL_SIZE[name][0](t)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, expected, rtol=2e-5, atol=2e-6)
    g = np.random.default_rng(8).standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    assert t.grad.dtype == np.float32 and t.grad.shape == x32.shape
    np.testing.assert_allclose(np.vdot(t.grad, probe), np.vdot(g, expected_probe), rtol=1e-4)


def test_graph_labels_and_jit_replay():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)), requires_grad=True)
    assert tc.adaptive_avg_pool2d(x, 3).op == "AdaptiveAvgPool2d"
    assert tc.interpolate(x, 2).op == "InterpolateNearest"
    assert tc.interpolate(x, 2, mode="bilinear").op == "InterpolateBilinear"

    def loss(x):
        a = tc.adaptive_avg_pool2d(tc.interpolate(x, 1.5, mode="bilinear"), (4, 5))
        b = tc.interpolate(tc.adaptive_avg_pool2d(x, 3), 2) + tc.interpolate(x, 0.5)[:, :, :1, :1]
        return (a * a).sum() + (b * b).sum()

    step = tc.jit(tc.value_and_grad(loss))
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((2, 3, 6, 6))
        value, grad = step(x)
        value_eager, grad_eager = tc.value_and_grad(loss)(x)
        assert value == value_eager
        np.testing.assert_array_equal(grad, grad_eager)


def test_docstring_examples():
    assert doctest.testmod(resample, extraglobs={"np": np}).failed == 0


# ---------------------------------------------------------------------------------------------- #
# errors


X = np.zeros((2, 3, 4, 5))


@pytest.mark.parametrize("call, error, message", [
    (lambda: tc.adaptive_avg_pool2d(X[0], 2), ValueError,
     r"adaptive_avg_pool2d: x must be 4-D \(N, C, H, W\), got shape \(3, 4, 5\)"),
    (lambda: tc.adaptive_avg_pool2d(X, 0), ValueError, "adaptive_avg_pool2d: output_size must be >= 1, got 0"),
    (lambda: tc.adaptive_avg_pool2d(X, (2, 3, 4)), ValueError,
     r"adaptive_avg_pool2d: output_size must be an int or an \(h, w\) pair, got \(2, 3, 4\)"),
    (lambda: tc.adaptive_avg_pool2d(X, 2.5), TypeError, "adaptive_avg_pool2d: output_size must be an int, got float"),
    (lambda: tc.adaptive_avg_pool2d(Tensor(X, dtype=np.int64), 2), TypeError,
     "adaptive_avg_pool2d: x must have a floating dtype, got int64"),
    (lambda: tc.adaptive_avg_pool2d(np.zeros((1, 1, 0, 3)), 1), ValueError,
     r"adaptive_avg_pool2d: x must have H and W >= 1, got x.shape=\(1, 1, 0, 3\)"),
    (lambda: tc.adaptive_avg_pool2d("image", 1), TypeError, "adaptive_avg_pool2d: x must be a Tensor"),
    (lambda: tc.interpolate(X, 2, mode="bicubic"), ValueError,
     "interpolate: mode must be one of 'nearest', 'bilinear', got 'bicubic'"),
    (lambda: tc.interpolate(X, 0), ValueError, "interpolate: scale_factor must be > 0, got 0"),
    (lambda: tc.interpolate(X, -1.5), ValueError, "interpolate: scale_factor must be > 0, got -1.5"),
    (lambda: tc.interpolate(X, float("nan")), ValueError, "interpolate: scale_factor must be > 0, got nan"),
    (lambda: tc.interpolate(X, float("inf")), ValueError, "interpolate: scale_factor must be finite, got inf"),
    (lambda: tc.interpolate(X, True), TypeError, "interpolate: scale_factor must be a number or an \\(h, w\\) pair"),
    (lambda: tc.interpolate(X, "2"), TypeError, "interpolate: scale_factor must be a number .* got str '2'"),
    (lambda: tc.interpolate(X, (2, 2, 2)), ValueError,
     r"interpolate: scale_factor must be a number or an \(h, w\) pair, got \(2, 2, 2\)"),
    (lambda: tc.interpolate(X, (1, 0.1)), ValueError,
     r"interpolate: scale_factor 0.1 leaves no pixel of the 5 along W \(floor\(5 \* 0.1\) = 0"),
    (lambda: tc.interpolate(np.zeros((3, 4, 5)), 2), ValueError, r"interpolate: x must be 4-D \(N, C, H, W\)"),
    (lambda: tc.interpolate(None, 2), TypeError, "interpolate: x must be a Tensor .* got NoneType"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
