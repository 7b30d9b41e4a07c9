"""leaky_relu, elu, gelu, softplus and silu: values against NumPy references, gradients against float64
finite differences and against TensorFlow's GradientTape (random upstream gradients), Cody's erfc
against math.erfc, finiteness at large |x| in float32, dtypes, graph labels, jit replays, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops.activations import erfc
from tinygrad_cnn.testing import arrays
from reference import our_grads, tf_grads

_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_softplus(x, beta=1.0, threshold=20.0):
    z = beta * x
    return np.where(z > threshold, x, np.logaddexp(0, z) / beta)


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# name: (our op, TensorFlow's, a float64 NumPy reference, keyword arguments of the input strategy).
# Kinks are kept at 0.05 from the input (relu-like ops at 0; softplus's switch to x at beta x = threshold).
CASES = {
    # TensorFlow keeps alpha as a float32 attribute (0.01 would become 0.009999999776): slopes exact in float32;
    # its default slope is 0.2, PyTorch's (and ours) 0.01
    "leaky_relu": (tc.leaky_relu, lambda tf, x: tf.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, x, 0.01 * x),
                   dict(away_from=0.0)),
    "leaky_relu(0.25)": (lambda x: tc.leaky_relu(x, 0.25), lambda tf, x: tf.nn.leaky_relu(x, alpha=0.25),
                         lambda x: np.where(x > 0, x, 0.25 * x), dict(away_from=0.0)),
    "leaky_relu(-0.5)": (lambda x: tc.leaky_relu(x, negative_slope=-0.5),
                         lambda tf, x: tf.nn.leaky_relu(x, alpha=-0.5), lambda x: np.where(x > 0, x, -0.5 * x),
                         dict(away_from=0.0)),
    "elu": (tc.elu, lambda tf, x: tf.nn.elu(x), lambda x: np.where(x > 0, x, np.expm1(x)), {}),
    "elu(0.5)": (lambda x: tc.elu(x, alpha=0.5), lambda tf, x: tf.where(x > 0, x, 0.5 * tf.nn.elu(x)),
                 lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), dict(away_from=0.0)),
    "gelu": (tc.gelu, lambda tf, x: tf.nn.gelu(x, approximate=False), lambda x: x * (1 + _erf(x / math.sqrt(2))) / 2,
             {}),
    "gelu(tanh)": (lambda x: tc.gelu(x, approximate="tanh"), lambda tf, x: tf.nn.gelu(x, approximate=True),
                   np_gelu_tanh, {}),
    "softplus": (tc.softplus, lambda tf, x: tf.nn.softplus(x), np_softplus, {}),
    "softplus(beta=2)": (lambda x: tc.softplus(x, beta=2.0), lambda tf, x: tf.nn.softplus(2 * x) / 2,
                         lambda x: np_softplus(x, 2.0), {}),
    "softplus(beta=0.5, threshold=1)": (  # linear where x > 2: TensorFlow's softplus has no threshold
        lambda x: tc.softplus(x, beta=0.5, threshold=1.0), lambda tf, x: tf.where(x > 2, x, tf.nn.softplus(x / 2) * 2),
        lambda x: np_softplus(x, 0.5, 1.0), dict(away_from=2.0)),
    "silu": (tc.silu, lambda tf, x: tf.nn.silu(x), lambda x: x / (1 + np.exp(-x)), {}),
}

# tf.nn.gelu rounds its constants 1/√2 and 0.044715 to float32 (math_ops.cast of a Python float goes through
# a float32 tensor), so in float64 it is off by ~1e-8 relative; test_gelu_against_tensorflow_float64 checks
# the same formulas with float64 constants tightly (the error grows in the tails, as exp(-x^2/2) does).
TF_RTOL = {"gelu": 1e-6, "gelu(tanh)": 1e-6}

# TensorFlow's eager calls cost ~50 ms an example: fewer examples (each array holds up to 125 values)
TF_EXAMPLES = settings(max_examples=max(10, settings.default.max_examples // 2))

OP_NAMES = {"leaky_relu": "LeakyRelu", "elu": "Elu", "gelu": "Gelu", "softplus": "Softplus", "silu": "Silu"}


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_values_and_gradcheck(name, data):
    op, _, ref, kw = CASES[name]
    x = data.draw(arrays(max_dims=3, max_side=4, **kw))
    np.testing.assert_allclose(op(x).data, ref(x), rtol=1e-12, atol=1e-15)
    assert tc.gradcheck(op, x)


@pytest.mark.parametrize("name", CASES)
@TF_EXAMPLES
@given(data=st.data())
def test_against_tensorflow(tf, name, data):
    op, tf_op, _, kw = CASES[name]
    x = data.draw(arrays(min_dims=1, max_dims=3, **kw))
    upstream = np.random.default_rng(31).standard_normal(x.shape)
    value, (g,) = our_grads(op, x, upstream=upstream)
    tf_value, (tg,) = tf_grads(tf, lambda t: tf_op(tf, t), x, upstream=upstream)
    rtol = TF_RTOL.get(name, 1e-12)
    np.testing.assert_allclose(value, tf_value, rtol=rtol, atol=1e-15)
    np.testing.assert_allclose(g, tg, rtol=10 * rtol, atol=1e-14 if rtol < 1e-10 else 10 * rtol)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@TF_EXAMPLES
@given(x=arrays(min_dims=1, max_dims=3, low=-6.0, high=6.0))
def test_gelu_against_tensorflow_float64(tf, approximate, x):
    """GELU's two formulas written in TensorFlow with float64 constants; its erfc, tanh and tape."""
    if approximate == "none":
        tf_gelu = lambda t: 0.5 * t * tf.math.erfc(-t / math.sqrt(2))  # noqa: E731
    else:
        tf_gelu = lambda t: 0.5 * t * (1 + tf.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))  # noqa: E731
    upstream = np.random.default_rng(34).standard_normal(x.shape)
    value, (g,) = our_grads(lambda t: tc.gelu(t, approximate), x, upstream=upstream)
    tf_value, (tg,) = tf_grads(tf, tf_gelu, x, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, tg, rtol=1e-11, atol=1e-13)


