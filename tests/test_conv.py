"""conv2d: the notes' worked examples, gradients against finite differences and TensorFlow over random
configurations (strides, dilation, int / pair / "same" / "valid" padding, all padding modes, bias),
linearity, float32 discipline, and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
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
