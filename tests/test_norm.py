"""batch_norm: gradients against float64 finite differences and TensorFlow's GradientTape (random
upstream gradients: with all-ones, the input gradient is exactly zero), the normalisation and
running-statistics invariants, dtypes and memory layouts, and the error messages."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops.norm import batch_norm
from tinygrad_cnn.testing import arrays
from reference import our_grads, tf_grads


@st.composite
def bn_inputs(draw, ndim=None, distinct=False):
    """x (N, C) or (N, C, H, W) with at least 2 values per channel, gamma (C,), beta (C,)."""
    ndim = draw(st.sampled_from([2, 4])) if ndim is None else ndim
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if ndim == 2:
        shape = (max(n, 2), c)
    else:
        h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        shape = (n, c, h, 2 if n * h * w < 2 else w)
    x = draw(arrays(shape, distinct=distinct))
    return x, draw(arrays((c,), low=-2.0, high=2.0)), draw(arrays((c,)))


@st.composite
def running_stats(draw, channels):
    return draw(arrays((channels,), low=-1.0, high=1.0)), draw(arrays((channels,), low=0.2, high=3.0))


def axes_of(x):
    return (0,) if len(x.shape) == 2 else (0, 2, 3)


def per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# ---------------------------------------------------------------------------------------------- #
# gradients


@given(inputs=bn_inputs(distinct=True), with_running=st.booleans(), eps=st.sampled_from([1e-5, 1e-3]))
def test_batch_norm_training_gradcheck(inputs, with_running, eps):
    x, gamma, beta = inputs
    c = x.shape[1]

    def f(x, gamma, beta):
        running = (np.zeros(c), np.ones(c)) if with_running else (None, None)
        return batch_norm(x, gamma, beta, *running, training=True, eps=eps)

    assert tc.gradcheck(f, x, gamma, beta)


@given(data=st.data())
def test_batch_norm_eval_gradcheck(data):
    x, gamma, beta = data.draw(bn_inputs())
    rm, rv = data.draw(running_stats(x.shape[1]))
    assert tc.gradcheck(lambda x, g, b: batch_norm(x, g, b, rm, rv, training=False), x, gamma, beta)


def tf_batch_norm(tf, x, gamma, beta, eps, mean=None, var=None):
    """TensorFlow reference: batch statistics from tf.nn.moments, or the given (running) ones."""
    shape = (1, -1) + (1,) * (len(x.shape) - 2)
    if mean is None:
        mean, var = tf.nn.moments(x, axes=list(axes_of(x)), keepdims=True)
    else:
        mean, var = tf.reshape(tf.constant(mean), shape), tf.reshape(tf.constant(var), shape)
    return (x - mean) / tf.sqrt(var + eps) * tf.reshape(gamma, shape) + tf.reshape(beta, shape)


@given(inputs=bn_inputs(), training=st.booleans(), eps=st.sampled_from([1e-5, 1e-2]), data=st.data())
def test_batch_norm_against_tensorflow(tf, inputs, training, eps, data):
    x, gamma, beta = inputs
    rm, rv = data.draw(running_stats(x.shape[1]))
    upstream = np.random.default_rng(5).standard_normal(x.shape)
    value, grads = our_grads(lambda *t: batch_norm(*t, rm.copy(), rv.copy(), training=training, eps=eps),
                             x, gamma, beta, upstream=upstream)
    stats = {} if training else dict(mean=rm, var=rv)
    tf_value, tf_g = tf_grads(tf, lambda *t: tf_batch_norm(tf, *t, eps, **stats), x, gamma, beta, upstream=upstream)
    np.testing.assert_allclose(value, tf_value, rtol=1e-9, atol=1e-9)
    for name, g, t in zip(["x", "gamma", "beta"], grads, tf_g, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-7, atol=1e-8, err_msg=name)


def test_input_gradient_is_zero_for_a_constant_upstream_gradient():
    """Why the tests use random upstream gradients: with all-ones, dx = 0 exactly in training."""
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 2, 2)), requires_grad=True)
    batch_norm(x, np.full(3, 2.0), np.zeros(3)).sum().backward()
    np.testing.assert_allclose(x.grad, 0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- #
# invariants


@given(inputs=bn_inputs(distinct=True), eps=st.sampled_from([1e-5, 1e-1]))
def test_training_output_is_standardised_per_channel(inputs, eps):
    x = inputs[0] * 3.0 + 7.0
    c, axes = x.shape[1], axes_of(x)
    y = batch_norm(x, np.ones(c), np.zeros(c), eps=eps).data
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), var / (var + eps), rtol=1e-12)  # 1 up to eps


def test_training_output_variance_is_one_for_tiny_eps():
    x = np.random.default_rng(1).normal(-4.0, 5.0, (16, 3, 5, 5))
    y = batch_norm(x, np.ones(3), np.zeros(3), eps=1e-12).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-14)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 5)])
def test_running_statistics_are_updated_in_place(dtype, shape):
    rng = np.random.default_rng(2)
    x = rng.normal(1.5, 2.0, shape).astype(dtype)
    rm, rv = rng.standard_normal(3).astype(dtype), rng.uniform(0.5, 2, 3).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    ids = id(rm), id(rv)
    momentum, axes = 0.3, axes_of(x)
    batch_norm(x, np.ones(3), np.zeros(3), rm, rv, momentum=momentum)
    assert (id(rm), id(rv)) == ids and rm.dtype == rv.dtype == dtype
    x64 = x.astype(np.float64)
    tol = dict(rtol=1e-12) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rm, (1 - momentum) * rm0 + momentum * x64.mean(axis=axes), **tol)
    np.testing.assert_allclose(rv, (1 - momentum) * rv0 + momentum * x64.var(axis=axes, ddof=1), **tol)


def test_momentum_edge_values():
    x = np.random.default_rng(3).standard_normal((5, 2))
    rm, rv = np.full(2, 9.0), np.full(2, 9.0)
    batch_norm(x, np.ones(2), np.zeros(2), rm, rv, momentum=0.0)
    np.testing.assert_array_equal(rm, 9.0)
    batch_norm(x, np.ones(2), np.zeros(2), rm, rv, momentum=1.0)
    np.testing.assert_allclose(rm, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(rv, x.var(0, ddof=1), rtol=1e-14)


@given(data=st.data())
def test_eval_mode_uses_running_statistics_and_does_not_update_them(data):
    x, gamma, beta = data.draw(bn_inputs())
    rm, rv = data.draw(running_stats(x.shape[1]))
    rm0, rv0 = rm.copy(), rv.copy()
    rm.flags.writeable = rv.flags.writeable = False  # eval never writes: read-only arrays are fine
    y = batch_norm(x, gamma, beta, rm, rv, training=False, eps=1e-3).data
    nd = x.ndim
    expected = (x - per_channel(rm, nd)) / np.sqrt(per_channel(rv, nd) + 1e-3) * per_channel(gamma, nd) \
        + per_channel(beta, nd)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


def test_eval_gradient_survives_later_updates_of_the_running_arrays():
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((4, 2, 3, 3)), requires_grad=True)
    gamma = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    rm, rv = np.array([0.5, -0.5]), np.array([2.0, 0.5])
    y = batch_norm(x, gamma, np.zeros(2), rm, rv, training=False)
    expected_scale = gamma.data / np.sqrt(rv + 1e-5)
    expected_xhat = (x.data - rm[:, None, None]) / np.sqrt(rv + 1e-5)[:, None, None]
    batch_norm(rng.standard_normal((4, 2, 3, 3)), np.ones(2), np.zeros(2), rm, rv, momentum=1.0)  # changes rm, rv
    g = rng.standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * expected_scale[:, None, None], rtol=1e-12)
    np.testing.assert_allclose(gamma.grad, (g * expected_xhat).sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
def test_float32_in_float32_out(training, param_dtype):
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((4, 3, 5, 5)).astype(np.float32), requires_grad=True)
    gamma = Tensor(rng.standard_normal(3).astype(param_dtype), requires_grad=True)
    beta = Tensor(rng.standard_normal(3).astype(param_dtype), requires_grad=True)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = batch_norm(x, gamma, beta, rm, rv, training=training)
    assert y.dtype == np.float32
    y.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert x.grad.dtype == np.float32
    assert gamma.grad.dtype == beta.grad.dtype == param_dtype
    assert rm.dtype == rv.dtype == np.float32


@pytest.mark.parametrize("shape", [(64, 3, 16, 16), (4096, 3)])
def test_float32_statistics_are_accurate_for_offset_data(shape):
    """A large mean relative to the spread is where a float32 one-pass formula breaks down."""
    rng = np.random.default_rng(6)
    x = (1000.0 + rng.standard_normal(shape)).astype(np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = np.zeros(3, np.float32), np.zeros(3, np.float32)
    y = batch_norm(x, gamma, beta, rm, rv, momentum=1.0)
    x64, axes = x.astype(np.float64), axes_of(x)
    ref = (x64 - x64.mean(axis=axes, keepdims=True)) / np.sqrt(x64.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.data, ref, atol=2e-4)
    np.testing.assert_allclose(rm, x64.mean(axis=axes), rtol=1e-7)
    np.testing.assert_allclose(rv, x64.var(axis=axes, ddof=1), rtol=1e-5)


def test_float32_gradients_match_float64():
    rng = np.random.default_rng(7)
    x, g = rng.normal(3.0, 2.0, (32, 4, 8, 8)), rng.standard_normal((32, 4, 8, 8))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    grads = {}
    for dt in (np.float32, np.float64):
        _, grads[dt] = our_grads(batch_norm, x.astype(dt), gamma.astype(dt), beta.astype(dt), upstream=g.astype(dt))
    for g32, g64 in zip(grads[np.float32], grads[np.float64], strict=True):
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-3 * np.abs(g64).max())


@pytest.mark.parametrize("training", [True, False])
def test_channels_last_views_give_the_same_result_and_keep_their_layout(training):
    """conv2d returns NCHW views of NHWC memory; batch_norm works on them without a copy."""
    rng = np.random.default_rng(8)
    nhwc = rng.standard_normal((3, 5, 4, 6))
    view = nhwc.transpose(0, 3, 1, 2)                # (N, C, H, W) view, channels-last memory
    gamma, beta, g = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(view.shape)
    rm, rv = rng.standard_normal(6), rng.uniform(0.5, 2, 6)
    fn = lambda x, a, b: batch_norm(x, a, b, rm.copy(), rv.copy(), training=training)  # noqa: E731
    y_view, grads_view = our_grads(fn, view, gamma, beta, upstream=g)
    y_cont, grads_cont = our_grads(fn, np.ascontiguousarray(view), gamma, beta, upstream=g)
    np.testing.assert_allclose(y_view, y_cont, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads_view, grads_cont, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    assert y_view.transpose(0, 2, 3, 1).flags.c_contiguous  # the output is channels-last too


def test_no_grad_still_updates_running_statistics():
    x = np.random.default_rng(9).standard_normal((8, 2))
    rm, rv = np.zeros(2), np.ones(2)
    with tc.no_grad():
        y = batch_norm(Tensor(x, requires_grad=True), np.ones(2), np.zeros(2), rm, rv)
    assert not y.requires_grad
    np.testing.assert_allclose(rm, 0.1 * x.mean(0), rtol=1e-12)


# ---------------------------------------------------------------------------------------------- #
# errors


def test_batch_norm_argument_errors():
    x, one3, zero3 = np.ones((2, 4, 5, 5)), np.ones(4), np.zeros(4)
    with pytest.raises(ValueError, match=r"batch_norm: gamma has shape \(3,\) but x has 4 channels "
                                         r"\(x.shape=\(2, 4, 5, 5\)\)"):
        batch_norm(x, np.ones(3), zero3)
    with pytest.raises(ValueError, match=r"batch_norm: beta has shape \(4, 1\) but x has 4 channels"):
        batch_norm(x, one3, np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"batch_norm: x must be 2-D or 4-D \(N, C\) or \(N, C, H, W\), "
                                         r"got shape \(2, 4, 5\)"):
        batch_norm(np.ones((2, 4, 5)), one3, zero3)
    with pytest.raises(TypeError, match="batch_norm: gamma must be a Tensor or an np.ndarray, got NoneType"):
        batch_norm(x, None, zero3)
    with pytest.raises(ValueError, match="batch_norm: momentum must be in \\[0, 1\\], got 1.5"):
        batch_norm(x, one3, zero3, momentum=1.5)
    with pytest.raises(ValueError, match="batch_norm: eps must be > 0, got 0"):
        batch_norm(x, one3, zero3, eps=0)
    with pytest.raises(TypeError, match="batch_norm: eps must be a number, got str"):
        batch_norm(x, one3, zero3, eps="1e-5")
    with pytest.raises(TypeError, match="batch_norm: training must be a bool, got int 1"):
        batch_norm(x, one3, zero3, training=1)
    with pytest.raises(ValueError, match="batch_norm: training needs at least 2 values per channel .* got 1 "
                                         r"\(x.shape=\(1, 4, 1, 1\)\)"):
        batch_norm(np.ones((1, 4, 1, 1)), one3, zero3)
    with pytest.raises(ValueError, match="batch_norm: training needs at least 2 values per channel"):
        batch_norm(np.ones((1, 4)), one3, zero3)
    batch_norm(np.ones((1, 4)), one3, zero3, np.zeros(4), np.ones(4), training=False)  # fine in eval


def test_batch_norm_running_statistics_errors():
    x, one3, zero3 = np.ones((2, 4, 5, 5)), np.ones(4), np.zeros(4)
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var must be given together"):
        batch_norm(x, one3, zero3, np.zeros(4))
    with pytest.raises(ValueError, match="batch_norm: training=False .* running_mean and running_var must be given"):
        batch_norm(x, one3, zero3, training=False)
    with pytest.raises(TypeError, match="batch_norm: running_mean must be an np.ndarray .* got Tensor"):
        batch_norm(x, one3, zero3, Tensor(np.zeros(4)), np.ones(4))
    with pytest.raises(TypeError, match="batch_norm: running_var must be an np.ndarray .* got list"):
        batch_norm(x, one3, zero3, np.zeros(4), [1.0] * 4)
    with pytest.raises(TypeError, match="batch_norm: running_mean must have a floating dtype, got int64"):
        batch_norm(x, one3, zero3, np.zeros(4, dtype=np.int64), np.ones(4))
    with pytest.raises(ValueError, match=r"batch_norm: running_var has shape \(3,\) but x has 4 channels"):
        batch_norm(x, one3, zero3, np.zeros(4), np.ones(3))
    frozen = np.zeros(4)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="batch_norm: running_mean must be writable"):
        batch_norm(x, one3, zero3, frozen, np.ones(4))


@given(inputs=bn_inputs(distinct=True), data=st.data())
def test_batch_norm_relu_is_relu_of_batch_norm_bit_for_bit_and_passes_gradcheck(inputs, data):
    """The fused op jit's batch_norm_relu rewrite uses: the same bits as the two ops, forward and backward,
    and its own gradient against finite differences (beta keeps outputs away from relu's kink at 0)."""
    from tinygrad_cnn.ops.norm import BatchNormRelu

    x, gamma, beta = inputs
    beta = beta + np.where(beta >= 0, 0.5, -0.5)
    g = data.draw(arrays(x.shape))
    kw = dict(eps=1e-5, momentum=0.1, running_mean=None, running_var=None)
    fused_y, fused = our_grads(lambda *t: BatchNormRelu.apply(*t, **kw), x, gamma, beta, upstream=g)
    two_y, two = our_grads(lambda *t: tc.relu(batch_norm(*t)), x, gamma, beta, upstream=g)
    np.testing.assert_array_equal(fused_y, two_y)
    for a, b in zip(fused, two):
        np.testing.assert_array_equal(a, b)
    xhat = (x - x.mean(axis=axes_of(x), keepdims=True)) / np.sqrt(x.var(axis=axes_of(x), keepdims=True) + 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if np.min(np.abs(xhat * gamma.reshape(shape) + beta.reshape(shape))) > 1e-3:
        assert tc.gradcheck(lambda *t: BatchNormRelu.apply(*t, **kw), x, gamma, beta)


@st.composite
def bn_pool_inputs(draw):
    """x (N, C, H, W) with distinct values (NCHW or channels-last memory), gamma of either sign, beta, and
    a pool kernel that fits, its windows tiling the image (stride = kernel; sizes that leave rows and
    columns outside every window included)."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = kernel
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kernel[0], 6)), draw(st.integers(kernel[1], 6))
    x = draw(arrays((n, c, h, w if n * h * w > 1 else 2), distinct=True))
    if draw(st.booleans()):  # as conv2d hands it on
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    gamma = draw(arrays((c,), low=0.2, high=2.0)) * np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]),
                                                                              min_size=c, max_size=c)))
    return x, gamma, draw(arrays((c,))), dict(kernel=kernel, stride=stride, pads=((0, 0), (0, 0)))


@given(inputs=bn_pool_inputs(), data=st.data())
def test_batch_norm_max_pool_is_max_pool_of_batch_norm_and_passes_gradcheck(inputs, data):
    """The fused op of jit's batch_norm_max_pool rewrite: the forward bit for bit (max of a monotonic map,
    the min where gamma < 0), the gradients to rounding (its sums run over the window winners only),
    the running statistics bit for bit, and its own gradient against finite differences."""
    from tinygrad_cnn.ops.norm import BatchNormMaxPool

    x, gamma, beta, pool = inputs
    out_hw = [(size - k) // s + 1 for size, k, s in zip(x.shape[2:], pool["kernel"], pool["stride"])]
    upstream = data.draw(arrays((*x.shape[:2], *out_hw)))
    stats = {which: (np.zeros(x.shape[1]), np.ones(x.shape[1])) for which in ("fused", "two")}

    def fused(*t):
        return BatchNormMaxPool.apply(*t, eps=1e-5, momentum=0.1, running_mean=stats["fused"][0],
                                      running_var=stats["fused"][1], **pool)

    def two(*t):
        y = batch_norm(*t, running_mean=stats["two"][0], running_var=stats["two"][1])
        return tc.max_pool2d(y, pool["kernel"], pool["stride"])

    fused_y, fused_grads = our_grads(fused, x, gamma, beta, upstream=upstream)
    two_y, two_grads = our_grads(two, x, gamma, beta, upstream=upstream)
    np.testing.assert_array_equal(fused_y, two_y)
    for a, b in zip(fused_grads, two_grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(b).max()))
    for a, b in zip(stats["fused"], stats["two"]):
        np.testing.assert_array_equal(a, b)
    assert tc.gradcheck(lambda *t: BatchNormMaxPool.apply(*t, eps=1e-5, **pool), x, gamma, beta)


def test_batch_norm_max_pool_refuses_windows_that_do_not_tile():
    from tinygrad_cnn.ops.norm import BatchNormMaxPool

    x, gamma, beta = np.zeros((2, 3, 6, 6), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    for pool in (dict(kernel=(3, 3), stride=(2, 2), pads=((0, 0), (0, 0))),
                 dict(kernel=(2, 2), stride=(2, 2), pads=((1, 1), (0, 0)))):
        with pytest.raises(ValueError, match="stride = kernel, no padding.*kernel=.*stride=.*pads="):
            BatchNormMaxPool.apply(x, gamma, beta, eps=1e-5, **pool)


def test_batch_norm_max_pool_float32_at_real_size_routes_ties_to_the_first_pixel():
    """Batch 64, 32 channels, channels-last memory as conv2d returns it, values on a coarse grid (exact
    ties in most windows), some gammas negative: the same winners as the two ops (the first pixel
    holding the maximum), gradients equal to float32 rounding."""
    from tinygrad_cnn.ops.norm import BatchNormMaxPool

    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (64, 27, 27, 32)).astype(np.float32).transpose(0, 3, 1, 2)  # odd H, W: a leftover row
    gamma = rng.uniform(0.5, 1.5, 32).astype(np.float32) * np.where(np.arange(32) % 5 == 0, -1, 1).astype(np.float32)
    beta = rng.standard_normal(32).astype(np.float32)
    pool = dict(kernel=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)))
    upstream = rng.standard_normal((64, 32, 13, 13)).astype(np.float32)
    fused_y, fused = our_grads(lambda *t: BatchNormMaxPool.apply(*t, eps=1e-5, **pool), x, gamma, beta,
                               upstream=upstream)
    two_y, two = our_grads(lambda *t: tc.max_pool2d(batch_norm(*t), 2), x, gamma, beta, upstream=upstream)
    np.testing.assert_array_equal(fused_y, two_y)
    assert fused[0].dtype == np.float32
    for a, b in zip(fused, two):  # a gradient sent to another pixel of a tie would be off by A*g there
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * np.abs(b).max())
