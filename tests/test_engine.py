"""The autodiff engine: accumulation, reuse, no_grad, deep graphs, memory release, custom ops, Tensor basics."""

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.testing import arrays, broadcastable_shapes


def test_dtype_policy():
    assert Tensor(np.zeros(3)).dtype == np.float64
    assert Tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.arange(3)).dtype == np.float32
    assert Tensor(np.zeros(3, dtype=np.float16)).dtype == np.float32
    assert Tensor(np.arange(3), dtype=np.int64).dtype == np.int64
    x = Tensor(np.ones(3, dtype=np.float32))
    assert (x * 2).dtype == np.float32 and (2.5 + x).dtype == np.float32 and (x ** 2).dtype == np.float32


def test_float32_gradients_stay_float32():
    x = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    ((x * 3.0).exp().mean() + x.max()).backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == (2, 3)


def test_accumulates_over_two_backward_calls():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 3)


def test_tensor_used_twice_gets_both_paths():
    x = Tensor([1.0, -2.0], requires_grad=True)
    y = x * 2
    (y * y + y).sum().backward()  # d/dx (4x^2 + 2x) = 8x + 2
    np.testing.assert_allclose(x.grad, 8 * x.data + 2)


def test_add_of_two_leaves_gives_unshared_grads():
    a, b = Tensor([1.0], requires_grad=True), Tensor([2.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad += 5
    assert b.grad[0] == 1.0


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with tc.no_grad():
        y = x * 2
    assert not y.requires_grad and y.op is None
    assert tc.autograd.is_grad_enabled()


def test_no_grad_restored_after_exception():
    with pytest.raises(RuntimeError):
        with tc.no_grad():
            raise RuntimeError
    assert tc.autograd.is_grad_enabled()


def test_constants_get_no_grad_and_are_not_visited():
    x, c = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0])
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, [3, 4])


def test_chain_of_20000_ops_does_not_recurse():
    x = Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 20_000], rtol=1e-9)


def test_graph_is_freed_after_backward():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 4)), requires_grad=True)
    h1 = (x * 2).tanh()
    h2 = h1 @ h1
    loss = h2.sum()
    refs = [weakref.ref(t) for t in (h1, h2)]
    del h1, h2
    loss.backward()
    assert all(r() is None for r in refs), "intermediates survive the backward pass"
    assert loss._node is None


def test_intermediates_die_on_del_without_gc():
    gc.disable()
    try:
        x = Tensor(np.ones(3), requires_grad=True)
        y = (x * 2).exp()
        ref = weakref.ref(y)
        del y
        assert ref() is None  # no reference cycles: refcounting alone frees it
    finally:
        gc.enable()


def test_retain_graph_keeps_intermediate_grads():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3
    loss = (y * y).sum()
    loss.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad, 2 * y.data)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * 18 * x.data)


def test_backward_errors():
    with pytest.raises(ValueError, match="scalar"):
        Tensor(np.ones(3), requires_grad=True).exp().backward()
    with pytest.raises(ValueError, match="shape"):
        Tensor(np.ones(3), requires_grad=True).exp().backward(np.ones(4))
    with pytest.raises(ValueError, match="does not require grad"):
        Tensor(np.ones(1)).backward()
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), dtype=np.int64, requires_grad=True)


def test_backward_with_explicit_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [2.0, 40.0])


def test_inputs_are_not_mutated():
    data = np.array([[1.0, -2.0], [3.0, 0.5]])
    copy = data.copy()
    x = Tensor(data, requires_grad=True)
    ((x * x).relu().sum(axis=0) / x.max()).sum().backward()
    np.testing.assert_array_equal(data, copy)


@given(broadcastable_shapes(), st.data())
def test_broadcast_gradients_have_each_input_shape(shape_pair, data):
    sa, sb = shape_pair
    a = Tensor(data.draw(arrays(sa)), requires_grad=True)
    b = Tensor(data.draw(arrays(sb)), requires_grad=True)
    (a * b + a - b).sum().backward()
    assert a.grad.shape == sa and b.grad.shape == sb
    np.testing.assert_allclose(a.grad, np.broadcast_to(b.data + 1, np.broadcast_shapes(sa, sb))
                               .sum(axis=tuple(range(len(np.broadcast_shapes(sa, sb)) - len(sa))))
                               .sum(axis=tuple(i for i, n in enumerate(sa) if n == 1), keepdims=True)
                               .reshape(sa), rtol=1e-12)


