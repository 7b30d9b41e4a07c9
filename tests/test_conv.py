"""conv2d: the notes' worked examples, gradients against finite differences and TensorFlow over random
configurations (strides, dilation, int / pair / "same" / "valid" padding, all padding modes, bias,
groups and depthwise), linearity, float32 discipline, real sizes, and errors."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from conv_reference import reference_conv2d, reference_conv2d_weight_grad, reference_conv_transpose2d
from reference import our_grads, random_upstream, tf_grads
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops.windows import pad_index, resolve_padding
from tinygrad_cnn.testing import arrays, conv_configs

IMAGE = np.array([[5, 2, 2, 3], [3, 1, 2, 1], [9, 0, 4, 5]], dtype=np.float32)
FILTER = np.array([[1, 2], [-1, 0]], dtype=np.float32)


def test_notes_worked_example():
    y = tc.conv2d(IMAGE[None, None], FILTER[None, None])
    np.testing.assert_array_equal(y.data[0, 0], [[6, 5, 6], [-4, 5, 0]])


def test_notes_worked_example_gradients():
    """d(sum y)/dw[i, j] is the sum of the pixels that filter entry touches; d/dx counts coverage."""
    x, w = Tensor(IMAGE[None, None], requires_grad=True), Tensor(FILTER[None, None], requires_grad=True)
    tc.conv2d(x, w).sum().backward()
    np.testing.assert_array_equal(w.grad[0, 0], [[IMAGE[:2, :3].sum(), IMAGE[:2, 1:].sum()],
                                                 [IMAGE[1:, :3].sum(), IMAGE[1:, 1:].sum()]])
    np.testing.assert_array_equal(x.grad[0, 0], [[1, 3, 3, 2], [0, 2, 2, 2], [-1, -1, -1, 0]])


def test_notes_same_padding_repeats_the_last_column():
    y = tc.conv2d(IMAGE[None, None], FILTER[None, None], padding="same", padding_mode="replicate")
    assert y.shape == (1, 1, 3, 4)  # the odd pixel of padding goes to the bottom/right
    np.testing.assert_array_equal(y.data[0, 0, :2, 3], [3 + 2 * 3 - 1, 1 + 2 * 1 - 5])


def test_four_2x2_filters_hold_16_weights():
    params = {"w": np.zeros((4, 1, 2, 2), np.float32)}
    assert sum(p.size for p in params.values()) == 16
    assert tc.conv2d(IMAGE[None, None], params["w"]).shape == (1, 4, 2, 3)


def make_inputs(cfg, draw, dtype=np.float64):
    x = draw(arrays(cfg["x_shape"], dtype))
    w = draw(arrays(cfg["w_shape"], dtype))
    b = draw(arrays((cfg["w_shape"][0],), dtype)) if cfg["bias"] else None
    return x, w, b


def conv_kwargs(cfg):
    return {k: cfg[k] for k in ("stride", "padding", "padding_mode", "dilation")}


def reference_conv(x, w, b, stride, padding, padding_mode, dilation):
    """Direct NumPy definition: a sum over output pixels of window * filter (slow, obviously right)."""
    (sh, sw), (dh, dw) = [(v, v) if isinstance(v, int) else v for v in (stride, dilation)]
    pads = resolve_padding("ref", padding, x.shape[2:], w.shape[2:], (sh, sw), (dh, dw))
    if padding_mode == "zeros":
        xp = np.pad(x, ((0, 0), (0, 0), *pads))
    else:
        xp = x[:, :, pad_index(x.shape[2], *pads[0], padding_mode)][:, :, :, pad_index(x.shape[3], *pads[1],
                                                                                       padding_mode)]
    f, _, kh, kw = w.shape
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], f, oh, ow))
    for r in range(oh):
        for q in range(ow):
            patch = xp[:, :, r * sh: r * sh + dh * (kh - 1) + 1: dh, q * sw: q * sw + dw * (kw - 1) + 1: dw]
            y[:, :, r, q] = np.einsum("nchw,fchw->nf", patch, w)
    return y + (0 if b is None else b[None, :, None, None])


@given(cfg=conv_configs(), data=st.data())
def test_conv2d_matches_direct_definition_and_gradcheck(cfg, data):
    x, w, b = make_inputs(cfg, data.draw)
    kw = conv_kwargs(cfg)
    np.testing.assert_allclose(tc.conv2d(x, w, b, **kw).data, reference_conv(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    inputs = (x, w) if b is None else (x, w, b)
    assert tc.gradcheck(lambda *t: tc.conv2d(*t, **kw), *inputs)


def tf_conv(tf, x, w, b, stride, padding, padding_mode, dilation):
    """TensorFlow's conv2d in NHWC with the padding done explicitly (tf.gather for replicate/circular)."""
    (sh, sw), (dh, dw) = [(v, v) if isinstance(v, int) else v for v in (stride, dilation)]
    pads = resolve_padding("tf", padding, tuple(x.shape[2:]), tuple(w.shape[2:]), (sh, sw), (dh, dw))
    xh = tf.transpose(x, (0, 2, 3, 1))
    if padding_mode == "zeros":
        xh = tf.pad(xh, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
    else:
        xh = tf.gather(xh, pad_index(x.shape[2], *pads[0], padding_mode), axis=1)
        xh = tf.gather(xh, pad_index(x.shape[3], *pads[1], padding_mode), axis=2)
    # TensorFlow's CPU backprop has no dilation: spread the filter out with zeros instead (a linear map)
    kh, kw = w.shape[2:]
    spread_h = np.eye(dh * (kh - 1) + 1)[:, ::dh]  # (dilated KH, KH): row i*dh takes tap i
    spread_w = np.eye(dw * (kw - 1) + 1)[:, ::dw]
    w_dilated = tf.einsum("fcij,ai,bj->abcf", w, spread_h, spread_w)  # HWIO
    y = tf.nn.conv2d(xh, w_dilated, strides=[1, sh, sw, 1], padding="VALID")
    if b is not None:
        y = y + b
    return tf.transpose(y, (0, 3, 1, 2))


@given(cfg=conv_configs(), data=st.data())
def test_conv2d_against_tensorflow(tf, cfg, data):
    kw = conv_kwargs(cfg)
    x, w, b = make_inputs(cfg, data.draw)
    inputs = [x, w] + ([] if b is None else [b])
    tensors = [Tensor(a, requires_grad=True) for a in inputs]
    ours = tc.conv2d(*tensors, **kw)
    upstream = np.random.default_rng(0).standard_normal(ours.shape)
    ours.backward(upstream)
    variables = [tf.Variable(a) for a in inputs]
    with tf.GradientTape() as tape:
        theirs = tf_conv(tf, *(variables + [None] * (3 - len(variables))), **kw)
        loss = tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-9, atol=1e-10)
    for t, g in zip(tensors, tape.gradient(loss, variables)):
        np.testing.assert_allclose(t.grad, g.numpy(), rtol=1e-9, atol=1e-10)


