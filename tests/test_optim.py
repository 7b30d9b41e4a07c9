"""Optimizers: against their formulas by hand, convergence, purity, dtypes, pytrees, schedules, errors."""

import copy
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_cnn import optim
from tinygrad_cnn.pytree import tree_flatten, tree_leaves, tree_map


def assert_tree_equal(a, b):
    la, da = tree_flatten(a)
    lb, db = tree_flatten(b)
    assert da == db
    for x, y in zip(la, lb, strict=True):
        assert type(x) is type(y)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        else:
            assert x == y


def random_problem(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((3, 4)).astype(dtype)
    grads = [rng.standard_normal((3, 4)).astype(dtype) for _ in range(4)]
    return p, grads


# ------------------------------------------------------------------------------------ formulas by hand

@pytest.mark.parametrize(("mu", "nesterov", "wd"), [(0.0, False, 0.0), (0.0, False, 0.1), (0.9, False, 0.0),
                                                    (0.9, True, 0.0), (0.5, True, 0.01), (0.9, False, 0.05)])
def test_sgd_matches_pytorch_formulas(mu, nesterov, wd):
    p0, gs = random_problem()
    opt = optim.sgd(0.1, momentum=mu, nesterov=nesterov, weight_decay=wd)
    params, state = {"w": p0}, opt.init({"w": p0})
    p, v = p0.copy(), np.zeros_like(p0)
    for g in gs:
        params, state = opt.update(params, {"w": g}, state)
        d = g + wd * p
        if mu:
            v = mu * v + d
            d = d + mu * v if nesterov else v
        p = p - 0.1 * d
        np.testing.assert_allclose(params["w"], p, rtol=1e-12, atol=1e-12)
    assert state["step"] == len(gs)
    assert (state["velocity"] is None) == (mu == 0)


def test_sgd_first_momentum_step_is_plain_sgd():
    p0, (g, *_) = random_problem()
    a, _ = optim.sgd(0.1, momentum=0.9).update(p0, g, optim.sgd(0.1, momentum=0.9).init(p0))
    np.testing.assert_allclose(a, p0 - 0.1 * g)


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize(("b1", "b2", "eps"), [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3), (0.0, 0.0, 1e-8)])
def test_adam_matches_formulas(b1, b2, eps, wd):
    p0, gs = random_problem(1)
    opt = optim.adam(0.01, b1=b1, b2=b2, eps=eps, weight_decay=wd)
    params, state = [p0], opt.init([p0])
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(gs, start=1):
        params, state = opt.update(params, [g], state)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - 0.01 * wd * p - 0.01 * mhat / (np.sqrt(vhat) + eps)  # decoupled: wd not in m or v
        np.testing.assert_allclose(params[0], p, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state["m"][0], m, rtol=1e-12)
        np.testing.assert_allclose(state["v"][0], v, rtol=1e-12)
    assert state["step"] == len(gs)


def test_adam_first_step_is_lr_times_sign():
    """Bias correction makes mhat = g and vhat = g^2 at t = 1, so the step is lr * g / (|g| + eps)."""
    g = np.array([3.0, -1e-3, 20.0, -5.0])
    p, _ = optim.adam(0.1).update(np.zeros(4), g, optim.adam(0.1).init(np.zeros(4)))
    np.testing.assert_allclose(p, -0.1 * np.sign(g), rtol=1e-4)


def test_adam_decay_is_decoupled_from_gradient():
    """With a zero gradient Adam's moments stay 0 and only the decay acts: p <- (1 - lr*wd) p."""
    p = {"w": np.full(3, 2.0)}
    opt = optim.adam(0.1, weight_decay=0.5)
    state = opt.init(p)
    for _ in range(3):
        p, state = opt.update(p, {"w": np.zeros(3)}, state)
    np.testing.assert_allclose(p["w"], 2.0 * 0.95**3)
    assert not state["m"]["w"].any() and not state["v"]["w"].any()


# ------------------------------------------------------------------------------------------ convergence

@pytest.mark.parametrize("opt", [optim.sgd(0.1), optim.sgd(0.05, momentum=0.9), optim.sgd(0.05, 0.9, nesterov=True),
                                 optim.adam(0.05), optim.adam(optim.cosine_decay(0.1, 800, 1e-3))],
                         ids=["sgd", "momentum", "nesterov", "adam", "adam-cosine"])
def test_minimises_quadratic(opt):
    """f(p) = 0.5 * sum(a * (p - c)^2), gradient a * (p - c), minimum at c."""
    rng = np.random.default_rng(0)
    a = {"x": rng.uniform(0.5, 2.0, (5,)), "y": [rng.uniform(0.5, 2.0, (2, 3))]}
    c = tree_map(lambda t: rng.standard_normal(t.shape), a)
    params = tree_map(np.zeros_like, a)
    state = opt.init(params)
    for _ in range(800):
        grads = tree_map(lambda ai, p, ci: ai * (p - ci), a, params, c)
        params, state = opt.update(params, grads, state)
    for p, ci in zip(tree_leaves(params), tree_leaves(c), strict=True):
        np.testing.assert_allclose(p, ci, atol=1e-3)


