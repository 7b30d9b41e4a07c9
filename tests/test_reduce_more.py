"""min, prod, var, std, logsumexp, argmax and argmin: values against NumPy, gradients against float64 finite
differences and TensorFlow's GradientTape over random shapes, axes, keepdims and ddof; prod's exact gradient with
zeros, std at zero variance, logsumexp of huge values, dtypes, ties, graph labels, a jit replay and the errors."""

import doctest
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops import reduce as R
from tinygrad_cnn.testing import arrays, shapes
from reference import our_grads, tf_grads


def np_logsumexp(x, axis=None, keepdims=False):
    """The textbook formula, unshifted: exact enough in float64 for the moderate values drawn here."""
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def group_size(shape, axis) -> int:
    axes = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
    return math.prod(shape[a] for a in axes)


@st.composite
def reductions(draw, distinct=False, low=-3.0, high=3.0, max_side=4, ddof=False):
    """(x, axis, keepdims, ddof): axis None, an int or a tuple (negative entries too); ddof in [0, n)."""
    x = draw(arrays(shapes(min_dims=1, max_dims=4, max_side=max_side), distinct=distinct, low=low, high=high))
    axis = draw(st.one_of(
        st.none(),
        st.integers(-x.ndim, x.ndim - 1),
        st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim, unique=True).map(
            lambda axes: tuple(a - x.ndim if i % 2 else a for i, a in enumerate(axes)))))
    n = group_size(x.shape, axis)
    return x, axis, draw(st.booleans()), draw(st.integers(0, n - 1)) if ddof else 0


# name: (our op on a Tensor, NumPy's, TensorFlow's, strategy keyword arguments). var/std are drawn with distinct
# values (finite differences of std need a variance away from 0), min too (no ties); prod on smaller arrays.
CASES = {
    "min": (lambda t, a, k, d: t.min(a, k), lambda x, a, k, d: np.min(x, axis=a, keepdims=k),
            lambda tf, t, a, k, d: tf.reduce_min(t, axis=a, keepdims=k), dict(distinct=True)),
    "prod": (lambda t, a, k, d: tc.prod(t, a, keepdims=k), lambda x, a, k, d: np.prod(x, axis=a, keepdims=k),
             lambda tf, t, a, k, d: tf.reduce_prod(t, axis=a, keepdims=k), dict(low=-2.0, high=2.0, max_side=3)),
    "var": (lambda t, a, k, d: t.var(a, k, ddof=d), lambda x, a, k, d: np.var(x, axis=a, keepdims=k, ddof=d),
            lambda tf, t, a, k, d: tf.math.reduce_variance(t, axis=a, keepdims=k) * unbias(t.shape, a, d),
            dict(distinct=True, ddof=True)),
    "std": (lambda t, a, k, d: t.std(a, k, ddof=d), lambda x, a, k, d: np.std(x, axis=a, keepdims=k, ddof=d),
            lambda tf, t, a, k, d: tf.math.reduce_std(t, axis=a, keepdims=k) * math.sqrt(unbias(t.shape, a, d)),
            dict(distinct=True, ddof=True)),
    "logsumexp": (lambda t, a, k, d: tc.logsumexp(t, a, keepdims=k), lambda x, a, k, d: np_logsumexp(x, a, k),
                  lambda tf, t, a, k, d: tf.reduce_logsumexp(t, axis=a, keepdims=k), {}),
}


def unbias(shape, axis, ddof) -> float:
    """n / (n - ddof): TensorFlow's variance has no ddof (it is ddof=0)."""
    n = group_size(tuple(shape), axis)
    return n / (n - ddof)


