"""abs, square, log1p, expm1, maximum, minimum, clip and where: values against NumPy, gradients against
float64 finite differences (away from kinks and ties) and against TensorFlow's GradientTape (ties and
kinks included, where TensorFlow's rules are ours), the tie and kink rules exactly, dtypes, graph
labels, a jit replay, errors."""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import arrays, broadcastable_shapes
from reference import our_grads, tf_grads

UNARY = {  # name: (module function, Tensor method, TensorFlow's op, NumPy's, input strategy keyword arguments)
    "abs": (tc.abs, lambda t: t.abs(), lambda tf, x: tf.abs(x), np.abs, dict(away_from=0.0)),
    "square": (tc.square, lambda t: t.square(), lambda tf, x: tf.square(x), np.square, {}),
    "log1p": (tc.log1p, lambda t: t.log1p(), lambda tf, x: tf.math.log1p(x), np.log1p, dict(low=-0.9)),
    "expm1": (tc.expm1, lambda t: t.expm1(), lambda tf, x: tf.math.expm1(x), np.expm1, {}),
}

BINARY = {  # name: (our op, TensorFlow's, NumPy's)
    "maximum": (tc.maximum, lambda tf, a, b: tf.maximum(a, b), np.maximum),
    "minimum": (tc.minimum, lambda tf, a, b: tf.minimum(a, b), np.minimum),
}

# TensorFlow's eager calls cost milliseconds each: fewer examples
TF_EXAMPLES = settings(max_examples=8)

three_shapes = hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3).map(lambda s: s.input_shapes)


def off_grid(x, offset, spacing=0.3, jitter=0.02):
    """``x`` moved to the nearest offset + spacing k, give or take ``jitter``: arrays moved with offsets 0,
    0.1 and 0.2 are at least 0.06 apart everywhere, so no tie of max/min/clip is within a finite
    difference's reach. A 0-d array stays one (not a NumPy scalar, which would count as a Python float)."""
    k = np.round(x / spacing)
    return np.asarray(spacing * k + offset + 2 * jitter * (x / spacing - k))


def away(x, point):
    """``x`` with values within 0.05 of ``point`` moved to point ± 0.05 (as testing.arrays' away_from)."""
    near = np.abs(x - point) < 0.05
    return np.where(near, point + np.where(x >= point, 0.05, -0.05), x)


def whole_numbers(shape, low=-3, high=3):
    """Small whole numbers as float64 arrays of ``shape``: ties and kinks on purpose."""
    return hnp.arrays(np.float64, shape, elements=st.integers(low, high).map(float))


# ---------------------------------------------------------------------------------------------- #
# Unary ops


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary_values_and_gradcheck(name, data):
    op, method, _, ref, kw = UNARY[name]
    x = data.draw(arrays(max_dims=3, max_side=4, **kw))
    np.testing.assert_array_equal(op(x).data, ref(x))
    np.testing.assert_array_equal(method(Tensor(x)).data, ref(x))
    assert tc.gradcheck(op, x)


