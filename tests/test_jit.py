"""tc.jit: a traced and replayed function gives the bits eager gives, refuses what it cannot replay,
retraces visibly, and never writes into what it returned before or into its inputs."""

import copy
import importlib
import warnings

import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn.autograd import TraceError
from tinygrad_cnn.pytree import tree_leaves

jit_module = importlib.import_module("tinygrad_cnn.jit")  # tc.jit is the function

INPUT = {"cnn": (1, 28, 28), "cnn-bn": (1, 28, 28), "ising-cnn": (1, 12, 12)}
CLASSES = {"cnn": 10, "cnn-bn": 10, "ising-cnn": 2}


def batch(rng, name, n=16):
    x = rng.standard_normal((n, *INPUT[name])).astype(np.float32)
    return x, rng.integers(0, CLASSES[name], n)


def bits_equal(a, b) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
                                      for x, y in zip(la, lb))


def close_to_rounding(got, want) -> bool:
    """Same structure and dtypes, values equal to float32 rounding of a sum taken in another order."""
    la, lb = tree_leaves(got), tree_leaves(want)
    return len(la) == len(lb) and all(
        np.asarray(a).dtype == np.asarray(b).dtype
        and np.allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(b), initial=0.0))) for a, b in zip(la, lb))


@pytest.mark.parametrize("name", list(INPUT))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("which", ["exact", "default"])
def test_jit_gives_eager_results_on_every_reference_model(name, dropout, which):
    """Data, labels and dropout masks change every call; batch-norm statistics update as eager updates them.
    With ``rewrites.EXACT`` every bit is eager's; with the default (batch_norm_max_pool in cnn-bn, conv2's
    backward by Winograd's F(4x4, 3x3) in every model) the loss and the statistics are, and the gradients
    equal eager's to rounding."""
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=INPUT[name][-1]) if name != "ising-cnn" else model.init(rng)
    jit_state, eager_state = state, copy.deepcopy(state)

    def loss(p, x, y, key, st):
        logits = model.apply(p, x, state=st, training=True, dropout_rate=dropout, rng=key)
        return tc.cross_entropy(logits, y)

    step = tc.jit(tc.value_and_grad(loss), rewrites=tc.rewrites.EXACT if which == "exact" else None)
    eager = tc.value_and_grad(loss)
    jit_key, eager_key = np.random.default_rng(1), np.random.default_rng(1)   # one generator for all calls
    for _ in range(4):
        x, y = batch(rng, name)
        got = step(params, x, y, jit_key, jit_state)
        want = eager(params, x, y, eager_key, eager_state)
        assert got[0] == want[0]
        assert bits_equal(got, want) if which == "exact" else close_to_rounding(got, want)
        assert bits_equal(jit_state, eager_state)
        params = tc.pytree.tree_map(lambda p, g: p - 0.1 * g, params, got[1])
    assert step.traces == 1


def test_the_trace_returns_the_plans_results_and_updates_state_once():
    """The first call traces eagerly, undoes what the trace changed in place (running statistics, the
    dropout generator) and returns the plan's run: the same bits as a later call from the same state,
    even with a rewrite that sums in another order, and the state moved once, as eager moves it."""
    model = tc.models.get("cnn-bn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng)
    before = copy.deepcopy(state)

    def loss(p, x, y, key, st):
        return tc.cross_entropy(model.apply(p, x, state=st, training=True, dropout_rate=0.3, rng=key), y)

    step, eager = tc.jit(tc.value_and_grad(loss)), tc.value_and_grad(loss)
    x, y = batch(rng, "cnn-bn")
    jit_key, eager_key = np.random.default_rng(1), np.random.default_rng(1)
    eager_state = copy.deepcopy(state)
    first = step(params, x, y, jit_key, state)
    want = eager(params, x, y, eager_key, eager_state)
    assert step.traces == 1 and "BatchNormMaxPool" in _forward_ops(step)
    assert bits_equal(state, eager_state)                      # updated once, as eager updates it
    assert jit_key.bit_generator.state == eager_key.bit_generator.state
    assert first[0] == want[0] and close_to_rounding(first, want)
    again = step(params, x, y, np.random.default_rng(1), before)  # a replay from the same state
    assert bits_equal(first, again)
    assert bits_equal(state, before)


def test_the_checked_replay_does_not_hold_eager_memory_and_the_arenas_at_once():
    """The second call runs fn eagerly beside the plan (the check): the arenas are let go first, so its
    peak memory stays at the first call's (the trace), not the eager run's plus the plan's."""
    import tracemalloc

    model = tc.models.get("cnn-bn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng)
    step = tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(model.apply(p, x, state=state), y)))
    batches = [batch(rng, "cnn-bn", n=64) for _ in range(3)]
    peaks = []  # the most memory NumPy and Python held during each call, from before the first
    tracemalloc.start()
    try:
        for x, y in batches:
            tracemalloc.reset_peak()
            step(params, x, y)
            peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    assert peaks[1] <= peaks[0] and peaks[2] < peaks[0]


