"""layer_norm and group_norm: values against a direct float64 definition, gradients against finite
differences and TensorFlow (tf.nn.moments; group norm through a reshape) with random upstream
gradients, the standardisation invariants, float32 accuracy at real sizes, and the error messages."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import arrays
from reference import our_grads, random_upstream, tf_grads


def ref_layer_norm(x, k, gamma=None, beta=None, eps=1e-5):
    """Over the last k axes, in float64."""
    axes = tuple(range(x.ndim - k, x.ndim))
    x = x.astype(np.float64)
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return y * (1.0 if gamma is None else gamma) + (0.0 if beta is None else beta)


def ref_group_norm(x, groups, gamma=None, beta=None, eps=1e-5):
    n, c = x.shape[:2]
    y = ref_layer_norm(x.reshape(n, groups, -1), 1, eps=eps).reshape(x.shape)
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    scale = 1.0 if gamma is None else gamma.reshape(per_channel)
    return y * scale + (0.0 if beta is None else beta.reshape(per_channel))


@st.composite
def layer_norm_inputs(draw, distinct=True):
    """x of 1 to 4 axes, k = how many trailing axes are normalised, gamma and beta of their shape."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
    k = draw(st.integers(1, len(shape)))
    x = draw(arrays(shape, distinct=distinct))
    return x, k, draw(arrays(shape[len(shape) - k:], low=-2.0, high=2.0)), draw(arrays(shape[len(shape) - k:]))


@st.composite
def group_norm_inputs(draw, distinct=True):
    """x (N, C, *spatial) with 0 to 2 spatial axes, C a multiple of the number of groups."""
    groups, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 3), max_size=2).map(tuple))
    shape = (draw(st.integers(1, 3)), groups * per_group) + spatial
    c = shape[1]
    return draw(arrays(shape, distinct=distinct)), groups, draw(arrays((c,), low=-2.0, high=2.0)), draw(arrays((c,)))


# ---------------------------------------------------------------------------------------------- #
# values and gradients


@given(inputs=layer_norm_inputs(), affine=st.sampled_from(["both", "none", "gamma", "beta"]),
       eps=st.sampled_from([1e-5, 1e-2]))
def test_layer_norm_matches_definition_and_gradcheck(inputs, affine, eps):
    x, k, gamma, beta = inputs
    gamma, beta = (gamma if affine in ("both", "gamma") else None), (beta if affine in ("both", "beta") else None)
    shape = x.shape[x.ndim - k:]
    params = [p for p in (gamma, beta) if p is not None]

    def f(x, *ps):
        it = iter(ps)
        return tc.layer_norm(x, shape, next(it) if gamma is not None else None,
                             next(it) if beta is not None else None, eps=eps)

    np.testing.assert_allclose(f(x, *params).data, ref_layer_norm(x, k, gamma, beta, eps), rtol=1e-10, atol=1e-12)
    assert tc.gradcheck(f, x, *params)


@given(inputs=group_norm_inputs(), affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-2]))
def test_group_norm_matches_definition_and_gradcheck(inputs, affine, eps):
    x, groups, gamma, beta = inputs
    if affine:
        np.testing.assert_allclose(tc.group_norm(x, groups, gamma, beta, eps=eps).data,
                                   ref_group_norm(x, groups, gamma, beta, eps), rtol=1e-10, atol=1e-12)
        assert tc.gradcheck(lambda x, g, b: tc.group_norm(x, groups, g, b, eps=eps), x, gamma, beta)
    else:
        np.testing.assert_allclose(tc.group_norm(x, groups, eps=eps).data, ref_group_norm(x, groups, eps=eps),
                                   rtol=1e-10, atol=1e-12)
        assert tc.gradcheck(lambda x: tc.group_norm(x, groups, eps=eps), x)


def tf_layer_norm(tf, x, gamma, beta, k, eps):
    mean, var = tf.nn.moments(x, axes=list(range(len(x.shape) - k, len(x.shape))), keepdims=True)
    return (x - mean) / tf.sqrt(var + eps) * gamma + beta


def tf_group_norm(tf, x, gamma, beta, groups, eps):
    shape = x.shape
    grouped = tf.reshape(x, (shape[0], groups, -1))
    mean, var = tf.nn.moments(grouped, axes=[2], keepdims=True)
    xhat = tf.reshape((grouped - mean) / tf.sqrt(var + eps), shape)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    return xhat * tf.reshape(gamma, per_channel) + tf.reshape(beta, per_channel)