# --------------------------------------------------------------------------------- purity and pytrees

def nested(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {"conv": {"w": rng.standard_normal((2, 1, 3, 3)).astype(dtype), "b": np.zeros(2, dtype)},
            "layers": [rng.standard_normal((4, 3)).astype(dtype), (rng.standard_normal(3).astype(dtype),)],
            "frozen": None}


ALL = [optim.sgd(0.1), optim.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
       optim.adam(0.1, weight_decay=0.1), optim.adam(optim.step_decay(0.1, 2))]


@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_update_is_pure(opt):
    params, grads = nested(seed=0), nested(seed=1)
    state = opt.init(params)
    params, state = opt.update(params, grads, state)  # a state with non-zero moments
    before = copy.deepcopy((params, grads, state))
    new_params, new_state = opt.update(params, grads, state)
    assert_tree_equal((params, grads, state), before)
    olds = [x for x in tree_leaves((params, grads, state)) if isinstance(x, np.ndarray)]
    for x in tree_leaves((new_params, new_state)):
        assert not isinstance(x, np.ndarray) or not any(np.shares_memory(x, o) for o in olds)
    assert new_state["step"] == state["step"] + 1


@pytest.mark.parametrize("opt", ALL, ids=repr)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_and_structure_preserved(opt, dtype):
    params = nested(dtype)
    state = opt.init(params)
    for seed in range(3):
        params, state = opt.update(params, nested(dtype, seed), state)
    _, treedef = tree_flatten(nested(dtype))
    assert tree_flatten(params)[1] == treedef and params["frozen"] is None and isinstance(params["layers"][1], tuple)
    assert all(p.dtype == dtype for p in tree_leaves(params))
    assert all(np.isfinite(p).all() for p in tree_leaves(params))
    moments = [state["velocity"]] if "velocity" in state else [state["m"], state["v"]]
    moment_dtype = np.float32 if dtype == np.float16 and "m" in state else dtype  # Adam: float16 -> float32
    assert all(m.dtype == moment_dtype for m in tree_leaves(moments))


def test_float32_stays_float32_with_numpy_float64_schedule_and_float64_grads():
    """np.float64 scalars would upcast float32 arrays under NumPy's promotion rules; lr must be cast."""
    opt = optim.adam(lambda step: np.float64(1e-3), weight_decay=np.float64(0.1))
    p = {"w": np.ones(4, np.float32)}
    p, state = opt.update(p, {"w": np.ones(4, np.float64)}, opt.init(p))
    assert p["w"].dtype == np.float32 and state["m"]["w"].dtype == np.float32


def test_state_step_may_be_a_numpy_integer():
    """A state restored from a checkpoint may hold the step as a 0-d array."""
    opt = optim.adam(optim.step_decay(0.1, 1, 0.5))
    p = np.ones(2)
    state = opt.init(p)
    state["step"] = np.array(3)
    _, new_state = opt.update(p, np.ones(2), state)
    assert new_state["step"] == 4


def test_empty_params():
    for opt in ALL:
        assert opt.update({}, {}, opt.init({}))[0] == {}


@st.composite
def param_trees(draw, depth=2):
    shape = hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)
    leaf = hnp.arrays(st.sampled_from([np.float32, np.float64]), shape,
                      elements=st.floats(-10, 10, width=16))
    tree = st.recursive(leaf, lambda sub: st.lists(sub, max_size=3) | st.dictionaries(st.text("abc", max_size=2), sub,
                                                                                      max_size=3)
                        | st.tuples(sub, sub), max_leaves=6)
    return draw(tree)


@given(param_trees(), st.floats(1e-3, 1.0))
def test_plain_sgd_on_random_trees(params, lr):
    grads = tree_map(lambda p: np.ones_like(p), params)
    opt = optim.sgd(lr)
    new, _ = opt.update(params, grads, opt.init(params))
    assert tree_flatten(new)[1] == tree_flatten(params)[1]
    for p, q in zip(tree_leaves(params), tree_leaves(new), strict=True):
        assert q.dtype == p.dtype and q.shape == p.shape
        np.testing.assert_array_equal(q, p - p.dtype.type(lr) * np.ones_like(p))


@given(param_trees())
def test_adam_first_step_on_random_trees(params):
    grads = tree_map(lambda p: np.where(np.arange(p.size).reshape(p.shape) % 2, 2.0, -0.5).astype(p.dtype), params)
    opt = optim.adam(0.01)
    new, state = opt.update(params, grads, opt.init(params))
    for p, g, q in zip(tree_leaves(params), tree_leaves(grads), tree_leaves(new), strict=True):
        assert q.dtype == p.dtype
        np.testing.assert_allclose(q - p, -0.01 * np.sign(g), rtol=1e-2, atol=1e-4)


# -------------------------------------------------------------------------------------------- schedules

