"""The reference models (tinygrad_cnn.models): shapes and dtypes of params, state and logits, parameter
counts, batch-norm state in training and eval mode, and a small CNN's gradient checked end to end; the
residual network's structure, its whole gradient against finite differences, training, tc.jit and the CLI."""

import re
import sys

import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn import models
from tinygrad_cnn.pytree import tree_flatten, tree_leaves, tree_map, tree_paths, tree_unflatten

# the input each model is built for: images (N, 1, 28, 28), Ising lattices (N, 1, L, L)
INPUT_SHAPE = {"cnn-bn": (1, 28, 28), "cnn": (1, 28, 28), "ising-cnn": (1, 8, 8), "resnet-small": (1, 28, 28)}
NUM_CLASSES = {"cnn-bn": 10, "cnn": 10, "ising-cnn": 2, "resnet-small": 10}


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


@pytest.mark.parametrize("name, count", [("cnn-bn", 225_130), ("cnn", 225_034), ("ising-cnn", 1_282),
                                         ("resnet-small", 77_754)])
def test_parameter_counts(name, count):
    # cnn-bn: conv1 32*9 + 2*32, conv2 64*32*9 + 2*64, fc1 1600*128 + 128, fc2 128*10 + 10
    # cnn:    the same with a conv bias (32, 64) instead of gamma and beta (2*32, 2*64)
    # resnet-small: stem 16*9 + 2*16; block1 2 * (16*16*9 + 2*16);
    #   block2 32*16*9 + 32*32*9 + 32*16 (shortcut 1x1) + 3 * 2*32; block3 likewise with 64 and 32; fc 64*10 + 10
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


@pytest.mark.parametrize("name", ["cnn-bn", "cnn", "ising-cnn", "resnet-small"])
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


# ---------------------------------------------------------------------------------------------- resnet-small

def small_resnet(seed=0):
    """A resnet with 1 and 2 channels (one plain block, one downsampling block; 110 parameters) and random
    gammas and betas, so that no gradient is trivially zero."""
    rng = np.random.default_rng(seed)
    params, state = models.init_resnet(rng, widths=(1, 2), blocks=(1, 1), num_classes=3)
    for path, leaf in zip(tree_paths(params), tree_leaves(params)):
        if path.endswith("gamma"):
            leaf[:] = rng.uniform(0.5, 1.5, leaf.shape)
        elif path.endswith(("beta", "b")):
            leaf[:] = rng.standard_normal(leaf.shape) * 0.1
    return params, state


def test_resnet_small_structure():
    params, state = models.get("resnet-small").init(np.random.default_rng(0))
    assert list(params) == ["stem", "block1", "block2", "block3", "fc"]
    assert params["stem"]["w"].shape == (16, 1, 3, 3) and "b" not in params["stem"]  # beta is the bias
    widths = {"block1": (16, 16), "block2": (16, 32), "block3": (32, 64)}
    for name, (c_in, c_out) in widths.items():
        block = params[name]
        assert block["conv1"]["w"].shape == (c_out, c_in, 3, 3) and block["conv2"]["w"].shape == (c_out, c_out, 3, 3)
        if name == "block1":
            assert "shortcut" not in block  # the identity
        else:
            assert block["shortcut"]["w"].shape == (c_out, c_in, 1, 1)
    assert params["fc"]["w"].shape == (64, 10) and params["fc"]["b"].shape == (10,)
    # the state has the running statistics of every conv, and only those
    conv_paths = [p[:-len("/w")] for p in tree_paths(params) if p.endswith("/w") and not p.startswith("fc")]
    assert tree_paths(state) == [f"{p}/{k}" for p in conv_paths for k in ("mean", "var")]
    # He normal convs: std sqrt(2 / fan_in); gammas 1 (the residual branches start switched on)
    w = params["block3"]["conv2"]["w"]
    assert w.std() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.05)
    np.testing.assert_array_equal(params["block1"]["conv2"]["gamma"], 1)


def test_resnet_options_and_any_input_size():
    rng = np.random.default_rng(0)
    params, state = models.init_resnet(rng, in_channels=3, num_classes=2, widths=(4, 8), blocks=(2, 2))
    assert [k for k in params if k.startswith("block")] == ["block1", "block2", "block3", "block4"]
    assert [("shortcut" in params[f"block{i}"]) for i in range(1, 5)] == [False, False, True, False]
    for size in (24, 7, 1):  # 24x24 Ising-sized lattices; odd sizes: stride 2 gives ceil(H / 2) on both paths
        x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        logits = models.resnet(params, x, state=state, training=True)
        assert logits.shape == (2, 2) and logits.dtype == np.float32 and np.isfinite(logits.data).all()