# TensorFlow's eager calls cost ~50 ms an example
TF_EXAMPLES = settings(max_examples=max(8, settings.default.max_examples // 3))


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_values_against_numpy_and_gradcheck(name, data):
    op, ref, _, kw = CASES[name]
    x, axis, keepdims, ddof = data.draw(reductions(**kw))
    y = op(Tensor(x), axis, keepdims, ddof)
    expected = ref(x, axis, keepdims, ddof)
    assert y.shape == expected.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    assert tc.gradcheck(lambda t: op(t, axis, keepdims, ddof), x)


@pytest.mark.parametrize("name", CASES)
@TF_EXAMPLES
@given(data=st.data())
def test_against_tensorflow(tf, name, data):
    op, _, tf_op, kw = CASES[name]
    x, axis, keepdims, ddof = data.draw(reductions(**kw))
    assume(name != "std" or group_size(x.shape, axis) >= 2)  # one element: std is 0, TensorFlow's gradient NaN
    upstream = np.random.default_rng(41).standard_normal(CASES[name][1](x, axis, keepdims, ddof).shape)
    value, (g,) = our_grads(lambda t: op(t, axis, keepdims, ddof), x, upstream=upstream)
    tf_value, (tg,) = tf_grads(tf, lambda t: tf_op(tf, t, axis, keepdims, ddof), x, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-12)


@st.composite
def arg_reductions(draw):
    x = draw(arrays(shapes(min_dims=1, max_dims=3, max_side=4), distinct=True))
    return x, draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1))), draw(st.booleans())


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(case=arg_reductions())
def test_argmax_argmin_are_numpys_as_integer_tensors_without_gradient(name, case):
    x, axis, keepdims = case
    t = Tensor(x, requires_grad=True)
    index = getattr(t, name)(axis, keepdims)
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert isinstance(index, Tensor) and index.dtype == np.intp and index.shape == expected.shape
    np.testing.assert_array_equal(index.data, expected)
    assert not index.requires_grad and index.op is None
    picked = np.take_along_axis(x, index.data if keepdims else np.expand_dims(index.data, axis), axis) \
        if axis is not None else x.reshape(-1)[index.data]
    extreme = np.max if name == "argmax" else np.min
    np.testing.assert_array_equal(picked, extreme(x, axis=axis, keepdims=axis is not None))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@TF_EXAMPLES
@given(case=arg_reductions())
def test_argmax_argmin_against_tensorflow(tf, name, case):
    x, axis, _ = case
    axis = 0 if axis is None else axis  # tf.argmax has no "flattened": its axis=None means 0
    np.testing.assert_array_equal(getattr(Tensor(x), name)(axis).data, getattr(tf, name)(x, axis=axis).numpy())


def test_ties_go_to_the_first_element_in_row_major_order():
    x = Tensor(np.array([[1.0, -3.0, -3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.min(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.min(axis=0).backward(np.array([1.0, 2.0, 3.0]))  # column 0: the minimum 1.0 at row 0
    np.testing.assert_array_equal(x.grad, [[1, 2, 3], [0, 0, 0]])
    assert x.argmin(axis=1).data.tolist() == [1, 0] and x.argmax(axis=1).data.tolist() == [0, 0]
    assert x.argmin().item() == 1 and x.argmax().item() == 3  # flattened: the first maximum is at 3


def test_argmax_of_int_and_bool_tensors_and_use_as_index():
    assert Tensor([[3, 9, 9], [7, 1, 2]], dtype=np.int16).argmax(axis=1).data.tolist() == [1, 0]
    assert (Tensor([0.5, -1.0]) > 0).argmin().item() == 1
    x = Tensor(np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]), requires_grad=True)
    labels = np.array([1, 2])
    assert (x.argmax(axis=1) == labels).data.tolist() == [True, False]
    x[np.arange(2), x.argmax(axis=1)].sum().backward()  # an index made by argmax
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])


def products_of_others(x, axis):
    """A slow reference: moves the reduced axes last, and multiplies each row without element i, one by one."""
    axes = tuple(range(x.ndim)) if axis is None else R.normalize_axes(axis, x.ndim)
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    rows = x.transpose(kept + axes).reshape(-1, group_size(x.shape, axes))
    out = np.array([[np.prod(np.delete(row, i)) for i in range(len(row))] for row in rows])
    return out.reshape(tuple(x.shape[a] for a in kept + axes)).transpose(np.argsort(kept + axes))


@given(data=st.data())
def test_prod_gradient_is_exact_with_zeros(data):
    """Small integers, many of them 0: every product is exact, so the gradient must equal the reference."""
    x = data.draw(hnp.arrays(np.float64, shapes(min_dims=1, max_dims=3, max_side=3),
                             elements=st.sampled_from([0.0, 0.0, 1.0, -1.0, 2.0, -3.0])))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1),
                               st.lists(st.integers(0, x.ndim - 1), min_size=1, unique=True).map(tuple)))
    t = Tensor(x, requires_grad=True)
    y = t.prod(axis)
    upstream = np.arange(1.0, y.size + 1).reshape(y.shape)
    y.backward(upstream)
    np.testing.assert_array_equal(y.data, np.prod(x, axis=axis))
    np.testing.assert_array_equal(t.grad, products_of_others(x, axis) * np.expand_dims(upstream, axis if axis
                                  is not None else tuple(range(x.ndim))))