@given(cfg=conv_configs(), data=st.data(), a=st.floats(-2, 2), c=st.floats(-2, 2))
def test_conv2d_is_linear_in_x_and_in_w(cfg, data, a, c):
    kw = {**conv_kwargs(cfg), "padding_mode": cfg["padding_mode"]}
    x1, w, _ = make_inputs(cfg, data.draw)
    x2, w2, _ = make_inputs(cfg, data.draw)
    conv = lambda x, w: tc.conv2d(x, w, **kw).data  # noqa: E731
    np.testing.assert_allclose(conv(a * x1 + c * x2, w), a * conv(x1, w) + c * conv(x2, w), atol=1e-9)
    np.testing.assert_allclose(conv(x1, a * w + c * w2), a * conv(x1, w) + c * conv(x1, w2), atol=1e-9)


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_conv2d_float32_stays_float32(channels):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, channels, 9, 9)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    y = tc.conv2d(x, w, b, padding="same", padding_mode="replicate")
    assert y.dtype == np.float32
    (y * y).sum().backward()
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    ref = tc.conv2d(x.data.astype(np.float64), w.data.astype(np.float64), padding="same", padding_mode="replicate")
    np.testing.assert_allclose(y.data, ref.data, rtol=1e-4, atol=1e-4)


def test_images_without_requires_grad_get_no_gradient_work():
    x = np.ones((2, 1, 6, 6), np.float32)
    w = Tensor(np.ones((3, 1, 3, 3), np.float32), requires_grad=True)
    tc.conv2d(x, w).sum().backward()
    np.testing.assert_array_equal(w.grad, np.full((3, 1, 3, 3), 2 * 16, np.float32))


