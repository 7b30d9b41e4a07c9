"""Conv2dWinogradBackward (ops/winograd.py): the F(4, 3) matrices; the op's forward is conv2d's bit for
bit and its gradients equal im2col's in float64 over random shapes, paddings and modes, and match finite
differences and TensorFlow; float32 accuracy and threads at real size; which convolutions it leaves to
conv2d's backward; and the jit rewrite that uses it, on by default, against float64 on every reference
model."""

import contextlib
import copy
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.autograd import Context
from tinygrad_cnn.ops import winograd
from tinygrad_cnn.ops.conv import Conv2d
from tinygrad_cnn.ops.windows import resolve_padding
from tinygrad_cnn.pytree import tree_leaves
from tinygrad_cnn.testing import arrays


def test_the_matrices_compute_four_outputs_of_a_three_tap_correlation():
    """y = A^T [(G g) * (B^T d)] is y_i = sum_k d[i + k] g[k] for any 6 inputs d and 3 taps g."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        want = [d[i: i + 3] @ g for i in range(4)]
        np.testing.assert_allclose(winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d)), want, rtol=1e-12, atol=1e-12)


@contextlib.contextmanager
def every_shape():
    """The op's cost thresholds lifted: it then computes the gradients of every float 3x3 stride-1
    convolution whose dx is needed, so its math is tested on all shapes (its choice is tested apart)."""
    with mock.patch.multiple(winograd, MIN_CHANNELS=1, MAX_FILTERS_PER_CHANNEL=float("inf"),
                             MAX_TILE_AREA=float("inf")):
        yield


@st.composite
def winograd_configs(draw):
    """A 3x3 stride-1 convolution: any channel counts, any padding (int, pair, "same", "valid") and
    mode, output sizes that are and are not multiples of 4."""
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["same", "valid"])))
    mode = draw(st.sampled_from(["zeros", "replicate", "circular"]))
    pads = resolve_padding("test", padding, (h, w), (3, 3), (1, 1))
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    if hp < 3 or wp < 3 or (mode == "circular" and max(max(pads[0]) > h, max(pads[1]) > w)):
        padding, mode = 1, "zeros"
        h, w = max(h, 1), max(w, 1)
        pads = ((1, 1), (1, 1))
    bias = draw(st.booleans())
    return dict(shapes=((n, c, h, w), (f, c, 3, 3)), bias=bias, pads=pads, mode=mode)


def _inputs(cfg, draw, dtype=np.float64):
    (x_shape, w_shape), f = cfg["shapes"], cfg["shapes"][1][0]
    x, w = draw(arrays(x_shape, dtype)), draw(arrays(w_shape, dtype))
    return (x, w, draw(arrays((f,), dtype))) if cfg["bias"] else (x, w)


def _both(inputs, pads, mode, needs=None):
    """(Conv2d's, Conv2dWinogradBackward's) (y, input gradients) for one random upstream gradient."""
    needs = needs or (True,) * len(inputs)
    results = []
    for op in (Conv2d, winograd.Conv2dWinogradBackward):
        ctx = Context(needs)
        y = op.forward(ctx, *inputs, pads=pads, mode=mode)
        g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
        results.append((y, op.backward(ctx, g), ctx))
    return results


@given(cfg=winograd_configs(), data=st.data())
def test_forward_is_conv2ds_and_gradients_equal_im2cols_in_float64(cfg, data):
    inputs = _inputs(cfg, data.draw)
    with every_shape():
        (y1, g1, _), (y2, g2, ctx) = _both(inputs, cfg["pads"], cfg["mode"])
    assert not ctx.im2col
    np.testing.assert_array_equal(y2, y1)
    for a, b in zip(g2, g1):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * max(np.abs(b).max(), 1.0))


def _apply(cfg):
    def conv(*tensors):
        return winograd.Conv2dWinogradBackward.apply(*tensors, pads=cfg["pads"], mode=cfg["mode"])
    return conv


@given(cfg=winograd_configs(), data=st.data())
def test_winograd_gradients_against_finite_differences(cfg, data):
    inputs = _inputs(cfg, data.draw)
    with every_shape():
        assert tc.gradcheck(_apply(cfg), *inputs)


@given(cfg=winograd_configs(), data=st.data())
def test_winograd_against_tensorflow(tf, cfg, data):
    """Zero padding (TensorFlow pads explicitly here): values and every input gradient."""
    cfg = {**cfg, "mode": "zeros"}
    inputs = _inputs(cfg, data.draw)
    tensors = [Tensor(a, requires_grad=True) for a in inputs]
    upstream = None
    with every_shape():
        ours = _apply(cfg)(*tensors)
        upstream = np.random.default_rng(0).standard_normal(ours.shape)
        ours.backward(upstream)
    variables = [tf.Variable(a) for a in inputs]
    with tf.GradientTape() as tape:
        xh = tf.pad(tf.transpose(variables[0], (0, 2, 3, 1)), [[0, 0], list(cfg["pads"][0]), list(cfg["pads"][1]),
                                                               [0, 0]])
        y = tf.nn.conv2d(xh, tf.transpose(variables[1], (2, 3, 1, 0)), strides=1, padding="VALID")
        y = tf.transpose(y + variables[2] if len(variables) == 3 else y, (0, 3, 1, 2))
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_allclose(ours.data, y.numpy(), rtol=1e-9, atol=1e-10)
    for t, g in zip(tensors, tape.gradient(loss, variables)):
        np.testing.assert_allclose(t.grad, g.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("needs", [(False, True), (True, False), (False, True, True), (True, True, False)])
def test_only_the_gradients_asked_for_are_computed(needs):
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((2, 8, 9, 7)), rng.standard_normal((3, 8, 3, 3)), rng.standard_normal(3))
    with every_shape():
        (_, g1, _), (_, g2, ctx) = _both(inputs[:len(needs)], ((1, 1), (0, 0)), "zeros", needs)
    assert ctx.im2col == (not needs[0])  # dw alone: conv2d's backward, whose im2col matrix exists already
    for a, b, need in zip(g2, g1, needs):
        assert (a is None) == (b is None) == (not need)
        if need:
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_float32_at_real_size_on_both_threads_is_accurate():
    """cnn's conv2 at batch 64 (32 -> 64 channels, 13x13, the two worker threads), channels-last input
    as conv2d hands it on: float32 gradients within 2e-5 of the float64 ones (relative to the largest
    entry), as im2col's are within 2e-6 (the transforms' coefficients up to 8 let rounding grow)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 13, 13, 32)).astype(np.float32).transpose(0, 3, 1, 2)
    w = (rng.standard_normal((64, 32, 3, 3)) / 17).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    truth = _both(tuple(a.astype(np.float64) for a in (x, w, b)), ((0, 0), (0, 0)), "zeros")[0][1]
    (_, g32, _), (_, gw, ctx) = _both((x, w, b), ((0, 0), (0, 0)), "zeros")
    assert not ctx.im2col
    for ours, im2col, want in zip(gw, g32, truth):
        assert ours.dtype == np.float32 and ours.shape == want.shape
        scale = np.abs(want).max()
        assert np.abs(ours - want).max() < 2e-5 * scale
        assert np.abs(im2col - want).max() < 2e-6 * scale