@pytest.mark.parametrize("name", UNARY)
@TF_EXAMPLES
@given(data=st.data())
def test_unary_against_tensorflow(tf, name, data):
    op, _, tf_op, _, kw = UNARY[name]
    x = data.draw(arrays(min_dims=1, max_dims=3, **kw))
    if name == "abs":
        x.reshape(-1)[::3] = 0.0  # the kink: sign(0) = 0 in TensorFlow too
    upstream = np.random.default_rng(41).standard_normal(x.shape)
    value, (g,) = our_grads(op, x, upstream=upstream)
    tf_value, (tg,) = tf_grads(tf, lambda t: tf_op(tf, t), x, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(g, tg, rtol=1e-14, atol=1e-15)


def test_abs_gradient_is_the_sign_and_zero_at_zero():
    x = Tensor(np.array([-1.5, -0.0, 0.0, 2.0]), requires_grad=True)
    y = abs(x)                                     # the builtin: Tensor.__abs__
    y.backward(np.array([3.0, 5.0, 7.0, 11.0]))
    assert y.op is None and y.data.tolist() == [1.5, 0.0, 0.0, 2.0]
    assert x.grad.tolist() == [-3.0, 0.0, 0.0, 11.0]


def test_square_log1p_expm1_gradients_at_known_points():
    x = np.array([-0.5, 0.0, 1e-12, 2.0])
    for op, expected in [(tc.square, 2 * x), (tc.log1p, 1 / (1 + x)), (tc.expm1, np.exp(x))]:
        _, (g,) = our_grads(op, x, upstream=np.ones(4))
        np.testing.assert_allclose(g, expected, rtol=1e-15, atol=0)
    assert tc.log1p(np.array([1e-20])).data[0] == 1e-20 and tc.expm1(np.array([1e-20])).data[0] == 1e-20


def test_abs_and_square_keep_integer_dtypes():
    t = Tensor([-2, 3], dtype=np.int64)
    assert tc.abs(t).dtype == abs(t).dtype == t.square().dtype == np.int64
    assert tc.abs(t).data.tolist() == [2, 3] and t.square().data.tolist() == [4, 9]


# ---------------------------------------------------------------------------------------------- #
# maximum, minimum


@pytest.mark.parametrize("name", BINARY)
@given(shape_pair=broadcastable_shapes(max_dims=3, max_side=3), data=st.data())
def test_binary_values_and_gradcheck_broadcasting(name, shape_pair, data):
    op, _, ref = BINARY[name]
    a = off_grid(data.draw(arrays(shape_pair[0])), 0.1)
    b = off_grid(data.draw(arrays(shape_pair[1])), 0.0)
    np.testing.assert_array_equal(op(a, b).data, ref(a, b))
    assert tc.gradcheck(op, a, b)


@pytest.mark.parametrize("name", BINARY)
@TF_EXAMPLES
@given(shape_pair=broadcastable_shapes(max_dims=3, max_side=3), data=st.data())
def test_binary_against_tensorflow_ties_included(tf, name, shape_pair, data):
    op, tf_op, _ = BINARY[name]
    a, b = data.draw(whole_numbers(shape_pair[0], -2, 2)), data.draw(whole_numbers(shape_pair[1], -2, 2))
    upstream = np.random.default_rng(42).standard_normal(np.broadcast_shapes(a.shape, b.shape))
    value, grads = our_grads(op, a, b, upstream=upstream)
    tf_value, tf_g = tf_grads(tf, lambda *t: tf_op(tf, *t), a, b, upstream=upstream)
    np.testing.assert_array_equal(value, tf_value)
    for g, t in zip(grads, tf_g):
        np.testing.assert_allclose(g, t, rtol=1e-13, atol=1e-14)


def test_ties_send_the_whole_gradient_to_the_first_argument():
    a, b, g = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), np.array([3.0, 5.0, 7.0])
    expected = {  # op: (a's gradient, b's gradient); the tie is in the middle
        "maximum(a, b)": (tc.maximum, a, b, [0, 5, 7], [3, 0, 0]),
        "maximum(b, a)": (tc.maximum, b, a, [3, 5, 0], [0, 0, 7]),
        "minimum(a, b)": (tc.minimum, a, b, [3, 5, 0], [0, 0, 7]),
        "minimum(b, a)": (tc.minimum, b, a, [0, 5, 7], [3, 0, 0]),
    }
    for name, (op, first, second, g_first, g_second) in expected.items():
        _, (g1, g2) = our_grads(op, first, second, upstream=g)
        assert (g1.tolist(), g2.tolist()) == (g_first, g_second), name


def test_ties_with_broadcasting_are_summed_to_the_first_argument():
    a = np.array([[1.0], [2.0]])                          # (2, 1)
    b = np.array([1.0, 2.0, 0.0])                          # (3,): a tie in each row
    g = np.array([[1.0, 10.0, 100.0], [1000.0, 10000.0, 100000.0]])
    _, (ga, gb) = our_grads(tc.maximum, a, b, upstream=g)
    assert ga.tolist() == [[101.0], [111000.0]] and gb.tolist() == [0.0, 10.0, 0.0]


def test_maximum_propagates_nan_as_numpy():
    y = tc.maximum(np.array([np.nan, 1.0]), np.array([0.0, np.nan]))
    assert np.isnan(y.data).all()


# ---------------------------------------------------------------------------------------------- #
# clip


@given(x=arrays(max_dims=3, max_side=4), lo=st.floats(-2, 1), width=st.floats(0.2, 2),
       sides=st.sampled_from(["both", "lo", "hi"]))
def test_clip_number_bounds_values_and_gradcheck(x, lo, width, sides):
    hi = lo + width
    lo, hi = (lo if sides != "hi" else None), (hi if sides != "lo" else None)
    x = away(away(x, lo if lo is not None else 9.0), hi if hi is not None else 9.0)
    y = tc.clip(Tensor(x, requires_grad=True), lo, hi)
    assert y.op == "Clip"
    np.testing.assert_array_equal(y.data, np.clip(x, lo, hi))
    np.testing.assert_array_equal(Tensor(x).clip(lo, hi).data, y.data)
    assert tc.gradcheck(lambda t: tc.clip(t, lo, hi), x)


