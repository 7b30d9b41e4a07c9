"""value_and_grad / grad over pytrees, and gradcheck itself."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.testing import arrays


def quadratic(params, x):
    """sum over layers of (x @ w + b)^2: grads are known in closed form."""
    total = 0
    for layer in params["layers"]:
        total = total + ((tc.matmul(x, layer["w"]) + layer["b"]) ** 2).sum()
    return total * params["scale"][0]


def make_params(dtype):
    rng = np.random.default_rng(0)
    return {"layers": [{"w": rng.standard_normal((3, 2)).astype(dtype), "b": np.zeros(2, dtype)},
                       {"w": rng.standard_normal((3, 2)).astype(dtype), "b": np.ones(2, dtype)}],
            "scale": (np.array([0.5], dtype),)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_and_grad_mirrors_nested_structure_and_dtype(dtype):
    params, x = make_params(dtype), np.ones((4, 3), dtype)
    value, grads = tc.value_and_grad(quadratic)(params, x)
    assert isinstance(value, float)
    assert isinstance(grads["layers"], list) and isinstance(grads["scale"], tuple)
    for layer, g in zip(params["layers"], grads["layers"]):
        assert set(g) == {"w", "b"}
        assert g["w"].shape == layer["w"].shape and g["w"].dtype == dtype and g["b"].dtype == dtype
        z = x @ layer["w"] + layer["b"]
        np.testing.assert_allclose(g["w"], 2 * 0.5 * x.T @ z, rtol=1e-5)
        np.testing.assert_allclose(g["b"], 2 * 0.5 * z.sum(0), rtol=1e-5)
    assert isinstance(grads["scale"][0], np.ndarray)


def test_argnums_tuple_has_aux_and_grad():
    f = lambda a, b: ((a * b).sum(), {"product": a * b})  # noqa: E731
    (value, aux), (ga, gb) = tc.value_and_grad(f, argnums=(0, 1), has_aux=True)(np.array([2.0]), np.array([3.0]))
    assert value == 6.0 and isinstance(aux["product"], Tensor)
    assert ga[0] == 3.0 and gb[0] == 2.0
    assert tc.grad(lambda a, b: (a * b).sum(), argnums=1)(np.array([2.0]), np.array([3.0]))[0] == 2.0
    assert tc.grad(lambda a, b: (a * b).sum(), argnums=-1)(np.array([2.0]), np.array([5.0]))[0] == 2.0


def test_leaves_the_value_does_not_use_get_zeros_and_inputs_are_untouched():
    params = {"used": np.array([1.0, 2.0]), "unused": np.array([7.0])}
    copy = {k: v.copy() for k, v in params.items()}
    grads = tc.grad(lambda p: (p["used"] ** 2).sum())(params)
    np.testing.assert_array_equal(grads["unused"], [0.0])
    for k in params:
        np.testing.assert_array_equal(params[k], copy[k])


def test_leaves_are_named_by_their_path():
    seen = {}

    def f(params):
        seen.update({t.name: t for t in (params["conv1"]["w"], params["head"][0])})
        return params["conv1"]["w"].sum() + params["head"][0].sum()

    tc.grad(f)({"conv1": {"w": np.ones(2)}, "head": [np.ones(1)]})
    assert set(seen) == {"conv1/w", "head/0"}


def test_tensor_leaves_and_bad_outputs():
    g = tc.grad(lambda t: (t * t).sum())(Tensor(np.array([3.0])))
    assert isinstance(g, np.ndarray) and g[0] == 6.0
    with pytest.raises(TypeError, match="scalar Tensor"):
        tc.value_and_grad(lambda t: t * 2)(np.ones(3))
    with pytest.raises(TypeError, match="floating point"):
        tc.grad(lambda t: t.sum())(np.arange(3))
    with pytest.raises(ValueError, match="argnums=2 is out of range"):
        tc.grad(lambda a: a.sum(), argnums=2)(np.ones(1))


@given(arrays(min_dims=1, max_dims=3))
def test_grad_matches_backward(x):
    f = lambda t: (t.tanh() * t).sum()  # noqa: E731
    t = Tensor(x, requires_grad=True)
    f(t).backward()
    np.testing.assert_array_equal(tc.grad(f)(x), t.grad)


class WrongSquare(Function):
    """y = x^2 with a deliberately wrong backward (x instead of 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x


def test_gradcheck_catches_a_wrong_custom_op_and_names_the_element():
    with pytest.raises(tc.GradcheckError, match=r"input 0 .* at index \(1,\): analytic -0.4.*numeric -0.8") as info:
        tc.gradcheck(lambda x: WrongSquare.apply(x).sum(), np.array([0.1, -0.4]))
    assert isinstance(info.value, AssertionError)


def test_gradcheck_projects_non_scalar_outputs_and_passes_labels_through():
    labels = np.array([1, 0])
    assert tc.gradcheck(lambda x, y: x[np.arange(2), y] * x, np.array([[0.5, 1.0], [2.0, -1.0]]), labels)


@given(x=arrays(min_dims=1, max_dims=2), scale=st.floats(1.5, 3.0))
def test_gradcheck_catches_any_scaled_gradient(x, scale):
    class Scaled(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return np.sin(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * np.cos(x) * scale

    if np.abs(np.cos(x)).max() > 0.1:
        with pytest.raises(tc.GradcheckError):
            tc.gradcheck(Scaled.apply, x)


@given(x=arrays(min_dims=1, max_dims=2, distinct=True, low=0.5, high=2.0, away_from=1.0))
def test_distinct_arrays_respect_bounds_and_kinks(x):
    assert x.min() >= 0.5 - 0.05 and x.max() <= 2.0 + 0.05
    assert np.all(np.abs(x - 1.0) >= 0.05 - 1e-12)
    flat = np.sort(x.reshape(-1))
    assert np.all(np.diff(flat) > 0)


def test_gradcheck_of_a_constant_output_is_zero_gradient():
    assert tc.gradcheck(lambda x: Tensor(np.ones(2)) * 2.0, np.array([1.0, 2.0]))


def test_gradcheck_perturbs_a_channels_last_input_too():
    """A non-C-contiguous input (conv2d's channels-last output, a transpose) used to be copied by
    reshape(-1), so the perturbations never reached it and the numeric gradient was 0."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).transpose(0, 3, 1, 2)  # (2, 5, 3, 4), NHWC memory
    assert not x.flags.c_contiguous
    assert tc.gradcheck(lambda t: (t * t).sum(), x)
    with pytest.raises(tc.GradcheckError):  # and a wrong gradient is still caught on such input
        tc.gradcheck(lambda t: WrongSquare.apply(t).sum(), x)