@pytest.mark.parametrize("shapes, kwargs, needs", [
    (((2, 8, 8, 8), (4, 8, 5, 5)), {}, (True, True)),                      # not 3x3
    (((2, 8, 9, 9), (4, 8, 3, 3)), {"stride": (2, 2)}, (True, True)),
    (((2, 8, 9, 9), (4, 8, 3, 3)), {"dilation": (2, 2)}, (True, True)),
    (((2, 8, 10, 10), (4, 4, 3, 3)), {"groups": 2}, (True, True)),
    (((2, 1, 10, 10), (2, 1, 3, 3)), {}, (True, True)),                    # one input channel
    (((2, 32, 13, 13), (64, 32, 3, 3)), {}, (False, True)),                # dw alone (a first layer)
    (((2, 8, 13, 13), (64, 8, 3, 3)), {}, (True, True)),                   # 8 filters per input channel
    (((2, 32, 15, 15), (64, 32, 3, 3)), {}, (True, True)),                 # 13x13 out: 16x16 of tiles
    (((2, 32, 7, 7), (64, 32, 3, 3)), {}, (True, True)),                   # 5x5 out: 8x8 of tiles
])
def test_what_it_does_not_handle_or_speed_up_runs_conv2ds_backward_bit_for_bit(shapes, kwargs, needs):
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    outs = []
    for op in (Conv2d, winograd.Conv2dWinogradBackward):
        ctx = Context(needs)
        y = op.forward(ctx, x, w, **kwargs)
        outs.append((y, *(g for g in op.backward(ctx, np.ones_like(y)) if g is not None)))
    assert ctx.im2col
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_it_computes_the_reference_models_conv2_gradients_itself():
    """conv2 of cnn / cnn-bn (32 -> 64 channels, 11x11 outputs in 12x12 of tiles), of ising-cnn on a 16x16
    lattice (8 -> 16, circular padding, 8x8), and resnet-small's first stage (16 -> 16, padded, 28x28);
    not conv1 (one input channel)."""
    for x_shape, w_shape, out_hw in (((128, 32, 13, 13), (64, 32, 3, 3), (11, 11)),
                                     ((32, 8, 10, 10), (16, 8, 3, 3), (8, 8)),
                                     ((128, 16, 28, 28), (16, 16, 3, 3), (28, 28))):
        assert winograd.eligible(x_shape, w_shape, out_hw, (1, 1), (1, 1), 1, np.float32, True)
    assert not winograd.eligible((128, 1, 28, 28), (32, 1, 3, 3), (26, 26), (1, 1), (1, 1), 1, np.float32, True)