def test_comparisons_have_no_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    m = x > 1.5
    assert m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.data, [False, True])


def test_repr_shows_shape_dtype_op_and_name():
    w = Tensor(np.zeros((3, 4), dtype=np.float32), requires_grad=True, name="w")
    assert repr(w) == "Tensor(shape=(3, 4), dtype=float32, name='w', requires_grad=True)"
    assert "op=Mul" in repr(w * 2)
    assert repr(Tensor([1.0, 2.0])).startswith("Tensor([1., 2.], shape=(2,)")


def test_detach_item_numpy():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * 3).detach()
    assert not y.requires_grad and y.op is None
    assert (x * 3).item() == 6.0 and isinstance(x.item(), float)
    assert x.numpy() is x.data
    with pytest.raises(ValueError, match="one-element"):
        Tensor(np.ones(2)).item()


def test_ndarray_on_the_left_defers_to_tensor():
    x = Tensor(np.ones(2), requires_grad=True)
    y = np.array([2.0, 3.0]) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 3.0])


class Cube(Function):
    """y = x^3, dx = 3 x^2 g."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


def test_custom_function_and_context():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = Cube.apply(x)
    assert y.op == "Cube"
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 12.0])
    assert tc.gradcheck(Cube.apply, np.array([0.3, -1.2]))


class ScaleBy(Function):
    """A custom op with a keyword argument and a constant input: y = a * k + b."""

    @staticmethod
    def forward(ctx, a, b, k=1.0):
        ctx.k = k
        return a * k + b

    @staticmethod
    def backward(ctx, g):
        return g * ctx.k, (g if ctx.needs_input_grad[1] else None)


def test_custom_function_keyword_and_needs_input_grad():
    a = Tensor(np.ones(3), requires_grad=True)
    ScaleBy.apply(a, np.zeros(3), k=4.0).sum().backward()
    np.testing.assert_allclose(a.grad, 4.0)


def test_function_returning_wrong_number_of_grads_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="returned 1 gradients for 2 inputs"):
        Bad.apply(Tensor(np.ones(2), requires_grad=True), np.ones(2)).sum().backward()


def test_profile_recorder_sees_every_forward_and_backward():
    events = []
    with tc.autograd.record_profile(lambda op, phase, sec, ctx: events.append((op.__name__, phase))):
        x = Tensor(np.ones(3), requires_grad=True)
        (x * 2).sum().backward()
    assert events == [("Mul", "forward"), ("Sum", "forward"), ("Sum", "backward"), ("Mul", "backward")]


@given(arrays((3,), low=0.5, high=2.0), arrays((3,), low=0.5, high=2.0))
def test_shared_input_reached_along_paths_of_different_depth(a_data, b_data):
    """a feeds the sum both directly and through a*b: both paths must arrive before a is processed."""
    a, b = Tensor(a_data, requires_grad=True), Tensor(b_data, requires_grad=True)
    (a + a * b).sum().backward()
    np.testing.assert_allclose(a.grad, b_data + 1)
    a2 = Tensor(a_data, requires_grad=True)
    h = a2.exp()
    (h + h.relu()).sum().backward()
    np.testing.assert_allclose(a2.grad, 2 * np.exp(a_data))
    assert tc.gradcheck(lambda x, y: x + (x * y).exp() * x + y.tanh() * x, a_data, b_data)


def test_second_backward_through_a_released_graph_is_an_error():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="released by an earlier backward"):
        loss.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


def test_item_is_a_python_float():
    assert isinstance(Tensor(np.array([3]), dtype=np.int64).item(), float)


# ---------------------------------------------------------------------------------------------- #
# The engine refuses what it cannot do right (issue 10, item 4) and its modes are per thread (item 3).

def test_backward_through_a_released_intermediate_raises_naming_retain_graph():
    w = Tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    (h * h).sum().backward()                     # releases h's node
    with pytest.raises(RuntimeError, match="released.*retain_graph=True"):
        h.sum().backward()                       # would leave w.grad at 18w instead of 18w + 3
    np.testing.assert_array_equal(w.grad, [18.0, 36.0])  # nothing half-accumulated


def test_backward_through_a_retained_intermediate_is_right():
    w = Tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    (h * h).sum().backward(retain_graph=True)
    h.sum().backward()
    np.testing.assert_array_equal(w.grad, [21.0, 39.0])  # 18w + 3


def test_a_detached_released_intermediate_is_a_constant():
    w = Tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    (h * h).sum().backward()
    (h.detach() * w).sum().backward()
    np.testing.assert_array_equal(w.grad, [18.0 + 3.0, 36.0 + 6.0])


class Transposing(Function):
    """A wrong op: its backward returns the transpose of the right gradient."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return (g * 2).T