def test_output_shapes_for_same_padding_with_strides():
    x = np.zeros((1, 1, 7, 8))
    for s in (1, 2, 3):
        assert tc.conv2d(x, np.zeros((1, 1, 3, 2)), stride=s, padding="same").shape[2:] == (-(-7 // s), -(-8 // s))


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=np.zeros((2, 3, 8, 8)), w=np.zeros((4, 2, 3, 3))),
     r"conv2d: x has 3 channels but w expects 2 \(x.shape=\(2, 3, 8, 8\), w.shape=\(4, 2, 3, 3\)\)"),
    (dict(x=np.zeros((3, 8, 8)), w=np.zeros((4, 3, 3, 3))), r"conv2d: x must be 4-D \(N, C, H, W\), got shape"),
    (dict(x=np.zeros((1, 1, 2, 2)), w=np.zeros((1, 1, 3, 3))), r"conv2d: the kernel spans 3 pixels along H"),
    (dict(x=np.zeros((1, 1, 4, 4)), w=np.zeros((1, 1, 3, 3)), stride=0), r"conv2d: stride must be >= 1, got 0"),
    (dict(x=np.zeros((1, 1, 4, 4)), w=np.zeros((1, 1, 3, 3)), padding="full"), r"conv2d: padding must be one of"),
    (dict(x=np.zeros((1, 1, 4, 4)), w=np.zeros((1, 1, 3, 3)), padding_mode="reflect"),
     r"conv2d: padding_mode must be one of 'zeros', 'replicate', 'circular', got 'reflect'"),
    (dict(x=np.zeros((1, 1, 4, 4)), w=np.zeros((2, 1, 3, 3)), b=np.zeros(3)), r"conv2d: b must have shape \(2,\)"),
    (dict(x=np.zeros((1, 1, 2, 2)), w=np.zeros((1, 1, 1, 1)), padding=3, padding_mode="circular"),
     r"conv2d: circular padding of 3 along H wraps more than once"),
])
def test_conv2d_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tc.conv2d(**kwargs)


def test_conv2d_type_errors():
    with pytest.raises(TypeError, match="conv2d: stride must be an int, got float 1.5"):
        tc.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), stride=1.5)
    with pytest.raises(TypeError, match="conv2d: x must be a Tensor or an np.ndarray, got str"):
        tc.conv2d("image", np.zeros((1, 1, 3, 3)))


# ---------------------------------------------------------------------------------------------- #
# groups: grouped and depthwise convolution


@st.composite
def grouped_conv_configs(draw, max_groups=3):
    """conv_configs with ``groups``: C = groups * C/G and F = groups * F/G, C/G in {1, 2, 4} (both im2col
    layouts: the transposed one below 4 channels per group), depthwise when C/G = 1."""
    cfg = draw(conv_configs(max_channels=1, max_size=5))
    cg, fg = draw(st.sampled_from([1, 2, 4])), draw(st.integers(1, 2))
    groups = draw(st.integers(1, max_groups if cg < 4 else 2))  # at most 8 channels: gradcheck stays quick
    (n, _, h, w), (_, _, kh, kw) = cfg["x_shape"], cfg["w_shape"]
    return {**cfg, "x_shape": (n, groups * cg, h, w), "w_shape": (groups * fg, cg, kh, kw), "groups": groups}