@given(shapes=three_shapes, data=st.data())
def test_clip_tensor_bounds_values_and_gradcheck_broadcasting(shapes, data):
    """Bounds as arrays broadcast with x, lo > hi in places (there NumPy's result is hi)."""
    x, lo, hi = (off_grid(data.draw(arrays(shape)), offset) for shape, offset in zip(shapes, (0.1, 0.0, 0.2)))
    np.testing.assert_array_equal(tc.clip(x, lo, hi).data, np.clip(x, lo, hi))
    assert tc.gradcheck(tc.clip, x, lo, hi)
    assert tc.gradcheck(lambda x, lo: tc.clip(x, lo, None), x, lo)
    assert tc.gradcheck(lambda x, hi: tc.clip(x, None, hi), x, hi)


@TF_EXAMPLES
@given(x=whole_numbers(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), -4, 4), data=st.data())
def test_clip_against_tensorflow_at_the_bounds(tf, x, data):
    """Whole numbers: x often equals a bound. tf.clip_by_value needs lo <= hi and bounds that broadcast to
    x's shape (it never grows x)."""
    lo = data.draw(whole_numbers(hnp.broadcastable_shapes(x.shape, max_dims=x.ndim), -3, 0))
    hi = data.draw(whole_numbers(hnp.broadcastable_shapes(x.shape, max_dims=x.ndim), 0, 3))
    try:
        assume(np.broadcast_shapes(x.shape, lo.shape, hi.shape) == x.shape)
    except ValueError:  # each bound broadcasts with x, but not with the other
        assume(False)
    upstream = np.random.default_rng(43).standard_normal(x.shape)
    value, grads = our_grads(tc.clip, x, lo, hi, upstream=upstream)
    tf_value, tf_g = tf_grads(tf, tf.clip_by_value, x, lo, hi, upstream=upstream)
    np.testing.assert_array_equal(value, tf_value)
    for g, t in zip(grads, tf_g):
        np.testing.assert_allclose(g, t, rtol=1e-13, atol=1e-14)
    # number bounds, as the Clip op rather than the composition
    value, (g,) = our_grads(lambda t: tc.clip(t, -1.0, 2.0), x, upstream=upstream)
    tf_value, (tg,) = tf_grads(tf, lambda t: tf.clip_by_value(t, -1.0, 2.0), x, upstream=upstream)
    np.testing.assert_array_equal(value, tf_value)
    np.testing.assert_array_equal(g, tg)


def test_clip_passes_the_gradient_to_x_at_both_bounds():
    x, g = np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    for lo, hi, expected in [(0.0, 1.0, [0, 2, 4, 8, 0]), (None, 1.0, [1, 2, 4, 8, 0]), (0.0, None, [0, 2, 4, 8, 16])]:
        _, (gx,) = our_grads(lambda t, lo=lo, hi=hi: tc.clip(t, lo, hi), x, upstream=g)
        assert gx.tolist() == expected, (lo, hi)
    # Tensor bounds: the same for x; each bound gets the gradient where it is active (strictly beyond it)
    _, (gx, glo, ghi) = our_grads(tc.clip, x, np.array(0.0), np.array(1.0), upstream=g)
    assert (gx.tolist(), glo.tolist(), ghi.tolist()) == ([0, 2, 4, 8, 0], 1.0, 16.0)


def test_clip_with_lo_above_hi_gives_hi_as_numpy():
    x, g = np.array([-1.0, 1.0, 1.5, 2.0, 3.0]), np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    value, (gx,) = our_grads(lambda t: tc.clip(t, 2.0, 1.0), x, upstream=g)
    assert value.tolist() == np.clip(x, 2.0, 1.0).tolist() == [1.0] * 5 and gx.tolist() == [0.0] * 5
    value, (gx, glo, ghi) = our_grads(tc.clip, x, np.array(2.0), np.array(1.0), upstream=g)
    assert value.tolist() == [1.0] * 5 and gx.tolist() == [0.0] * 5 and (glo, ghi) == (0.0, 31.0)


def test_clip_of_an_integer_tensor_stays_integer():
    t = Tensor([1, 5, 10], dtype=np.int64)
    assert t.clip(2, 8).dtype == np.int64 and t.clip(2, 8).data.tolist() == [2, 5, 8]
    assert tc.clip(t, 2.5, None).dtype == np.float32  # an int tensor with a float: float32, as the operators