def test_resnet_accepts_grayscale_without_channel_axis():
    params, state = models.get("resnet-small").init(np.random.default_rng(0))
    x = batch("resnet-small")
    np.testing.assert_allclose(models.resnet(params, x[:, 0], state=state).data,
                               models.resnet(params, x, state=state).data, rtol=1e-6)


def test_resnet_block_order_is_numeric():
    """A checkpoint's dict may list block10 before block2: the blocks still run in their numeric order."""
    params, state = models.init_resnet(np.random.default_rng(0), widths=(2, 3), blocks=(1, 10), num_classes=3)
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    expected = models.resnet(params, x, state=state).data
    shuffled = {k: params[k] for k in sorted(params)}  # block1, block10, block11, block2, ...
    assert list(shuffled)[:3] == ["block1", "block10", "block11"]
    np.testing.assert_array_equal(models.resnet(shuffled, x, state=state).data, expected)


def test_resnet_zero_init_residual_switches_the_branches_off():
    params, state = models.init_resnet(np.random.default_rng(0), widths=(2, 3), blocks=(1, 1), num_classes=3,
                                       zero_init_residual=True)
    x = np.random.default_rng(1).standard_normal((4, 1, 6, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    grads = tc.grad(lambda p: tc.cross_entropy(models.resnet(p, x, state=state, training=True), y))(params)
    for block in ("block1", "block2"):
        np.testing.assert_array_equal(params[block]["conv2"]["gamma"], 0)
        # the branch's output is multiplied by gamma = 0: nothing before that gamma gets a gradient ...
        np.testing.assert_array_equal(grads[block]["conv1"]["w"], 0)
        # ... but gamma itself does (sum of g * x_hat), so training switches the branch on
        assert np.abs(grads[block]["conv2"]["gamma"]).max() > 1e-4
    # block1 is then relu(its input) = its input (the stem ends with a relu): the same logits without it
    without = {k: v for k, v in params.items() if k != "block1"}
    np.testing.assert_allclose(models.resnet(without, x, state=state).data, models.resnet(params, x, state=state).data,
                               rtol=1e-6, atol=1e-7)


def test_resnet_gradcheck_end_to_end():
    """The whole model's training-mode loss (batch norm with batch statistics, both kinds of shortcut,
    global average pooling) against central finite differences in float64, every param and the input."""
    params, state = small_resnet()
    leaves, treedef = tree_flatten(params)
    x = np.random.default_rng(1).standard_normal((3, 1, 5, 5))
    labels = np.array([0, 2, 1])

    def loss(x, *leaves):
        logits = models.resnet(tree_unflatten(treedef, leaves), x, state=tree_map(np.copy, state), training=True)
        return tc.cross_entropy(logits, labels)

    assert tc.gradcheck(loss, x, *leaves)


def test_resnet_gradcheck_catches_a_wrong_shortcut(monkeypatch):
    """The check above can fail: cut the gradient of block1's identity shortcut (detach it) and it does."""
    params, state = small_resnet()
    x = np.random.default_rng(1).standard_normal((3, 1, 5, 5))
    residual_block = models._residual_block

    def block_with_a_detached_identity(p, s, h, *, training):
        if "shortcut" in p:
            return residual_block(p, s, h, training=training)
        branch = models.relu(models._conv_bn(p["conv1"], s["conv1"], h, training=training))
        return models.relu(models._conv_bn(p["conv2"], s["conv2"], branch, training=training) + h.detach())

    def loss(w):
        p = {**params, "stem": {**params["stem"], "w": w}}
        return tc.cross_entropy(models.resnet(p, x, state=tree_map(np.copy, state), training=True), [0, 2, 1])

    assert tc.gradcheck(loss, params["stem"]["w"])
    monkeypatch.setattr(models, "_residual_block", block_with_a_detached_identity)
    with pytest.raises(tc.GradcheckError, match="gradient of input 0 is wrong"):
        tc.gradcheck(loss, params["stem"]["w"])


def test_resnet_training_steps_lower_the_loss():
    rng = np.random.default_rng(0)
    params, state = models.init_resnet(rng, widths=(4, 8), blocks=(1, 1), num_classes=3)
    y = np.arange(24) % 3
    x = rng.standard_normal((24, 1, 8, 8)).astype(np.float32) * 0.5
    x[np.arange(24), 0, 2 * y, 2 * y] += 3  # class k: a bright pixel at (2k, 2k)
    opt = tc.optim.adam(1e-2)
    opt_state = opt.init(params)
    step = tc.value_and_grad(lambda p: tc.cross_entropy(models.resnet(p, x, state=state, training=True), y))
    first, _ = step(params)
    for _ in range(15):
        _, grads = step(params)
        params, opt_state = opt.update(params, grads, opt_state)
    last, _ = step(params)
    assert last < 0.5 * first, (first, last)


def test_resnet_jit_equals_eager():
    """One training step (loss, gradients and the batch-norm updates) replayed by tc.jit, as fit runs it,
    against the same step run eagerly; the first jit call traces, the second replays."""
    params, _ = small_resnet()
    _, state_eager = small_resnet()
    _, state_jit = small_resnet()
    rng = np.random.default_rng(2)
    batches = [(rng.standard_normal((4, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 4)) for _ in range(2)]

    def step(p, x, y, state):
        return tc.cross_entropy(models.resnet(p, x, state=state, training=True, dropout_rate=0.0), y)

    jitted = tc.jit(tc.value_and_grad(lambda p, x, y: step(p, x, y, state_jit)))
    eager = tc.value_and_grad(lambda p, x, y: step(p, x, y, state_eager))
    for x, y in batches:
        (loss_jit, grads_jit), (loss_eager, grads_eager) = jitted(params, x, y), eager(params, x, y)
        assert loss_jit == pytest.approx(loss_eager, rel=1e-6)
        for path, a, b in zip(tree_paths(grads_eager), tree_leaves(grads_jit), tree_leaves(grads_eager), strict=True):
            assert a.dtype == b.dtype == np.float32, path
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=path)
        for path, a, b in zip(tree_paths(state_eager), tree_leaves(state_jit), tree_leaves(state_eager)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=path)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(models, extraglobs={"np": np}).failed == 0


def test_resnet_errors():
    rng = np.random.default_rng(0)
    params, _ = models.get("resnet-small").init(rng)
    with pytest.raises(ValueError, match=r"resnet: state= .* must be given"):
        models.resnet(params, batch("resnet-small"))
    with pytest.raises(ValueError, match=r"init_resnet: widths and blocks need one entry per stage, got 3 widths"):
        models.init_resnet(rng, blocks=(1, 1))
    with pytest.raises(TypeError, match=r"init_resnet: widths must be a non-empty tuple of ints, got 16"):
        models.init_resnet(rng, widths=16)
    with pytest.raises(ValueError, match=r"init_resnet: blocks must be >= 1, got 0"):
        models.init_resnet(rng, blocks=(1, 0, 1))
    with pytest.raises(TypeError, match=r"init_resnet: num_classes must be an int, got float 10.0"):
        models.init_resnet(rng, num_classes=10.0)


def test_resnet_small_from_the_command_line(tmp_path, monkeypatch, capsys):
    """train on tiny Fashion-MNIST-format files, then evaluate, predict and graph, as a user would."""
    from test_cli import write_idx_dir

    from tinygrad_cnn import cli, tasks, training

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # nothing is ever downloaded
    data = write_idx_dir(tmp_path / "fashion")

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    out = run("train", "--dataset", "fashion-mnist", "--model", "resnet-small", "--data", data, "--epochs", 1,
              "--batch-size", 16, "--limit", 16, "--no-progress", "--out", "run")
    assert "training resnet-small on fashion-mnist: 16 train / 16 test samples, 77,754 parameters" in out
    accuracy = re.search(r"^test accuracy (\d\.\d{4}) in ", out, re.MULTILINE).group(1)
    saved = tc.load(tmp_path / "run" / "params.npz")
    assert saved["meta"]["model"] == "resnet-small" and tree_paths(saved["state"]) == tree_paths(
        models.get("resnet-small").init(np.random.default_rng(0))[1])
    assert f"resnet-small on fashion-mnist (run/params.npz): test accuracy {accuracy} " in run("evaluate", "run",
                                                                                                 "--data", data)
    _, (x_test, _) = tasks.IMAGE_LOADERS["fashion-mnist"](data)
    np.save(tmp_path / "two.npy", x_test[:2])
    out = run("predict", "run", "two.npy", "--top", 1)
    x = tasks.normalize_images(x_test[:2], saved["meta"]["mean"], saved["meta"]["std"])
    p = training.predict_proba(models.get("resnet-small"), saved["params"], x, state=saved["state"])
    for i in range(2):
        name = tasks.CLASS_NAMES["fashion-mnist"][p[i].argmax()]
        assert f"two.npy[{i}] (one of 2 arrays 28x28)\n  {p[i].max():.4f}  {name}\n" in out


    out = run("graph", "--model", "resnet-small", "--batch", 2, "--out", "step.dot")
    assert "one training step of resnet-small (a batch of 2 28x28 images)" in out
    dot = (tmp_path / "step.dot").read_text()
    assert "block2/shortcut/w" in dot and "AdaptiveAvgPool2d" in dot
