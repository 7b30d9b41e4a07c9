"""The autodiff engine: Function (an op), Context (what its backward needs), and the backward pass.

Reverse-mode autodiff in three sentences. Every op records, on the tensor it returns, a *node*: the
op, its input tensors, and whatever its backward needs. ``backward()`` visits the nodes in reverse
topological order, asks each op for the gradient of the loss with respect to its inputs given the
gradient with respect to its output (the chain rule: dL/dx = dL/dy * dy/dx), and sums the
contributions that reach each tensor. Leaves with ``requires_grad=True`` keep their sum in ``.grad``.

Two jobs are done here once, for every op, so that no op can get them wrong:

* **un-broadcasting**: if ``a`` of shape (3, 1) was broadcast against (2, 3, 4), the op returns a
  gradient of shape (2, 3, 4); the engine sums it over the leading axis and the broadcast axis back
  to (3, 1) and casts it to ``a``'s dtype;
* **accumulation**: a tensor used twice receives the sum of both paths, out of place
  (``g = g + new``), so no gradient array ever aliases another.

The walk is iterative (a chain of 20,000 ops does not touch Python's recursion limit), and each node
is released as soon as its gradient has been passed on, so memory falls during the backward pass and
no graph survives it (unless ``retain_graph=True``).
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Any, Callable

import numpy as np

from .parallel import blas_single_threaded

__all__ = ["Function", "Context", "Node", "TraceError", "no_grad", "is_grad_enabled", "backward", "record_profile",
           "detect_anomaly"]

# Modes are per thread (and per asyncio task): another thread's no_grad is not yours. A new thread
# starts with the defaults.
_grad_enabled: ContextVar[bool] = ContextVar("tinygrad_cnn_grad_enabled", default=True)
_detect_anomaly: ContextVar[bool] = ContextVar("tinygrad_cnn_detect_anomaly", default=False)
_profiler: ContextVar[Callable | None] = ContextVar("tinygrad_cnn_profiler", default=None)
_tape: ContextVar[Any] = ContextVar("tinygrad_cnn_tape", default=None)  # a jit.Tape while jit traces


class TraceError(RuntimeError):
    """A jitted function did something during its trace that a replay could not repeat (see jit.py)."""


def tracing() -> bool:
    """Whether tc.jit is tracing on this thread."""
    return _tape.get() is not None


def refuse_in_trace(what: str) -> None:
    """Raises TraceError while jit traces: ``what`` turns a traced tensor into a Python value."""
    if _tape.get() is not None:
        raise TraceError(f"jit: {what} inside a jitted function turns a traced value into a Python value, "
                         f"which a replay cannot follow; return the tensor instead and convert it outside")


@contextlib.contextmanager
def _set(var: ContextVar, value):
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def is_grad_enabled() -> bool:
    return _grad_enabled.get()


def no_grad():
    """Context manager: ops inside record nothing (their outputs have ``requires_grad=False``).
    Applies to the calling thread only."""
    return _set(_grad_enabled, False)


def detect_anomaly():
    """Context manager: every op's forward output and backward gradients are checked, and the first
    non-finite value (NaN or inf) raises ``FloatingPointError`` naming the op and the pass.

    Ops keep references to their input arrays, not copies; inside this block they also keep a copy,
    and a backward whose inputs were changed in place since the forward (``x.data[0] = 0`` between
    ``loss = f(x)`` and ``loss.backward()``) raises ``RuntimeError`` naming the op and the input.
    Slower (one ``isfinite`` pass and one copy per array); for hunting down where a wrong value
    comes from. Applies to the calling thread only.
    """
    return _set(_detect_anomaly, True)


def _check_finite(op: type, what: str, a) -> None:
    if a is None or not np.issubdtype(np.asarray(a).dtype, np.inexact):
        return
    finite = np.isfinite(a)
    if not finite.all():
        nan = int(np.isnan(a).sum())
        inf = int(finite.size - finite.sum()) - nan
        raise FloatingPointError(f"detect_anomaly: {op.__name__} {what} has {nan} NaN and {inf} inf values "
                                 f"(shape {np.shape(a)})")


class Context:
    """Scratch space an op's ``forward`` fills for its ``backward``.

    ``ctx.save_for_backward(*arrays)`` keeps arrays (read back as ``ctx.saved_tensors``); any other
    attribute (``ctx.stride = 2``) may be set too. ``ctx.needs_input_grad[i]`` says whether input ``i``
    needs a gradient, so a backward can skip work nobody asked for.
    """

    def __init__(self, needs_input_grad: tuple[bool, ...]):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *arrays: Any) -> None:
        self.saved_tensors = arrays

    # Large outputs and scratch arrays come from these two, so that a jit replay can hand the same
    # memory back on the next call (jit.py's memory plan) instead of a fresh allocation. Eagerly they
    # are np.empty and np.empty_like. Call them on the op's own thread, not inside batch threads.
    def empty(self, shape: tuple, dtype) -> np.ndarray:
        """``np.empty(shape, dtype)``."""
        return self._allocated(np.empty(shape, dtype))

    def empty_like(self, a: np.ndarray, dtype=None) -> np.ndarray:
        """``np.empty_like(a, dtype)`` (``a``'s memory layout)."""
        return self._allocated(np.empty_like(a, dtype=dtype))

    def _allocated(self, out: np.ndarray) -> np.ndarray:
        if _tape.get() is not None:  # jit traces: remember which arrays are this op's own memory
            self.__dict__.setdefault("allocations", []).append(out)
        return out


class Node:
    """What a tensor made by an op remembers: the op, its context, its input tensors and arguments.

    The output points to its node and the node to its inputs, never back: no reference cycles, so an
    intermediate dies as soon as nothing downstream needs it.
    """

    __slots__ = ("op", "ctx", "inputs", "kwargs", "__weakref__")

    def __init__(self, op: type[Function], ctx: Context, inputs: tuple, kwargs: dict):
        self.op, self.ctx, self.inputs, self.kwargs = op, ctx, inputs, kwargs

    @property
    def name(self) -> str:
        return self.op.__name__


class Function:
    """Base class of every op, built-in or user-defined.

    Subclasses define two static methods working on NumPy arrays only::

        class Mul(Function):
            '''y = a * b.   da = g * b,   db = g * a.'''
            @staticmethod
            def forward(ctx, a, b):
                ctx.save_for_backward(a, b)
                return a * b

            @staticmethod
            def backward(ctx, g):
                a, b = ctx.saved_tensors
                return g * b, g * a

    and are used as ``Mul.apply(x, y)``: positional arguments are tensors (``Tensor``, arrays or
    numbers), keyword arguments are passed to ``forward`` as they are (stride, axis, ...).
    ``backward`` returns one gradient per positional input (``None`` where there is none); it may
    return a broadcast-shaped gradient, which the engine sums back to the input's shape.
    """

    @staticmethod
    def forward(ctx: Context, *arrays: np.ndarray, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad_out: np.ndarray):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Any, **kwargs: Any):
        tensor = _tensor or _import_tensor()
        Tensor = tensor.Tensor
        tensors = inputs
        for x in inputs:
            if not isinstance(x, Tensor):  # arrays and numbers become constant tensors (as_tensor)
                tensors = tuple([x if isinstance(x, Tensor) else Tensor(x) for x in inputs])
                break
        needs, arrays = [], []  # (a loop: cheaper than two comprehensions for an op's few inputs)
        for t in tensors:
            needs.append(t.requires_grad)
            arrays.append(t.data)
        needs = tuple(needs)
        ctx = Context(needs)
        tape = _tape.get()
        if tape is not None:
            tape.before(arrays, kwargs)
        profiler = _profiler.get()
        if profiler is None:
            out = cls.forward(ctx, *arrays, **kwargs)
        else:
            start = time.perf_counter()
            out = cls.forward(ctx, *arrays, **kwargs)
            profiler(cls, "forward", time.perf_counter() - start, ctx)
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
        record = True in needs and _grad_enabled.get()
        if _detect_anomaly.get():
            _check_finite(cls, "forward output", out)
            if record:
                ctx._anomaly_inputs = tuple(a.copy() if isinstance(a, np.ndarray) else None for a in arrays)
        if tape is not None:
            tape.forward(cls, ctx, arrays, kwargs, out)
        return tensor._from_op(out, Node(cls, ctx, tensors, kwargs) if record else None)