def test_prod_with_one_zero_and_with_two():
    x = Tensor(np.array([[2.0, 0.0, 3.0, 4.0], [0.0, 5.0, 0.0, 2.0], [1.5, 2.0, -1.0, 0.5]]), requires_grad=True)
    y = x.prod(axis=1)
    y.backward(np.ones(3))
    assert y.data.tolist() == [0.0, 0.0, -1.5]
    np.testing.assert_array_equal(x.grad, [[0, 24, 0, 0], [0, 0, 0, 0], [-1, -0.75, 1.5, -3]])
    empty = Tensor(np.zeros((2, 0)), requires_grad=True)
    p = tc.prod(empty, axis=1)  # a product of nothing is 1, as np.prod; no element to get a gradient
    p.backward(np.ones(2))
    assert p.data.tolist() == [1.0, 1.0] and empty.grad.shape == (2, 0)


def test_prod_with_zeros_against_tensorflow(tf):
    x = np.array([[[2.0, 0.0], [3.0, 4.0]], [[0.0, 5.0], [0.0, 2.0]], [[1.5, -2.0], [0.5, 3.0]]])
    for axis in [(1, 2), 0, None]:
        upstream = np.random.default_rng(42).standard_normal(np.prod(x, axis=axis).shape)
        _, (g,) = our_grads(lambda t, a=axis: t.prod(a), x, upstream=upstream)
        _, (tg,) = tf_grads(tf, lambda t, a=axis: tf.reduce_prod(t, axis=a), x, upstream=upstream)
        np.testing.assert_allclose(g, tg, rtol=1e-15, atol=0)


def test_std_and_var_of_a_constant_group_are_exactly_zero_with_a_zero_gradient():
    x = np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], [1.0, 2.0, 4.0, 0.0, 0.0, 0.0, 0.0]])
    for dtype in (np.float64, np.float32):
        t = Tensor(x.astype(dtype), requires_grad=True)
        s = t.std(axis=1, ddof=1)
        s.backward(np.ones(2, dtype))
        assert s.data[0] == 0 and t.grad.dtype == dtype and np.isfinite(t.grad).all()
        assert t.grad[0].tolist() == [0.0] * 7  # at zero variance: 0, not NaN
        d = x[1] - x[1].mean()
        np.testing.assert_allclose(t.grad[1], d / (6 * np.std(x[1], ddof=1)), rtol=1e-6)
        assert t.var(axis=1).data[0] == 0
    one = Tensor(np.array([[3.0], [-1.0]]), requires_grad=True)  # one element per group, ddof=0: variance 0
    one.std(axis=1).backward(np.ones(2))
    assert one.grad.tolist() == [[0.0], [0.0]]
    assert tc.gradcheck(lambda t: t.std(axis=1), np.array([[3.0], [-1.0]]))  # finite differences give 0 too