def test_jit_of_a_function_with_aux_and_several_outputs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)

    def f(w, x):
        logits = tc.linear(x, w)
        return tc.cross_entropy(logits, np.arange(len(x)) % 3), logits

    vg = tc.value_and_grad(f, has_aux=True)
    step = tc.jit(lambda w, x: (lambda out: (out[0][0], out[0][1].data, out[1]))(vg(w, x)))
    for _ in range(3):
        x = rng.standard_normal((6, 4)).astype(np.float32)
        (value, logits), grads = vg(w, x)
        got = step(w, x)
        assert got[0] == value and np.array_equal(got[1], logits.data) and np.array_equal(got[2], grads)


def test_what_a_call_returned_is_never_overwritten_and_inputs_are_never_written():
    model = tc.models.get("cnn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=12)
    step = tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(model.apply(p, x, state=state), y)))
    x, y = batch(rng, "cnn", 8)
    x, y = x[..., :12, :12].copy(), y
    kept = [step(params, x * (i + 1), y) for i in range(3)]
    snapshots = copy.deepcopy(kept)
    params_before, x_before = copy.deepcopy(params), x.copy()
    for i in range(3):
        step(params, x * (i + 5), y)
    assert bits_equal(kept, snapshots)
    assert bits_equal(params, params_before) and np.array_equal(x, x_before)
    grads = [tree_leaves(k[1]) for k in kept]
    assert all(a is not b for a, b in zip(grads[0], grads[1]))


def test_an_input_returned_as_it_is_comes_back_as_a_copy():
    step = tc.jit(lambda x: (x, (tc.Tensor(x) * 2).data))
    x = np.ones(3, np.float32)
    for _ in range(2):
        same, double = step(x)
        assert np.array_equal(same, x) and same is not x and np.array_equal(double, 2 * x)


@pytest.mark.parametrize("convert", [lambda t: t.item(), lambda t: bool(t.sum() > 0), lambda t: t.numpy()],
                         ids=["item", "bool", "numpy"])
def test_turning_a_tensor_into_a_python_value_is_refused_during_the_trace(convert):
    def f(w):
        t = (tc.Tensor(w) * 2).sum()
        convert(t)
        return (t * 1).data

    with pytest.raises(TraceError, match="jit: .* inside a jitted function"):
        tc.jit(f)(np.ones(3, np.float32))
    assert convert((tc.Tensor(np.ones(3)) * 2).sum()) is not None  # fine outside a trace


@pytest.mark.parametrize("rewrites", [None, ("bias_after_max_pool",)])
def test_numpy_code_on_an_input_outside_the_ops_is_caught_at_the_first_replay(rewrites):
    """Also when a rewrite that reorders sums makes the check allow float rounding."""
    def f(w, x):
        scaled = x / 255.0                        # NumPy on a raw input: frozen at trace time
        return tc.value_and_grad(lambda w: (tc.Tensor(scaled) * w).sum())(w)

    step = tc.jit(f, rewrites=rewrites)
    w = np.ones(3, np.float32)
    step(w, np.full(3, 255.0, np.float32))
    with pytest.raises(TraceError, match="differs from running fn eagerly"):
        step(w, np.full(3, 255.5, np.float32))   # 0.2% off: far beyond rounding