@given(inputs=layer_norm_inputs(distinct=False), eps=st.sampled_from([1e-5, 1e-2]))
def test_layer_norm_against_tensorflow(tf, inputs, eps):
    x, k, gamma, beta = inputs
    upstream = random_upstream(x.shape, seed=3)
    shape = x.shape[x.ndim - k:]
    value, grads = our_grads(lambda *t: tc.layer_norm(t[0], shape, t[1], t[2], eps=eps), x, gamma, beta,
                             upstream=upstream)
    tf_value, tf_g = tf_grads(tf, lambda *t: tf_layer_norm(tf, *t, k, eps), x, gamma, beta, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-9, atol=1e-9)
    for name, g, t in zip(["x", "gamma", "beta"], grads, tf_g, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-7, atol=1e-8, err_msg=name)


@given(inputs=group_norm_inputs(distinct=False), eps=st.sampled_from([1e-5, 1e-2]))
def test_group_norm_against_tensorflow(tf, inputs, eps):
    x, groups, gamma, beta = inputs
    upstream = random_upstream(x.shape, seed=4)
    value, grads = our_grads(lambda *t: tc.group_norm(t[0], groups, t[1], t[2], eps=eps), x, gamma, beta,
                             upstream=upstream)
    tf_value, tf_g = tf_grads(tf, lambda *t: tf_group_norm(tf, *t, groups, eps), x, gamma, beta, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-9, atol=1e-9)
    for name, g, t in zip(["x", "gamma", "beta"], grads, tf_g, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-7, atol=1e-8, err_msg=name)


def test_layer_norm_against_keras_layer(tf):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3, 5, 6))
    gamma, beta = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    layer = tf.keras.layers.LayerNormalization(axis=[-2, -1], epsilon=1e-3, dtype="float64")
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    np.testing.assert_allclose(tc.layer_norm(x, (5, 6), gamma, beta, eps=1e-3).data, layer(x).numpy(), rtol=1e-6,
                               atol=1e-7)


# ---------------------------------------------------------------------------------------------- #
# invariants


@given(inputs=group_norm_inputs(), scale=st.sampled_from([1.0, 1e3]), offset=st.sampled_from([0.0, -50.0]))
def test_group_norm_output_is_standardised_per_sample_and_group(inputs, scale, offset):
    x, groups = inputs[0] * scale + offset, inputs[1]
    n = x.shape[0]
    if x.size // (n * groups) < 2:  # a single value per group: standardised to 0
        np.testing.assert_array_equal(tc.group_norm(x, groups).data, 0)
        return
    y = tc.group_norm(x, groups, eps=1e-12).data.reshape(n, groups, -1)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=2), 1, rtol=1e-8)


def test_one_group_is_layer_norm_and_c_groups_is_instance_norm():
    rng = np.random.default_rng(9)
    x, gamma, beta = rng.standard_normal((3, 4, 5, 5)), rng.standard_normal(4), rng.standard_normal(4)
    per_channel = lambda v: np.broadcast_to(v[:, None, None], (4, 5, 5))  # noqa: E731
    np.testing.assert_allclose(tc.group_norm(x, 1, gamma, beta).data,
                               tc.layer_norm(x, (4, 5, 5), per_channel(gamma), per_channel(beta)).data, rtol=1e-13)
    instance = (x - x.mean(axis=(2, 3), keepdims=True)) / np.sqrt(x.var(axis=(2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(tc.group_norm(x, 4).data, instance, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
def test_input_gradient_is_zero_for_a_constant_upstream_gradient_without_gamma(op):
    """Why the tests use random upstream gradients: with all-ones, dx = 0 exactly."""
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6, 3)), requires_grad=True)
    y = tc.layer_norm(x, (6, 3)) if op == "layer_norm" else tc.group_norm(x, 2)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 0, atol=1e-12)


def test_constant_rows_give_beta_and_a_finite_gradient():
    x = Tensor(np.full((2, 3), 7.0), requires_grad=True)
    beta = np.array([1.0, 2.0, 3.0])
    y = tc.layer_norm(x, 3, np.ones(3), beta)
    np.testing.assert_array_equal(y.data, np.broadcast_to(beta, (2, 3)))
    y.backward(random_upstream((2, 3)))
    assert np.all(np.isfinite(x.grad))