def test_erfc_is_cody_accurate_to_float64_round_off():
    z = np.concatenate([np.linspace(0, 26.5, 20001), np.geomspace(1e-300, 1.0, 300), [0.46875, 4.0]])
    ref = np.array([math.erfc(v) for v in z])
    np.testing.assert_allclose(erfc(z), ref, rtol=4e-15, atol=0)
    assert erfc(np.array([27.5, 40.0, 1e300, np.inf])).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert np.isnan(erfc(np.array([np.nan]))).all()
    assert erfc(np.array(0.25)).shape == () and erfc(np.zeros((2, 0))).shape == (2, 0)
    z32 = z[z < 9].astype(np.float32)  # beyond, erfc is below float32's smallest normal number
    got32 = erfc(z32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, [math.erfc(float(v)) for v in z32], rtol=2e-6, atol=1e-37)


def test_gelu_left_tail_keeps_full_relative_precision():
    """Phi(x) by erfc: where 1 + erf(x / √2) has no correct digit left, the result keeps all of them."""
    x = np.array([-8.0, -20.0, -37.0])
    expected = x * np.array([math.erfc(-v / math.sqrt(2)) for v in x]) / 2
    # rtol: the rounding of x / √2 (1e-16 relative) grows by 2 (x / √2)^2 = 1369 through exp(-(x / √2)^2)
    np.testing.assert_allclose(tc.gelu(x).data, expected, rtol=1e-12)
    t = Tensor(x, requires_grad=True)
    tc.gelu(t).backward(np.ones(3))
    dphi = np.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(t.grad, expected / x + x * dphi, rtol=1e-12)


def test_gelu_tanh_left_tail_is_a_sigmoid():
    """(1 + tanh(u)) / 2 = sigmoid(2u): no cancellation in the left tail."""
    x = np.array([-6.0, -10.0])
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    np.testing.assert_allclose(tc.gelu(x, approximate="tanh").data, x / (1 + np.exp(-2 * u)), rtol=1e-13)


def test_derivatives_at_zero_follow_pytorch():
    x = Tensor(np.zeros(1), requires_grad=True)
    for f, expected in [(lambda t: tc.leaky_relu(t, 0.3), 0.3), (lambda t: tc.elu(t, 2.0), 2.0), (tc.gelu, 0.5),
                        (lambda t: tc.gelu(t, "tanh"), 0.5), (tc.softplus, 0.5), (tc.silu, 0.5)]:
        x.grad = None
        f(x).sum().backward()
        assert x.grad.tolist() == [expected]


def test_softplus_is_x_beyond_the_threshold():
    x = np.array([2.4, 2.6, 10.0])
    t = Tensor(x, requires_grad=True)
    y = tc.softplus(t, beta=2.0, threshold=5.0)  # linear where 2x > 5
    y.backward(np.ones(3))
    assert y.data[0] == np.log1p(np.exp(4.8)) / 2 and y.data[1:].tolist() == [2.6, 10.0]
    np.testing.assert_allclose(t.grad, [1 / (1 + np.exp(-4.8)), 1, 1], rtol=1e-15)
    assert tc.softplus(np.array([50.0]), threshold=np.inf).data[0] == 50.0  # never linear: log1p(e^50) is 50.0


ALL = {
    "leaky_relu": tc.leaky_relu, "elu": tc.elu, "gelu": tc.gelu, "gelu(tanh)": lambda x: tc.gelu(x, "tanh"),
    "softplus": tc.softplus, "softplus(beta=3)": lambda x: tc.softplus(x, beta=3.0, threshold=np.inf),
    "silu": tc.silu,
}