def test_clip_bound_beyond_float32_bounds_nothing():
    x = np.array([-1.0, 3e38], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = tc.clip(x, -1e300, 1e300)
    assert y.dtype == np.float32 and y.data.tolist() == x.tolist()


# ---------------------------------------------------------------------------------------------- #
# where


@given(shapes=three_shapes, data=st.data())
def test_where_values_and_gradcheck_broadcasting(shapes, data):
    cond = data.draw(hnp.arrays(bool, shapes[0]))
    a, b = data.draw(arrays(shapes[1])), data.draw(arrays(shapes[2]))
    np.testing.assert_array_equal(tc.where(cond, a, b).data, np.where(cond, a, b))
    np.testing.assert_array_equal(tc.where(Tensor(cond, dtype=bool), a, b).data, np.where(cond, a, b))
    assert tc.gradcheck(lambda a, b: tc.where(cond, a, b), a, b)


@TF_EXAMPLES
@given(shapes=three_shapes, data=st.data())
def test_where_against_tensorflow(tf, shapes, data):
    cond = data.draw(hnp.arrays(bool, shapes[0]))
    a, b = data.draw(arrays(shapes[1])), data.draw(arrays(shapes[2]))
    upstream = np.random.default_rng(44).standard_normal(np.broadcast_shapes(*shapes))
    value, grads = our_grads(lambda a, b: tc.where(cond, a, b), a, b, upstream=upstream)
    tf_value, tf_g = tf_grads(tf, lambda a, b: tf.where(cond, a, b), a, b, upstream=upstream)
    np.testing.assert_array_equal(value, tf_value)
    for g, t in zip(grads, tf_g):
        np.testing.assert_allclose(g, t, rtol=1e-13, atol=1e-14)


def test_where_routes_the_gradient_by_cond():
    cond = Tensor(np.array([1.0, -1.0, 2.0])) > 0
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array(10.0), requires_grad=True)
    y = tc.where(cond, a, b)
    y.backward(np.array([3.0, 5.0, 7.0]))
    assert y.data.tolist() == [1.0, 10.0, 3.0] and a.grad.tolist() == [3.0, 0.0, 7.0] and b.grad.tolist() == 5.0
    assert tc.where(True, 1.0, 2.0).data.tolist() == 1.0 and tc.where([False, True], 1.0, 2.0).data.tolist() == [2, 1]


# ---------------------------------------------------------------------------------------------- #
# dtypes, graphs, jit


FLOAT32 = {
    "abs": tc.abs, "abs(t)": abs, "square": lambda t: t.square(), "log1p": tc.log1p, "expm1": lambda t: t.expm1(),
    "maximum(x, 0.5)": lambda t: tc.maximum(t, 0.5), "minimum(0.5, x)": lambda t: tc.minimum(0.5, t),
    "maximum(x, int array)": lambda t: tc.maximum(t, np.array([0, 1, 0])),
    "clip(x, 0.1, 0.9)": lambda t: tc.clip(t, 0.1, 0.9), "clip(hi=0.25)": lambda t: t.clip(hi=0.25),
    "clip(x, float32 array, 0.9)": lambda t: tc.clip(t, np.full(3, 0.2, np.float32), 0.9),
    "where(x > 0.5, x, 0.0)": lambda t: tc.where(t > 0.5, t, 0.0),
}


@pytest.mark.parametrize("name", FLOAT32)
def test_float32_stays_float32(name):
    x = np.array([0.25, 0.5, 0.75], np.float32)
    t = Tensor(x, requires_grad=True)
    y = FLOAT32[name](t)
    y.backward(np.ones(3, np.float32))
    assert y.dtype == t.grad.dtype == np.float32
    assert x.tolist() == [0.25, 0.5, 0.75]  # inputs not modified


def test_operands_promote_as_the_operators():
    x32, ints = Tensor(np.ones(2, np.float32), requires_grad=True), Tensor([1, 5], dtype=np.int64)
    assert tc.maximum(ints, 2.5).dtype == np.float32 and tc.maximum(ints, 2.5).data.tolist() == [2.5, 5.0]
    assert tc.maximum(Tensor([1, 5], dtype=np.int8), 3).dtype == np.int8
    assert tc.minimum(2, 3).dtype == np.float32 and tc.minimum(2, 3).data.tolist() == 2.0
    assert tc.where(np.array([True, False]), ints, 2).dtype == np.int64
    y = tc.maximum(x32, np.zeros(2))           # a float64 array widens, as in NumPy; x's gradient stays float32
    y.backward(np.ones(2))
    assert y.dtype == np.float64 and x32.grad.dtype == np.float32


