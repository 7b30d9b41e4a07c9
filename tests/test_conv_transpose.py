"""conv_transpose2d: the adjoint of conv2d. The notes' worked example backwards, output sizes, values
against a direct float64 reference and TensorFlow's conv2d_transpose, gradients against finite
differences and TensorFlow, the adjoint identity <conv2d(z, w), x> = <z, conv_transpose2d(x, w)>,
real sizes in float32 (threaded and serial), tc.jit, and errors."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from conv_reference import as_pair, reference_conv2d, reference_conv2d_weight_grad, reference_conv_transpose2d
from reference import our_grads, random_upstream, tf_grads
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import arrays

IMAGE = np.array([[5, 2, 2, 3], [3, 1, 2, 1], [9, 0, 4, 5]], dtype=np.float32)
FILTER = np.array([[1, 2], [-1, 0]], dtype=np.float32)


def test_the_notes_input_gradient_is_a_transposed_convolution():
    """Backprop through the notes' convolution with an all-ones upstream gradient: x.grad = conv_transpose2d(1, w)."""
    x, w = Tensor(IMAGE[None, None], requires_grad=True), Tensor(FILTER[None, None])
    tc.conv2d(x, w).sum().backward()
    y = tc.conv_transpose2d(np.ones((1, 1, 2, 3), np.float32), FILTER[None, None])
    np.testing.assert_array_equal(y.data, x.grad)
    np.testing.assert_array_equal(y.data[0, 0], [[1, 3, 3, 2], [0, 2, 2, 2], [-1, -1, -1, 0]])


def test_stride_2_stamps_the_filter_and_upsamples():
    y = tc.conv_transpose2d(np.array([[[[1, 2], [3, 4]]]], np.float32), np.ones((1, 1, 2, 2), np.float32), stride=2)
    np.testing.assert_array_equal(y.data[0, 0], np.kron([[1, 2], [3, 4]], np.ones((2, 2))))
    assert y.dtype == np.float32