@pytest.mark.parametrize("view", [lambda x, t: x[:, None], lambda x, t: x.T, lambda x, t: (t * 2).data.reshape(-1)],
                         ids=["input[:, None]", "input.T", "result.data.reshape"])
def test_a_numpy_view_of_traced_memory_is_refused_during_the_trace(view):
    """A view of an input (or of what an op computed) made with NumPy would be frozen as a constant
    pointing at the trace's memory; the trace refuses it, naming the cure."""
    def f(x):
        t = tc.Tensor(x)
        return (tc.Tensor(view(x, t)) * 3).sum().data

    with pytest.raises(TraceError, match="view of an input or of an op's result made with NumPy inside fn"):
        tc.jit(f)(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("name", ["cnn", "resnet-small"])
def test_grayscale_images_without_a_channel_axis_are_traced(name):
    """The models add the channel axis of (N, H, W) images with an op, not with x[:, None]."""
    model = tc.models.get(name)
    params, state = model.init(np.random.default_rng(0))

    def loss(p, x, y):
        return tc.cross_entropy(model.apply(p, x, state=state, training=True), y)

    step = tc.jit(tc.value_and_grad(loss), rewrites=tc.rewrites.EXACT)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = batch(rng, "cnn", n=8)
        got = step(params, x[:, 0], y)
        assert bits_equal(got, tc.value_and_grad(loss)(params, x[:, 0], y))
        assert bits_equal(got[0], tc.value_and_grad(loss)(params, x, y)[0])
    assert step.traces == 1


def test_dropout_without_a_generator_is_refused_during_the_trace():
    """Without rng= each eager call draws from a new unseeded generator; the trace says so at once instead
    of the first replay finding different masks."""
    def f(x):
        return tc.dropout(tc.Tensor(x), 0.5).sum().data

    with pytest.raises(TraceError, match=r"dropout: inside a jitted function pass rng="):
        tc.jit(f)(np.ones(8, np.float32))
    assert tc.jit(lambda x: tc.dropout(tc.Tensor(x), 0.5, training=False).sum().data)(np.ones(8)) == 8.0


def test_comparisons_inside_fn_are_recomputed_on_every_call():
    """A mask made with <, ==, ... from this call's data is an op jit records, not a value frozen at trace time."""
    def f(x, labels):
        t = tc.Tensor(x)
        kept = tc.where(t > 0.5, t, 0.0) * (tc.Tensor(labels) == 1)
        return kept.sum().data, (t <= t.mean()).data

    step = tc.jit(f)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x, labels = rng.random(8).astype(np.float32), rng.integers(0, 3, 8)
        assert bits_equal(step(x, labels), f(x, labels))
    assert step.traces == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint64])
def test_labels_of_any_integer_dtype_are_read_afresh_on_every_call(dtype):
    """load_mnist gives uint8 labels. cross_entropy once cast them to intp outside its op, so the trace
    froze the first batch's labels and every fit on them stopped with a TraceError at the first replay."""
    model = tc.models.get("cnn")
    params, _ = model.init(np.random.default_rng(0))

    def loss(p, x, y):
        return tc.cross_entropy(model.apply(p, x), y)

    step, eager = tc.jit(tc.value_and_grad(loss), rewrites=tc.rewrites.EXACT), tc.value_and_grad(loss)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = batch(rng, "cnn")
        y = y.astype(dtype)
        assert bits_equal(step(params, x, y), eager(params, x, y))
    assert step.traces == 1


def test_a_label_outside_the_classes_is_refused_by_a_replay_too():
    """The wrapper's checks run only while tracing; the class range is checked by the op itself, so a
    replay does not read labels[i] = -1 as the last class."""
    def loss(w, x, y):
        return tc.cross_entropy(tc.Tensor(x) @ w, y)

    step = tc.jit(tc.value_and_grad(loss))
    w, x = np.ones((3, 4), np.float32), np.ones((2, 3), np.float32)
    step(w, x, np.array([0, 3]))
    step(w, x, np.array([1, 2]))  # the checked replay
    for bad in ([0, -1], [4, 0]):
        with pytest.raises(ValueError, match=r"cross_entropy: labels\[\d\] = (-1|4) is not a class index in \[0, 4\)"):
            step(w, x, np.array(bad))
    assert step.traces == 1