class Broadcasting(Function):
    """A right op that returns a broadcast-shaped gradient: (4, 2, 3) for a (2, 3) input."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return np.broadcast_to(g * 2 / 4, (4,) + g.shape)


def test_a_gradient_of_the_wrong_shape_is_refused_naming_op_and_shapes():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Transposing.backward returned a gradient of shape \(3, 2\) for input 0 "
                                           r"of shape \(2, 3\)"):
        Transposing.apply(x).sum().backward()
    assert x.grad is None


def test_a_broadcast_shaped_gradient_is_summed_back():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    Broadcasting.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), 2.0))


class DoubleInPlace(Function):
    """y = 2x with a backward that edits the gradient it was given (a bug)."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        g *= 2
        return g


def test_a_backward_cannot_write_into_a_shared_gradient():
    a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([1.0, 1.0], requires_grad=True)
    y = DoubleInPlace.apply(a) + b * 1.0         # add passes one gradient array to both inputs
    with pytest.raises(RuntimeError, match="DoubleInPlace.backward wrote into the gradient it was given"):
        y.sum().backward()


def test_the_users_seed_gradient_is_not_made_read_only():
    x = Tensor([1.0, 2.0], requires_grad=True)
    seed = np.ones(2, np.float32)
    (x * 2).backward(seed)
    seed[0] = 5.0                                # still the user's writable array
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_leaf_gradients_are_writable_copies():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x + 0).sum().backward()
    x.grad[0] = 7.0                              # users may edit .grad (optimizers do)
    assert x.grad.flags.writeable


def test_detect_anomaly_catches_an_input_modified_between_forward_and_backward():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, name="x")
    with tc.detect_anomaly():
        y = (x * x).sum()
        x.data[0] = 100.0                        # ops keep references to their inputs, not copies
        with pytest.raises(RuntimeError, match=r"input 0 \('x'\) of Mul was modified in place"):
            y.backward()


def test_without_detect_anomaly_ops_use_the_arrays_as_they_are_at_backward():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    x.data[0] = 100.0
    y.backward()                                 # documented: no copy, so the edited value is used
    np.testing.assert_array_equal(x.grad, [200.0, 4.0, 6.0])


def _in_other_thread(fn):
    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()))
    thread.start()
    thread.join()
    return result["value"]


def test_no_grad_in_one_thread_does_not_switch_off_recording_in_another():
    import threading

    x = Tensor([1.0], requires_grad=True)
    with tc.no_grad():
        assert not (x * 2).requires_grad
        assert _in_other_thread(lambda: (x * 2).requires_grad)
    inside, done = threading.Event(), threading.Event()

    def hold_no_grad():
        with tc.no_grad():
            inside.set()
            done.wait(10)

    other = threading.Thread(target=hold_no_grad)
    other.start()
    try:
        assert inside.wait(10)
        assert (x * 2).requires_grad             # recorded here while the other thread is in no_grad
    finally:
        done.set()
        other.join()


def test_detect_anomaly_and_the_profiler_are_per_thread():
    def nan_op():
        with np.errstate(invalid="ignore"):
            return Tensor([-1.0], requires_grad=True).log().item()

    seen = []
    with tc.detect_anomaly(), tc.autograd.record_profile(lambda op, *_: seen.append(op.__name__)):
        with pytest.raises(FloatingPointError):
            nan_op()
        assert np.isnan(_in_other_thread(nan_op))  # no anomaly mode there
    assert seen == ["Log"]                        # the other thread's Log was not recorded here
