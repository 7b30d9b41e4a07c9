"""softmax, log_softmax, cross_entropy (with label smoothing), dropout and the elementwise losses (mse, l1,
huber, binary cross-entropy with logits): gradients against float64 finite differences and TensorFlow's
GradientTape (random upstream gradients), numerical stability for huge logits, dtypes, dropout's
statistics and determinism, and the error messages."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops.loss import (binary_cross_entropy_with_logits, cross_entropy, dropout, huber_loss, l1_loss,
                                   log_softmax, mse_loss, softmax)
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


# ---------------------------------------------------------------------------------------------- #
# cross_entropy with label smoothing


def np_smoothed_cross_entropy(logits, labels, eps):
    k = logits.shape[1]
    q = (1 - eps) * np.eye(k)[labels] + eps / k
    return -(q * np.log(np_softmax(logits, 1))).sum(axis=1), q


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=logits_and_labels(), eps=st.sampled_from([0.1, 0.5, 1.0]))
def test_cross_entropy_label_smoothing_values_and_gradcheck(reduction, data, eps):
    logits, labels = data
    losses, _ = np_smoothed_cross_entropy(logits, labels, eps)
    expected = {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
    np.testing.assert_allclose(cross_entropy(logits, labels, reduction, label_smoothing=eps).data, expected,
                               rtol=1e-12, atol=1e-14)
    assert tc.gradcheck(lambda t: cross_entropy(t, labels, reduction=reduction, label_smoothing=eps), logits)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(data=logits_and_labels(), eps=st.sampled_from([0.05, 0.3]))
def test_cross_entropy_label_smoothing_against_tensorflow(tf, reduction, data, eps):
    """PyTorch's label smoothing is TensorFlow's softmax cross-entropy against the smoothed one-hot rows."""
    logits, labels = data
    _, q = np_smoothed_cross_entropy(logits, labels, eps)
    reduce = {"mean": tf.reduce_mean, "sum": tf.reduce_sum, "none": lambda v: v}[reduction]
    upstream = np.random.default_rng(40).standard_normal(() if reduction != "none" else labels.shape)
    value, (g,) = our_grads(lambda t: cross_entropy(t, labels, reduction, label_smoothing=eps), logits,
                            upstream=upstream)
    tf_fn = lambda t: reduce(tf.nn.softmax_cross_entropy_with_logits(labels=q, logits=t))  # noqa: E731
    tf_value, (tg,) = tf_grads(tf, tf_fn, logits, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-13)


def test_cross_entropy_without_smoothing_is_unchanged():
    logits = np.random.default_rng(41).standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2])
    a, b = Tensor(logits, requires_grad=True), Tensor(logits, requires_grad=True)
    plain, zero = cross_entropy(a, labels), cross_entropy(b, labels, label_smoothing=0.0)
    plain.backward()
    zero.backward()
    assert plain.data.tobytes() == zero.data.tobytes() and a.grad.tobytes() == b.grad.tobytes()
    t = Tensor(logits.astype(np.float64), requires_grad=True)
    cross_entropy(t, labels, label_smoothing=1.0).backward()  # the uniform target
    np.testing.assert_allclose(t.grad, (np_softmax(logits.astype(np.float64), 1) - 0.25) / 5, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_label_smoothing_is_finite_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-3e4, -3e4, -3e4]], dtype=dtype)
    t = Tensor(logits, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = cross_entropy(t, [0, 1], reduction="none", label_smoothing=0.3)
        out.backward(np.ones(2, dtype))
    assert out.dtype == t.grad.dtype == dtype
    np.testing.assert_allclose(out.data, [0.1 * 1e4 + 0.1 * 2e4, np.log(3)], rtol=1e-6)
    assert np.isfinite(t.grad).all()


def test_cross_entropy_label_smoothing_errors():
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"):
        cross_entropy(np.zeros((2, 3)), [0, 1], label_smoothing=1.5)
    with pytest.raises(TypeError, match="cross_entropy: label_smoothing must be a number, got str '0.1'"):
        cross_entropy(np.zeros((2, 3)), [0, 1], label_smoothing="0.1")


# ---------------------------------------------------------------------------------------------- #
# mse_loss, l1_loss, huber_loss, binary_cross_entropy_with_logits


def np_huber(d, delta):
    a = np.abs(d)
    return np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def np_bce(x, t):
    p = 1 / (1 + np.exp(-x))
    return -(t * np.log(p) + (1 - t) * np.log1p(-p))


LOSSES = {  # name: (our loss, NumPy reference of the per-element losses)
    "mse": (mse_loss, lambda x, t: (x - t) ** 2),
    "l1": (l1_loss, lambda x, t: np.abs(x - t)),
    "huber": (huber_loss, lambda x, t: np_huber(x - t, 1.0)),
    "huber(0.3)": (lambda x, t, reduction="mean": huber_loss(x, t, 0.3, reduction), lambda x, t: np_huber(x - t, 0.3)),
    "bce": (binary_cross_entropy_with_logits, np_bce),
}
KINKS = {"l1": 0.0, "huber": 1.0, "huber(0.3)": 0.3}  # |input - target| is kept 0.05 away from these


@st.composite
def input_and_target(draw, name, max_dims=3, max_side=4):
    """Same-shape input and target; for bce a target in [0.01, 0.99] (finite differences stay in [0, 1]);
    elsewhere |input - target| off the kink."""
    x = draw(arrays(shapes(min_dims=0, max_dims=max_dims, max_side=max_side)))
    if name == "bce":
        return x, draw(arrays(x.shape, low=0.01, high=0.99))
    d = draw(arrays(x.shape))
    if name in KINKS:
        a = np.abs(d)
        d = np.sign(d + (d == 0)) * np.where(np.abs(a - KINKS[name]) < 0.05, KINKS[name] + 0.05, a)
    return x, np.asarray(x - d)  # a 0-d difference is a NumPy scalar, which Tensor() would make float32


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
@given(data=st.data())
def test_elementwise_losses_values_and_gradcheck(name, reduction, data):
    """Gradients with respect to both the input and the target."""
    op, ref = LOSSES[name]
    x, t = data.draw(input_and_target(name))
    losses = ref(x, t)
    expected = {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
    np.testing.assert_allclose(op(x, t, reduction=reduction).data, expected, rtol=1e-12, atol=1e-14)
    assert tc.gradcheck(lambda a, b: op(a, b, reduction=reduction), x, t)


def tf_losses(tf, name):
    """TensorFlow's per-element losses: Keras' losses average over the last axis, so it gets one of size 1."""
    keras = tf.keras.losses
    per_element = lambda loss: lambda x, t: loss(t[..., None], x[..., None])  # noqa: E731
    return {
        "mse": per_element(keras.MeanSquaredError(reduction=None, dtype="float64")),
        "l1": per_element(keras.MeanAbsoluteError(reduction=None, dtype="float64")),
        "huber": per_element(keras.Huber(delta=1.0, reduction=None, dtype="float64")),
        "huber(0.3)": per_element(keras.Huber(delta=0.3, reduction=None, dtype="float64")),
        "bce": lambda x, t: tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=x),
    }[name]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
@settings(max_examples=max(8, settings.default.max_examples // 3))
@given(data=st.data())
def test_elementwise_losses_against_tensorflow(tf, name, reduction, data):
    op, _ = LOSSES[name]
    x, t = data.draw(input_and_target(name, max_dims=4, max_side=5))
    reduce = {"mean": tf.reduce_mean, "sum": tf.reduce_sum, "none": lambda v: v}[reduction]
    upstream = np.random.default_rng(42).standard_normal(x.shape if reduction == "none" else ())
    value, grads = our_grads(lambda a, b: op(a, b, reduction=reduction), x, t, upstream=upstream)
    tf_loss = tf_losses(tf, name)
    tf_value, tf_g = tf_grads(tf, lambda a, b: reduce(tf_loss(a, b)), x, t, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-14)
    for g, tg in zip(grads, tf_g):
        np.testing.assert_allclose(g, tg, rtol=1e-11, atol=1e-14)


def test_mean_and_sum_against_tf_reduce_of_differences(tf):
    x, t = np.random.default_rng(43).standard_normal((2, 3, 4, 5)), np.random.default_rng(44).standard_normal(120)
    t = t.reshape(x.shape)
    assert mse_loss(x, t).item() == pytest.approx(float(tf.reduce_mean(tf.square(x - t))), rel=1e-14)
    assert l1_loss(x, t, "sum").item() == pytest.approx(float(tf.reduce_sum(tf.abs(x - t))), rel=1e-14)


def test_huber_is_quadratic_then_linear():
    d = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    t = Tensor(d, requires_grad=True)
    y = huber_loss(t, np.zeros(7), delta=1.0, reduction="none")
    y.backward(np.ones(7))
    np.testing.assert_array_equal(y.data, [2.5, 0.5, 0.125, 0, 0.125, 0.5, 2.5])
    np.testing.assert_array_equal(t.grad, [-1, -1, -0.5, 0, 0.5, 1, 1])


def test_l1_gradient_is_zero_where_input_equals_target():
    t = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    l1_loss(t, np.array([0.0, 2.0, 4.0]), reduction="sum").backward()
    np.testing.assert_array_equal(t.grad, [1, 0, -1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_is_finite_for_huge_logits(dtype):
    x = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], dtype)
    target = np.array([1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 0.0], dtype)
    t = Tensor(x, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = binary_cross_entropy_with_logits(t, target, reduction="none")
        y.backward(np.ones(7, dtype))
    assert y.dtype == t.grad.dtype == dtype
    np.testing.assert_allclose(y.data, [1e4, 100, 0, np.log(2), 0, 100, 1e4], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(t.grad, [-1, -1, 0, 0, 0, 1, 1], atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_elementwise_losses_keep_float32(name, reduction):
    """The loss has the input's dtype; a float64 target (np.random's) does not make it float64."""
    op, _ = LOSSES[name]
    rng = np.random.default_rng(45)
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    target = Tensor(rng.uniform(0, 1, (4, 3)), requires_grad=True)  # float64
    y = op(x, target, reduction=reduction)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == np.float32 and target.grad.dtype == np.float64
    y64 = op(x.data.astype(np.float64), target.data, reduction=reduction)
    np.testing.assert_allclose(y.data, y64.data, rtol=1e-6, atol=1e-7)


def test_elementwise_losses_accept_integer_and_bool_targets():
    x = np.array([0.5, -1.0, 2.0])
    assert mse_loss(x, np.array([1, 0, 2])).item() == pytest.approx((0.25 + 1) / 3)
    assert binary_cross_entropy_with_logits(x, np.array([True, False, True])).item() == pytest.approx(
        np_bce(x, np.array([1.0, 0.0, 1.0])).mean())
    assert l1_loss(x, Tensor([1, 0, 2], dtype=np.int64), "sum").item() == 1.5


def test_elementwise_loss_graph_labels():
    x = Tensor(np.ones(3), requires_grad=True)
    ops = {"MseLoss": mse_loss(x, np.zeros(3)), "L1Loss": l1_loss(x, np.zeros(3)),
           "HuberLoss": huber_loss(x, np.zeros(3), delta=2.0),
           "BinaryCrossEntropyWithLogits": binary_cross_entropy_with_logits(x, np.zeros(3), reduction="sum")}
    assert {y.op for y in ops.values()} == set(ops)
    source = tc.draw_graph(sum(ops.values())).source
    assert "delta=2" in source and "reduction=sum" in source and "reduction=mean" not in source


def test_elementwise_losses_jit_replays_match_eager():
    def loss(w, x, t, p):
        z = x @ w
        return mse_loss(z, t) + l1_loss(z, t) + huber_loss(z, t, 0.5) + binary_cross_entropy_with_logits(z, p)

    step = tc.jit(tc.value_and_grad(loss))
    w = np.ones((3, 2), np.float32)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, t = rng.standard_normal((4, 3)).astype(np.float32), rng.uniform(0, 4, (4, 2)).astype(np.float32)
        value, grad = step(w, x, t, t / 4)
        eager_value, eager_grad = tc.value_and_grad(loss)(w, x, t, t / 4)
        assert value == eager_value and np.array_equal(grad, eager_grad)
    assert step.traces == 1


def test_elementwise_loss_errors():
    with pytest.raises(ValueError, match=r"mse_loss: target must have the shape of input, \(4, 1\), got \(4,\): "
                                         r"a loss compares element by element and never broadcasts the target "
                                         r"\(target.reshape\(\(4, 1\)\) if its elements match input's\)"):
        mse_loss(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match=r"l1_loss: target must have the shape of input, \(2, 3\), got \(3,\): "
                                         r"a loss compares element by element and never broadcasts the target$"):
        l1_loss(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: target must have the shape of logits, "
                                         r"\(3,\), got \(3, 1\)"):
        binary_cross_entropy_with_logits(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: target must hold probabilities in "
                                         r"\[0, 1\], got values in \[-1, 1\]"):
        binary_cross_entropy_with_logits(np.zeros(2), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="huber_loss: reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        huber_loss(np.zeros(2), np.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="huber_loss: delta must be a finite number > 0, got 0"):
        huber_loss(np.zeros(2), np.zeros(2), delta=0)
    with pytest.raises(TypeError, match="huber_loss: delta must be a number, got str"):
        huber_loss(np.zeros(2), np.zeros(2), "mean")
    with pytest.raises(TypeError, match="mse_loss: input must have a floating dtype, got int64"):
        mse_loss(Tensor([1, 2], dtype=np.int64), np.zeros(2))
    with pytest.raises(TypeError, match="l1_loss: target must be a Tensor or an np.ndarray, got str"):
        l1_loss(np.zeros(2), "ab")
    with pytest.raises(ValueError, match=r"mse_loss: the mean of no elements is undefined \(input.shape=\(0, 3\)\)"):
        mse_loss(np.zeros((0, 3)), np.zeros((0, 3)))
    assert mse_loss(np.zeros((0, 3)), np.zeros((0, 3)), reduction="sum").item() == 0.0