_tensor: Any = None  # the module tensor.py, imported on the first op (it imports this module, not the reverse)


def _import_tensor():
    global _tensor
    from . import tensor

    _tensor = tensor
    return tensor


def _check_inputs_unchanged(node: Node) -> None:
    """Under detect_anomaly: an input array edited in place after the forward makes a wrong backward."""
    for i, (before, t) in enumerate(zip(node.ctx._anomaly_inputs, node.inputs)):
        if before is not None and not np.array_equal(before, t.data, equal_nan=True):
            name = f" ({t.name!r})" if t.name else ""
            raise RuntimeError(f"detect_anomaly: input {i}{name} of {node.name} was modified in place between "
                               f"its forward and its backward; its gradient would be wrong (copy the array "
                               f"before changing it, or change it after backward)")


# ---------------------------------------------------------------------------------------------- #
# The backward pass


def topological_order(root, *, constants: bool = False) -> list:
    """Tensors ``root`` depends on through recorded ops, inputs before outputs (iterative DFS).

    Only tensors that need a gradient, unless ``constants`` (``draw_graph`` wants those too).
    Inputs are visited in argument order.

    A tensor is appended after all of its inputs (post-order): for each tensor being expanded, the walk
    keeps an iterator over its inputs, so it is the recursive one without the recursion. A
    tensor reached along two paths is expanded once, and still comes after *every* tensor using it in
    the reversed order, so each path's gradient arrives before the tensor is processed.
    """
    order, visited = [], {id(root)}
    node = root._node
    path, inputs = [root], [iter(() if node is None else node.inputs)]  # the tensors being expanded
    while path:
        for p in inputs[-1]:
            if (constants or p.requires_grad) and id(p) not in visited:
                visited.add(id(p))
                node = p._node
                path.append(p)
                inputs.append(iter(() if node is None else node.inputs))
                break
        else:  # every input done
            order.append(path.pop())
            inputs.pop()
    return order


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sums ``grad`` over the axes that broadcasting added or stretched, giving ``shape``.

    Raises ``ValueError`` when ``grad``'s shape is not ``shape`` broadcast (a (3, 2) gradient for a
    (2, 3) input is a bug in the op, not something to reshape into place).
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0 or any(n != 1 and n != m for n, m in zip(shape, grad.shape[extra:])):
        raise ValueError(f"gradient of shape {grad.shape} does not broadcast from the input's shape {shape}")
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=axes, keepdims=True) if axes else grad
    return grad.reshape(shape)