@pytest.mark.parametrize("optimizer", [
    tc.optim.sgd(tc.optim.step_decay(0.05, 2, 0.5), momentum=0.9, nesterov=True, weight_decay=1e-3),
    tc.optim.adam(tc.optim.cosine_decay(2e-3, 4), weight_decay=1e-4),
    tc.optim.rmsprop(1e-3, momentum=0.5, centered=True)], ids=["sgd", "adamw", "rmsprop"])
def test_a_whole_training_step_with_the_optimizer_is_traced_once(optimizer):
    """The issue's second use: fn applies the optimizer too and returns new params and optimizer state.
    The update is NumPy code; it is recorded as one instruction, and its step counter is an array input,
    so the learning-rate schedule moves on in every replay and nothing retraces."""
    model = tc.models.get("cnn-bn")
    params, state = model.init(np.random.default_rng(0))
    eager_state = copy.deepcopy(state)

    def make_step(st):
        def train_step(p, opt_state, x, y):
            loss, grads = tc.value_and_grad(lambda q: tc.cross_entropy(
                model.apply(q, x, state=st, training=True), y))(p)
            p, opt_state = optimizer.update(p, grads, opt_state)
            return loss, p, opt_state
        return train_step

    jitted, eager = tc.jit(make_step(state), rewrites=tc.rewrites.EXACT), make_step(eager_state)
    got = want = (None, params, optimizer.init(params))
    rng, kept = np.random.default_rng(1), []
    for _ in range(5):
        x, y = batch(rng, "cnn-bn", n=8)
        got, want = jitted(*got[1:], x, y), eager(*want[1:], x, y)
        assert bits_equal(got, want) and bits_equal(state, eager_state)
        kept.append((got, copy.deepcopy(got)))
    assert jitted.traces == 1 and int(got[2]["step"]) == 5
    assert all(bits_equal(returned, copy_) for returned, copy_ in kept)  # later calls wrote none of it


def test_gradient_clipping_inside_a_jitted_step_is_recomputed_and_its_norm_returned():
    """clip_grad_norm is NumPy code too: recorded as one instruction, and the norm it returns, a Python
    float, comes back from each replay as that call's own."""
    optimizer = tc.optim.sgd(0.1)

    def train_step(w, opt_state, x):
        loss, grads = tc.value_and_grad(lambda v: ((tc.Tensor(x) @ v) ** 2).mean())(w)
        grads, norm = tc.optim.clip_grad_norm(grads, max_norm=1.0)
        w, opt_state = optimizer.update(w, grads, opt_state)
        return loss, norm, w, opt_state

    jitted = tc.jit(train_step, rewrites=tc.rewrites.EXACT)
    w = got = want = np.ones((3, 2), np.float32)
    got_state = want_state = optimizer.init(w)
    for scale in (0.01, 1.0, 10.0):   # norms below and above max_norm
        x = np.full((4, 3), scale, np.float32)
        loss, norm, got, got_state = jitted(got, got_state, x)
        want_loss, want_norm, want, want_state = train_step(want, want_state, x)
        assert (loss, norm) == (want_loss, want_norm) and isinstance(norm, float)
        assert bits_equal((got, got_state), (want, want_state))
    assert jitted.traces == 1