INPUT = {"cnn": (1, 28, 28), "cnn-bn": (1, 28, 28), "ising-cnn": (1, 16, 16), "resnet-small": (1, 28, 28)}


def _plan_ops(step) -> list[str]:
    return [what[0].__name__ for kind, what, _, _ in next(iter(step._plans.values())).program if kind == "forward"]


@pytest.mark.parametrize("name", ["cnn", "cnn-bn", "ising-cnn"])
def test_the_rewrite_keeps_the_loss_and_gives_the_gradients_to_rounding(name):
    """conv2 (and conv1, which falls back to im2col inside the op) run as Conv2dWinogradBackward; the
    loss keeps its bits and the gradients agree with the plan without the rewrite to float32 rounding,
    on every call (batch 64, both threads)."""
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng)

    def loss(p, x, y):
        return tc.cross_entropy(model.apply(p, x, state=state, training=False), y)

    on = tc.jit(tc.value_and_grad(loss), rewrites=("winograd_conv_backward",))
    off = tc.jit(tc.value_and_grad(loss), rewrites=())
    for _ in range(3):
        x = rng.standard_normal((64, *INPUT[name])).astype(np.float32)
        y = rng.integers(0, 2, 64)
        (got_loss, got), (want_loss, want) = on(params, x, y), off(params, x, y)
        assert got_loss == want_loss
        for a, b in zip(tree_leaves(got), tree_leaves(want)):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * np.abs(b).max())
    assert _plan_ops(on).count("Conv2dWinogradBackward") == 2 and "Conv2d" not in _plan_ops(on)


def _float64(tree):
    return tc.pytree.tree_map(lambda a: a.astype(np.float64) if isinstance(a, np.ndarray) else a, tree)


