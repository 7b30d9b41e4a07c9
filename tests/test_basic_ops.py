"""Elementwise, reduction, movement and matmul ops: values against NumPy, gradients against float64
finite differences (gradcheck) and against TensorFlow's GradientTape, over random shapes and axes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import arrays, broadcastable_shapes, shapes
from reference import our_grads, tf_grads

POSITIVE = dict(low=0.5, high=3.0)

UNARY = {  # name: (our op, tf op, NumPy reference, input strategy keyword arguments)
    "neg": (lambda x: -x, lambda tf, x: -x, lambda x: -x, {}),
    "exp": (lambda x: x.exp(), lambda tf, x: tf.exp(x), np.exp, {}),
    "log": (lambda x: x.log(), lambda tf, x: tf.math.log(x), np.log, POSITIVE),
    "sqrt": (lambda x: x.sqrt(), lambda tf, x: tf.sqrt(x), np.sqrt, POSITIVE),
    "relu": (tc.relu, lambda tf, x: tf.nn.relu(x), lambda x: np.maximum(x, 0), dict(away_from=0.0)),
    "sigmoid": (tc.sigmoid, lambda tf, x: tf.sigmoid(x), lambda x: 1 / (1 + np.exp(-x)), {}),
    "tanh": (tc.tanh, lambda tf, x: tf.tanh(x), np.tanh, {}),
}

BINARY = {
    "add": (lambda a, b: a + b, lambda tf, a, b: a + b, {}),
    "sub": (lambda a, b: a - b, lambda tf, a, b: a - b, {}),
    "mul": (lambda a, b: a * b, lambda tf, a, b: a * b, {}),
    "div": (lambda a, b: a / b, lambda tf, a, b: a / b, POSITIVE),
    "pow": (lambda a, b: a ** b, lambda tf, a, b: a ** b, POSITIVE),
}


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary_gradcheck(name, data):
    op, _, ref, kw = UNARY[name]
    x = data.draw(arrays(**kw))
    np.testing.assert_allclose(op(Tensor(x)).data, ref(x), rtol=1e-12)
    assert tc.gradcheck(op, x)


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary_against_tensorflow(tf, name, data):
    op, tf_op, _, kw = UNARY[name]
    x = data.draw(arrays(min_dims=1, **kw))
    upstream = np.random.default_rng(1).standard_normal(x.shape)
    value, (gx,) = our_grads(op, x, upstream=upstream)
    tf_value, (tf_gx,) = tf_grads(tf, lambda *t: tf_op(tf, *t), x, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, tf_gx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", BINARY)
@given(shape_pair=broadcastable_shapes(max_dims=3, max_side=3), data=st.data())
def test_binary_gradcheck_broadcasting(name, shape_pair, data):
    op, _, kw = BINARY[name]
    a, b = data.draw(arrays(shape_pair[0], **kw)), data.draw(arrays(shape_pair[1], **kw))
    assert tc.gradcheck(op, a, b)


@pytest.mark.parametrize("name", BINARY)
@given(shape_pair=broadcastable_shapes(max_dims=3, max_side=3), data=st.data())
def test_binary_against_tensorflow(tf, name, shape_pair, data):
    op, tf_op, kw = BINARY[name]
    a, b = data.draw(arrays(shape_pair[0], **kw)), data.draw(arrays(shape_pair[1], **kw))
    upstream = np.random.default_rng(2).standard_normal(np.broadcast_shapes(a.shape, b.shape))
    value, grads = our_grads(op, a, b, upstream=upstream)
    tf_value, tf_g = tf_grads(tf, lambda *t: tf_op(tf, *t), a, b, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-10, atol=1e-300)
    for g, t in zip(grads, tf_g):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-12)


def test_pow_with_python_exponent_and_reflected_ops():
    x = np.array([0.5, 1.5, 2.0])
    assert tc.gradcheck(lambda t: t ** 3 + 2 / t - 1 - t + 3 * t, x)
    assert tc.gradcheck(lambda t: 2.0 ** t, x)


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(over="raise", invalid="raise"):
        y = tc.sigmoid(np.array([-1e4, 0.0, 1e4], dtype=np.float32))
    np.testing.assert_array_equal(y.data, [0.0, 0.5, 1.0])
    assert y.dtype == np.float32


@st.composite
def array_and_axis(draw, distinct=False):
    x = draw(arrays(shapes(min_dims=1, max_dims=4, max_side=4), distinct=distinct))
    axis = draw(st.one_of(
        st.none(),
        st.integers(-x.ndim, x.ndim - 1),
        st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim, unique=True).map(
            lambda axes: tuple(a - x.ndim if i % 2 else a for i, a in enumerate(axes)))))
    return x, axis, draw(st.booleans())


REDUCTIONS = {"sum": (np.sum, "reduce_sum"), "mean": (np.mean, "reduce_mean"), "max": (np.max, "reduce_max")}


@pytest.mark.parametrize("name", REDUCTIONS)
@given(data=st.data())
def test_reduction_values_and_gradcheck(name, data):
    x, axis, keepdims = data.draw(array_and_axis(distinct=name == "max"))
    reduce = lambda t: getattr(t, name)(axis=axis, keepdims=keepdims)  # noqa: E731
    np.testing.assert_allclose(reduce(Tensor(x)).data, REDUCTIONS[name][0](x, axis=axis, keepdims=keepdims))
    assert tc.gradcheck(reduce, x)


@pytest.mark.parametrize("name", REDUCTIONS)
@given(data=st.data())
def test_reduction_against_tensorflow(tf, name, data):
    x, axis, keepdims = data.draw(array_and_axis(distinct=name == "max"))
    upstream = np.random.default_rng(3).standard_normal(REDUCTIONS[name][0](x, axis=axis, keepdims=keepdims).shape)
    _, (g,) = our_grads(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), x, upstream=upstream)
    tf_fn = getattr(tf, REDUCTIONS[name][1])
    _, (tg,) = tf_grads(tf, lambda t: tf_fn(t, axis=axis, keepdims=keepdims), x, upstream=upstream)
    np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-12)


def test_max_sends_the_gradient_to_one_element_on_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])  # the first maximum, row-major


@given(x=arrays(shapes(min_dims=1, max_dims=4, max_side=4)), data=st.data())
def test_reshape_transpose_flatten(x, data):
    perm = tuple(data.draw(st.permutations(range(x.ndim))))
    assert tc.gradcheck(lambda t: t.transpose(perm).reshape(-1), x)
    assert tc.gradcheck(lambda t: t.T, x)
    if x.ndim >= 2:
        start = data.draw(st.integers(0, x.ndim - 1))
        assert tc.flatten(x, start).shape == x.shape[:start] + (int(np.prod(x.shape[start:])),)
        assert tc.gradcheck(lambda t: tc.flatten(t, start), x)


@given(x=arrays(shapes(min_dims=2, max_dims=3, min_side=2, max_side=5)), data=st.data())
def test_getitem_slices_integer_arrays_and_none(x, data):
    rows = data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=6))  # repeats allowed
    step = data.draw(st.integers(1, 2))
    for index in [(slice(None, None, step), None, 0), np.array(rows), (np.array(rows), slice(1, None)),
                  (Ellipsis, -1), x[..., 0] > 0]:
        np.testing.assert_array_equal(Tensor(x)[index].data, x[index])
        assert tc.gradcheck(lambda t, index=index: t[index], x)


def test_getitem_repeated_integer_index_sums_gradients():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    x[[0, 0, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 0, 1])


MATMUL_SHAPES = st.sampled_from([
    ((3,), (3,)), ((4,), (4, 2)), ((2, 4), (4,)), ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((2, 1, 2, 3), (4, 3, 2)), ((3,), (2, 3, 4)),
])


@given(shape_pair=MATMUL_SHAPES, data=st.data())
def test_matmul_gradcheck(shape_pair, data):
    a, b = data.draw(arrays(shape_pair[0])), data.draw(arrays(shape_pair[1]))
    np.testing.assert_allclose(tc.matmul(a, b).data, a @ b)
    assert tc.gradcheck(tc.matmul, a, b)


@given(shape_pair=MATMUL_SHAPES.filter(lambda s: len(s[0]) >= 2 and len(s[1]) >= 2), data=st.data())
def test_matmul_against_tensorflow(tf, shape_pair, data):
    a, b = data.draw(arrays(shape_pair[0])), data.draw(arrays(shape_pair[1]))
    upstream = np.random.default_rng(4).standard_normal((a @ b).shape)
    _, grads = our_grads(lambda x, y: x @ y, a, b, upstream=upstream)
    _, tf_g = tf_grads(tf, lambda x, y: tf.linalg.matmul(x, y), a, b, upstream=upstream)
    for g, t in zip(grads, tf_g):
        np.testing.assert_allclose(g, t, rtol=1e-10, atol=1e-12)


@given(batch=shapes(min_dims=1, max_dims=3, max_side=3), fin=st.integers(1, 4), fout=st.integers(1, 4),
       bias=st.booleans(), data=st.data())
def test_linear_gradcheck(batch, fin, fout, bias, data):
    x, w = data.draw(arrays(batch + (fin,))), data.draw(arrays((fin, fout)))
    args = (x, w, data.draw(arrays((fout,)))) if bias else (x, w)
    np.testing.assert_allclose(tc.linear(*args).data, x @ w + (args[2] if bias else 0))
    assert tc.gradcheck(tc.linear, *args)


def test_linear_promotes_like_numpy_when_integer_tensors_meet_a_float_bias():
    """int32 x and w with a float64 bias: x @ w + b as NumPy computes it (float64), not a NumPy casting
    error from adding the bias in place into an int32 product (found by test_fuzz_matmul_and_linear)."""
    x = Tensor(np.arange(6, dtype=np.int32).reshape(2, 3), dtype=np.int32)
    w = Tensor(np.ones((3, 2), np.int32), dtype=np.int32)
    b = np.array([0.5, -1.5])
    y = tc.linear(x, w, b)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.data, x.data @ w.data + b)
    assert tc.linear(x, w).dtype == np.int32


def test_matmul_and_linear_shape_errors():
    with pytest.raises(ValueError, match=r"matmul: a has 3 columns but b has 4 rows"):
        tc.matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"linear: x has 3 features but w expects 4"):
        tc.linear(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"linear: b must have shape \(5,\)"):
        tc.linear(np.ones((2, 4)), np.ones((4, 5)), np.ones(4))
    with pytest.raises(TypeError, match="matmul: a must be a Tensor"):
        tc.matmul("abc", np.ones(3))
