"""Optimizers and gradient clipping: against their formulas by hand (PyTorch's, transcribed to NumPy) and
TensorFlow where Keras computes the same thing, convergence, checkpoints, purity, dtypes, pytrees,
schedules, properties, errors. PyTorch itself is never imported here."""

import copy
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_cnn import Tensor, io, optim
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


def torch_rmsprop_step(param, grad, st, *, lr, alpha, eps, momentum, centered, weight_decay):
    """One step of ``torch.optim.RMSprop`` on one array (its ``_single_tensor_rmsprop``, line by line in
    NumPy; PyTorch's in-place calls in the comments). ``st`` holds ``square_avg`` and, when used,
    ``grad_avg`` and ``momentum_buffer``, in the compute dtype (float32 for float16 params, as ours)."""
    grad = grad.astype(st["square_avg"].dtype)
    if weight_decay != 0:
        grad = grad + weight_decay * param                                  # grad.add(param, alpha=wd)
    sq = st["square_avg"] = st["square_avg"] * alpha + grad * grad * (1 - alpha)  # mul_(a).addcmul_(g, g, 1-a)
    if centered:
        ga = st["grad_avg"] = st["grad_avg"] + (1 - alpha) * (grad - st["grad_avg"])  # lerp_(grad, 1 - alpha)
        avg = np.sqrt(sq - ga * ga) + eps                                  # addcmul(ga, ga, -1).sqrt_().add_(eps)
    else:
        avg = np.sqrt(sq) + eps                                            # sqrt().add_(eps)
    if momentum > 0:
        buf = st["momentum_buffer"] = st["momentum_buffer"] * momentum + grad / avg  # mul_(mu).addcdiv_(g, avg)
        return (param - lr * buf).astype(param.dtype)                      # param.add_(buf, alpha=-lr)
    return (param - lr * grad / avg).astype(param.dtype)                   # param.addcdiv_(grad, avg, value=-lr)


RMSPROP_CASES = [  # (decay, eps, momentum, centered, weight_decay)
    (0.99, 1e-8, 0.0, False, 0.0), (0.9, 1e-8, 0.0, False, 0.05), (0.9, 1e-3, 0.9, False, 0.0),
    (0.9, 1e-8, 0.0, True, 0.0), (0.5, 1e-6, 0.5, True, 0.1), (0.0, 1e-8, 0.9, False, 0.0),
]