def grouped_kwargs(cfg):
    return {**conv_kwargs(cfg), "groups": cfg["groups"]}


def test_grouped_conv_is_one_conv_per_group():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 6, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    y = tc.conv2d(x, w, groups=2).data
    np.testing.assert_allclose(y[:, :2], tc.conv2d(x[:, :3], w[:2]).data, rtol=1e-12)
    np.testing.assert_allclose(y[:, 2:], tc.conv2d(x[:, 3:], w[2:]).data, rtol=1e-12)


@given(cfg=grouped_conv_configs(), data=st.data())
def test_grouped_conv2d_matches_reference_and_gradcheck(cfg, data):
    x, w, b = make_inputs(cfg, data.draw)
    kw = grouped_kwargs(cfg)
    np.testing.assert_allclose(tc.conv2d(x, w, b, **kw).data, reference_conv2d(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    inputs = (x, w) if b is None else (x, w, b)
    assert tc.gradcheck(lambda *t: tc.conv2d(*t, **kw), *inputs)


def tf_grouped_conv(tf, x, w, b, groups, **kw):
    """TensorFlow's CPU kernels have no gradient for grouped convolutions: one tf_conv per group."""
    cg, fg = x.shape[1] // groups, w.shape[0] // groups
    return tf.concat([tf_conv(tf, x[:, g * cg: (g + 1) * cg], w[g * fg: (g + 1) * fg],
                              None if b is None else b[g * fg: (g + 1) * fg], **kw) for g in range(groups)], axis=1)


@given(cfg=grouped_conv_configs(), data=st.data())
def test_grouped_conv2d_against_tensorflow(tf, cfg, data):
    kw = conv_kwargs(cfg)
    x, w, b = make_inputs(cfg, data.draw)
    inputs = [x, w] + ([] if b is None else [b])
    upstream = random_upstream(tc.conv2d(x, w, groups=cfg["groups"], **kw).shape)
    ours, our_g = our_grads(lambda *t: tc.conv2d(*t, groups=cfg["groups"], **kw), *inputs, upstream=upstream)
    theirs, their_g = tf_grads(tf, lambda *t: tf_grouped_conv(tf, *(list(t) + [None] * (3 - len(t))),
                                                              groups=cfg["groups"], **kw), *inputs, upstream=upstream)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)
    for a, c in zip(our_g, their_g):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-10)


@given(data=st.data(), channels=st.integers(1, 4), multiplier=st.integers(1, 2), size=st.integers(3, 7),
       kernel=st.integers(1, 3), stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.integers(0, 2))
def test_depthwise_conv2d_against_tensorflow_depthwise(tf, data, channels, multiplier, size, kernel, stride, dilation,
                                                       padding):
    """groups = C against tf.nn.depthwise_conv2d: output channel c*multiplier + m is filter m on channel c."""
    assume(size + 2 * padding >= dilation * (kernel - 1) + 1)
    x = data.draw(arrays((2, channels, size, size)))
    w = data.draw(arrays((channels * multiplier, 1, kernel, kernel)))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=channels)
    upstream = random_upstream(tc.conv2d(x, w, **kw).shape)
    ours, our_g = our_grads(lambda *t: tc.conv2d(*t, **kw), x, w, upstream=upstream)
    spread = np.eye(dilation * (kernel - 1) + 1)[:, ::dilation]  # the dilated filter, spread with zeros

    def depthwise(x, w):
        xh = tf.pad(tf.transpose(x, (0, 2, 3, 1)), [[0, 0], [padding, padding], [padding, padding], [0, 0]])
        filters = tf.einsum("cmij,ai,bj->abcm", tf.reshape(w, (channels, multiplier, kernel, kernel)), spread, spread)
        y = tf.nn.depthwise_conv2d(xh, filters, strides=[1, stride, stride, 1], padding="VALID")
        return tf.transpose(y, (0, 3, 1, 2))

    theirs, their_g = tf_grads(tf, depthwise, x, w, upstream=upstream)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)
    for a, c in zip(our_g, their_g):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("channels, filters, groups", [(32, 32, 4), (16, 32, 4), (32, 32, 32), (16, 32, 16)])