def test_var_is_accurate_with_a_large_offset():
    x = 1e8 + np.array([1.0, 2.0, 3.0, 4.0])
    assert Tensor(x).var().item() == 1.25 and Tensor(x).std(ddof=1).item() == math.sqrt(5 / 3)
    x32 = np.float32(1e4) + np.array([0.5, 1.5, 2.5], np.float32)
    assert Tensor(x32).var().item() == pytest.approx(2 / 3, rel=1e-6)


def test_logsumexp_of_huge_values_in_float32_is_finite():
    x = np.array([[1e4, 1e4, -1e4], [-1e4, -1e4, -1e4], [88.0, 89.0, 0.0]], np.float32)
    t = Tensor(x, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        y = t.logsumexp(axis=1)
        y.backward(np.ones(3, np.float32))
    assert y.dtype == t.grad.dtype == np.float32
    expected = [1e4 + math.log(2), -1e4 + math.log(3), 89 + math.log1p(math.exp(-1) + math.exp(-89))]
    np.testing.assert_allclose(y.data, expected, rtol=1e-7)
    np.testing.assert_allclose(t.grad, [[0.5, 0.5, 0], [1 / 3] * 3, [1 / (1 + math.e), 1 / (1 + 1 / math.e), 0]],
                               rtol=1e-6, atol=1e-30)
    assert tc.logsumexp(np.float32(1e4) * np.ones(1000, np.float32)).item() == pytest.approx(1e4 + math.log(1000))


def test_logsumexp_with_minus_infinity_entries():
    t = Tensor(np.array([[-np.inf, 0.0, 0.0], [-np.inf, 1.0, -np.inf]]), requires_grad=True)
    y = tc.logsumexp(t, axis=-1, keepdims=True)
    y.backward(np.ones((2, 1)))
    np.testing.assert_allclose(y.data, [[math.log(2)], [1.0]], rtol=1e-15)
    assert t.grad.tolist() == [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]]


OPS = {"min": lambda t: t.min(axis=1), "prod": lambda t: t.prod(axis=(0, 1)), "var": lambda t: t.var(axis=0),
       "std": lambda t: t.std(axis=-1, ddof=1), "logsumexp": lambda t: tc.logsumexp(t, axis=1),
       "logsumexp(all)": lambda t: t.logsumexp()}