@pytest.mark.parametrize("lr", [0.01, optim.step_decay(0.02, 2, 0.5)], ids=["constant", "step_decay"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(("decay", "eps", "mu", "centered", "wd"), RMSPROP_CASES)
def test_rmsprop_matches_pytorch_formulas_on_trees(decay, eps, mu, centered, wd, dtype, lr):
    """Five steps on a nested pytree (dicts, lists, a tuple, None), every leaf and moment checked."""
    opt = optim.rmsprop(lr, decay=decay, eps=eps, momentum=mu, centered=centered, weight_decay=wd)
    params = nested(dtype)
    state = opt.init(params)
    ref = tree_leaves(params)
    compute = np.float32 if dtype == np.float16 else dtype
    ref_states = [{k: np.zeros(p.shape, compute) for k in ("square_avg", "grad_avg", "momentum_buffer")} for p in ref]
    rtol, atol = {np.float16: (2e-3, 2e-3), np.float32: (1e-5, 1e-6), np.float64: (1e-11, 1e-13)}[dtype]
    for step in range(5):
        grads = nested(dtype, seed=step + 1)
        params, state = opt.update(params, grads, state)
        lr_t = lr(step) if callable(lr) else lr
        ref = [torch_rmsprop_step(p, g, st, lr=lr_t, alpha=decay, eps=eps, momentum=mu, centered=centered,
                                  weight_decay=wd)
               for p, g, st in zip(ref, tree_leaves(grads), ref_states, strict=True)]
        for p, r in zip(tree_leaves(params), ref, strict=True):
            assert p.dtype == dtype
            np.testing.assert_allclose(p.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)
    for key, ours in (("square_avg", state["v"]), ("grad_avg", state["g_avg"]), ("momentum_buffer", state["buf"])):
        used = {"grad_avg": centered, "momentum_buffer": mu > 0}.get(key, True)
        assert (ours is None) == (not used)
        if used:
            for o, st in zip(tree_leaves(ours), ref_states, strict=True):
                assert o.dtype == compute
                np.testing.assert_allclose(o, st[key], rtol=10 * rtol, atol=atol)
    assert state["step"] == 5


def test_rmsprop_first_step_without_bias_correction():
    """v = (1 - a) g^2 after one step, so the step is lr * g / (sqrt(1 - a) |g| + eps): 10 lr for a = 0.99."""
    g = np.array([3.0, -1e-3, 20.0, 0.0])
    opt = optim.rmsprop(0.01)
    p, state = opt.update(np.zeros(4), g, opt.init(np.zeros(4)))
    np.testing.assert_allclose(p, -0.01 * g / (0.1 * np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(p[:3], -0.1 * np.sign(g[:3]), rtol=1e-4)
    np.testing.assert_allclose(state["v"], 0.01 * g**2)


def test_rmsprop_weight_decay_is_l2_in_the_gradient():
    """With a zero gradient the decay term wd * p is the gradient: it enters v (unlike Adam's decoupled decay)."""
    opt = optim.rmsprop(0.1, decay=0.0, weight_decay=0.5)
    p, state = opt.update(np.full(3, 2.0), np.zeros(3), opt.init(np.full(3, 2.0)))
    np.testing.assert_allclose(state["v"], np.full(3, 1.0))          # (0.5 * 2)^2
    np.testing.assert_allclose(p, np.full(3, 2.0 - 0.1 / (1 + 1e-8)))  # lr * g / (|g| + eps), g = 1


def test_rmsprop_centered_clamps_rounding_below_zero():
    """A constant gradient makes v and g_avg^2 equal up to rounding, and in float32 v - g_avg^2 goes
    slightly negative in many entries, where PyTorch's sqrt gives NaN; here it is clamped to 0 (the
    step is then lr * g / eps, as the true tiny variance gives)."""
    g = np.random.default_rng(0).standard_normal(2000).astype(np.float32)
    opt = optim.rmsprop(1e-12, decay=0.9, centered=True)
    p, state, negative = np.zeros(2000, np.float32), opt.init(np.zeros(2000, np.float32)), 0
    for _ in range(300):
        p, state = opt.update(p, g, state)
        negative += int((state["v"] - state["g_avg"] ** 2 < 0).sum())
        assert np.isfinite(p).all()
    assert negative > 0  # the clamp was needed


def random_like(tree, seed):
    """Standard normal leaves shaped like ``tree``'s (never exactly 0, unlike ``nested``'s zero biases)."""
    rng = np.random.default_rng(seed)
    return tree_map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), tree)


def keras_rmsprop(tf, leaves, grad_steps, lr, **kw):
    """Keras's RMSprop on tf.Variables holding ``leaves``; returns the leaves after each step."""
    variables = [tf.Variable(x) for x in leaves]
    opt = tf.keras.optimizers.RMSprop(learning_rate=lr, **kw)
    out = []
    for grads in grad_steps:
        opt.apply_gradients([(tf.constant(g), v) for g, v in zip(grads, variables, strict=True)])
        out.append([v.numpy() for v in variables])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("decay", "mu", "centered"), [(0.9, 0.0, False), (0.99, 0.9, False), (0.9, 0.0, True),
                                                       (0.5, 0.5, True)])
def test_rmsprop_matches_tensorflow(tf, decay, mu, centered, dtype):
    """Keras's RMSprop computes PyTorch's rule except in three places, so it is compared where they agree:
    it adds eps inside the sqrt (lr * g / sqrt(v + eps)), so eps is made negligible on both sides (1e-30
    after the sqrt here, 1e-60 under it there, against sqrt(v) ~ 0.1); its weight decay is decoupled
    (p -= lr * wd * p, not L2), so wd = 0; and its momentum buffer accumulates lr * g / d where ours
    accumulates g / d and is multiplied by lr, equal for a constant lr only. The NumPy transcription of
    PyTorch above covers eps, weight decay and schedules with momentum. Keras keeps lr in float32, so lr
    is a power of 2 (0.01 would differ by 2e-8 in float64); gradients are never 0 (Keras: 0 / sqrt(0))."""
    params = nested(dtype)
    grad_steps = [random_like(params, seed) for seed in range(1, 6)]
    ours = optim.rmsprop(2**-7, decay=decay, eps=1e-30, momentum=mu, centered=centered)
    theirs = keras_rmsprop(tf, tree_leaves(params), [tree_leaves(g) for g in grad_steps], 2**-7, rho=decay,
                           momentum=mu, centered=centered, epsilon=1e-60)
    state = ours.init(params)
    rtol = 1e-6 if dtype == np.float32 else 1e-12  # bit-identical with TF 2.21 / Keras 3.15
    for grads, expected in zip(grad_steps, theirs, strict=True):
        params, state = ours.update(params, grads, state)
        for p, e in zip(tree_leaves(params), expected, strict=True):
            assert p.dtype == e.dtype == dtype
            np.testing.assert_allclose(p, e, rtol=rtol, atol=rtol * 1e-2)


def test_rmsprop_schedule_matches_tensorflow(tf):
    """Without momentum a schedule means the same in both: Keras calls it with its iteration count,
    which starts at 0 as our ``step`` does."""
    import keras

    class Halving(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.02 * 0.5 ** tf.cast(step, tf.float32)

    params = nested(np.float32)
    grad_steps = [random_like(params, seed) for seed in range(1, 5)]
    theirs = keras_rmsprop(tf, tree_leaves(params), [tree_leaves(g) for g in grad_steps], Halving(), rho=0.9,
                           epsilon=1e-60)
    opt = optim.rmsprop(lambda step: 0.02 * 0.5**step, decay=0.9, eps=1e-30)
    state = opt.init(params)
    for grads, expected in zip(grad_steps, theirs, strict=True):
        params, state = opt.update(params, grads, state)
        for p, e in zip(tree_leaves(params), expected, strict=True):
            np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------ convergence

@pytest.mark.parametrize("opt", [optim.sgd(0.1), optim.sgd(0.05, momentum=0.9), optim.sgd(0.05, 0.9, nesterov=True),
                                 optim.adam(0.05), optim.adam(optim.cosine_decay(0.1, 800, 1e-3)),
                                 optim.rmsprop(optim.cosine_decay(0.05, 800, 1e-4)),
                                 optim.rmsprop(optim.cosine_decay(0.01, 800, 1e-4), momentum=0.9, centered=True)],
                         ids=["sgd", "momentum", "nesterov", "adam", "adam-cosine", "rmsprop", "rmsprop-centered"])
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
       optim.adam(0.1, weight_decay=0.1), optim.adam(optim.step_decay(0.1, 2)), optim.rmsprop(0.01),
       optim.rmsprop(optim.step_decay(0.01, 2), momentum=0.9, centered=True, weight_decay=0.1)]


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
    moments = [state[k] for k in ("velocity", "m", "v", "g_avg", "buf") if state.get(k) is not None]
    moment_dtype = np.float32 if dtype == np.float16 and "v" in state else dtype  # Adam, RMSprop: float16 -> float32
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


@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_zero_dim_params_stay_arrays(opt):
    """NumPy turns 0-d array arithmetic into scalars; params and moments come back as 0-d arrays."""
    params = [np.array(1.5, np.float32)]
    state = opt.init(params)
    for _ in range(2):
        params, state = opt.update(params, [np.array(0.5, np.float32)], state)
    for x in tree_leaves((params, state)):
        assert isinstance(x, int) or (type(x) is np.ndarray and x.shape == ())


@pytest.mark.parametrize("opt", [optim.sgd(optim.cosine_decay(0.1, 4), momentum=0.9), optim.adam(0.01),
                                 optim.rmsprop(0.01), optim.rmsprop(optim.step_decay(0.01, 1, 0.5), momentum=0.9,
                                                                    centered=True, weight_decay=0.01)], ids=repr)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_state_checkpoint_round_trip(tmp_path, opt, dtype):
    """Two steps, tc.io.save / load of params and state (None subtrees, int step, float32 moments of
    float16 params), two more steps: the same as four steps without the checkpoint, bit for bit."""
    params = nested(dtype)
    state = opt.init(params)
    for seed in (1, 2):
        params, state = opt.update(params, nested(dtype, seed), state)
    io.save(tmp_path / "ckpt.npz", {"params": params, "opt": state})
    restored = io.load(tmp_path / "ckpt.npz")
    assert_tree_equal(restored, {"params": params, "opt": state})
    p2, s2 = restored["params"], restored["opt"]
    for seed in (3, 4):
        params, state = opt.update(params, nested(dtype, seed), state)
        p2, s2 = opt.update(p2, nested(dtype, seed), s2)
    assert_tree_equal((p2, s2), (params, state))


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


def alternating(p, big=2.0, small=-0.5):
    return np.where(np.arange(p.size).reshape(p.shape) % 2, big, small).astype(p.dtype)


@given(param_trees(), st.floats(1e-4, 0.1))
def test_rmsprop_without_decay_steps_by_lr_times_sign(params, lr):
    """decay = 0: v = g^2 each step, so every step (not just the first) is lr * g / (|g| + eps), about
    lr * sign(g) whatever the gradient's size, and signs may flip from step to step."""
    opt = optim.rmsprop(lr, decay=0.0)
    state = opt.init(params)
    for big, small in ((2.0, -0.5), (-300.0, 0.01), (1e-3, 7.0)):
        grads = tree_map(lambda p, b=big, s=small: alternating(p, b, s), params)
        new, state = opt.update(params, grads, state)
        for p, g, q in zip(tree_leaves(params), tree_leaves(grads), tree_leaves(new), strict=True):
            assert q.dtype == p.dtype and q.shape == p.shape
            expected = p.astype(np.float64) - lr * np.sign(g)
            np.testing.assert_allclose(q, expected, rtol=1e-5, atol=lr * 1e-3 + 1e-6 * np.abs(p).max(initial=0))
        params = new


@given(param_trees(), st.floats(1e-2, 1e2), st.booleans(), st.sampled_from([0.0, 0.9]))
def test_rmsprop_is_invariant_to_gradient_scale(params, c, centered, mu):
    """With eps negligible, g / sqrt(mean g^2) does not change when every gradient is multiplied by c > 0."""
    opt = optim.rmsprop(0.01, decay=0.9, eps=1e-30, momentum=mu, centered=centered)
    a = b = params
    sa, sb = opt.init(params), opt.init(params)
    for k in range(3):
        grads = tree_map(lambda p, k=k: np.cos(np.arange(p.size, dtype=p.dtype).reshape(p.shape) + 2.0 * k + p), params)
        a, sa = opt.update(a, grads, sa)
        b, sb = opt.update(b, tree_map(lambda g: g * g.dtype.type(c), grads), sb)
    for x, y in zip(tree_leaves(a), tree_leaves(b), strict=True):
        tol = 1e-3 if x.dtype == np.float32 else 1e-9  # x ~ 10, steps ~ 0.01: relative error of the step ~1e-5
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


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


# ------------------------------------------------------------------------------------ gradient clipping

def global_norm(tree) -> float:
    return math.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in tree_leaves(tree)))