# ---------------------------------------------------------------------------------------------- #
# float32, real sizes, layouts, graph labels, jit


def channels_last(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


REAL = {
    "layer_norm (C, H, W)": (lambda x, g, b: tc.layer_norm(x, (32, 16, 16), g, b), (32, 16, 16),
                             lambda x, g, b: ref_layer_norm(x, 3, g, b)),
    "layer_norm (W,)": (lambda x, g, b: tc.layer_norm(x, 16, g, b), (16,), lambda x, g, b: ref_layer_norm(x, 1, g, b)),
    "group_norm 8": (lambda x, g, b: tc.group_norm(x, 8, g, b), (32,), lambda x, g, b: ref_group_norm(x, 8, g, b)),
    "group_norm 32": (lambda x, g, b: tc.group_norm(x, 32, g, b), (32,), lambda x, g, b: ref_group_norm(x, 32, g, b)),
}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("name", REAL)
def test_real_size_float32_with_offset_data(name, layout):
    """N=64, C=32, 16x16 float32 around 1000 (a mean large against the spread): float32 in, float32 out,
    values and gradients close to the float64 computation."""
    op, param_shape, reference = REAL[name]
    rng = np.random.default_rng(10)
    x64 = 1000.0 + rng.standard_normal((64, 32, 16, 16))
    x32 = x64.astype(np.float32)
    gamma, beta = (rng.standard_normal(param_shape).astype(np.float32) for _ in range(2))
    upstream = rng.standard_normal(x64.shape).astype(np.float32)
    t = Tensor(channels_last(x32) if layout == "nhwc" else x32, requires_grad=True)
    g, b = Tensor(gamma, requires_grad=True), Tensor(beta, requires_grad=True)
    y = op(t, g, b)
    assert y.dtype == np.float32
    y.backward(upstream)
    assert t.grad.dtype == g.grad.dtype == b.grad.dtype == np.float32
    x_in = x32.astype(np.float64)  # the float32 values exactly: the reference sees the same input
    np.testing.assert_allclose(y.data, reference(x_in, gamma.astype(np.float64), beta.astype(np.float64)),
                               rtol=1e-4, atol=1e-3)
    _, grads64 = our_grads(op, x_in, gamma.astype(np.float64), beta.astype(np.float64),
                           upstream=upstream.astype(np.float64))
    for ours, exact in zip((t.grad, g.grad, b.grad), grads64):
        np.testing.assert_allclose(ours, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())


@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
def test_float32_stays_float32(op, param_dtype):
    """float32 x gives a float32 output and gradient whatever the parameters' dtype; each parameter's
    gradient has its own dtype."""
    rng = np.random.default_rng(11)
    x = Tensor(rng.standard_normal((2, 4, 3)).astype(np.float32), requires_grad=True)
    n = 3 if op == "layer_norm" else 4
    gamma, beta = (Tensor(rng.standard_normal(n).astype(param_dtype), requires_grad=True) for _ in range(2))
    y = tc.layer_norm(x, 3, gamma, beta) if op == "layer_norm" else tc.group_norm(x, 2, gamma, beta)
    assert y.dtype == np.float32
    y.backward(random_upstream(y.shape).astype(np.float32))
    assert x.grad.dtype == np.float32 and gamma.grad.dtype == beta.grad.dtype == param_dtype


def test_graph_labels_and_jit_replay():
    x = Tensor(np.ones((2, 4, 3)), requires_grad=True)
    assert tc.layer_norm(x, 3).op == "LayerNorm" and tc.group_norm(x, 2).op == "GroupNorm"

    def loss(params, x):
        h = tc.group_norm(x, 2, params["g"], params["b"])
        return (tc.layer_norm(h, (4, 3), params["lg"], params["lb"]) * x).sum()

    rng = np.random.default_rng(12)
    params = {"g": rng.standard_normal(4), "b": rng.standard_normal(4),
              "lg": rng.standard_normal((4, 3)), "lb": rng.standard_normal((4, 3))}
    step = tc.jit(tc.value_and_grad(loss))
    for _ in range(3):
        x = rng.standard_normal((5, 4, 3))
        value, grads = step(params, x)
        value_eager, grads_eager = tc.value_and_grad(loss)(params, x)
        assert value == value_eager
        for k in params:
            np.testing.assert_array_equal(grads[k], grads_eager[k])


# ---------------------------------------------------------------------------------------------- #
# errors


X = np.zeros((2, 4, 3, 3))


@pytest.mark.parametrize("call, error, message", [
    (lambda: tc.layer_norm(X, (3, 4)), ValueError,
     r"layer_norm: the last 2 axes of x must be normalized_shape \(3, 4\), got x.shape=\(2, 4, 3, 3\)"),
    (lambda: tc.layer_norm(X[0, 0, 0], (3, 3)), ValueError, r"layer_norm: x must be at least 2-D \(\.\.\., 3, 3\)"),
    (lambda: tc.layer_norm(X, ()), ValueError, r"layer_norm: normalized_shape must name at least one axis, got \(\)"),
    (lambda: tc.layer_norm(X, 3.0), TypeError, "layer_norm: normalized_shape must be an int or a tuple of ints"),
    (lambda: tc.layer_norm(X, (3, "3")), TypeError, "layer_norm: normalized_shape must be an int, got str"),
    (lambda: tc.layer_norm(X, 0), ValueError, "layer_norm: normalized_shape must be >= 1, got 0"),
    (lambda: tc.layer_norm(X, 3, np.ones(4)), ValueError,
     r"layer_norm: gamma must have shape \(3,\) \(normalized_shape\), got \(4,\) \(x.shape=\(2, 4, 3, 3\)\)"),
    (lambda: tc.layer_norm(X, 3, None, np.ones((3, 1))), ValueError, r"layer_norm: beta must have shape \(3,\)"),
    (lambda: tc.layer_norm(X, 3, "ones"), TypeError, "layer_norm: gamma must be a Tensor"),
    (lambda: tc.layer_norm(X, 3, Tensor([1, 1, 1], dtype=np.int64)), TypeError,
     "layer_norm: gamma must have a floating dtype, got int64"),
    (lambda: tc.layer_norm(Tensor(X, dtype=np.int64), 3), TypeError, "layer_norm: x must have a floating dtype"),
    (lambda: tc.layer_norm(X, 3, eps=0), ValueError, "layer_norm: eps must be > 0, got 0"),
    (lambda: tc.layer_norm(None, 3), TypeError, "layer_norm: x must be a Tensor"),
    (lambda: tc.group_norm(X, 3), ValueError,
     r"group_norm: num_groups=3 must divide the 4 channels of x \(x.shape=\(2, 4, 3, 3\)\)"),
    (lambda: tc.group_norm(X, 0), ValueError, "group_norm: num_groups must be >= 1, got 0"),
    (lambda: tc.group_norm(X, 2.0), TypeError, "group_norm: num_groups must be an int, got float"),
    (lambda: tc.group_norm(X[0, 0, 0], 1), ValueError, r"group_norm: x must be at least 2-D \(N, C, \.\.\.\)"),
    (lambda: tc.group_norm(np.zeros((2, 4, 0)), 2), ValueError,
     r"group_norm: x must have C and every spatial size >= 1, got x.shape=\(2, 4, 0\)"),
    (lambda: tc.group_norm(np.zeros((2, 0)), 1), ValueError, "group_norm: x must have C and every spatial size >= 1"),
    (lambda: tc.group_norm(X, 2, np.ones(3), np.zeros(4)), ValueError,
     r"group_norm: gamma must have shape \(4,\) \(one per channel of x\), got \(3,\)"),
    (lambda: tc.group_norm(X, 2, eps=-1.0), ValueError, "group_norm: eps must be > 0, got -1.0"),
    (lambda: tc.group_norm(Tensor(X, dtype=np.int64), 2), TypeError, "group_norm: x must have a floating dtype"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_empty_batch_is_fine():
    x = Tensor(np.zeros((0, 4, 3)), requires_grad=True)
    y = tc.group_norm(x, 2, np.ones(4), np.zeros(4))
    y.backward(np.zeros(y.shape))
    assert y.shape == x.grad.shape == (0, 4, 3)
    assert tc.layer_norm(np.zeros((0, 3)), 3).shape == (0, 3)
