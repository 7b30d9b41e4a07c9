"""The reference models (tinygrad_cnn.models): shapes and dtypes of params, state and logits, parameter
counts, batch-norm state in training and eval mode, and a small CNN's gradient checked end to end."""

import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn import models
from tinygrad_cnn.pytree import tree_leaves

# the input each model is built for: images (N, 1, 28, 28), Ising lattices (N, 1, L, L)
INPUT_SHAPE = {"cnn-bn": (1, 28, 28), "cnn": (1, 28, 28), "ising-cnn": (1, 8, 8)}
NUM_CLASSES = {"cnn-bn": 10, "cnn": 10, "ising-cnn": 2}


def n_params(params):
    return sum(leaf.size for leaf in tree_leaves(params))


def batch(name, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE[name])).astype(np.float32)


def test_every_model_is_tested():
    assert set(models.MODELS) == set(INPUT_SHAPE)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_init_and_logits(name):
    model = models.get(name)
    assert model.name == name and model.description
    params, state = model.init(np.random.default_rng(0))
    for leaf in tree_leaves(params) + tree_leaves(state):
        assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32
    logits = model.apply(params, batch(name), state=state, training=False)
    assert logits.shape == (3, NUM_CLASSES[name]) and logits.dtype == np.float32
    assert np.isfinite(logits.data).all()