def test_grouped_conv2d_at_real_size_float32(monkeypatch, threads, channels, filters, groups):
    """N=64 images, groups=4 and depthwise, float32 against the float64 reference, serial and threaded."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", threads)
    rng = np.random.default_rng(groups)
    x = Tensor(rng.standard_normal((64, channels, 14, 14)).astype(np.float32), requires_grad=True)
    w = Tensor((rng.standard_normal((filters, channels // groups, 3, 3)) * 0.3).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(filters).astype(np.float32), requires_grad=True)
    kw = dict(stride=2, padding=1, groups=groups)
    y = tc.conv2d(x, w, b, **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    assert y.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    np.testing.assert_allclose(y.data, reference_conv2d(x.data, w.data, b.data, **kw), rtol=1e-4, atol=1e-4)
    dx = reference_conv_transpose2d(g, w.data, stride=2, padding=1, output_padding=1, groups=groups)
    np.testing.assert_allclose(x.grad, dx, rtol=1e-4, atol=1e-4)
    dw = reference_conv2d_weight_grad(x.data, g, (3, 3), stride=2, padding=1, groups=groups)
    np.testing.assert_allclose(w.grad, dw, rtol=1e-4, atol=2e-3)  # sums of 64*49 products
    np.testing.assert_allclose(b.grad, g.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-3)


def test_grouped_conv2d_float32_stays_float32_and_output_is_channels_last():
    x = np.ones((2, 8, 6, 6), np.float32)
    y = tc.conv2d(x, np.ones((8, 1, 3, 3), np.float32), groups=8)
    assert y.dtype == np.float32 and y.data.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(y.data, np.full((2, 8, 4, 4), 9, np.float32))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=np.zeros((1, 6, 5, 5)), w=np.zeros((4, 2, 3, 3)), groups=4), ValueError,
     r"conv2d: groups=4 must divide the 6 input channels of x \(x.shape=\(1, 6, 5, 5\), w.shape=\(4, 2, 3, 3\)\)"),
    (dict(x=np.zeros((1, 6, 5, 5)), w=np.zeros((4, 2, 3, 3)), groups=2), ValueError,
     r"conv2d: x has 6 channels but w expects 2 per group x groups=2 = 4 \(x.shape=\(1, 6, 5, 5\)"),
    (dict(x=np.zeros((1, 6, 5, 5)), w=np.zeros((4, 2, 3, 3)), groups=3), ValueError,
     r"conv2d: groups=3 must divide w's 4 output channels"),
    (dict(x=np.zeros((1, 6, 5, 5)), w=np.zeros((4, 2, 3, 3)), groups=0), ValueError, r"conv2d: groups must be >= 1"),
    (dict(x=np.zeros((1, 6, 5, 5)), w=np.zeros((4, 2, 3, 3)), groups=1.0), TypeError,
     r"conv2d: groups must be an int, got float 1.0"),
])
def test_conv2d_groups_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        tc.conv2d(**kwargs)


@given(data=st.data(), channels_last=st.booleans())
def test_channel_bias_gradcheck(data, channels_last):
    """The per-channel bias op jit's bias_after_max_pool rewrite adds after the pool."""
    from tinygrad_cnn.ops.conv import ChannelBias

    n, c, h, w = (data.draw(st.integers(1, 4)) for _ in range(4))
    x = data.draw(arrays((n, h, w, c) if channels_last else (n, c, h, w)))
    x = x.transpose(0, 3, 1, 2) if channels_last else x
    b = data.draw(arrays((c,)))
    y = ChannelBias.apply(Tensor(x), Tensor(b))
    np.testing.assert_array_equal(y.data, x + b[:, None, None])
    assert tc.gradcheck(lambda x, b: ChannelBias.apply(x, b), x, b)