def test_retracing_is_counted_cached_and_warned_about(monkeypatch):
    step = tc.jit(tc.value_and_grad(lambda w, x: (tc.Tensor(x) * w).sum()))
    w = np.ones(3, np.float32)
    for n in (4, 5, 4, 5, 4):
        step(w, np.ones((n, 3), np.float32))
    assert step.traces == 2                       # one per batch size, then from the cache
    monkeypatch.setattr(jit_module, "RETRACE_WARNING", 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (6, 7):
            step(w, np.ones((n, 3), np.float32))
    assert step.traces == 4
    assert len(caught) == 1 and "has traced 4 times" in str(caught[0].message)


def test_static_argnums_select_the_plan():
    def f(w, x, training):
        y = tc.dropout(tc.Tensor(x) * w, 0.5, training=training, rng=np.random.default_rng(0))
        return tc.value_and_grad(lambda w: (tc.Tensor(x) * w).sum())(w), y.data

    step = tc.jit(f, static_argnums=2)
    w, x = np.ones(4, np.float32), np.ones(4, np.float32)
    (_, _), y_train = step(w, x, True)
    (_, _), y_eval = step(w, x, False)
    assert step.traces == 2 and np.array_equal(y_eval, x) and not np.array_equal(y_train, x)
    with pytest.raises(TypeError, match="static_argnums must be an int or a tuple of ints"):
        tc.jit(f, static_argnums="2")


def test_returning_a_tensor_is_refused():
    with pytest.raises(TraceError, match="returned a Tensor"):
        tc.jit(lambda x: tc.Tensor(x) * 2)(np.ones(2, np.float32))


def _cnn_step():
    model = tc.models.get("cnn-bn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=12)

    def f(p, x, y):
        (loss, logits), grads = tc.value_and_grad(
            lambda p: (lambda z: (tc.cross_entropy(z, y), z))(model.apply(p, x, state=state, training=True)),
            has_aux=True)(p)
        return loss, grads, tc.relu(logits).data   # an op's own memory, returned

    return tc.jit(f), params, rng


def test_the_memory_plan_reuses_op_memory_across_calls_but_never_what_was_returned():
    step, params, rng = _cnn_step()
    x, y = rng.standard_normal((16, 1, 12, 12)).astype(np.float32), rng.integers(0, 10, 16)
    first = step(params, x, y)
    kept = copy.deepcopy(first)
    step(params, x * 2, y)                        # the checked first replay fills the arenas
    plan = next(iter(step._plans.values()))
    buffers = {id(b) for arena in plan.arenas.values() for b, _ in arena.buffers}
    assert len(buffers) > 10                      # conv columns, outputs, masks, batch-norm temporaries
    for i in range(3):
        out = step(params, x * (i + 3), y)
        assert bits_equal(first, kept)            # neither the traced call's results ...
    again = {id(b) for arena in plan.arenas.values() for b, _ in arena.buffers}
    assert again == buffers                       # ... nor the replays' memory moved
    assert not any(np.shares_memory(out[2], b) for arena in plan.arenas.values() for b, _ in arena.buffers)


def test_concurrent_calls_of_one_plan_from_two_threads_are_right():
    import threading

    step, params, rng = _cnn_step()
    xs = [rng.standard_normal((16, 1, 12, 12)).astype(np.float32) for _ in range(6)]
    y = rng.integers(0, 10, 16)
    step(params, xs[0], y)
    step(params, xs[1], y)
    want = {i: step(params, xs[i], y) for i in range(6)}
    got = {}

    def worker(indices):
        for i in indices:
            got[i] = step(params, xs[i], y)

    threads = [threading.Thread(target=worker, args=(r,)) for r in ([0, 2, 4, 0, 2], [1, 3, 5, 1, 3])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # not bit for bit: OpenBLAS's last bits depend on where the operands sit in memory, and concurrent
    # calls allocate at other addresses (eager shows the same); a shared buffer would be far off
    for i in got:
        for a, b in zip(tree_leaves(got[i][:2]), tree_leaves(want[i][:2])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _forward_ops(step) -> list[str]:
    plan = next(iter(step._plans.values()))
    return [what[0].__name__ for kind, what, _, _ in plan.program if kind == "forward"]


@pytest.mark.parametrize("name", list(INPUT))
def test_relu_after_max_pool_is_applied_and_equal_to_the_plan_without_it(name):
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=INPUT[name][-1]) if name != "ising-cnn" else model.init(rng)
    states = {"on": state, "off": copy.deepcopy(state)}

    def step_for(which):
        return tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(
            model.apply(p, x, state=states[which], training=True), y)),
            rewrites=("relu_after_max_pool",) if which == "on" else ())

    on, off = step_for("on"), step_for("off")
    for _ in range(4):
        x, y = batch(rng, name)
        got, want = on(params, x, y), off(params, x, y)
        assert got[0] == want[0]
        for a, b in zip(tree_leaves(got[1]), tree_leaves(want[1])):
            assert np.array_equal(a, b)           # equal values (a zero's sign may differ: -0.0 == 0.0)
        assert bits_equal(states["on"], states["off"])
    ops_on, ops_off = _forward_ops(on), _forward_ops(off)
    assert sorted(ops_on) == sorted(ops_off)
    pairs = {(a, b) for a, b in zip(ops_on, ops_on[1:])}
    assert ("MaxPool2d", "Relu") in pairs and ("Relu", "MaxPool2d") not in pairs
    assert ("Relu", "MaxPool2d") in {(a, b) for a, b in zip(ops_off, ops_off[1:])}


def test_relu_after_max_pool_leaves_a_returned_relu_output_alone():
    def f(x):
        h = tc.relu(tc.Tensor(x))
        return h.data, tc.max_pool2d(h, 2).data

    step = tc.jit(f)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    for _ in range(2):
        h, pooled = step(x)
        assert np.array_equal(h, np.maximum(x, 0)) and pooled.shape == (2, 3, 2, 2)
    assert _forward_ops(step) == ["Relu", "MaxPool2d"]


def _contexts_of(step, op_name: str) -> list[tuple[bool, ...]]:
    """needs_input_grad of every context of ``op_name`` in the step's plan, in program order."""
    program = next(iter(step._plans.values())).program
    ops = {spec[0][1]: what[0].__name__ for kind, what, spec, _ in program if kind == "forward"}
    return [needs for kind, needs, _, slot in program if kind == "context" and ops.get(slot) == op_name]


@pytest.mark.parametrize("name", ["cnn", "cnn-bn"])
def test_unneeded_gradients_are_not_computed_and_the_plan_is_equal_to_the_one_without_the_pass(name):
    """A step that differentiates with respect to the images too but returns only the params' gradients:
    conv1's input gradient (and its copy into a leaf's grad) is dropped from the plan."""
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng)
    states = {"on": state, "off": copy.deepcopy(state)}

    def step_for(which):
        both = tc.value_and_grad(lambda p, x, y: tc.cross_entropy(
            model.apply(p, x, state=states[which], training=True), y), argnums=(0, 1))

        def params_only(p, x, y):
            loss, (grads, _image_grads) = both(p, x, y)
            return loss, grads
        return tc.jit(params_only, rewrites=("unneeded_gradients",) if which == "on" else ())

    on, off = step_for("on"), step_for("off")
    for _ in range(3):
        x, y = batch(rng, name)
        assert bits_equal(on(params, x, y), off(params, x, y))
        assert bits_equal(states["on"], states["off"])
    assert _contexts_of(off, "Conv2d")[0][:2] == (True, True)
    assert _contexts_of(on, "Conv2d")[0][:2] == (False, True)        # conv1: no input gradient
    assert _contexts_of(on, "Conv2d")[1][:2] == (True, True)         # conv2's input gradient feeds conv1's dw
    assert len(on._plans[next(iter(on._plans))].program) < len(off._plans[next(iter(off._plans))].program)