def test_step_decay():
    s = optim.step_decay(1.0, 3, gamma=0.5)
    assert [s(i) for i in range(7)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_cosine_decay():
    s = optim.cosine_decay(2.0, 10, final_lr=0.5)
    assert s(0) == 2.0 and s(10) == pytest.approx(0.5) and s(50) == pytest.approx(0.5)
    assert s(5) == pytest.approx(1.25)
    assert s(3) == pytest.approx(0.5 + 1.5 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    values = [s(i) for i in range(12)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_warmup_cosine():
    s = optim.warmup_cosine(1.0, 4, 8)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == 1.0 and s(6) == pytest.approx(0.5) and s(8) == pytest.approx(0.0) and s(100) == pytest.approx(0.0)
    assert optim.warmup_cosine(1.0, 0, 2)(0) == 1.0


def test_schedule_is_called_with_the_update_count():
    seen = []
    opt = optim.sgd(lambda step: seen.append(step) or 0.1)
    p, state = np.ones(1), opt.init(np.ones(1))
    for _ in range(3):
        p, state = opt.update(p, np.ones(1), state)
    assert seen == [0, 1, 2]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", None])
def test_bad_schedule_value(bad):
    opt = optim.sgd(lambda step: bad)
    with pytest.raises(ValueError, match="schedule returned"):
        opt.update(np.ones(1), np.ones(1), opt.init(np.ones(1)))


# ----------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize(("make", "err", "match"), [
    (lambda: optim.sgd(0.0), ValueError, "lr"),
    (lambda: optim.sgd(-1.0), ValueError, "lr"),
    (lambda: optim.sgd(float("inf")), ValueError, "lr"),
    (lambda: optim.sgd("0.1"), TypeError, "lr"),
    (lambda: optim.sgd(True), TypeError, "lr"),
    (lambda: optim.sgd(0.1, momentum=-0.5), ValueError, "momentum must be >= 0, got -0.5"),
    (lambda: optim.sgd(0.1, nesterov=True), ValueError, "nesterov=True requires momentum > 0"),
    (lambda: optim.sgd(0.1, weight_decay=-1), ValueError, "weight_decay"),
    (lambda: optim.adam(-1e-3), ValueError, "lr"),
    (lambda: optim.adam(1e-3, b1=1.0), ValueError, r"b1 must be in \[0, 1\), got 1.0"),
    (lambda: optim.adam(1e-3, b1=-0.1), ValueError, "b1"),
    (lambda: optim.adam(1e-3, b2=1.5), ValueError, "b2"),
    (lambda: optim.adam(1e-3, eps=0.0), ValueError, "eps must be > 0"),
    (lambda: optim.adam(1e-3, weight_decay=float("nan")), ValueError, "weight_decay"),
    (lambda: optim.step_decay(0.1, 0), ValueError, "step_size"),
    (lambda: optim.step_decay(0.1, 2.5), TypeError, "step_size"),
    (lambda: optim.cosine_decay(0.1, 0), ValueError, "total_steps"),
    (lambda: optim.cosine_decay(0.1, 10, final_lr=-1), ValueError, "final_lr"),
    (lambda: optim.warmup_cosine(0.1, 5, 5), ValueError, "total_steps"),
])
def test_invalid_hyperparameters(make, err, match):
    with pytest.raises(err, match=match):
        make()


@pytest.mark.parametrize(("grads", "match"), [
    ({"a": np.ones(3)}, r"missing from grads: \['b'\]"),
    ({"a": np.ones(3), "b": [np.ones((2, 2))], "c": np.ones(1)}, r"unexpected: \['c'\]"),
    ({"a": np.ones(4), "b": [np.ones((2, 2))]}, r"grads\['a'\] has shape \(4,\) but params\['a'\] has shape \(3,\)"),
    ({"a": np.ones(3), "b": (np.ones((2, 2)),)}, r"grads\['b'\] is a tuple but params\['b'\] is a list"),
    ({"a": np.ones(3), "b": [np.ones((2, 2)), np.ones(1)]}, r"grads\['b'\] has 2 items"),
    ({"a": np.ones(3), "b": [None]}, r"grads\['b'\]\[0\] is None but params\['b'\]\[0\] is an array"),
    ([np.ones(3)], "grads is a list but params is a dict"),
])
@pytest.mark.parametrize("opt", [optim.sgd(0.1), optim.adam(0.1)], ids=["sgd", "adam"])
def test_mismatched_grads(opt, grads, match):
    params = {"a": np.ones(3), "b": [np.ones((2, 2))]}
    with pytest.raises(ValueError, match=match):
        opt.update(params, grads, opt.init(params))


def test_integer_params_rejected():
    with pytest.raises(TypeError, match=r"params\['n'\] has dtype int64"):
        optim.adam(0.1).init({"n": np.arange(3)})


def test_repr_shows_hyperparameters():
    assert repr(optim.sgd(0.1, momentum=0.9)) == "sgd(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0)"
    assert "b2=0.999" in repr(optim.adam(1e-3))