@pytest.mark.parametrize("name", list(INPUT))
def test_on_by_default_with_gradients_near_float64_on_every_reference_model(name):
    """The default plan's float32 gradients (Winograd's backward for every eligible conv) within 2e-5 of
    the float64 ones, relative to each gradient's largest entry (measured: 3.8e-7 to 5.5e-6), where the
    plan without the rewrite stays within 5e-6; the loss is the plan-without-it's bit for bit."""
    assert "winograd_conv_backward" in tc.rewrites.DEFAULT and "winograd_conv_backward" in tc.rewrites.REORDERS_SUMS
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng)
    x, y = rng.standard_normal((16, *INPUT[name])).astype(np.float32), rng.integers(0, 2, 16)

    def loss(p, x, y, st):
        return tc.cross_entropy(model.apply(p, x, state=st, training=True), y)

    truth = tc.value_and_grad(loss)(_float64(params), x.astype(np.float64), y, _float64(state))[1]
    default = tc.jit(tc.value_and_grad(loss))
    without = tc.jit(tc.value_and_grad(loss), rewrites=tuple(n for n in tc.rewrites.DEFAULT
                                                             if n != "winograd_conv_backward"))
    results = {which: step(params, x, y, copy.deepcopy(state)) for which, step in (("on", default), ("off", without))}
    assert results["on"][0] == results["off"][0]
    for which, bound in (("on", 2e-5), ("off", 5e-6)):
        for g, t in zip(tree_leaves(results[which][1]), tree_leaves(truth)):
            assert np.abs(g - t).max() < bound * np.abs(t).max()
    assert "Conv2dWinogradBackward" in _plan_ops(default) and "Conv2dWinogradBackward" not in _plan_ops(without)


def test_a_returned_input_gradient_is_the_callers_and_is_not_overwritten_by_the_next_call():
    """dx lives in the op's scratch memory (carved from the forward's im2col matrix): when the jitted
    function returns it, the plan hands that memory over instead of reusing it on the next call."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)                # 11x11 outputs: its own

    def loss(w, x):
        return (tc.conv2d(x, w, padding=1) ** 2).sum()

    step = tc.jit(tc.value_and_grad(loss, argnums=(0, 1)))
    first = None
    for _ in range(3):
        x = rng.standard_normal((4, 8, 11, 11)).astype(np.float32)
        _, (dw, dx) = step(w, x)
        _, (want_dw, want_dx) = tc.value_and_grad(loss, argnums=(0, 1))(w, x)
        for got, want in ((dx, want_dx), (dw, want_dw)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * np.abs(want).max())
        if first is None:
            first, kept = dx, dx.copy()
    np.testing.assert_array_equal(first, kept)
    assert "Conv2dWinogradBackward" in _plan_ops(step)


def test_backward_twice_through_a_retained_graph_accumulates_the_same_gradient():
    """The backward's scratch is reused by a second backward through the same graph (retain_graph):
    the leaf gradients are copies, so they add up to twice one pass's."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 8, 8, 8)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 8, 3, 3)), requires_grad=True)
    y = winograd.Conv2dWinogradBackward.apply(x, w, pads=((1, 1), (1, 1)), mode="zeros")
    assert not y._node.ctx.im2col
    g = rng.standard_normal(y.shape)
    y.backward(g, retain_graph=True)
    once = x.grad.copy(), w.grad.copy()
    y.backward(g)
    np.testing.assert_allclose(x.grad, 2 * once[0], rtol=1e-12)
    np.testing.assert_allclose(w.grad, 2 * once[1], rtol=1e-12)


def test_the_concepts_pages_worked_example_of_f_2_3():
    """docs/concepts.md 8.5: two outputs of a 3-tap filter from four multiplications."""
    d, g = np.array([5., 2., 2., 3.]), np.array([1., 2., -1.])
    m1 = (d[0] - d[2]) * g[0]
    m2 = (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2
    m3 = (d[2] - d[1]) * (g[0] - g[1] + g[2]) / 2
    m4 = (d[1] - d[3]) * g[2]
    assert [d[0:3] @ g, d[1:4] @ g] == [m1 + m2 + m3, m2 - m3 - m4] == [7.0, 3.0]