def test_unneeded_gradients_keeps_what_fn_returns_and_forwards_nobody_reads():
    """A returned gradient is kept even if nothing else reads it; an unread forward (dropout drawing
    from the generator) still runs, so the generator advances as in eager."""
    def f(w, x, key):
        def loss(w, x):
            unused = tc.dropout(tc.Tensor(x), 0.5, rng=key)  # noqa: F841  (draws from key)
            return (tc.Tensor(x) @ w).sum()
        return tc.value_and_grad(loss, argnums=(0, 1))(w, x)

    step = tc.jit(f)
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    jit_key, eager_key = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(3):
        assert bits_equal(step(w, x, jit_key), f(w, x, eager_key))
        assert jit_key.random() == eager_key.random()


@pytest.mark.parametrize("name", ["cnn", "ising-cnn"])
def test_bias_after_max_pool_is_applied_and_equal_to_the_plan_without_it_to_rounding(name):
    """Opt-in (it sums db in another order): the loss keeps its bits (max(a + b, c + b) = max(a, c) + b in
    float), the gradients agree to float32 rounding, and the biased convs lose their bias input."""
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, _ = model.init(rng, image_size=INPUT[name][-1]) if name != "ising-cnn" else model.init(rng)
    for layer in ("conv1", "conv2"):  # init's zero biases would make the rewrite trivially exact
        params[layer]["b"] = rng.normal(0, 0.5, params[layer]["b"].shape).astype(np.float32)

    def step_for(rewrites):
        return tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(model.apply(p, x, training=True), y)),
                      rewrites=rewrites)

    on, off = step_for(("relu_after_max_pool", "bias_after_max_pool")), step_for(())
    eager = tc.value_and_grad(lambda p, x, y: tc.cross_entropy(model.apply(p, x, training=True), y))
    for _ in range(3):
        x, y = batch(rng, name)
        (got_loss, got), (want_loss, want) = on(params, x, y), off(params, x, y)
        assert got_loss == want_loss == eager(params, x, y)[0]
        for a, b in zip(tree_leaves(got), tree_leaves(want)):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
    assert on.traces == 1
    assert _forward_ops(on).count("ChannelBias") == 2
    assert [len(needs) for needs in _contexts_of(on, "Conv2d")] == [2, 2]
    assert [len(needs) for needs in _contexts_of(off, "Conv2d")] == [3, 3]
    default = step_for(None)
    assert close_to_rounding(default(params, x, y), eager(params, x, y))
    assert "ChannelBias" not in _forward_ops(default)  # not on by default