def test_clip_grad_norm_scales_by_pytorchs_coefficient():
    grads = {"w": np.array([[3.0, 0.0], [0.0, 4.0]], np.float32), "b": [np.array([12.0], np.float32)], "none": None}
    clipped, norm = optim.clip_grad_norm(grads, 6.5)
    assert type(norm) is float and norm == 13.0
    coef = 6.5 / (13.0 + 1e-6)                        # PyTorch's clip_coef, clamped to 1
    np.testing.assert_array_equal(clipped["w"], grads["w"] * np.float32(coef))
    np.testing.assert_array_equal(clipped["b"][0], grads["b"][0] * np.float32(coef))
    assert clipped["none"] is None and clipped["w"].dtype == clipped["b"][0].dtype == np.float32
    assert global_norm(clipped) == pytest.approx(6.5, rel=1e-6) and global_norm(clipped) < 6.5


def test_clip_grad_norm_below_the_limit_copies():
    grads = [np.array([0.3, -0.4]), np.zeros((2, 0))]
    clipped, norm = optim.clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(0.5)
    np.testing.assert_array_equal(clipped[0], grads[0])
    assert clipped[1].shape == (2, 0)
    assert not np.shares_memory(clipped[0], grads[0])
    assert optim.clip_grad_norm({}, 1.0) == ({}, 0.0)
    zero, norm = optim.clip_grad_norm([np.zeros(3, np.float16)], 1.0)  # 0 / 1e-6: the coefficient is 1, no NaN
    assert norm == 0.0 and zero[0].dtype == np.float16 and not zero[0].any()