def _read_only(g: np.ndarray) -> np.ndarray:
    """A read-only view of ``g``: a gradient may be shared (add passes one array to both inputs), so
    a backward that edited it in place would corrupt another tensor's gradient. NumPy refuses instead."""
    view = np.asarray(g).view()  # (0-d arithmetic gives NumPy scalars, which have no flags)
    view.setflags(False)  # write=False (positional: a third of the cost of view.flags.writeable = False)
    return view


def _input_grads(node: Node, grad: np.ndarray, anomaly: bool, profiler: Callable | None, tape) -> tuple:
    """The gradients ``node``'s op returns for its inputs, given ``grad`` (read-only) for its output;
    ``anomaly``, ``profiler`` and ``tape`` are the modes of the backward pass (read once for the pass)."""
    if anomaly and hasattr(node.ctx, "_anomaly_inputs"):
        _check_inputs_unchanged(node)
    given = grad
    if tape is not None or type(grad) is not np.ndarray or grad.flags.writeable:  # else read-only already
        grad = _read_only(grad)
    try:
        if profiler is None:
            grads = node.op.backward(node.ctx, grad)
        else:
            start = time.perf_counter()
            grads = node.op.backward(node.ctx, grad)
            profiler(node.op, "backward", time.perf_counter() - start, node.ctx)
    except ValueError as e:
        if "read-only" not in str(e):
            raise
        raise RuntimeError(f"{node.name}.backward wrote into the gradient it was given; that array may be "
                           f"another tensor's gradient too, so it is read-only: compute a new array "
                           f"(g = g * 2, not g *= 2)") from e
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) != len(node.inputs):
        raise RuntimeError(f"{node.name}.backward returned {len(grads)} gradients for "
                           f"{len(node.inputs)} inputs")
    if anomaly:
        for i, gi in enumerate(grads):
            _check_finite(node.op, f"backward gradient for input {i}", gi)
    if tape is not None:
        tape.backward(node.op, node.ctx, given, grads)
    return grads


def backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Runs the reverse pass from ``root`` seeded with ``grad`` (``root``'s shape).

    Leaves with ``requires_grad`` accumulate into ``.grad``. Without ``retain_graph`` every node is
    released once used, so nothing of the graph survives; with it, intermediate tensors also keep
    their gradient in ``.grad`` (that is what ``draw_graph(show_grads=True)`` shows).
    Refuses (``RuntimeError``) a graph that an earlier backward released, and a gradient of the
    wrong shape from an op's backward; BLAS runs single-threaded during the pass (see parallel.py).
    """
    with blas_single_threaded():
        _backward(root, grad, retain_graph)


def _backward(root, grad: np.ndarray, retain_graph: bool) -> None:
    order = topological_order(root)
    for tensor in order:
        if tensor._released:  # its node is gone: the gradient would stop there, silently short
            raise RuntimeError(f"backward: {_describe(tensor)} was made by an op whose graph an earlier backward() "
                               f"released; pass retain_graph=True to that earlier call to run backward through it "
                               f"again, or use .detach() to treat it as a constant")
    # the modes, once for the pass (a mode an op's backward sets is reset before it returns)
    anomaly, profiler, tape = _detect_anomaly.get(), _profiler.get(), _tape.get()
    grads = {id(root): grad}
    for tensor in reversed(order):
        g = grads.pop(id(tensor), None)
        node = tensor._node
        if g is None:
            continue
        if node is None or retain_graph:
            # a fresh array: a gradient passed on unchanged (by add, say) may be shared by two tensors
            tensor.grad = _step(np.array, g) if tensor.grad is None else _step(np.add, tensor.grad, g)
        if node is None:
            continue
        inputs = node.inputs
        for i, pg in enumerate(_input_grads(node, g, anomaly, profiler, tape)):
            parent = inputs[i]
            if pg is None or not parent.requires_grad:
                continue
            data = parent.data
            if type(pg) is not np.ndarray or pg.dtype is not data.dtype or pg.shape != data.shape:
                pg = _step(_as_gradient_of, pg, data.shape, data.dtype, node.name, i)  # else it is already
            key = id(parent)
            grads[key] = pg if key not in grads else _step(np.add, grads[key], pg)
        if not retain_graph:
            tensor._node = None  # releases the op's saved arrays and its hold on the inputs
            tensor._released = True


def _as_gradient_of(pg, shape: tuple, dtype: np.dtype, op_name: str, i: int) -> np.ndarray:
    """An op's gradient ``pg`` for its input ``i`` summed back to the input's ``shape`` and cast to its
    ``dtype``; RuntimeError naming the op when the shape is not the input's, broadcast."""
    pg = np.asarray(pg)
    try:
        pg = unbroadcast(pg, shape)
    except ValueError:
        raise RuntimeError(f"{op_name}.backward returned a gradient of shape {pg.shape} for input {i} of "
                           f"shape {shape}; a gradient must have its input's shape (or a shape it "
                           f"broadcasts to)") from None
    return pg if pg.dtype == dtype else pg.astype(dtype)


def _step(fn: Callable, *args):
    """``fn(*args)``, recorded when jit is tracing: an array the engine makes between ops, or NumPy code
    outside the ops returning a tuple of arrays (an optimizer's update). Not recorded when it returns its
    first argument, nor when it returns anything but arrays (a Python number in a custom optimizer's
    state: part of jit's signature, so nothing recorded goes stale)."""
    out = fn(*args)
    tape = _tape.get()
    if (tape is not None and not (args and out is args[0])
            and all(isinstance(o, np.ndarray) for o in (out if isinstance(out, tuple) else (out,)))):
        tape.call(fn, args, out)
    return out


def _describe(tensor) -> str:
    name = f" {tensor.name!r}" if tensor.name else ""
    return f"a tensor{name} of shape {tensor.shape}"


# ---------------------------------------------------------------------------------------------- #
# Profiling hook: one optional recorder, used by draw_graph's timing annotations and benchmarks.

def saved_bytes(ctx: Context) -> int:
    """Bytes of the arrays an op keeps for its backward (saved tensors and ndarray attributes)."""
    arrays = [a for a in ctx.saved_tensors if isinstance(a, np.ndarray)]
    arrays += [v for v in vars(ctx).values() if isinstance(v, np.ndarray)]
    seen, total = set(), 0
    for a in arrays:
        base = a if a.base is None else a.base
        if id(base) not in seen and isinstance(base, np.ndarray):
            seen.add(id(base))
            total += base.nbytes
    return total


def record_profile(callback: Callable[[type, str, float, Context], None]):
    """Calls ``callback(op, phase, seconds, ctx)`` after every forward and backward inside the block.

    ``phase`` is ``"forward"`` or ``"backward"``. Used by ``tinygrad_cnn.viz.profile()`` (for
    ``draw_graph(..., profile=prof)``) and by
    ``benchmarks/train_step.py --profile``; costs nothing when not active.
    """
    return _set(_profiler, callback)