def test_graph_labels_name_the_op_and_its_bounds():
    x = Tensor(np.ones(3), requires_grad=True, name="x")
    ops = {"Abs": tc.abs(x), "Square": x.square(), "Log1p": x.log1p(), "Expm1": x.expm1(),
           "Maximum": tc.maximum(x, 0.0), "Minimum": tc.minimum(x, 0.0), "Clip": x.clip(0.0, 0.5),
           "Where": tc.where(np.array([True, False, True]), x, 0.0)}
    for op, y in ops.items():
        assert y.op == op
    assert tc.clip(x, np.zeros(3), None).op == "Maximum"  # an array bound: composed
    source = tc.draw_graph(ops["Clip"] + ops["Where"]).source
    assert "lo=0, hi=0.5" in source and "cond" in source


def test_jit_replays_match_eager():
    def loss(x, lo, cond):
        y = tc.clip(x, -0.5, 0.75) + tc.clip(x, lo, None) + tc.maximum(x, 0.25) + tc.minimum(0.1, x)
        y = y + tc.where(cond, x, tc.square(x)) + abs(x) + tc.log1p(tc.square(x)) + tc.expm1(x * 0.5)
        return y.sum()

    step = tc.jit(tc.value_and_grad(loss, argnums=(0, 1)))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, lo = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
        cond = rng.random((4, 5)) > 0.5
        value, grads = step(x, lo, cond)
        eager_value, eager_grads = tc.value_and_grad(loss, argnums=(0, 1))(x, lo, cond)
        assert value == eager_value and all(np.array_equal(g, e) for g, e in zip(grads, eager_grads))
    assert step.traces == 1


def test_errors():
    x = np.ones(3)
    with pytest.raises(ValueError, match="^clip: lo and hi are both None; give at least one bound"):
        tc.clip(x, None, None)
    with pytest.raises(ValueError, match="^clip: lo must be a number, not NaN, got nan"):
        tc.clip(x, float("nan"), 1.0)
    with pytest.raises(TypeError, match="^clip: hi must be a number, got bool True"):
        tc.clip(x, 0.0, True)
    with pytest.raises(TypeError, match="^clip: lo must be a Tensor or an np.ndarray, got str"):
        tc.clip(x, "0", 1.0)
    with pytest.raises(ValueError, match=r"^clip: x, lo and hi have shapes \(3,\), \(2,\) and \(\), which do not "
                                         r"broadcast together"):
        tc.clip(x, np.zeros(2), 1.0)
    with pytest.raises(ValueError, match=r"^maximum: shapes \(3,\) and \(2,\) do not broadcast"):
        tc.maximum(x, np.ones(2))
    with pytest.raises(TypeError, match="^minimum: b must be a Tensor or an np.ndarray, got NoneType"):
        tc.minimum(x, None)
    with pytest.raises(ValueError, match="^maximum: the number 1000 does not fit in int8"):
        tc.maximum(Tensor([1], dtype=np.int8), 1000)
    with pytest.raises(TypeError, match=r"^where: cond must be a bool array, Tensor or bool \(a comparison such as "
                                        r"x > 0\), got an np.ndarray of dtype float64 and shape \(3,\)"):
        tc.where(x, 1.0, 2.0)
    with pytest.raises(TypeError, match="^where: cond must hold bools, got a Tensor of dtype float32"):
        tc.where(Tensor(np.array([True, False])), 1.0, 2.0)
    with pytest.raises(TypeError, match="^where: cond must be a bool array, Tensor or bool .*got int 1"):
        tc.where(1, 1.0, 2.0)
    with pytest.raises(ValueError, match=r"^where: cond, a and b have shapes \(2,\), \(3,\) and \(\), which do not "
                                         r"broadcast together"):
        tc.where(np.array([True, False]), x, 0.0)
    with pytest.raises(TypeError, match="^log1p: x must have a floating dtype, got int64"):
        Tensor([1], dtype=np.int64).log1p()
    with pytest.raises(TypeError, match="^expm1: x must be a Tensor or an np.ndarray, got str"):
        tc.expm1("x")
    with pytest.raises(TypeError, match="^abs: x must be a Tensor or an np.ndarray, got dict"):
        tc.abs({})