def test_clip_grad_norm_computes_in_float64():
    """70,000 float16 ones: the sum of squares (70,000) is beyond float16's 65,504."""
    clipped, norm = optim.clip_grad_norm({"g": np.ones(70_000, np.float16)}, 1.0)
    assert norm == pytest.approx(math.sqrt(70_000), rel=1e-12)
    assert clipped["g"].dtype == np.float16
    np.testing.assert_allclose(clipped["g"], 1 / math.sqrt(70_000), rtol=1e-3)


def test_clip_grad_norm_survives_overflowing_squares():
    """float64 entries of 1e200: their squares overflow, the norm (1.4e200) does not."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is handled, not reported
        clipped, norm = optim.clip_grad_norm([np.array([1e200, -1e200]), np.array([1e-300])], 2.0)
    assert norm == pytest.approx(math.sqrt(2) * 1e200, rel=1e-14)
    np.testing.assert_allclose(clipped[0], [math.sqrt(2), -math.sqrt(2)], rtol=1e-12)


@pytest.mark.parametrize(("bad", "norm_is"), [(np.nan, math.isnan), (np.inf, math.isinf), (-np.inf, math.isinf)])
def test_clip_grad_norm_non_finite_returns_grads_unchanged(bad, norm_is):
    """A NaN/inf gradient makes the norm NaN/inf: the grads come back as unchanged copies (PyTorch would
    spread NaN everywhere or zero the finite entries) and the caller sees the norm."""
    grads = {"a": np.array([1.0, bad, 3.0], np.float32), "b": np.array([5.0], np.float32)}
    before = copy.deepcopy(grads)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from inf - inf or nan arithmetic
        clipped, norm = optim.clip_grad_norm(grads, 1.0)
    assert type(norm) is float and norm_is(norm)
    for k in grads:
        np.testing.assert_array_equal(clipped[k], before[k])
        np.testing.assert_array_equal(grads[k], before[k])
        assert clipped[k].dtype == np.float32 and not np.shares_memory(clipped[k], grads[k])


def test_clip_grad_norm_matches_tensorflow(tf):
    """tf.clip_by_global_norm scales by max_norm / max(norm, max_norm): PyTorch's coefficient without
    the 1e-6, so they agree to a relative 1e-6 / norm."""
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for max_norm in (0.5, 5.0, 50.0):
            leaves = [(rng.standard_normal(s) * 3).astype(dtype) for s in [(3, 4), (5,), (2, 1, 3, 3)]]
            clipped, norm = optim.clip_grad_norm(leaves, max_norm)
            expected, tf_norm = tf.clip_by_global_norm([tf.constant(x) for x in leaves], max_norm)
            assert norm == pytest.approx(float(tf_norm), rel=1e-6)
            for c, e in zip(clipped, expected, strict=True):
                np.testing.assert_allclose(c, e.numpy(), rtol=1e-6, atol=1e-7)


@given(param_trees(), st.floats(1e-3, 1e3))
def test_clip_grad_norm_properties(grads, max_norm):
    """Norm as computed in float64; clipped norm <= max_norm; one common factor in (0, 1] for every entry
    (directions kept); no clipping below the limit; structure, shapes and dtypes kept; inputs untouched."""
    before = copy.deepcopy(grads)
    clipped, norm = optim.clip_grad_norm(grads, max_norm)
    assert_tree_equal(grads, before)
    assert norm == pytest.approx(global_norm(grads), rel=1e-12, abs=1e-300)
    assert global_norm(clipped) <= max_norm * (1 + 1e-6)
    assert tree_flatten(clipped)[1] == tree_flatten(grads)[1]
    coef = min(1.0, max_norm / (norm + 1e-6))
    for g, c in zip(tree_leaves(grads), tree_leaves(clipped), strict=True):
        assert type(c) is np.ndarray and c.dtype == g.dtype and c.shape == g.shape and not np.shares_memory(c, g)
        np.testing.assert_allclose(c, g.astype(np.float64) * coef, rtol=1e-6, atol=0)
        if norm < max_norm - 1e-6:
            np.testing.assert_array_equal(c, g)


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
    (lambda: optim.rmsprop(0.0), ValueError, "rmsprop: lr"),
    (lambda: optim.rmsprop(1e-3, decay=1.0), ValueError, r"rmsprop: decay must be in \[0, 1\), got 1.0"),
    (lambda: optim.rmsprop(1e-3, decay=-0.5), ValueError, "decay"),
    (lambda: optim.rmsprop(1e-3, decay="0.9"), TypeError, "decay must be a real number"),
    (lambda: optim.rmsprop(1e-3, eps=0.0), ValueError, "eps must be > 0"),
    (lambda: optim.rmsprop(1e-3, momentum=-0.1), ValueError, "momentum must be >= 0"),
    (lambda: optim.rmsprop(1e-3, weight_decay=float("inf")), ValueError, "weight_decay"),
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
@pytest.mark.parametrize("opt", [optim.sgd(0.1), optim.adam(0.1), optim.rmsprop(0.1, momentum=0.9, centered=True)],
                         ids=["sgd", "adam", "rmsprop"])
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
    assert repr(optim.rmsprop(1e-3, centered=True)) == ("rmsprop(lr=0.001, decay=0.99, eps=1e-08, momentum=0.0, "
                                                        "centered=True, weight_decay=0.0)")


def test_rmsprop_state_of_another_configuration_is_refused():
    """A state without g_avg (or buf) given to a centered (or momentum) RMSprop names the missing part."""
    params = {"w": np.ones(2)}
    plain = optim.rmsprop(0.1).init(params)
    with pytest.raises(ValueError, match=r"state\['g_avg'\] is None but params is a dict"):
        optim.rmsprop(0.1, centered=True).update(params, params, plain)
    with pytest.raises(ValueError, match=r"state\['buf'\] is None but params is a dict"):
        optim.rmsprop(0.1, momentum=0.9).update(params, params, plain)


@pytest.mark.parametrize(("max_norm", "err", "match"), [
    (0.0, ValueError, r"clip_grad_norm: max_norm must be > 0, got 0.0"), (-1, ValueError, "max_norm"),
    (float("nan"), ValueError, "max_norm"), (float("inf"), ValueError, "max_norm"),
    ("1", TypeError, "max_norm must be a real number"), (None, TypeError, "max_norm"), (True, TypeError, "max_norm"),
])
def test_clip_grad_norm_bad_max_norm(max_norm, err, match):
    with pytest.raises(err, match=match):
        optim.clip_grad_norm([np.ones(2)], max_norm)


@pytest.mark.parametrize(("grads", "match"), [
    ({"a": [np.ones(2), 1.0]}, r"grads\['a'\]\[1\] must be a np.ndarray, got float"),
    ({"t": Tensor(np.ones(2))}, r"grads\['t'\] must be a np.ndarray, got Tensor"),
    ([np.float32(1.0)], r"grads\[0\] must be a np.ndarray, got float32"),
    ({"n": np.arange(3)}, r"grads\['n'\] has dtype int64; gradients must be floating point"),
    ({"c": np.ones(2, np.complex128)}, r"grads\['c'\] has dtype complex128"),
])
def test_clip_grad_norm_bad_leaves(grads, match):
    with pytest.raises(TypeError, match=match):
        optim.clip_grad_norm(grads, 1.0)



@pytest.mark.parametrize("opt", [optim.sgd(0.1, momentum=0.9), optim.adam(1e-3, weight_decay=1e-4),
                                 optim.rmsprop(1e-3, momentum=0.9, centered=True)], ids=repr)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_subnormal_moments_are_flushed_and_change_no_parameter(opt, dtype, monkeypatch):
    """A moment decaying under a zero gradient sticks in the subnormals (0.9 * 3 ulps rounds to 3 ulps),
    where x86 arithmetic is slow; flushed to 0, the parameters come out with the same bits."""
    rng = np.random.default_rng(0)
    p = {"w": (rng.standard_normal(64) + 2.0).astype(dtype)}
    g = {"w": np.where(np.arange(64) < 32, rng.standard_normal(64), 0.0).astype(dtype)}  # half of them dead
    _, state = opt.update(p, g, opt.init(p))
    names = [k for k in ("velocity", "m", "v", "g_avg", "buf") if state.get(k) is not None]
    for k in names:                      # the dead half's moments: 3 units of the last place, subnormal
        state[k]["w"][32:] = 3 * np.finfo(state[k]["w"].dtype).smallest_subnormal

    def subnormal(a):
        return (a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)

    new_p, new_state = opt.update(p, g, state)
    with monkeypatch.context() as m:
        m.setattr(optim, "_flushed", np.asarray)
        plain_p, plain_state = opt.update(p, g, state)
    assert new_p["w"].dtype == dtype and np.array_equal(new_p["w"], plain_p["w"])  # the same bits
    assert any(subnormal(plain_state[k]["w"]).any() for k in names)   # without the flush they stay
    for k in names:
        assert not subnormal(new_state[k]["w"]).any() and np.all(new_state[k]["w"][32:] == 0)
        kept = ~subnormal(plain_state[k]["w"])
        assert np.array_equal(new_state[k]["w"][kept], plain_state[k]["w"][kept])