@pytest.mark.parametrize("size, kernel, stride, padding, output_padding, dilation", [
    (5, 3, 1, 0, 0, 1), (5, 3, 2, 1, 1, 1), (4, 4, 2, 1, 0, 1), (7, 3, 3, 2, 2, 2), (3, 2, 1, 0, 1, 2),
    (1, 1, 1, 0, 0, 1),
])
def test_output_size(size, kernel, stride, padding, output_padding, dilation):
    y = tc.conv_transpose2d(np.zeros((1, 2, size, size + 1)), np.zeros((2, 3, kernel, kernel)), stride=stride,
                            padding=padding, output_padding=output_padding, dilation=dilation)
    expected = [(n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1 for n in (size, size + 1)]
    assert y.shape == (1, 3, *expected)


def pairs(low, high):
    return st.one_of(st.integers(low, high), st.tuples(st.integers(low, high), st.integers(low, high)))


@st.composite
def transpose_configs(draw, max_groups=3):
    """Valid conv_transpose2d configurations: x (N, Cin, H, W), w (Cin, Cout/G, KH, KW), output_padding
    below stride or dilation, output at least one pixel; Cout/G in {1, 2, 4} exercises both im2col layouts."""
    cig, cog = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 4]))
    groups = draw(st.integers(1, max_groups if cog < 4 else 2))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation, padding = draw(pairs(1, 3)), draw(st.one_of(st.just(1), pairs(1, 2))), draw(pairs(0, 2))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(as_pair(stride), as_pair(dilation)))
    for size, k, s, p, op, d in zip((h, w), (kh, kw), as_pair(stride), as_pair(padding), output_padding,
                                    as_pair(dilation)):
        assume((size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
    return dict(x_shape=(n, cig * groups, h, w), w_shape=(cig * groups, cog, kh, kw), bias=draw(st.booleans()),
                kwargs=dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                            groups=groups))


def make_inputs(cfg, draw):
    x, w = draw(arrays(cfg["x_shape"])), draw(arrays(cfg["w_shape"]))
    b = draw(arrays((cfg["w_shape"][1] * cfg["kwargs"]["groups"],))) if cfg["bias"] else None
    return x, w, b


@given(cfg=transpose_configs(), data=st.data())
def test_matches_reference_and_gradcheck(cfg, data):
    x, w, b = make_inputs(cfg, data.draw)
    kw = cfg["kwargs"]
    np.testing.assert_allclose(tc.conv_transpose2d(x, w, b, **kw).data, reference_conv_transpose2d(x, w, b, **kw),
                               rtol=1e-10, atol=1e-10)
    inputs = (x, w) if b is None else (x, w, b)
    assert tc.gradcheck(lambda *t: tc.conv_transpose2d(*t, **kw), *inputs)


@given(cfg=transpose_configs(), data=st.data())
def test_is_the_adjoint_of_conv2d(cfg, data):
    """<conv2d(z, w), x> == <z, conv_transpose2d(x, w)> for every z and x: the definition of the adjoint.

    When output_padding >= stride (allowed below the dilation) conv2d of the larger output has more
    positions than x; conv_transpose2d is the adjoint of conv2d restricted to x's positions, as in PyTorch."""
    x, w, _ = make_inputs(cfg, data.draw)
    kw = cfg["kwargs"]
    y = tc.conv_transpose2d(x, w, **kw).data
    z = data.draw(arrays(y.shape))
    conv = tc.conv2d(z, w, **{k: v for k, v in kw.items() if k != "output_padding"}).data
    conv = conv[:, :, : x.shape[2], : x.shape[3]]
    assert conv.shape == x.shape
    np.testing.assert_allclose(np.vdot(conv, x), np.vdot(z, y), rtol=1e-10, atol=1e-10)


def tf_conv_transpose(tf, x, w, b, *, stride, padding, output_padding, dilation, groups):
    """tf.nn.conv2d_transpose per group in NHWC with an explicit output_shape and "VALID" padding, the
    dilated filter spread out with zeros (TensorFlow's CPU kernel has no dilation), then our padding
    cropped from each side of the result."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = map(as_pair, (stride, padding, output_padding, dilation))
    (n, cin, h, wd), (_, cog, kh, kw) = x.shape, w.shape
    spread_h, spread_w = np.eye(dh * (kh - 1) + 1)[:, ::dh], np.eye(dw * (kw - 1) + 1)[:, ::dw]
    filters = tf.einsum("coij,ai,bj->aboc", w, spread_h, spread_w)  # (KH', KW', Cout/G, Cin): TF's layout
    full = [(h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw]
    xh, cig = tf.transpose(x, (0, 2, 3, 1)), cin // groups
    y = tf.concat([tf.nn.conv2d_transpose(xh[..., g * cig: (g + 1) * cig], filters[..., g * cig: (g + 1) * cig],
                                          output_shape=[n, *full, cog], strides=[1, sh, sw, 1], padding="VALID")
                   for g in range(groups)], axis=3)
    y = y[:, ph: full[0] - ph, pw: full[1] - pw]
    if b is not None:
        y = y + b
    return tf.transpose(y, (0, 3, 1, 2))


@given(cfg=transpose_configs(), data=st.data())
def test_against_tensorflow(tf, cfg, data):
    kw = cfg["kwargs"]
    assume(all(op < s for op, s in zip(as_pair(kw["output_padding"]), as_pair(kw["stride"]))))  # TF's rule
    x, w, b = make_inputs(cfg, data.draw)
    inputs = [x, w] + ([] if b is None else [b])
    upstream = random_upstream(tc.conv_transpose2d(x, w, **kw).shape)
    ours, our_g = our_grads(lambda *t: tc.conv_transpose2d(*t, **kw), *inputs, upstream=upstream)
    theirs, their_g = tf_grads(tf, lambda *t: tf_conv_transpose(tf, *(list(t) + [None] * (3 - len(t))), **kw),
                               *inputs, upstream=upstream)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)
    for a, c in zip(our_g, their_g):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-10)


def test_gradient_of_tensorflow_conv2d_with_respect_to_its_input(tf):
    """The adjoint's definition, on TensorFlow's side: tape.gradient of conv2d w.r.t. its input."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    ours = tc.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).data  # (2, 3, 10, 10)
    z = tf.Variable(np.zeros((2, 10, 10, 3)))
    with tf.GradientTape() as tape:
        out = tf.nn.conv2d(tf.pad(z, [[0, 0], [1, 1], [1, 1], [0, 0]]), w.transpose(2, 3, 1, 0), 2, "VALID")
        loss = tf.reduce_sum(out * x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(ours, tape.gradient(loss, z).numpy().transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("c_in, c_out, groups", [(32, 16, 1), (32, 16, 4), (32, 32, 32), (16, 32, 16)])
def test_real_size_float32(monkeypatch, threads, c_in, c_out, groups):
    """N=64, stride 2 (a decoder's upsampling), float32 against the float64 reference, serial and threaded."""
    monkeypatch.setenv("TINYGRAD_CNN_THREADS", threads)
    rng = np.random.default_rng(groups)
    kw = dict(stride=2, padding=1, output_padding=1, groups=groups)
    x = Tensor(rng.standard_normal((64, c_in, 7, 7)).astype(np.float32), requires_grad=True)
    w = Tensor((rng.standard_normal((c_in, c_out // groups, 3, 3)) * 0.3).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(c_out).astype(np.float32), requires_grad=True)
    y = tc.conv_transpose2d(x, w, b, **kw)
    assert y.shape == (64, c_out, 14, 14)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    assert y.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous  # channels-last, like conv2d's result
    np.testing.assert_allclose(y.data, reference_conv_transpose2d(x.data, w.data, b.data, **kw), rtol=1e-4, atol=1e-4)
    conv = dict(stride=2, padding=1, groups=groups)
    np.testing.assert_allclose(x.grad, reference_conv2d(g, w.data, **conv), rtol=1e-4, atol=1e-4)
    # dw of the transposed convolution is conv2d's weight gradient with image and upstream gradient swapped
    dw = reference_conv2d_weight_grad(g, x.data, (3, 3), **conv)
    np.testing.assert_allclose(w.grad, dw, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(b.grad, g.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-3)


def test_an_empty_batch_gives_empty_outputs_and_zero_weight_gradients():
    for op, w, kw in ((tc.conv2d, np.ones((4, 1, 3, 3)), dict(groups=4)),
                      (tc.conv_transpose2d, np.ones((4, 2, 3, 3)), dict(groups=2, stride=2))):
        x, wt = Tensor(np.zeros((0, 4, 5, 5)), requires_grad=True), Tensor(w, requires_grad=True)
        y = op(x, wt, **kw)
        y.sum().backward()
        assert y.shape[0] == 0 and x.grad.shape == x.shape
        np.testing.assert_array_equal(wt.grad, np.zeros_like(w))


def test_only_the_needed_gradients_are_computed():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((4, 2, 2, 2))
    for needs in ((True, False, False), (False, True, False), (False, False, True)):
        tensors = [Tensor(a, requires_grad=r) for a, r in zip((x, w, np.ones(2)), needs)]
        (tc.conv_transpose2d(*tensors, stride=2) ** 2).sum().backward()
        assert [t.grad is not None for t in tensors] == list(needs)


def test_jit_replays_grouped_and_transposed_convolutions_bit_for_bit():
    """tc.jit reuses the ops' memory between calls; a replay must give eager's bits every time."""
    rng = np.random.default_rng(0)
    params = {"down": rng.standard_normal((8, 2, 3, 3)).astype(np.float32),
              "up": rng.standard_normal((8, 2, 4, 4)).astype(np.float32), "b": np.ones(4, np.float32)}

    def loss(p, x):
        h = tc.relu(tc.conv2d(x, p["down"], stride=2, padding=1, groups=2))
        return (tc.conv_transpose2d(h, p["up"], p["b"], stride=2, padding=1, groups=2) ** 2).mean()

    step, eager = tc.jit(tc.value_and_grad(loss)), tc.value_and_grad(loss)
    for _ in range(3):
        x = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
        (v1, g1), (v2, g2) = step(params, x), eager(params, x)
        assert v1 == v2
        for k in params:
            np.testing.assert_array_equal(g1[k], g2[k])


def test_docstring_examples_run():
    import doctest

    from tinygrad_cnn.ops import conv

    assert doctest.testmod(conv, extraglobs={"np": np}).failed == 0


def test_graph_label():
    y = tc.conv_transpose2d(Tensor(np.ones((1, 1, 2, 2)), requires_grad=True), np.ones((1, 1, 2, 2)), stride=2)
    assert "ConvTranspose2d" in tc.draw_graph(y).source


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=np.zeros((1, 3, 4, 4)), w=np.zeros((2, 2, 3, 3))), ValueError,
     r"conv_transpose2d: x has 3 channels but w expects 2 \(w is \(in_channels, out_channels // groups, KH, KW\); "
     r"x.shape=\(1, 3, 4, 4\), w.shape=\(2, 2, 3, 3\)\)"),
    (dict(x=np.zeros((1, 6, 4, 4)), w=np.zeros((6, 2, 3, 3)), groups=4), ValueError,
     r"conv_transpose2d: groups=4 must divide the 6 input channels of x"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), stride=2, output_padding=2), ValueError,
     r"conv_transpose2d: output_padding must be smaller than stride or dilation, got output_padding=2 along H "
     r"with stride=2 and dilation=1"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), output_padding=(0, 1)), ValueError,
     r"output_padding=1 along W with stride=1 and dilation=1"),
    (dict(x=np.zeros((1, 2, 1, 4)), w=np.zeros((2, 2, 1, 1)), padding=1), ValueError,
     r"conv_transpose2d: the output would have -1 pixels along H"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 3, 3, 3)), b=np.zeros(2)), ValueError,
     r"conv_transpose2d: b must have shape \(3,\) to match w.shape=\(2, 3, 3, 3\), got \(2,\)"),
    (dict(x=np.zeros((1, 4, 4, 4)), w=np.zeros((4, 3, 3, 3)), b=np.zeros(3), groups=2), ValueError,
     r"conv_transpose2d: b must have shape \(6,\)"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 3, 3))), ValueError,
     r"conv_transpose2d: w must be 4-D \(in_channels, out_channels // groups, KH, KW\), got shape \(2, 3, 3\)"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 0, 3, 3))), ValueError,
     r"conv_transpose2d: w must have out_channels // groups, KH and KW >= 1"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), stride=0), ValueError,
     r"conv_transpose2d: stride must be >= 1, got 0"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), padding=-1), ValueError,
     r"conv_transpose2d: padding must be >= 0, got -1"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), groups=0), ValueError,
     r"conv_transpose2d: groups must be >= 1, got 0"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), padding="same"), TypeError,
     r"conv_transpose2d: padding must be an int, got str 'same'"),
    (dict(x="image", w=np.zeros((2, 2, 3, 3))), TypeError,
     r"conv_transpose2d: x must be a Tensor or an np.ndarray, got str"),
    (dict(x=np.zeros((1, 2, 4, 4)), w=np.zeros((2, 2, 3, 3)), output_padding=(1, 0.5)), TypeError,
     r"conv_transpose2d: output_padding must be an int, got float 0.5"),
])
def test_errors_name_the_function_and_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        tc.conv_transpose2d(**kwargs)
