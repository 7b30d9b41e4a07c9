"""softmax, log_softmax, cross_entropy and dropout: gradients against float64 finite differences and
TensorFlow's GradientTape (random upstream gradients), numerical stability for huge logits, dtypes,
dropout's statistics and determinism, and the error messages."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops.loss import cross_entropy, dropout, log_softmax, softmax
from tinygrad_cnn.testing import arrays, shapes
from reference import our_grads, tf_grads

REDUCTIONS = ["mean", "sum", "none"]


@st.composite
def array_and_axis(draw):
    x = draw(arrays(shapes(min_dims=1, max_dims=3, max_side=4)))
    return x, draw(st.integers(-x.ndim, x.ndim - 1))


@st.composite
def logits_and_labels(draw, max_n=5, max_k=5):
    n, k = draw(st.integers(1, max_n)), draw(st.integers(1, max_k))
    logits = draw(arrays((n, k), low=-5.0, high=5.0))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return logits, labels


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------- #
# softmax and log_softmax


@pytest.mark.parametrize("op", [softmax, log_softmax])
@given(x_axis=array_and_axis())
def test_softmax_values_and_gradcheck(op, x_axis):
    x, axis = x_axis
    ref = np_softmax(x, axis)
    np.testing.assert_allclose(op(x, axis).data, ref if op is softmax else np.log(ref), rtol=1e-12, atol=1e-15)
    assert tc.gradcheck(lambda t: op(t, axis=axis), x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(x_axis=array_and_axis())
def test_softmax_against_tensorflow(tf, name, x_axis):
    x, axis = x_axis
    ours, theirs = {"softmax": (softmax, tf.nn.softmax), "log_softmax": (log_softmax, tf.nn.log_softmax)}[name]
    upstream = np.random.default_rng(11).standard_normal(x.shape)
    value, (g,) = our_grads(lambda t: ours(t, axis), x, upstream=upstream)
    tf_value, (tg,) = tf_grads(tf, lambda t: theirs(t, axis=axis), x, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_logits(dtype):
    x = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [3e4, 3e4, -3e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        t = Tensor(x, requires_grad=True)
        y = softmax(t)
        y.backward(np.ones_like(x))
        t2 = Tensor(x, requires_grad=True)
        ly = log_softmax(t2)
        ly.backward(np.ones_like(x))
    assert y.dtype == ly.dtype == t.grad.dtype == t2.grad.dtype == dtype
    np.testing.assert_allclose(y.data, [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], atol=1e-7)
    np.testing.assert_allclose(ly.data[0], [0, -1e4, -2e4], rtol=1e-6)
    np.testing.assert_allclose(ly.data[2, :2], -np.log(2), rtol=1e-6)
    assert np.isfinite(t.grad).all() and np.isfinite(t2.grad).all()


@pytest.mark.parametrize("op", [softmax, log_softmax])
def test_softmax_float32_in_float32_out(op):
    x = Tensor(np.random.default_rng(12).standard_normal((4, 6)).astype(np.float32), requires_grad=True)
    y = op(x, axis=0)
    assert y.dtype == np.float32
    y.backward(np.ones((4, 6), np.float32))
    assert x.grad.dtype == np.float32


def test_softmax_errors():
    with pytest.raises(ValueError, match="softmax: axis=2 is out of range for a 2-D input"):
        softmax(np.ones((2, 3)), axis=2)
    with pytest.raises(TypeError, match="log_softmax: axis must be an int, got float"):
        log_softmax(np.ones((2, 3)), axis=1.0)
    with pytest.raises(ValueError, match="softmax: x must be at least 1-D"):
        softmax(np.float64(1.0))
    with pytest.raises(TypeError, match="log_softmax: x must be a Tensor or an np.ndarray, got str"):
        log_softmax("logits")


# ---------------------------------------------------------------------------------------------- #
# cross_entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=logits_and_labels())
def test_cross_entropy_values_and_gradcheck(reduction, data):
    logits, labels = data
    losses = -np.log(np_softmax(logits, 1))[np.arange(len(labels)), labels]
    expected = {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
    np.testing.assert_allclose(cross_entropy(logits, labels, reduction).data, expected, rtol=1e-12, atol=1e-14)
    assert tc.gradcheck(lambda t: cross_entropy(t, labels, reduction=reduction), logits)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=logits_and_labels())
def test_cross_entropy_against_tensorflow(tf, reduction, data):
    logits, labels = data
    reduce = {"mean": tf.reduce_mean, "sum": tf.reduce_sum, "none": lambda v: v}[reduction]
    upstream = np.random.default_rng(13).standard_normal(() if reduction != "none" else labels.shape)
    value, (g,) = our_grads(lambda t: cross_entropy(t, labels, reduction), logits, upstream=upstream)
    tf_fn = lambda t: reduce(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=t))  # noqa: E731
    tf_value, (tg,) = tf_grads(tf, tf_fn, logits, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=logits_and_labels(max_n=6, max_k=6))
def test_cross_entropy_gradient_rows_sum_to_zero(reduction, data):
    logits, labels = data
    t = Tensor(logits, requires_grad=True)
    out = cross_entropy(t, labels, reduction)
    out.backward(np.random.default_rng(14).standard_normal(out.shape))
    np.testing.assert_allclose(t.grad.sum(axis=1), 0, atol=1e-12)


def test_cross_entropy_mean_gradient_is_softmax_minus_onehot_over_n():
    logits = np.random.default_rng(15).standard_normal((4, 3))
    labels = np.array([2, 0, 0, 1])
    t = Tensor(logits, requires_grad=True)
    cross_entropy(t, labels).backward()
    np.testing.assert_allclose(t.grad, (np_softmax(logits, 1) - np.eye(3)[labels]) / 4, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4], [-3e4, -3e4, -3e4]], dtype=dtype)
    t = Tensor(logits, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = cross_entropy(t, [0, 2, 1], reduction="none")
        out.backward(np.ones(3, dtype))
    assert out.dtype == t.grad.dtype == dtype
    np.testing.assert_allclose(out.data, [0.0, 2e4, np.log(3)], rtol=1e-6)
    assert np.isfinite(t.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_float32_in_float32_out(reduction):
    logits = Tensor(np.random.default_rng(16).standard_normal((5, 4)).astype(np.float32), requires_grad=True)
    out = cross_entropy(logits, np.array([0, 1, 2, 3, 0], dtype=np.uint8), reduction)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, np.float32))
    assert logits.grad.dtype == np.float32


def test_cross_entropy_label_containers():
    logits = np.random.default_rng(17).standard_normal((3, 4))
    expected = cross_entropy(logits, np.array([3, 0, 1])).item()
    assert cross_entropy(logits, [3, 0, 1]).item() == expected
    assert cross_entropy(logits, (3, 0, 1)).item() == expected
    assert cross_entropy(logits, Tensor([3, 0, 1], dtype=np.int64)).item() == expected
    assert cross_entropy(Tensor(logits), np.array([3, 0, 1], dtype=np.int32)).item() == expected


def test_cross_entropy_errors():
    logits = np.zeros((3, 4))
    with pytest.raises(TypeError, match="cross_entropy: labels must have an integer dtype .* got float64"):
        cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match=r"cross_entropy: labels must have an integer dtype .* got float32 "
                                        r"\(Tensor\(labels\) makes float32"):
        cross_entropy(logits, Tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="cross_entropy: labels must have an integer dtype .* got bool"):
        cross_entropy(logits, np.array([True, False, True]))
    with pytest.raises(TypeError, match="cross_entropy: labels must be an integer np.ndarray, list or Tensor, "
                                        "got str"):
        cross_entropy(logits, "012")
    with pytest.raises(ValueError, match=r"cross_entropy: labels must have shape \(3,\) to match "
                                         r"logits.shape=\(3, 4\), got \(2,\)"):
        cross_entropy(logits, [0, 1])
    with pytest.raises(ValueError, match=r"cross_entropy: labels must have shape \(3,\) .* got \(3, 1\)"):
        cross_entropy(logits, np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match=r"cross_entropy: labels\[1\] = 4 is not a class index in \[0, 4\)"):
        cross_entropy(logits, [0, 4, 9])
    with pytest.raises(ValueError, match=r"cross_entropy: labels\[2\] = -1 is not a class index in \[0, 4\)"):
        cross_entropy(logits, [0, 3, -1])
    with pytest.raises(ValueError, match=r"cross_entropy: logits must be 2-D \(N, K\), got shape \(4,\)"):
        cross_entropy(np.zeros(4), [0])
    with pytest.raises(ValueError, match="cross_entropy: reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        cross_entropy(logits, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="cross_entropy: logits must have at least one row and one class"):
        cross_entropy(np.zeros((0, 4)), np.zeros(0, dtype=int))


# ---------------------------------------------------------------------------------------------- #
# dropout


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=5)), p=st.sampled_from([0.2, 0.5, 0.9]),
       seed=st.integers(0, 2**32 - 1))
def test_dropout_gradcheck(x, p, seed):
    """A fresh generator with the same seed inside f: every call of gradcheck sees the same mask."""
    assert tc.gradcheck(lambda t: dropout(t, p, rng=np.random.default_rng(seed)), x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p):
    rng = np.random.default_rng(18)
    x = rng.normal(2.0, 1.0, (400, 1000)).astype(np.float32)
    y = dropout(x, p, rng=rng).data
    n = x.size
    zeroed = np.mean(y == 0)
    assert abs(zeroed - p) < 5 * np.sqrt(p * (1 - p) / n)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert abs(y.mean() - x.mean()) < 5 * np.sqrt((p / (1 - p) * np.mean(x ** 2) + x.var()) / n)


def test_dropout_mask_is_the_gradient_and_same_seed_same_mask():
    x = np.random.default_rng(19).standard_normal((6, 7))
    a = Tensor(x, requires_grad=True)
    y = dropout(a, 0.5, rng=np.random.default_rng(42))
    g = np.random.default_rng(20).standard_normal(x.shape)
    y.backward(g)
    mask = y.data / x
    np.testing.assert_allclose(a.grad, g * mask, rtol=1e-12)
    assert set(np.unique(mask.round(12))) <= {0.0, 2.0}
    np.testing.assert_array_equal(dropout(x, 0.5, rng=np.random.default_rng(42)).data, y.data)
    assert not np.array_equal(dropout(x, 0.5, rng=np.random.default_rng(43)).data, y.data)


def test_dropout_identity_cases():
    t = Tensor(np.ones((3, 4)), requires_grad=True)
    assert dropout(t, 0.5, training=False) is t
    assert dropout(t, 0.0) is t
    y = dropout(np.ones((2, 3)), 0.7, training=False)
    assert isinstance(y, Tensor) and np.array_equal(y.data, np.ones((2, 3)))


def test_dropout_p_one_drops_everything():
    t = Tensor(np.ones((3, 4)), requires_grad=True)
    y = dropout(t, 1.0, rng=np.random.default_rng(0))
    y.backward(np.ones((3, 4)))
    np.testing.assert_array_equal(y.data, 0)
    np.testing.assert_array_equal(t.grad, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_keeps_dtype_and_layout(dtype):
    x = np.random.default_rng(21).standard_normal((2, 5, 4, 3)).astype(dtype).transpose(0, 3, 1, 2)  # NHWC memory
    t = Tensor(x, requires_grad=True)
    y = dropout(t, 0.3, rng=np.random.default_rng(1))
    y.backward(np.ones(y.shape, dtype))
    assert y.dtype == t.grad.dtype == dtype
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(t.grad != 0, y.data != 0)


def test_dropout_default_rng():
    y = dropout(np.ones((100, 100)), 0.5)
    assert 0.4 < np.mean(y.data == 0) < 0.6


def test_dropout_errors():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got -0.1"):
        dropout(x, -0.1)
    with pytest.raises(TypeError, match="dropout: p must be a number, got NoneType"):
        dropout(x, None)
    with pytest.raises(TypeError, match="dropout: rng must be a np.random.Generator .* got int"):
        dropout(x, 0.5, rng=0)
    with pytest.raises(TypeError, match="dropout: rng must be a np.random.Generator .* got RandomState"):
        dropout(x, 0.5, rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="dropout: training must be a bool, got str 'no'"):
        dropout(x, 0.5, training="no")
    with pytest.raises(TypeError, match="dropout: x must be a Tensor or an np.ndarray, got NoneType"):
        dropout(None, 0.5)