@pytest.mark.parametrize("name", OPS)
def test_float32_in_float32_out_and_close_to_float64(name):
    x = np.random.default_rng(43).uniform(0.5, 1.5, (3, 5)) * np.array([1, -1, 1, 1, -1])
    t32, t64 = Tensor(x.astype(np.float32), requires_grad=True), Tensor(x, requires_grad=True)
    y32, y64 = OPS[name](t32), OPS[name](t64)
    g = np.random.default_rng(44).standard_normal(y64.shape)
    y32.backward(g.astype(np.float32))
    y64.backward(g)
    assert y32.dtype == t32.grad.dtype == np.float32 and y64.dtype == t64.grad.dtype == np.float64
    np.testing.assert_allclose(y32.data, y64.data, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(t32.grad, t64.grad, rtol=2e-5, atol=1e-6)


def test_inputs_are_not_modified():
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    before = x.copy()
    for f in OPS.values():
        t = Tensor(x, requires_grad=True)
        f(t).backward(np.ones(f(Tensor(x)).shape))
    np.testing.assert_array_equal(x, before)


def test_graph_labels_name_the_op_and_its_non_default_arguments():
    x = Tensor(np.ones((2, 3)), requires_grad=True, name="x")
    outputs = {"Min": x.min(0), "Prod": x.prod(), "Var": x.var(1, ddof=1), "Std": x.std(), "LogSumExp": x.logsumexp(1)}
    assert {op: y.op for op, y in outputs.items()} == {op: op for op in outputs}
    source = tc.draw_graph(outputs["Var"].sum() + outputs["Std"]).source
    assert "ddof=1" in source and "Std" in source


def test_jit_replays_match_eager():
    def loss(x):
        return (x.min(axis=1).sum() + x.var(axis=0, ddof=1).sum() + x.std() + tc.logsumexp(x, axis=1).sum()
                + tc.prod(x[:, :3], axis=0).sum())

    def step(x):
        return tc.value_and_grad(loss)(x), Tensor(x).argmax(axis=1).data, Tensor(x).argmin().data

    jitted = tc.jit(step)
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((4, 5)).astype(np.float32)
        (value, grad), argmax, argmin = jitted(x)
        (eager_value, eager_grad), eager_argmax, eager_argmin = step(x)
        assert value == eager_value and np.array_equal(grad, eager_grad)
        assert np.array_equal(argmax, np.argmax(x, axis=1)) and argmin == np.argmin(x) == eager_argmin
        assert np.array_equal(argmax, eager_argmax)
    assert jitted.traces == 1


def test_docstring_examples_run():
    assert doctest.testmod(R, extraglobs={"np": np}).failed == 0


ERRORS = [
    (lambda: Tensor(np.ones((2, 0))).min(axis=1), ValueError,
     r"min: cannot take the minimum over an empty axis \(shape \(2, 0\), axis=1\)"),
    (lambda: Tensor(np.ones((0, 3))).argmax(), ValueError, r"argmax: cannot take the maximum over an empty axis"),
    (lambda: Tensor(np.ones((3, 0))).argmin(axis=-1), ValueError, r"argmin: cannot take the minimum over an empty"),
    (lambda: tc.logsumexp(np.ones((2, 0)), axis=1), ValueError, r"logsumexp: cannot take the log-sum-exp over an"),
    (lambda: Tensor(np.ones((2, 3))).argmax(axis=(0, 1)), TypeError,
     r"argmax: axis must be None or an int, got tuple \(0, 1\)"),
    (lambda: Tensor(np.ones((2, 3))).argmin(axis=2), ValueError, r"argmin: axis=2 is out of range for a 2-D input"),
    (lambda: Tensor(np.ones((2, 3))).var(axis=1, ddof=3), ValueError,
     r"var: ddof must be less than the number of elements reduced over, got ddof=3 for 3 \(shape \(2, 3\), "
     r"axis=1\): the result would divide by 0"),
    (lambda: Tensor(np.ones((2, 0))).std(axis=1), ValueError, r"std: ddof must be less .* got ddof=0 for 0"),
    (lambda: Tensor(np.ones(3)).std(ddof=-1), ValueError, r"std: ddof must be >= 0, got -1"),
    (lambda: Tensor(np.ones(3)).var(ddof=1.0), TypeError, r"var: ddof must be an int, got float 1.0"),
    (lambda: Tensor([1, 2], dtype=np.int64).var(), TypeError, r"var: x must have a floating dtype, got int64"),
    (lambda: Tensor([1, 2], dtype=np.int64).logsumexp(), TypeError, r"logsumexp: x must have a floating dtype"),
    (lambda: tc.logsumexp("x"), TypeError, r"logsumexp: x must be a Tensor or an np.ndarray, got str"),
    (lambda: tc.prod(np.ones(2), keepdims=1), TypeError, r"prod: keepdims must be a bool, got int 1"),
    (lambda: tc.prod(np.ones((2, 2)), axis=(1, -1)), ValueError, r"prod: axis=\(1, -1\) names an axis twice"),
    (lambda: Tensor(np.ones(2)).min(axis=1), ValueError, r"min: axis=1 is out of range for a 1-D input"),
]


@pytest.mark.parametrize("case", range(len(ERRORS)))
def test_errors(case):
    fn, error, message = ERRORS[case]
    with pytest.raises(error, match=message):
        fn()
