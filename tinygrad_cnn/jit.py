"""tc.jit: run a function once eagerly while recording every array operation, then replay the recording.

    step = tc.jit(tc.value_and_grad(loss))
    loss, grads = step(params, x, y)     # first call for these shapes: traced (runs eagerly, records)
    loss, grads = step(params, x2, y2)   # later calls: the recorded plan replayed on the new arrays

**What is recorded.** While ``fn`` runs, every op's ``forward`` (``Function.apply``) and every step of
the engine's backward pass (each op's ``backward``, un-broadcasting, dtype casts, gradient sums) is
appended to a *tape* as an instruction: a callable, the slots of its input arrays, the slots of its
outputs. Slots are found by identity: an array is either a leaf of ``fn``'s arguments, the output of
an earlier instruction, or a constant made during the trace. Replay runs the instructions in order
on NumPy arrays: no Tensor objects, no nodes, no argument validation, no topological walk.

**Signature.** A plan is valid for one *signature*: the structure of the arguments (pytrees), the
shape and dtype of every array leaf, and the values of everything else (Python numbers, strings,
``static_argnums`` arguments). A new signature traces again; plans are cached. ``np.random.Generator``
leaves are inputs too: dropout draws fresh masks from the generator passed to each call.

**What cannot be traced.** Python control flow is fixed at trace time, as in ``jax.jit``: an ``if``
on a value, or a loop whose length depends on data, is recorded along the path the first call took.
Turning a tensor into a Python value inside ``fn`` (``.item()``, ``float(t)``, ``bool(t)``,
``.numpy()``) is refused during the trace with a ``RuntimeError``, since the replay could not
follow it. NumPy code applied to an input outside an op (``x = x / 255`` on a raw array inside
``fn``) would be frozen at trace time: the first replay is therefore checked against an eager run of
``fn`` (same inputs, same generator states), and a difference raises ``RuntimeError`` naming the
output that differed.

**Every result is the plan's.** The trace runs ``fn`` eagerly; then what the trace changed in place
(batch-norm statistics, generator states: saved before the first op touched them) is set back and
the plan runs, and the first call returns the plan's results, as every later call does. So a rewrite
that rounds differently from eager (``rewrites.REORDERS_SUMS``) never makes the first call of a
plan differ from the others: a training run resumed after an interrupt, which traces again, repeats
the uninterrupted run bit for bit.

**Ownership.** What a call returns is new memory: the next call never writes into it. Inputs are
never written, except for the in-place updates ``fn`` itself makes (batch-norm running statistics),
which replay makes to the arrays passed to that call.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from . import rewrites as rewrites_module
from .autograd import Context, TraceError, _profiler, _read_only, _tape
from .parallel import blas_single_threaded
from .pytree import tree_flatten, tree_unflatten

__all__ = ["jit", "Jitted", "TraceError"]

RETRACE_WARNING = 8  # traces of one function after which each new one warns (tf.function warns at 5)


class Tape:
    """Slots (arrays and contexts, found by ``id``) and the instructions that fill them.

    Everything seen is kept alive until the trace ends, so an ``id`` is never reused for another object.
    """

    def __init__(self, inputs: list):
        self.slots: dict[int, int] = {}        # id(object) -> slot index
        self.keep: list = []                   # every object with a slot (keeps ids unique)
        self.constants: dict[int, Any] = {}    # slot -> value captured at trace time
        self.program: list[tuple] = []         # (kind, fn, args spec, out slots)
        self._by_owner: dict[int, list] = {}   # id(memory owner) -> the arrays with slots (not constants) on it
        self.n_inputs = len(inputs)
        for x in inputs:
            self._new_slot(x)
        self.scalars: dict[int, int] = {}      # id(python float) -> slot of the array it came from
        self._inputs = {id(x) for x in inputs}
        self.state_before: dict[int, tuple] = {}  # id -> (array or generator, its value before any op used it)

    def _new_slot(self, obj, constant: bool = False) -> int:
        index = len(self.keep)
        self.slots[id(obj)] = index
        self.keep.append(obj)
        if isinstance(obj, np.ndarray) and not constant:
            self._by_owner.setdefault(id(_owner(obj)), []).append(obj)
        return index

    def ref(self, obj) -> int:
        """The slot of ``obj``; a constant slot for an array the tape has not seen, unless it is a view of
        an array the replay recomputes (TraceError: the replay would read the trace's memory)."""
        index = self.slots.get(id(obj))
        if index is None:
            if isinstance(obj, np.ndarray) and obj.base is not None and self._views_traced_memory(obj):
                raise TraceError(
                    f"jit: an op was given a {obj.dtype}{obj.shape} view of an input or of an op's result made "
                    f"with NumPy inside fn (such as x[:, None], x.T or x.reshape(...) on an array): a replay "
                    f"would read that memory as the trace left it. Make it with tc's ops instead (tc.expand_dims, "
                    f"tc.Tensor(x).reshape(...), .transpose(...), indexing a Tensor)")
            index = self._new_slot(obj, constant=True)
            self.constants[index] = obj
        return index

    def _views_traced_memory(self, view: np.ndarray) -> bool:
        return any(np.may_share_memory(view, a) for a in self._by_owner.get(id(_owner(view)), ()))

    def _spec(self, value):
        """An argument as replay will rebuild it: arrays, contexts and generators by slot, else as is."""
        if isinstance(value, (np.ndarray, np.random.Generator, Context)):
            return ("slot", self.ref(value))
        if isinstance(value, tuple):
            return ("tuple", tuple(self._spec(v) for v in value))
        return ("value", value)

    def call(self, fn: Callable, args: tuple, out) -> None:
        """Records ``out = fn(*args)`` (``out`` one array, or a tuple of arrays / None)."""
        spec = tuple(self._spec(a) for a in args)
        if isinstance(out, tuple):
            outs = tuple(None if o is None else self._new_slot(o) for o in out)
            self.program.append(("many", fn, spec, outs))
        else:
            self.program.append(("one", fn, spec, self._new_slot(out)))

    def before(self, arrays: list, kwargs: dict) -> None:
        """Called before an op's forward runs: remembers the value of every writable array (an input or
        a constant) and every generator the op is the first to touch, which the op may change in place
        (batch-norm running statistics, dropout's generator), so that the trace can be undone and the
        plan run from the same state (``restore_state``)."""
        for value in (*arrays, *kwargs.values()):
            key = id(value)
            if key in self.state_before:
                continue
            if isinstance(value, np.random.Generator):
                self.state_before[key] = (value, value.bit_generator.state)
            elif (isinstance(value, np.ndarray) and value.flags.writeable
                  and (key in self._inputs or key not in self.slots)):
                self.state_before[key] = (value, value.copy())

    def restore_state(self) -> None:
        """Every array and generator ``before`` saw back to its value before the trace changed it."""
        for obj, value in self.state_before.values():
            if isinstance(obj, np.random.Generator):
                obj.bit_generator.state = value
            else:
                obj[...] = value

    def forward(self, op: type, ctx, arrays: list, kwargs: dict, out: np.ndarray) -> None:
        """Records an op's forward: a fresh context, then ``out = op.forward(ctx, *arrays, **kwargs)``."""
        needs = ctx.needs_input_grad
        ctx_slot = self._new_slot(ctx)
        self.program.append(("context", needs, (), ctx_slot))
        kw = tuple((k, self._spec(v)) for k, v in kwargs.items())
        spec = (("slot", ctx_slot),) + tuple(self._spec(a) for a in arrays)
        self.program.append(("forward", (op, kw), spec, self._new_slot(out)))

    def backward(self, op: type, ctx: Context, grad: np.ndarray, grads: tuple) -> None:
        """Records an op's backward: ``grads = op.backward(ctx, read-only view of grad)``."""
        spec = (self._spec(ctx), self._spec(grad))
        outs = tuple(None if g is None else self._new_slot(g) for g in grads)
        self.program.append(("backward", op, spec, outs))

    def scalar(self, array: np.ndarray, value: float) -> None:
        """``value`` (a Python float returned by fn) is ``float(array)``."""
        self.keep.append(value)
        self.scalars[id(value)] = self.ref(array)


def _owner(a: np.ndarray):
    """The object that owns ``a``'s memory (NumPy points a view of a view at the first one's base)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


# ---------------------------------------------------------------------------------------------- #
# Plans: a tape compiled into a list of closures over one list of slots

def _rebuild(spec, slots):
    kind, value = spec
    if kind == "slot":
        return slots[value]
    if kind == "tuple":
        return tuple(_rebuild(v, slots) for v in value)
    return value


class Arena:
    """The memory of one op in a plan: the arrays its ``ctx.empty``/``ctx.empty_like`` calls returned, in
    call order, handed out again on the next replay. ``fresh`` holds the calls whose array ends up in
    what the jitted function returns: those are new memory every time."""

    __slots__ = ("buffers", "fresh")

    def __init__(self):
        self.buffers: list = []
        self.fresh: set[int] = set()

    def take(self, k: int, shape: tuple, dtype, template: np.ndarray | None) -> np.ndarray:
        if k in self.fresh:
            return np.empty(shape, dtype) if template is None else np.empty_like(template, dtype=dtype)
        if k < len(self.buffers) and self.buffers[k] is not None:
            buffer, strides = self.buffers[k]
            if buffer.shape == tuple(shape) and buffer.dtype == dtype and strides == (
                    None if template is None else template.strides):
                return buffer
        buffer = np.empty(shape, dtype) if template is None else np.empty_like(template, dtype=dtype)
        entry = (buffer, None if template is None else template.strides)
        if k < len(self.buffers):
            self.buffers[k] = entry
        else:
            self.buffers.extend([entry] * (k + 1 - len(self.buffers)))
        return buffer


class PlannedContext(Context):
    """A replay's Context: ``empty``/``empty_like`` hand out the op's arena instead of new memory."""

    def __init__(self, needs_input_grad: tuple[bool, ...], arena: Arena):
        super().__init__(needs_input_grad)
        self._arena, self._calls = arena, 0

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        self._calls += 1
        return self._arena.take(self._calls - 1, shape, np.dtype(dtype), None)

    def empty_like(self, a: np.ndarray, dtype=None) -> np.ndarray:
        self._calls += 1
        return self._arena.take(self._calls - 1, a.shape, a.dtype if dtype is None else np.dtype(dtype), a)


class Plan:
    """The replayable program of one signature: ``run(inputs) -> outputs`` (a flat list).

    Memory plan: each op's context hands out the same arrays on every replay (``Arena``), except those
    that become outputs. One replay at a time uses the arenas; a concurrent call of the same plan (from
    another thread) runs with plain contexts, allocating as eager does.
    """

    def __init__(self, tape: Tape, outputs: list, applied: tuple[str, ...] = ()):
        self.applied = applied  # the rewrites that changed this program (draw_graph names them)
        self.n_slots = len(tape.keep)
        self.n_inputs = tape.n_inputs
        self.constants = tape.constants
        self.arenas = {ctx_slot: Arena() for kind, _, _, ctx_slot in tape.program if kind == "context"}
        self._mark_fresh(tape, outputs)
        self._lock = threading.Lock()
        self._local = threading.local()  # per calling thread: .reuse (arenas on), .profiler
        self.program = tape.program
        self.steps = [self._compile(instruction) for instruction in tape.program]
        self.outputs = outputs  # ("slot", i) | ("float", i) | ("const", value)

    def _mark_fresh(self, tape: Tape, outputs: list) -> None:
        """Every allocation an output's memory comes from is made fresh on each replay."""
        owners = {}
        for ctx_slot in self.arenas:
            for k, array in enumerate(getattr(tape.keep[ctx_slot], "allocations", ())):
                owners[id(array)] = (ctx_slot, k)
        for kind, index in outputs:
            if kind != "slot":
                continue
            array = tape.keep[index]
            while isinstance(array, np.ndarray):
                if id(array) in owners:
                    ctx_slot, k = owners[id(array)]
                    self.arenas[ctx_slot].fresh.add(k)
                array = array.base

    def _compile(self, instruction) -> Callable:
        kind, fn, spec, out = instruction
        if kind == "context":
            needs, arena, local = fn, self.arenas[out], self._local

            def make_context(slots):
                slots[out] = PlannedContext(needs, arena) if local.reuse else Context(needs)
            return make_context
        if kind == "forward":
            op, kw = fn
            forward = op.forward

            def run_forward(slots):
                args = [_rebuild(s, slots) for s in spec]
                profiler = self._local.profiler
                if profiler is None:
                    slots[out] = forward(*args, **{k: _rebuild(v, slots) for k, v in kw})
                    return
                start = time.perf_counter()
                slots[out] = forward(*args, **{k: _rebuild(v, slots) for k, v in kw})
                profiler(op, "forward", time.perf_counter() - start, args[0])
            return run_forward
        if kind == "backward":
            op, (ctx_spec, grad_spec) = fn, spec
            backward = op.backward

            def run_backward(slots):
                ctx, profiler = _rebuild(ctx_spec, slots), self._local.profiler
                start = time.perf_counter() if profiler is not None else 0.0
                results = backward(ctx, _read_only(_rebuild(grad_spec, slots)))
                if profiler is not None:
                    profiler(op, "backward", time.perf_counter() - start, ctx)
                for index, value in zip(out, results if isinstance(results, tuple) else (results,)):
                    if index is not None:
                        slots[index] = value
            return run_backward
        if kind == "many":
            def run_many(slots):
                results = fn(*[_rebuild(s, slots) for s in spec])
                for index, value in zip(out, results):
                    if index is not None:
                        slots[index] = value
            return run_many

        def run_one(slots):
            slots[out] = fn(*[_rebuild(s, slots) for s in spec])
        return run_one

    def run(self, inputs: list) -> list:
        reuse = self._lock.acquire(blocking=False)
        self._local.reuse = reuse
        try:
            outputs = self._run(inputs)
            if reuse:
                self._hand_over(outputs)
            return outputs
        finally:
            if reuse:
                self._lock.release()

    def release_arenas(self) -> None:
        """Frees the arenas' buffers (the next replay allocates them again), unless a replay on another
        thread is using them."""
        if self._lock.acquire(blocking=False):
            try:
                for arena in self.arenas.values():
                    arena.buffers = []
            finally:
                self._lock.release()

    def _hand_over(self, outputs: list) -> None:
        """Arena buffers that what this call returns lives in (a view of one included) become the
        caller's: they leave their arena, whose later calls allocate afresh. ``_mark_fresh`` foresees
        this from the trace; this catches what it cannot (an op a rewrite added), at a few microseconds."""
        owners = {id(entry[0]): (arena, k) for arena in self.arenas.values()
                  for k, entry in enumerate(arena.buffers) if entry is not None}
        for array in outputs:
            while isinstance(array, np.ndarray):
                owner = owners.get(id(array))
                if owner is not None:
                    arena, k = owner
                    arena.fresh.add(k)
                    arena.buffers[k] = None
                array = array.base

    def _run(self, inputs: list) -> list:
        self._local.profiler = _profiler.get()  # record_profile sees a replay's ops as it sees eager ones
        slots = [None] * self.n_slots
        slots[:self.n_inputs] = inputs
        for index, value in self.constants.items():
            slots[index] = value
        for step in self.steps:
            step(slots)
        return [_output(kind, value, slots) for kind, value in self.outputs]


def _output(kind: str, value, slots):
    if kind == "slot":
        return slots[value]
    if kind == "float":
        return float(slots[value])
    if isinstance(value, np.ndarray):
        return value.copy()  # a constant output: the user owns each call's copy
    return value


# ---------------------------------------------------------------------------------------------- #
# The jitted function


def _is_input(leaf) -> bool:
    return isinstance(leaf, (np.ndarray, np.random.Generator))


def _signature(treedef, leaves: list, static: tuple) -> tuple:
    parts = []
    for leaf in leaves:
        if isinstance(leaf, np.ndarray):
            parts.append(("array", leaf.shape, leaf.dtype.str))
        elif isinstance(leaf, np.random.Generator):
            parts.append(("rng",))
        else:
            parts.append(("value", type(leaf).__name__, leaf))
    return (treedef, tuple(parts), static)


class Jitted:
    """The function ``jit`` returns. ``traces``: how many times it traced (one per new signature)."""

    def __init__(self, fn: Callable, static_argnums: tuple[int, ...] = (), rewrites: tuple[str, ...] = ()):
        if not callable(fn):
            raise TypeError(f"jit: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.static_argnums = tuple(static_argnums)
        self.rewrites = tuple(rewrites)
        self.traces = 0
        self._plans: dict = {}        # signature -> Plan
        self._unchecked: set = set()  # signatures whose first replay is still to be checked
        self.__name__ = f"jit({getattr(fn, '__name__', 'fn')})"
        self.__doc__ = fn.__doc__

    def __repr__(self) -> str:
        return f"<{self.__name__}: {self.traces} trace(s), {len(self._plans)} plan(s)>"

    def _split(self, args: tuple, kwargs: dict):
        nargs = len(args)
        static_nums = {n % nargs for n in self.static_argnums if -nargs <= n < nargs}
        static = tuple((n, args[n]) for n in sorted(static_nums))
        dynamic = tuple(None if n in static_nums else a for n, a in enumerate(args))
        leaves, treedef = tree_flatten((dynamic, kwargs))
        return static, static_nums, leaves, treedef

    def __call__(self, *args, **kwargs):
        with blas_single_threaded():  # as value_and_grad: the same matmul bits traced and replayed
            return self._call(args, kwargs)

    def _call(self, args: tuple, kwargs: dict):
        static, static_nums, leaves, treedef = self._split(args, kwargs)
        try:
            key = _signature(treedef, leaves, static)
            hash(key)
        except TypeError:
            raise TypeError(f"{self.__name__}: the arguments must be pytrees of arrays, numbers and hashable "
                            f"values (static_argnums arguments must be hashable)") from None
        plan = self._plans.get(key)
        if plan is None:
            return self._trace(key, args, kwargs, leaves, treedef)
        inputs = [leaf for leaf in leaves if _is_input(leaf)]
        if key in self._unchecked:
            return self._checked_replay(key, plan, args, kwargs, inputs)
        return tree_unflatten(plan.out_treedef, plan.run(inputs))

    # -- tracing ------------------------------------------------------------------------------------
    def _trace(self, key, args, kwargs, leaves, treedef):
        self.traces += 1
        if self.traces > RETRACE_WARNING:
            warnings.warn(f"{self.__name__} has traced {self.traces} times: each new signature (shapes, dtypes, "
                          f"tree structure, Python values among the arguments) traces again. Pass values that "
                          f"change every call as arrays, or keep shapes fixed", RuntimeWarning, stacklevel=3)
        inputs = [leaf for leaf in leaves if _is_input(leaf)]
        tape = Tape(inputs)
        with _recording(tape):
            result = self.fn(*args, **kwargs)
        out_leaves, out_treedef = tree_flatten(result)
        outputs = [_output_spec(tape, leaf) for leaf in out_leaves]
        protected = {i for kind, i in outputs if kind in ("slot", "float")}  # what fn returns
        tape.program, applied = rewrites_module.apply(tape.program, protected, self.rewrites,
                                                      new_slot=lambda t=tape: t._new_slot(object()))
        plan = Plan(tape, outputs, applied)
        plan.out_treedef = out_treedef
        self._plans[key] = plan
        self._unchecked.add(key)
        # What this call returns comes from the plan too, as on every later call: a rewrite that sums in
        # another order changes the last bits, and a training run resumed after an interrupt (which
        # traces again) must repeat the uninterrupted run. So the trace's changes are undone first.
        tape.restore_state()
        del tape, result, out_leaves  # the trace's arrays, freed before the plan allocates its own
        return tree_unflatten(out_treedef, plan.run(inputs))

    def _checked_replay(self, key, plan: Plan, args, kwargs, inputs: list):
        """The first replay of a plan, compared with an eager run of fn on the same inputs."""
        # arrays the run may update in place: the inputs, and arrays fn reached otherwise (a closure's
        # batch-norm statistics, recorded as constants); both runs must start from the same values
        arrays = [x for x in inputs if isinstance(x, np.ndarray)]
        arrays += [c for c in plan.constants.values() if isinstance(c, np.ndarray) and c.flags.writeable]
        generators = [x for x in inputs if isinstance(x, np.random.Generator)]
        generators += [c for c in plan.constants.values() if isinstance(c, np.random.Generator)]
        saved_arrays = [a.copy() for a in arrays]
        saved_rngs = [g.bit_generator.state for g in generators]
        plan.release_arenas()  # the eager run's memory and the plan's are then not held at once
        eager_leaves, _ = tree_flatten(self.fn(*args, **kwargs))
        eager_after = [a.copy() for a in arrays]
        for a, before in zip(arrays, saved_arrays):
            a[...] = before
        for g, state in zip(generators, saved_rngs):
            g.bit_generator.state = state
        outputs = plan.run(inputs)
        same = _close if rewrites_module.REORDERS_SUMS.intersection(self.rewrites) else _same
        for i, (got, want) in enumerate(zip(outputs, eager_leaves)):
            if not same(got, want):
                del self._plans[key]
                raise TraceError(f"{self.__name__}: output {i} of the replayed plan differs from running fn "
                                 f"eagerly on the same inputs: fn computes something outside the ops the "
                                 f"trace records (NumPy code on an input, a Python value read from an array, "
                                 f"state kept between calls), so it cannot be jitted as it is")
        for a, want in zip(arrays, eager_after):
            if not same(a, want):
                del self._plans[key]
                raise TraceError(f"{self.__name__}: an array fn updates in place (argument or closure state) was "
                                 f"updated differently by the replay and by fn run eagerly")
        self._unchecked.discard(key)
        return tree_unflatten(plan.out_treedef, outputs)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b


def _close(a, b) -> bool:
    """Equal to float rounding (a rewrite summed in another order): a value frozen at trace time is not."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or isinstance(a, float):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not np.issubdtype(a.dtype, np.inexact):
            return np.array_equal(a, b)
        scale = float(np.max(np.abs(b), initial=0.0))
        return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))
    return _same(a, b)


def _output_spec(tape: Tape, leaf) -> tuple:
    if isinstance(leaf, np.ndarray):
        index = tape.slots.get(id(leaf))
        if index is None or index in tape.constants:
            return ("const", leaf.copy())
        if index < tape.n_inputs:  # an input returned as it is: return a copy, the caller's array is theirs
            tape.program.append(("one", np.array, (("slot", index),), tape._new_slot(object())))
            return ("slot", len(tape.keep) - 1)
        return ("slot", index)
    if isinstance(leaf, float) and id(leaf) in tape.scalars:
        return ("float", tape.scalars[id(leaf)])
    if hasattr(leaf, "data") and hasattr(leaf, "requires_grad"):  # a Tensor
        raise TraceError("jit: fn returned a Tensor; return arrays (value_and_grad's results, t.data) instead")
    return ("const", leaf)


@contextlib.contextmanager
def _recording(tape: Tape) -> Iterator[None]:
    if _tape.get() is not None:
        raise TraceError("jit: a jitted function was called while another one is being traced; "
                         "jit the outer function only")
    token = _tape.set(tape)
    try:
        yield
    finally:
        _tape.reset(token)


def jit(fn: Callable, *, static_argnums: int | tuple[int, ...] = (), rewrites=None) -> Jitted:
    """Returns ``fn`` traced on its first call for each signature and replayed after (module docstring).

    ``fn`` takes and returns pytrees of arrays (typically ``tc.value_and_grad(loss)``); arguments at
    ``static_argnums`` may be any hashable values, which select the plan instead of being inputs.
    ``rewrites``: the names of the rewrites to apply to each plan (``tinygrad_cnn.rewrites``; default
    ``rewrites.DEFAULT``; ``rewrites.EXACT`` those that keep eager's bits; ``()`` none). Rewrites in
    ``rewrites.REORDERS_SUMS`` (``"batch_norm_max_pool"`` and ``"winograd_conv_backward"``, on by
    default, and ``"bias_after_max_pool"``) compute gradients in another order or by another algorithm,
    so their gradients equal eager's to float rounding only; the first replay's check then allows that
    rounding.
    """
    nums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in nums):
        raise TypeError(f"jit: static_argnums must be an int or a tuple of ints, got {static_argnums!r}")
    names = rewrites_module.DEFAULT if rewrites is None else tuple(rewrites)
    unknown = [n for n in names if n not in rewrites_module.REWRITES]
    if unknown:
        raise ValueError(f"jit: unknown rewrite {unknown[0]!r}; the rewrites are "
                         f"{', '.join(rewrites_module.REWRITES)}")
    return Jitted(fn, nums, names)