def test_bias_after_max_pool_leaves_a_conv_whose_output_is_read_elsewhere_alone():
    def f(x, w, b):
        y = tc.conv2d(x, w, b)
        return tc.max_pool2d(y, 2).data, y.data

    step = tc.jit(f, rewrites=("bias_after_max_pool",))
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 6, 6), (4, 3, 3, 3), (4,)))
    for _ in range(2):
        assert bits_equal(step(x, w, b), f(x, w, b))
    assert "ChannelBias" not in _forward_ops(step)


@pytest.mark.parametrize("name, fused", [("resnet-small", 4), ("cnn-bn", 0)])
def test_batch_norm_relu_is_on_by_default_and_gives_the_plan_without_it_bit_for_bit(name, fused):
    """resnet-small's batch-norm/relu pairs are fused; in cnn-bn, where a max-pool follows the relu,
    relu_after_max_pool (run first, worth more there) takes the relu instead."""
    rng = np.random.default_rng(0)
    model = tc.models.get(name)
    params, state = model.init(rng)
    states = {"on": state, "off": copy.deepcopy(state)}

    def step_for(which):
        return tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(
            model.apply(p, x, state=states[which], training=True), y)),
            rewrites=tc.rewrites.EXACT if which == "on" else ())

    assert "batch_norm_relu" in tc.rewrites.DEFAULT and "batch_norm_relu" in tc.rewrites.EXACT
    on, off = step_for("on"), step_for("off")
    for _ in range(2):
        x, y = batch(rng, "cnn-bn", n=8)
        assert bits_equal(on(params, x, y), off(params, x, y))
        assert bits_equal(states["on"], states["off"])
    assert _forward_ops(on).count("BatchNormRelu") == fused
    assert _forward_ops(on).count("BatchNorm") + fused == _forward_ops(off).count("BatchNorm")


