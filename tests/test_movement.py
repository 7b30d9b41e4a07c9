"""concatenate, stack, split, squeeze, expand_dims, broadcast_to, repeat, tile and pad: values against NumPy,
gradients against float64 finite differences and against TensorFlow's GradientTape (random upstream
gradients), NumPy's argument forms, dtypes, errors, graph labels and jit replays."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.ops import movement, windows
from tinygrad_cnn.ops.conv import PADDING_MODES
from tinygrad_cnn.testing import arrays
from reference import our_grads, tf_grads

NP_PAD_MODE = {"zeros": "constant", "replicate": "edge", "circular": "wrap"}
SIDES = st.integers(0, 4)  # movement ops must handle empty axes too

# TensorFlow's eager calls cost ~50 ms an example: fewer examples
TF_EXAMPLES = settings(max_examples=8)


def shape_of(draw, min_dims=0, max_dims=3, sides=SIDES):
    return tuple(draw(st.lists(sides, min_size=min_dims, max_size=max_dims)))


def sides_for(tf):
    return st.integers(1, 4) if tf else SIDES  # (tf.repeat of an empty tensor fails its own shape check)


def random_array(draw, shape):
    return draw(arrays(shape=tuple(shape), max_side=4))


def joined(out):
    """A list of parts (split's result) as one Tensor, so one gradient check covers every part."""
    return tc.concatenate([p.reshape(-1) for p in out]) if isinstance(out, list) else out


# Each case draws (input arrays, our function, NumPy's, TensorFlow's or None where TF has no such op);
# with tf=True only non-empty inputs and the forms TensorFlow has.
@st.composite
def concatenate_case(draw, tf=False):
    shape = list(shape_of(draw, min_dims=1, sides=sides_for(tf)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    xs = []
    for _ in range(draw(st.integers(1, 3))):
        shape[axis] = draw(sides_for(tf))
        xs.append(random_array(draw, shape))
    return (xs, lambda *t: tc.concatenate(list(t), axis=axis), lambda *a: np.concatenate(a, axis=axis),
            lambda tf, *t: tf.concat(list(t), axis=axis))


@st.composite
def stack_case(draw, tf=False):
    shape = shape_of(draw, sides=sides_for(tf))
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [random_array(draw, shape) for _ in range(draw(st.integers(1, 3)))]
    return (xs, lambda *t: tc.stack(t, axis=axis), lambda *a: np.stack(a, axis=axis),
            lambda tf, *t: tf.stack(list(t), axis=axis))


@st.composite
def split_case(draw, tf=False):
    shape = shape_of(draw, min_dims=1, sides=sides_for(tf))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    tf_op = None
    if draw(st.booleans()):
        arg = draw(st.sampled_from([k for k in range(1, 5) if n % k == 0]))
        tf_op = lambda tf, t: joined_tf(tf, tf.split(t, arg, axis=axis))  # noqa: E731
    elif tf or draw(st.booleans()):  # increasing cuts within the axis: TensorFlow's sizes
        arg = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        sizes = np.diff([0, *arg, n]).tolist()
        tf_op = lambda tf, t: joined_tf(tf, tf.split(t, sizes, axis=axis))  # noqa: E731
    else:  # NumPy's slice rules: negative, past the end, out of order (overlapping or empty parts)
        arg = draw(st.lists(st.integers(-n - 2, n + 2), max_size=3))
    x = random_array(draw, shape)
    return [x], lambda t: tc.split(t, arg, axis=axis), lambda a: np.split(a, arg, axis=axis), tf_op


def joined_tf(tf, parts):
    return tf.concat([tf.reshape(p, [-1]) for p in parts], axis=0)


@st.composite
def squeeze_case(draw, tf=False):
    shape = shape_of(draw, max_dims=4, sides=st.sampled_from([1, 1, 2, 3]))
    ones = [k for k, n in enumerate(shape) if n == 1]
    axis = draw(st.one_of(st.none(), st.lists(st.sampled_from(ones), min_size=tf, unique=True).map(tuple),
                          st.sampled_from(ones).map(lambda k: k - len(shape)))) if ones else None
    x = random_array(draw, shape)
    tf_axis = None if axis is None else [axis] if isinstance(axis, int) else list(axis)
    tf_op = None if axis == () else lambda tf, t: tf.squeeze(t, axis=tf_axis)  # noqa: E731 (TF: () means all)
    return [x], lambda t: tc.squeeze(t, axis), lambda a: np.squeeze(a, axis), tf_op


@st.composite
def expand_dims_case(draw, tf=False):
    shape = shape_of(draw, sides=sides_for(tf))
    count = draw(st.integers(1, 1 if tf else 2))
    out_ndim = len(shape) + count
    axes = draw(st.lists(st.integers(-out_ndim, out_ndim - 1), min_size=count, max_size=count,
                         unique_by=lambda a: a % out_ndim))
    axis = axes[0] if count == 1 and (tf or draw(st.booleans())) else tuple(axes)
    tf_op = (lambda tf, t: tf.expand_dims(t, axis)) if isinstance(axis, int) else None
    return [random_array(draw, shape)], lambda t: tc.expand_dims(t, axis), lambda a: np.expand_dims(a, axis), tf_op


@st.composite
def broadcast_to_case(draw, tf=False):
    target = shape_of(draw, max_dims=4, sides=sides_for(tf))
    kept = draw(st.integers(0, len(target)))
    shape = tuple(n if draw(st.booleans()) else 1 for n in target[len(target) - kept:])
    return ([random_array(draw, shape)], lambda t: tc.broadcast_to(t, target), lambda a: np.broadcast_to(a, target),
            lambda tf, t: tf.broadcast_to(t, target))


@st.composite
def repeat_case(draw, tf=False):
    shape = shape_of(draw, sides=sides_for(tf))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape else None
    n = int(np.prod(shape)) if axis is None else shape[axis]
    repeats = draw(st.one_of(st.integers(0, 3), st.lists(st.integers(0, 3), min_size=n, max_size=n),
                             st.lists(st.integers(0, 3), min_size=1, max_size=1)))
    return ([random_array(draw, shape)], lambda t: tc.repeat(t, repeats, axis),
            lambda a: np.repeat(a, repeats, axis), lambda tf, t: tf.repeat(t, repeats, axis=axis))


@st.composite
def tile_case(draw, tf=False):
    shape = shape_of(draw, sides=sides_for(tf))
    lengths = (len(shape), len(shape)) if tf else (0, 4)
    reps = draw(st.lists(st.integers(0, 3), min_size=lengths[0], max_size=lengths[1]).map(tuple))
    reps = draw(st.one_of(st.just(reps), st.integers(0, 3))) if not tf else reps
    full = (reps,) if isinstance(reps, int) else reps
    tf_op = None
    if len(full) == len(shape):  # tf.tile wants one multiple per axis
        tf_op = lambda tf, t: tf.tile(t, full)  # noqa: E731
    return [random_array(draw, shape)], lambda t: tc.tile(t, reps), lambda a: np.tile(a, reps), tf_op


@st.composite
def pad_case(draw, tf=False):
    shape = shape_of(draw, min_dims=tf, sides=st.integers(tf, 3))
    mode = "zeros" if tf else draw(st.sampled_from(PADDING_MODES))

    def widths_for(n):  # what the mode allows on an axis of n elements
        top = 0 if n == 0 and mode != "zeros" else n if mode == "circular" else 3
        return st.tuples(st.integers(0, top), st.integers(0, top))

    per_axis = [draw(widths_for(n)) for n in shape]
    smallest = min(shape, default=3)
    forms = ["pair", "int"] + (["per axis", "(n,) per axis"] if shape else [])  # (np.pad refuses () for 0-d)
    form = draw(st.sampled_from(forms))
    if form == "pair":
        pad_width = draw(widths_for(smallest))
    elif form == "int":
        pad_width = draw(widths_for(smallest))[0]
    elif form == "(n,) per axis":
        pad_width = tuple((b,) for b, _ in per_axis)
    else:
        pad_width = tuple(per_axis)
    full = np.broadcast_to(np.asarray(pad_width, dtype=np.intp), (len(shape), 2)).tolist()
    tf_op = (lambda tf, t: tf.pad(t, full)) if mode == "zeros" and shape else None  # no edge or wrap mode in TF
    return ([random_array(draw, shape)], lambda t: tc.pad(t, pad_width, mode),
            lambda a: np.pad(a, pad_width, mode=NP_PAD_MODE[mode]), tf_op)


CASES = {"concatenate": concatenate_case, "stack": stack_case, "split": split_case, "squeeze": squeeze_case,
         "expand_dims": expand_dims_case, "broadcast_to": broadcast_to_case, "repeat": repeat_case,
         "tile": tile_case, "pad": pad_case}


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_values_and_gradcheck(name, data):
    xs, ours, ref, _ = data.draw(CASES[name]())
    got, want = ours(*xs), ref(*xs)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
    for g, w in zip(*((got, want) if isinstance(want, list) else ([got], [want]))):
        assert g.shape == w.shape and g.dtype == w.dtype == np.float64
        np.testing.assert_array_equal(g.data, w)
    assert tc.gradcheck(lambda *t: joined(ours(*t)), *xs)


@pytest.mark.parametrize("name", CASES)
@TF_EXAMPLES
@given(data=st.data())
def test_against_tensorflow(tf, name, data):
    xs, ours, _, tf_op = data.draw(CASES[name](tf=True))
    assert tf_op is not None and all(x.size for x in xs)
    out_shape = joined(ours(*xs)).shape
    upstream = np.random.default_rng(41).standard_normal(out_shape)
    value, grads = our_grads(lambda *t: joined(ours(*t)), *xs, upstream=upstream)
    tf_value, tf_grads_ = tf_grads(tf, lambda *t: tf_op(tf, *t), *xs, upstream=upstream)
    np.testing.assert_array_equal(value, tf_value)
    for g, tg in zip(grads, tf_grads_):
        np.testing.assert_allclose(g, tg, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------------- #
# Gradients by hand, where the rule is the point


def test_broadcast_to_gradient_is_summed_by_the_engine():
    """BroadcastTo.backward returns g as it is: its shape is the target, a broadcast of x's shape, which
    the engine sums back (over the new leading axis and the stretched size-1 axis)."""
    x = Tensor(np.array([[1.0], [2.0]]), requires_grad=True)        # (2, 1)
    y = tc.broadcast_to(x, (3, 2, 4))
    g = np.arange(24.0).reshape(3, 2, 4)
    y.backward(g)
    np.testing.assert_array_equal(x.grad, g.sum(axis=(0, 2))[:, None])
    assert not y.data.flags.writeable and np.shares_memory(y.data, x.data)  # a read-only view, as NumPy's


def test_pad_replicate_adds_the_edge_copies_onto_the_edge_and_circular_wraps_them():
    g = np.array([1.0, 10.0, 100.0, 1000.0, 1e4, 1e5, 1e6])             # for (2, 2) padding of 3 elements
    x = Tensor(np.zeros(3), requires_grad=True)
    tc.pad(x, (2, 2), "replicate").backward(g)
    assert x.grad.tolist() == [1 + 10 + 100, 1000, 1e4 + 1e5 + 1e6]
    x.grad = None
    tc.pad(x, (2, 2), "circular").backward(g)  # padded: x1 x2 | x0 x1 x2 | x0 x1
    assert x.grad.tolist() == [100 + 1e5, 1 + 1000 + 1e6, 10 + 1e4]
    x.grad = None
    tc.pad(x, (3, 3), "circular").backward(np.arange(9.0))  # the whole axis on each side: allowed (as PyTorch)
    assert x.grad.tolist() == [0 + 3 + 6, 1 + 4 + 7, 2 + 5 + 8]


def test_repeat_and_tile_gradients_sum_the_copies():
    x = Tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=True)
    tc.repeat(x, [2, 0, 1], axis=1).backward(np.array([[1.0, 10.0, 100.0]]))
    assert x.grad.tolist() == [[11.0, 0.0, 100.0]]  # the element repeated 0 times gets 0
    x.grad = None
    tc.tile(x, (2, 2)).backward(np.arange(12.0).reshape(2, 6))
    assert x.grad.tolist() == [[0 + 3 + 6 + 9, 1 + 4 + 7 + 10, 2 + 5 + 8 + 11]]


def test_a_tensor_joined_with_itself_gets_both_blocks():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    tc.concatenate([x, x * 3, x], axis=0).backward(np.arange(6.0))
    assert x.grad.tolist() == [0 + 3 * 2 + 4, 1 + 3 * 3 + 5]
    x.grad = None
    tc.stack((x, x), axis=1).backward(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert x.grad.tolist() == [3.0, 7.0]


def test_split_parts_overlap_as_numpys_do_and_gradients_add():
    x = Tensor(np.arange(5.0), requires_grad=True)
    parts = tc.split(x, [3, 1, 9])  # x[:3], x[3:1] (empty), x[1:9], x[9:] (empty)
    assert [p.data.tolist() for p in parts] == [a.tolist() for a in np.split(np.arange(5.0), [3, 1, 9])]
    sum(((p * (k + 1)).sum() for k, p in enumerate(parts)), Tensor(0.0)).backward()
    assert x.grad.tolist() == [1, 4, 4, 3, 3]
    assert [p.shape for p in tc.split(np.zeros((2, 0)), 3, axis=1)] == [(2, 0)] * 3


# ---------------------------------------------------------------------------------------------- #
# Forms of the arguments, dtypes, methods


def test_pad_width_forms_are_numpys():
    x = np.arange(6.0).reshape(2, 3)
    for pad_width in [1, (1, 2), [(1, 2)], ((1,), (2,)), ((0, 1), (2, 0)), np.array([[1, 0], [0, 2]]), 0]:
        for mode in PADDING_MODES:
            np.testing.assert_array_equal(tc.pad(x, pad_width, mode).data, np.pad(x, pad_width, NP_PAD_MODE[mode]))
    assert tc.pad(np.array(5.0), 3).data.tolist() == 5.0  # a 0-d tensor has no axis to pad, as np.pad
    assert windows.PAD_MODES == PADDING_MODES  # pad's modes are conv2d's padding modes


def test_numpy_forms_of_the_other_arguments():
    x = np.arange(24.0).reshape(2, 3, 4)
    assert tc.expand_dims(x, (0, -1)).shape == np.expand_dims(x, (0, -1)).shape == (1, 2, 3, 4, 1)
    assert tc.broadcast_to(np.array(2.0), 3).data.tolist() == [2.0, 2.0, 2.0]
    np.testing.assert_array_equal(tc.repeat(x, np.array([1, 0, 2]), axis=1).data, np.repeat(x, [1, 0, 2], axis=1))
    np.testing.assert_array_equal(tc.repeat(x, [2]).data, np.repeat(x, [2]))  # one count for every element
    np.testing.assert_array_equal(tc.tile(x, (2, 1, 1, 2)).data, np.tile(x, (2, 1, 1, 2)))  # x gets a new axis
    np.testing.assert_array_equal(tc.tile(x, ()).data, x)
    assert [p.shape for p in tc.split(x, np.array([1, 3]), axis=-1)] == [(2, 3, 1), (2, 3, 2), (2, 3, 1)]
    assert tc.stack([1.0, np.float64(2.0), Tensor(3.0)]).data.tolist() == [1.0, 2.0, 3.0]  # numbers are 0-d


def test_tensor_methods_follow_numpys_ndarray():
    x = Tensor(np.arange(6.0).reshape(1, 2, 3), requires_grad=True)
    assert x.squeeze().shape == (2, 3) and x.squeeze(0).shape == (2, 3)
    np.testing.assert_array_equal(x.repeat(2, axis=2).data, x.data.repeat(2, axis=2))  # NumPy's, not torch's
    x.repeat([1, 2], axis=1).squeeze().sum().backward()
    assert x.grad.tolist() == [[[1, 1, 1], [2, 2, 2]]]


def test_join_promotes_as_the_operators_do():
    f32 = Tensor(np.ones(2, np.float32), requires_grad=True)
    f64 = np.ones(2)
    y = tc.concatenate([f32, f64])
    assert y.dtype == np.float64
    y.backward(np.arange(4.0))
    assert f32.grad.dtype == np.float32 and f32.grad.tolist() == [0.0, 1.0]  # the engine casts the block back
    assert tc.concatenate([f32, np.array([1, 2], np.int64)]).dtype == np.float32  # float64 only from float64
    int8, flags = Tensor([1, 2], dtype=np.int8), Tensor([True, False], dtype=bool)
    assert tc.stack([int8, flags]).dtype == np.int8 and tc.stack([int8, flags]).data.tolist() == [[1, 2], [1, 0]]
    assert tc.concatenate([flags, flags]).dtype == np.bool_
    assert tc.stack([int8, Tensor([0.5, 1.0], dtype=np.float16)]).dtype == np.float16  # as int8 + float16
    # arrays and lists become Tensors by the dtype policy first (an int64 array is float32), as in every op
    assert tc.stack([[1, 2], np.array([3, 4])]).dtype == np.float32


OPS32 = {
    "concatenate": lambda t: tc.concatenate([t, t * 2], axis=1), "stack": lambda t: tc.stack([t, t], axis=-1),
    "split": lambda t: tc.split(t, [1], axis=1)[1], "squeeze": lambda t: tc.squeeze(t[:1]),
    "expand_dims": lambda t: tc.expand_dims(t, 1), "broadcast_to": lambda t: tc.broadcast_to(t, (2, 3, 4)),
    "repeat": lambda t: tc.repeat(t, [1, 2, 0, 1], axis=1), "tile": lambda t: tc.tile(t, (2, 1)),
    **{f"pad({mode})": (lambda t, m=mode: tc.pad(t, ((1, 2), (0, 3)), m)) for mode in PADDING_MODES},
}


@pytest.mark.parametrize("name", OPS32)
def test_float32_stays_float32(name):
    x = np.random.default_rng(42).standard_normal((3, 4))
    t32, t64 = Tensor(x.astype(np.float32), requires_grad=True), Tensor(x, requires_grad=True)
    y32, y64 = OPS32[name](t32), OPS32[name](t64)
    g = np.random.default_rng(43).standard_normal(y64.shape)
    y32.backward(g.astype(np.float32))
    y64.backward(g)
    assert y32.dtype == t32.grad.dtype == np.float32
    np.testing.assert_allclose(y32.data, y64.data, rtol=1e-7)
    np.testing.assert_allclose(t32.grad, t64.grad, rtol=1e-6, atol=1e-6)


def test_graph_labels_show_every_input_and_the_arguments_as_given():
    x = Tensor(np.ones((2, 3)), requires_grad=True, name="x")
    y = tc.concatenate([x, np.zeros((2, 1)), x * 2], axis=1)
    loss = (tc.pad(y, ((1, 1), (2, 2)), "circular").sum() + tc.tile(x, (2, 2)).sum()
            + tc.repeat(x, [1, 1, 2], axis=1).sum())
    source = tc.draw_graph(loss).source
    assert "Concatenate\\naxis=1\\n(2, 7)" in source
    assert source.count("-> " + _node_id(source, "Concatenate")) == 3  # x, the constant and x * 2
    # pairs kept as written: ((1, 1), (2, 2)) is not the pair (1, 2), and tile's (2, 2) is not 2
    assert "pad_width=((1, 1), (2, 2))" in source and "mode=circular" in source
    assert "reps=(2, 2)" in source and "repeats=(1, 1, 2)" in source


def _node_id(source: str, op: str) -> str:
    line = next(line for line in source.splitlines() if f'label="{op}' in line)
    return line.split()[0]


def test_jit_replays_match_eager():
    def loss(x, y):
        parts = tc.split(x, [1, 3], axis=1)
        joined = tc.concatenate([parts[2], y, parts[0]], axis=1)                        # (2, 4)
        z = tc.stack([joined, tc.squeeze(tc.expand_dims(joined, 0), 0)], axis=0)        # (2, 2, 4)
        z = tc.pad(z, ((0, 0), (1, 1), (2, 1)), "replicate") + tc.pad(z, 1, "circular")[:, :, 1:].sum()
        z = tc.repeat(z, 2, axis=1) * tc.tile(tc.broadcast_to(y, (2, 3)), (2, 1, 1)).sum()
        return (z * z).sum()

    step = tc.jit(tc.value_and_grad(loss, argnums=(0, 1)))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, y = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 1)).astype(np.float32)
        value, grads = step(x, y)
        eager_value, eager_grads = tc.value_and_grad(loss, argnums=(0, 1))(x, y)
        assert value == eager_value
        for g, e in zip(grads, eager_grads):
            assert g.dtype == np.float32 and np.array_equal(g, e)
    assert step.traces == 1


# ---------------------------------------------------------------------------------------------- #
# Errors


ERRORS = [
    (lambda: tc.concatenate([np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4))], axis=0),
     ValueError, r"concatenate: tensors\[2\] has shape \(2, 4\), expected \(\*, 3\) matching tensors\[0\] \(2, 3\) "
                 r"except on axis 0"),
    (lambda: tc.concatenate([np.zeros((2, 3)), np.zeros(3)], axis=1),
     ValueError, r"concatenate: tensors\[1\] has shape \(3,\), expected \(2, \*\) matching tensors\[0\] \(2, 3\)"),
    (lambda: tc.concatenate([np.zeros(2)], axis=1), ValueError, "concatenate: axis=1 is out of range for a 1-D input"),
    (lambda: tc.concatenate([1.0, 2.0]), ValueError, r"concatenate: tensors\[0\] is 0-d .*use stack"),
    (lambda: tc.concatenate([]), ValueError, "concatenate: tensors must hold at least one tensor, got an empty list"),
    (lambda: tc.concatenate(np.zeros((2, 3))), TypeError,
     "concatenate: tensors must be a list or tuple of tensors, got an np.ndarray .* use split"),
    (lambda: tc.concatenate([np.zeros(2), "a"]), TypeError, r"concatenate: tensors\[1\] must be a Tensor"),
    (lambda: tc.stack([np.zeros((2, 3)), np.zeros((3, 2))]), ValueError,
     r"stack: tensors\[1\] has shape \(3, 2\), expected \(2, 3\) as tensors\[0\] \(stack needs equal shapes\)"),
    (lambda: tc.stack([np.zeros(2)], axis=2), ValueError, "stack: axis=2 is out of range for a 2-D input"),
    (lambda: tc.split(np.zeros((2, 7)), 3, axis=1), ValueError,
     r"split: 3 sections do not divide axis 1 of length 7 \(x.shape=\(2, 7\)\); pass the indices"),
    (lambda: tc.split(np.zeros(4), 0), ValueError, "split: indices_or_sections must be >= 1, got 0"),
    (lambda: tc.split(np.zeros(4), [1, 2.5]), TypeError, r"split: indices_or_sections\[1\] must be an int"),
    (lambda: tc.split(np.zeros(4), "2"), TypeError, "split: indices_or_sections must be an int .* or a list of ints"),
    (lambda: tc.split(np.array(1.0), 1), ValueError, "split: axis=0 is out of range for a 0-D input"),
    (lambda: tc.squeeze(np.zeros((1, 3)), axis=1), ValueError,
     r"squeeze: axis 1 has size 3, not 1 \(x.shape=\(1, 3\)\); only axes of size 1 can be removed"),
    (lambda: tc.squeeze(np.zeros((1, 3)), axis=(0, 0)), ValueError, "squeeze: axis=.* names an axis twice"),
    (lambda: tc.expand_dims(np.zeros(3), 2), ValueError, "expand_dims: axis=2 is out of range for a 2-D input"),
    (lambda: tc.expand_dims(np.zeros(3), None), TypeError, "expand_dims: axis must be an int or a tuple of ints"),
    (lambda: tc.broadcast_to(np.zeros((2, 3)), (4, 3)), ValueError,
     r"broadcast_to: cannot broadcast x of shape \(2, 3\) to \(4, 3\): axis 0 of x has size 2, which is neither "
     r"1 nor 4"),
    (lambda: tc.broadcast_to(np.zeros((2, 3)), (3,)), ValueError, "broadcast_to: .* which has fewer axes"),
    (lambda: tc.broadcast_to(np.zeros(3), (-1, 3)), ValueError, "broadcast_to: shape must be >= 0, got -1"),
    (lambda: tc.repeat(np.zeros((2, 5)), [1, 2, 3], axis=0), ValueError,
     r"repeat: repeats has 3 counts but axis 0 of x has 2 elements \(x.shape=\(2, 5\)\); give one count per"),
    (lambda: tc.repeat(np.zeros((2, 3)), [1, 2]), ValueError, "repeat: .* x has 6 elements .*axis is None"),
    (lambda: tc.repeat(np.zeros(2), -1), ValueError, "repeat: repeats must be >= 0, got -1"),
    (lambda: tc.repeat(np.zeros(2), [1, 1.5]), TypeError, r"repeat: repeats\[1\] must be an int"),
    (lambda: tc.tile(np.zeros(2), (2, -1)), ValueError, r"tile: reps\[1\] must be >= 0, got -1"),
    (lambda: tc.pad(np.zeros(3), -1), ValueError, "pad: pad_width must be >= 0 .*NumPy refuses"),
    (lambda: tc.pad(np.zeros((2, 3)), ((1, 1), (1, 1), (1, 1))), ValueError,
     r"pad: pad_width must be an int, a \(before, after\) pair, or one such pair per axis \(2 for"),
    (lambda: tc.pad(np.zeros(3), (1, 2, 3)), ValueError, "pad: pad_width must be an int, a"),
    (lambda: tc.pad(np.zeros(3), [[1], [2, 3]]), ValueError, "pad: pad_width must be an int, a"),
    (lambda: tc.pad(np.zeros(3), 1.5), TypeError, "pad: pad_width must hold ints, got 1.5"),
    (lambda: tc.pad(np.zeros(3), 1, mode="reflect"), ValueError,
     "pad: mode must be one of 'zeros', 'replicate', 'circular', got 'reflect'"),
    (lambda: tc.pad(np.zeros(3), (4, 0), mode="circular"), ValueError,
     r"pad: circular padding of 4 on axis 0 wraps more than once around its 3 elements"),
    (lambda: tc.pad(np.zeros((2, 0)), 1, mode="replicate"), ValueError,
     "pad: mode 'replicate' cannot pad axis 1 of size 0"),
]


@pytest.mark.parametrize("call, error, message", ERRORS)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_docstring_examples_run():
    assert doctest.testmod(movement, extraglobs={"np": np}).failed == 0