# (value at -big, gradient at -big, value at +big, gradient at +big), up to float32 subnormals
LIMITS = {
    "leaky_relu": lambda b: (-0.01 * b, 0.01, b, 1), "elu": lambda b: (-1, 0, b, 1), "gelu": lambda b: (0, 0, b, 1),
    "gelu(tanh)": lambda b: (0, 0, b, 1), "softplus": lambda b: (0, 0, b, 1),
    "softplus(beta=3)": lambda b: (0, 0, b, 1), "silu": lambda b: (0, 0, b, 1),
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("big", [100.0, 1e30])
def test_finite_for_large_inputs_in_float32(name, big):
    if big == 1e30 and name == "softplus(beta=3)":
        big = 1e20  # beta x must stay a float32
    x = np.array([-big, -30.0, -1.0, 0.0, 1.0, 30.0, big], np.float32)
    t = Tensor(x, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = ALL[name](t)
        y.backward(np.ones(7, np.float32))
    assert y.dtype == t.grad.dtype == np.float32
    assert np.isfinite(y.data).all() and np.isfinite(t.grad).all()
    low, dlow, high, dhigh = LIMITS[name](np.float32(big))
    np.testing.assert_allclose([y.data[0], t.grad[0], y.data[-1], t.grad[-1]], [low, dlow, high, dhigh],
                               rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", ALL)
def test_float32_in_float32_out_and_close_to_float64(name):
    x = np.random.default_rng(32).standard_normal((3, 5)) * 4
    t32, t64 = Tensor(x.astype(np.float32), requires_grad=True), Tensor(x, requires_grad=True)
    g = np.random.default_rng(33).standard_normal((3, 5))
    y32, y64 = ALL[name](t32), ALL[name](t64)
    y32.backward(g.astype(np.float32))
    y64.backward(g)
    assert y32.dtype == t32.grad.dtype == np.float32 and y64.dtype == t64.grad.dtype == np.float64
    np.testing.assert_allclose(y32.data, y64.data, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(t32.grad, t64.grad, rtol=2e-6, atol=1e-6)


def test_graph_labels_name_the_op_and_its_non_default_arguments():
    x = Tensor(np.ones(3), requires_grad=True, name="x")
    outputs = {"leaky_relu": tc.leaky_relu(x), "elu": tc.elu(x), "gelu": tc.gelu(x, approximate="tanh"),
               "softplus": tc.softplus(x, beta=2.0), "silu": tc.silu(x)}
    for fn, y in outputs.items():
        assert y.op == OP_NAMES[fn]
    source = tc.draw_graph(outputs["gelu"] + outputs["softplus"] + tc.leaky_relu(x)).source
    assert "approximate=tanh" in source and "beta=2" in source and "negative_slope" not in source


def test_jit_replays_match_eager():
    def loss(x):
        return (tc.leaky_relu(x) + tc.elu(x) + tc.gelu(x) + tc.gelu(x, "tanh") + tc.softplus(x) + tc.silu(x)).sum()

    step = tc.jit(tc.value_and_grad(loss))
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((4, 5)).astype(np.float32)
        value, grad = step(x)
        eager_value, eager_grad = tc.value_and_grad(loss)(x)
        assert value == eager_value and np.array_equal(grad, eager_grad)
    assert step.traces == 1


def test_inputs_are_not_modified():
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    before = x.copy()
    for f in ALL.values():
        t = Tensor(x, requires_grad=True)
        f(t).backward(np.ones_like(x))
    np.testing.assert_array_equal(x, before)


def test_errors():
    with pytest.raises(TypeError, match="leaky_relu: negative_slope must be a number, got str '0.1'"):
        tc.leaky_relu(np.ones(2), "0.1")
    with pytest.raises(ValueError, match="leaky_relu: negative_slope must be a finite number, got nan"):
        tc.leaky_relu(np.ones(2), float("nan"))
    with pytest.raises(ValueError, match="elu: alpha must be a finite number, got inf"):
        tc.elu(np.ones(2), alpha=float("inf"))
    with pytest.raises(ValueError, match="gelu: approximate must be one of 'none', 'tanh', got 'erf'"):
        tc.gelu(np.ones(2), approximate="erf")
    with pytest.raises(ValueError, match="gelu: approximate must be one of 'none', 'tanh', got True"):
        tc.gelu(np.ones(2), approximate=True)
    with pytest.raises(ValueError, match="softplus: beta must be a finite number > 0, got 0"):
        tc.softplus(np.ones(2), beta=0)
    with pytest.raises(ValueError, match="softplus: beta must be a finite number > 0, got -1.0"):
        tc.softplus(np.ones(2), beta=-1.0)
    with pytest.raises(TypeError, match="softplus: threshold must be a number, got NoneType"):
        tc.softplus(np.ones(2), threshold=None)
    with pytest.raises(ValueError, match="softplus: threshold must be a number, not NaN"):
        tc.softplus(np.ones(2), threshold=float("nan"))
    with pytest.raises(TypeError, match="silu: x must be a Tensor or an np.ndarray, got str"):
        tc.silu("x")
    with pytest.raises(TypeError, match="gelu: x must have a floating dtype, got int64"):
        tc.gelu(Tensor([1, 2], dtype=np.int64))
    assert tc.elu([1, -1]).dtype == np.float32  # a list becomes float32, as everywhere