def test_init_is_reproducible():
    a, _ = models.get("cnn-bn").init(np.random.default_rng(7))
    b, _ = models.get("cnn-bn").init(np.random.default_rng(7))
    for x, y in zip(tree_leaves(a), tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name, count", [("cnn-bn", 225_130), ("cnn", 225_034), ("ising-cnn", 1_282)])
def test_parameter_counts(name, count):
    # cnn-bn: conv1 32*9 + 2*32, conv2 64*32*9 + 2*64, fc1 1600*128 + 128, fc2 128*10 + 10
    # cnn:    the same with a conv bias (32, 64) instead of gamma and beta (2*32, 2*64)
    params, _ = models.get(name).init(np.random.default_rng(0))
    assert n_params(params) == count


def test_shapes_of_cnn_bn():
    params, state = models.get("cnn-bn").init(np.random.default_rng(0))
    assert params["conv1"]["w"].shape == (32, 1, 3, 3) and params["conv2"]["w"].shape == (64, 32, 3, 3)
    assert "b" not in params["conv1"]  # batch norm's beta does the bias's job
    assert params["fc1"]["w"].shape == (64 * 5 * 5, 128) and params["fc2"]["w"].shape == (128, 10)
    assert {k: v.shape for k, v in state["conv2"].items()} == {"mean": (64,), "var": (64,)}
    np.testing.assert_array_equal(state["conv1"]["var"], 1)


def test_init_options():
    params, _ = models.init_cnn(np.random.default_rng(0), image_size=12, channels=(4, 8), hidden=16, num_classes=3)
    assert params["fc1"]["w"].shape == (8 * 1 * 1, 16)  # 12 -> 10 -> 5 -> 3 -> 1
    x = np.zeros((2, 1, 12, 12), np.float32)
    state = {k: {"mean": np.zeros(c, np.float32), "var": np.ones(c, np.float32)}
             for k, c in (("conv1", 4), ("conv2", 8))}
    assert models.cnn(params, x, state=state).shape == (2, 3)


def test_cnn_accepts_grayscale_without_channel_axis():
    params, state = models.get("cnn").init(np.random.default_rng(0))
    x = batch("cnn")
    np.testing.assert_allclose(models.cnn(params, x[:, 0]).data, models.cnn(params, x).data, rtol=1e-6)


@pytest.mark.parametrize("name", ["cnn-bn", "cnn", "ising-cnn"])
def test_training_mode_logits_and_gradients(name):
    model = models.get(name)
    params, state = model.init(np.random.default_rng(0))
    y = np.array([0, 1, 1])

    def loss(p):
        return tc.cross_entropy(model.apply(p, batch(name), state=state, training=True), y)

    value, grads = tc.value_and_grad(loss)(params)
    assert np.isfinite(value)
    for g, p in zip(tree_leaves(grads), tree_leaves(params), strict=True):
        assert g.shape == p.shape and g.dtype == p.dtype and np.isfinite(g).all()


def test_batch_norm_state_in_place_in_training_only():
    model = models.get("cnn-bn")
    params, state = model.init(np.random.default_rng(0))
    arrays = {layer: dict(s) for layer, s in state.items()}  # the same array objects
    before = {layer: {k: v.copy() for k, v in s.items()} for layer, s in state.items()}
    x = batch("cnn-bn", n=4) * 3 + 2

    model.apply(params, x, state=state, training=False)
    for layer in state:
        for k in ("mean", "var"):
            np.testing.assert_array_equal(state[layer][k], before[layer][k])

    model.apply(params, x, state=state, training=True)
    for layer in state:
        for k in ("mean", "var"):
            assert state[layer][k] is arrays[layer][k]  # updated in place, not replaced
            assert not np.array_equal(state[layer][k], before[layer][k]), (layer, k)
            assert state[layer][k].dtype == np.float32
    # conv1 sees x directly (no bias): its mean moves 10% of the way to the batch mean of the conv output
    conv1 = tc.conv2d(x, params["conv1"]["w"]).data
    np.testing.assert_allclose(state["conv1"]["mean"], 0.1 * conv1.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)


def test_eval_mode_is_deterministic_and_per_sample():
    model = models.get("cnn-bn")
    params, state = model.init(np.random.default_rng(0))
    x = batch("cnn-bn", n=4)
    full = model.apply(params, x, state=state, training=False).data
    np.testing.assert_allclose(model.apply(params, x[:1], state=state).data, full[:1], rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
    model = models.get("cnn")
    params, _ = model.init(np.random.default_rng(0))
    x = batch("cnn")
    plain = model.apply(params, x).data
    np.testing.assert_array_equal(model.apply(params, x, dropout_rate=0.5).data, plain)  # eval: no dropout
    dropped = model.apply(params, x, training=True, dropout_rate=0.5, rng=np.random.default_rng(0)).data
    assert not np.allclose(dropped, plain)


def test_ising_cnn_with_batch_norm_and_translation_invariance():
    params, state = models.init_ising_cnn(np.random.default_rng(0), batch_norm=True)
    assert set(state) == {"conv1", "conv2"}
    x = np.sign(np.random.default_rng(1).standard_normal((2, 1, 8, 8))).astype(np.float32)
    logits = models.ising_cnn(params, x, state=state).data
    # circular padding + global average: shifting the lattice by 4 sites (one window of the second pooling,
    # in input pixels) only moves the feature maps around the torus, so the logits are unchanged
    shifted = models.ising_cnn(params, np.roll(x, (4, -4), axis=(2, 3)), state=state).data
    np.testing.assert_allclose(shifted, logits, rtol=1e-5, atol=1e-6)


def test_get_unknown_name():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*cnn-bn"):
        models.get("resnet")


def test_small_cnn_gradcheck_end_to_end():
    """conv -> batch_norm -> relu -> max_pool -> flatten -> linear -> cross_entropy, every input in float64."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 6, 6))
    w = rng.standard_normal((2, 1, 3, 3))
    gamma, beta = rng.uniform(0.5, 1.5, 2), rng.standard_normal(2) * 0.1
    fc_w, fc_b = rng.standard_normal((2 * 2 * 2, 3)), rng.standard_normal(3) * 0.1
    labels = np.array([0, 2])

    def f(x, w, gamma, beta, fc_w, fc_b, labels):
        h = tc.batch_norm(tc.conv2d(x, w), gamma, beta)          # (2, 2, 4, 4)
        h = tc.flatten(tc.max_pool2d(tc.relu(h), 2))              # (2, 2, 2, 2) -> (2, 8)
        return tc.cross_entropy(tc.linear(h, fc_w, fc_b), labels)

    assert tc.gradcheck(f, x, w, gamma, beta, fc_w, fc_b, labels)


def test_gradcheck_catches_a_wrong_model_gradient():
    class BadRelu(tc.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a > 0)
            return np.maximum(a, 0)

        @staticmethod
        def backward(ctx, g):
            (mask,) = ctx.saved_tensors
            return g * mask * 0.5  # wrong by a factor of 2

    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((2, 1, 3, 3))
    with pytest.raises(tc.GradcheckError, match=r"gradient of input [01] is wrong at index"):
        tc.gradcheck(lambda x, w: BadRelu.apply(tc.conv2d(x, w)).sum(), x, w)