def test_batch_norm_max_pool_is_applied_and_equal_to_the_plan_without_it_to_rounding():
    """On by default, not in EXACT (its sums run over the window winners only): cnn-bn's loss and running
    statistics keep their bits (the pool's maximum of a monotonic map is the mapped maximum), the
    gradients agree to float32 rounding, and each batch norm with its max-pool runs as one op."""
    rng = np.random.default_rng(0)
    model = tc.models.get("cnn-bn")
    params, state = model.init(rng)
    params["conv1"]["gamma"][::3] *= -1  # channels where the window minimum maps to the maximum
    states = {"on": state, "off": copy.deepcopy(state)}

    def step_for(which, names):
        return tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(
            model.apply(p, x, state=states[which], training=True), y)), rewrites=names)

    on, off = step_for("on", None), step_for("off", tc.rewrites.EXACT)
    for _ in range(3):
        x, y = batch(rng, "cnn-bn", n=64)
        (got_loss, got), (want_loss, want) = on(params, x, y), off(params, x, y)
        assert got_loss == want_loss
        for a, b in zip(tree_leaves(got), tree_leaves(want)):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
        assert bits_equal(states["on"], states["off"])
    assert on.traces == 1
    assert _forward_ops(on).count("BatchNormMaxPool") == 2 and "MaxPool2d" not in _forward_ops(on)
    assert "BatchNormMaxPool" not in _forward_ops(off)


def test_batch_norm_max_pool_leaves_padded_and_overlapping_pools_and_shared_outputs_alone():
    def f(x, gamma, beta):
        kept = tc.batch_norm(tc.Tensor(x), gamma, beta)                   # returned too: must exist
        padded = tc.max_pool2d(tc.batch_norm(tc.Tensor(x), gamma, beta), 2, padding=1)
        overlapping = tc.max_pool2d(tc.batch_norm(tc.Tensor(x), gamma, beta), 3, stride=2)
        fused = tc.max_pool2d(tc.batch_norm(tc.Tensor(x), gamma, beta), 2)
        return tc.max_pool2d(kept, 2).data, kept.data, padded.data, overlapping.data, fused.data

    step = tc.jit(f, rewrites=("batch_norm_max_pool",))
    rng = np.random.default_rng(0)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    for _ in range(2):
        x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
        assert bits_equal(step(x, gamma, beta), f(x, gamma, beta))
    assert _forward_ops(step) == ["BatchNorm", "BatchNorm", "MaxPool2d", "BatchNorm", "MaxPool2d", "BatchNormMaxPool",
                                  "MaxPool2d"]


def test_what_a_rewritten_op_returns_is_handed_over_not_reused():
    """fn returns a view (a reshape) of the fused op's output: the trace saw that memory come from the relu
    the rewrite removed, so the memory plan learns it at the first replay and never writes it again."""
    def f(x, gamma, beta):
        h = tc.relu(tc.batch_norm(tc.Tensor(x), gamma, beta))
        return h.reshape(len(x), -1).data

    step = tc.jit(f)
    rng = np.random.default_rng(0)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    xs = [rng.standard_normal((4, 3, 5, 5)).astype(np.float32) for _ in range(4)]
    kept = [step(x, gamma, beta) for x in xs]
    assert _forward_ops(step) == ["BatchNormRelu", "Reshape"]
    for x, got in zip(xs, kept):
        assert bits_equal(got, f(x, gamma, beta))


def test_unknown_rewrite_is_refused():
    with pytest.raises(ValueError, match="unknown rewrite 'fast'"):
        tc.jit(lambda x: x, rewrites=("fast",))


def test_the_profiler_sees_a_replays_ops():
    model = tc.models.get("cnn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=12)
    step = tc.jit(tc.value_and_grad(lambda p, x, y: tc.cross_entropy(model.apply(p, x, state=state), y)))
    x, y = batch(rng, "cnn", 8)
    x = x[..., :12, :12].copy()
    step(params, x, y)
    step(params, x, y)
    seen = []
    with tc.autograd.record_profile(lambda op, phase, seconds, ctx: seen.append((op.__name__, phase))):
        step(params, x, y)
    assert ("Conv2dWinogradBackward", "forward") in seen and ("Conv2dWinogradBackward", "backward") in seen
    assert ("MaxPool2d", "backward") in seen
    assert seen.index(("MaxPool2d", "forward")) < seen.index(("Relu", "forward"))  # the plan as rewritten
