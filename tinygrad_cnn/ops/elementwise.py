"""Elementwise ops. Each acts on every element independently, so each backward is a pointwise
product of the upstream gradient ``g`` with the local derivative.

Binary ops broadcast like NumPy; their backward returns the broadcast-shaped gradient and the engine
sums it back to each input's shape. Ops save the least their derivative needs, often the output:
d/dx exp(x) = exp(x), d/dx sigmoid(x) = s (1 - s), d/dx tanh(x) = 1 - t^2.

The NumPy-named ops at the end (abs, square, log1p, expm1, maximum, minimum, clip, where) follow NumPy's
values and broadcasting. Where their derivative has a kink or a choice, they take TensorFlow's:
d|x|/dx = sign(x), 0 at 0; a tie of maximum/minimum gives the whole gradient to the first argument;
clip passes the gradient to x on the closed interval [lo, hi]; where routes it to a or b by cond.
Their mixed operands (Tensors, arrays, Python numbers) promote as the operators do (tensor.py).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import (check_broadcast, check_broadcast_together, check_float, check_float_dtype, check_tensor_like,
                      describe, to_tensor)
from ..parallel import over_batch


def _over_rows(kernel, a: np.ndarray) -> None:
    """Runs ``kernel(s)`` over slices of ``a``'s first axis in parallel (all of ``a`` when 0-d)."""
    if a.ndim == 0:
        kernel(Ellipsis)
    else:
        over_batch(kernel, len(a), work=a.size)


class Add(Function):
    """y = a + b.   da = g,   db = g."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a - b.   da = g,   db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b.   da = g * b,   db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    """y = a / b.   da = g / b,   db = -g * a / b^2 = -g * y / b."""

    @staticmethod
    def forward(ctx, a, b):
        y = a / b
        ctx.save_for_backward(b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g / b
        return (ga if need_a else None), (-ga * y if need_b else None)


class Pow(Function):
    """y = a ** b.   da = g * b * a^(b-1),   db = g * y * log(a)  (taken as 0 where a <= 0)."""

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g * b * a ** (b - 1) if need_a else None
        if need_b:
            positive = a > 0
            gb = g * y * np.log(np.where(positive, a, 1)) * positive
        else:
            gb = None
        return ga, gb


class Neg(Function):
    """y = -x.   dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """y = exp(x).   dx = g * y."""

    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(Function):
    """y = log(x).   dx = g / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Sqrt(Function):
    """y = sqrt(x).   dx = g / (2 y)."""

    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)


class Compare(Function):
    """y = a < b (or <=, >, >=, ==, != by ``op``), a boolean array; ``number``: b is that Python number,
    compared exactly as NumPy compares it. Not differentiable: applied to detached inputs, an op so that
    jit records it (a mask made from this call's data, not frozen at trace time)."""

    UFUNCS = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
              "eq": np.equal, "ne": np.not_equal}

    @staticmethod
    def forward(ctx, a, b=None, *, op, number=None):
        if b is None:  # bools as their 0/1 bytes: NumPy has no bool-against-2**63 comparison (OverflowError)
            return Compare.UFUNCS[op](a.view(np.uint8) if a.dtype == np.bool_ else a, number)
        return Compare.UFUNCS[op](a, b)

    @staticmethod
    def backward(ctx, g):
        return None


class Relu(Function):
    """y = max(x, 0).   dx = g where x > 0, else 0 (the subgradient at 0 is taken as 0).

    Activations are large: both passes run on batch slices in parallel threads.
    """

    @staticmethod
    def forward(ctx, x):
        y = ctx.empty_like(x)
        _over_rows(lambda s: np.maximum(x[s], 0, out=y[s]), x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        dx = ctx.empty_like(g, dtype=np.result_type(g, y))
        _over_rows(lambda s: np.multiply(g[s], y[s] > 0, out=dx[s]), dx)
        return dx


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed without overflow for large |x|.   dx = g * y * (1 - y)."""

    @staticmethod
    def forward(ctx, x):
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


class Tanh(Function):
    """y = tanh(x).   dx = g * (1 - y^2)."""

    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class Abs(Function):
    """y = |x|.   dx = g sign(x), taking 0 at x = 0 (the subgradient PyTorch and TensorFlow use)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * np.sign(x)


class Square(Function):
    """y = x^2.   dx = 2 g x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.square(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (2 * x)


class Log1p(Function):
    """y = log(1 + x), accurate for small |x| (where 1 + x would round).   dx = g / (1 + x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log1p(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + x)


class Expm1(Function):
    """y = exp(x) - 1, accurate for small |x|.   dx = g exp(x) = g (y + 1)  (to within one rounding of 1:
    for x below about -37 in float64, -17 in float32, y + 1 is 0 where exp(x) is a tiny positive number)."""

    @staticmethod
    def forward(ctx, x):
        y = np.expm1(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (y + 1)


def _split_gradient(ctx, g: np.ndarray, to_a: np.ndarray) -> tuple:
    """(g where ``to_a``, g elsewhere) for the two inputs (a, b) of an op that picks one of them per
    element; None for an input that needs no gradient. Both have the output's (broadcast) shape."""
    need_a, need_b = ctx.needs_input_grad
    return (np.where(to_a, g, 0) if need_a else None), (np.where(to_a, 0, g) if need_b else None)


class Maximum(Function):
    """y = max(a, b), broadcast.   da = g where a >= b,   db = g where a < b.

    On a tie (a == b) the whole gradient goes to ``a``, the first argument (TensorFlow's rule), so the
    two gradients sum to g and never split. Where a is NaN, y is NaN and the gradient goes to b.
    """

    @staticmethod
    def forward(ctx, a, b):
        if True in ctx.needs_input_grad:
            ctx.save_for_backward(a >= b)                 # (broadcast shape) bool: where a is chosen
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        (a_chosen,) = ctx.saved_tensors
        return _split_gradient(ctx, g, a_chosen)


class Minimum(Function):
    """y = min(a, b), broadcast.   da = g where a <= b,   db = g where a > b.

    On a tie the whole gradient goes to ``a``, the first argument, as for :class:`Maximum`.
    """

    @staticmethod
    def forward(ctx, a, b):
        if True in ctx.needs_input_grad:
            ctx.save_for_backward(a <= b)                 # (broadcast shape) bool: where a is chosen
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        (a_chosen,) = ctx.saved_tensors
        return _split_gradient(ctx, g, a_chosen)


class Clip(Function):
    """y = min(max(x, lo), hi) for number bounds ``lo``, ``hi`` (None: no bound on that side).
    dx = g where lo <= x <= hi (both ends included, as TensorFlow's clip_by_value), 0 elsewhere.
    With lo > hi every y is hi, as in NumPy, and dx = 0.

    Bounds that are arrays or Tensors (which may need a gradient) are not this op: ``clip`` composes
    :class:`Maximum` and :class:`Minimum` for them, with the same values and gradients for x.
    """

    @staticmethod
    def forward(ctx, x, *, lo=None, hi=None):
        if ctx.needs_input_grad[0]:
            if lo is None:
                inside = x <= hi
            else:
                inside = x >= lo
                if hi is not None:
                    inside &= x <= hi
            ctx.save_for_backward(inside)                 # x's shape, bool
        y = ctx.empty_like(x)
        if lo is None:                                    # np.clip's values, without its Python-level overhead
            return np.minimum(x, hi, out=y)
        np.maximum(x, lo, out=y)
        return y if hi is None else np.minimum(y, hi, out=y)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return np.where(inside, g, 0)


class Where(Function):
    """y = a where cond, else b; cond a bool array, and cond, a, b broadcast together.
    da = g where cond,   db = g elsewhere (cond, a keyword argument, gets none)."""

    @staticmethod
    def forward(ctx, a, b, *, cond):
        ctx.save_for_backward(cond)
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        return _split_gradient(ctx, g, cond)


def _float_input(fn: str, x):
    x = to_tensor(fn, "x", x)
    check_float_dtype(fn, "x", x.dtype)
    return x


def relu(x):
    """max(x, 0), elementwise; any shape. The gradient at exactly 0 is taken as 0."""
    return Relu.apply(_float_input("relu", x))


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise; stable for large |x| (no overflow warnings)."""
    return Sigmoid.apply(_float_input("sigmoid", x))


def tanh(x):
    """tanh(x), elementwise."""
    return Tanh.apply(_float_input("tanh", x))


# ---------------------------------------------------------------------------------------------- #
# The NumPy-named ops. (``abs`` below shadows the builtin in this module: np.abs is used above.)


_tensor = None  # the module tensor.py, which imports this one: looked up on the first call


def _tensor_module():
    global _tensor
    if _tensor is None:
        from .. import tensor

        _tensor = tensor
    return _tensor


def _operands(fn: str, a, b, names: tuple[str, str] = ("a", "b")) -> tuple:
    """``a`` and ``b`` (Tensors, arrays or numbers) as two Tensors of one dtype, promoted as the operators
    promote (tensor.py): a Python number takes the other operand's dtype, so float32 stays float32, and
    float64 comes only from float64. Two numbers give float32, as ``Tensor(2.0)`` does."""
    T = _tensor_module()
    operands = []
    for name, value in zip(names, (a, b)):
        if not isinstance(value, (T.Tensor, bool, int, float)):
            check_tensor_like(fn, name, value)
            value = T.Tensor(value)
        operands.append(value)
    a, b = operands
    if not isinstance(a, T.Tensor) and not isinstance(b, T.Tensor):
        a = T.Tensor(a)
    dtype = T._result_dtype("maximum", a, b)  # np.maximum's promotion (the operators'), for where too
    return T._promote(fn, a, dtype), T._promote(fn, b, dtype)


def abs(x):
    """|x|, elementwise; any shape, any real dtype (kept, as NumPy: an int tensor stays int and gets no
    gradient). The gradient is sign(x), 0 at x = 0, as in PyTorch and TensorFlow. Also ``abs(t)``, ``t.abs()``.

    >>> abs(np.array([-2.0, 0.0, 3.0])).data
    array([2., 0., 3.])
    """
    return Abs.apply(to_tensor("abs", "x", x))


def square(x):
    """x * x, elementwise; any shape, any real dtype (kept, as NumPy). The gradient is 2x. Also ``t.square()``.

    >>> square(np.array([-2.0, 3.0])).data
    array([4., 9.])
    """
    return Square.apply(to_tensor("square", "x", x))


def log1p(x):
    """log(1 + x), elementwise, accurate where |x| is small (log(1 + 1e-10) loses six digits, log1p none);
    any shape, floating (dtype kept). The gradient is 1 / (1 + x). Also ``t.log1p()``.

    >>> log1p(np.array([0.0, 1e-10])).data
    array([0.e+00, 1.e-10])
    """
    return Log1p.apply(_float_input("log1p", x))


def expm1(x):
    """exp(x) - 1, elementwise, accurate where |x| is small; any shape, floating (dtype kept). The gradient
    is exp(x), computed as y + 1 from the saved output. Also ``t.expm1()``.

    >>> expm1(np.array([0.0, 1e-10])).data
    array([0.e+00, 1.e-10])
    """
    return Expm1.apply(_float_input("expm1", x))


def maximum(a, b):
    """The larger of ``a`` and ``b``, elementwise, with NumPy's broadcasting: shapes (2, 1, 3) and (4, 1)
    give (2, 4, 3). ``a``, ``b``: Tensors, arrays or numbers, promoted as the operators promote (a Python
    number takes the tensor's dtype: float32 stays float32). NaN propagates, as in NumPy.

    Ties: where a == b the whole gradient goes to ``a``, the first argument, as TensorFlow's gradient
    does (``Tensor.max`` likewise gives a tied group's gradient to one element, its first maximum).

    >>> maximum(np.array([1.0, 5.0]), 3.0).data
    array([3., 5.])
    """
    a, b = _operands("maximum", a, b)
    check_broadcast("maximum", a.shape, b.shape)
    return Maximum.apply(a, b)


def minimum(a, b):
    """The smaller of ``a`` and ``b``, elementwise; broadcasting, dtypes and NaN as :func:`maximum`. On a
    tie (a == b) the whole gradient goes to ``a``, the first argument, as in TensorFlow.

    >>> minimum(np.array([1.0, 5.0]), 3.0).data
    array([1., 3.])
    """
    a, b = _operands("minimum", a, b)
    check_broadcast("minimum", a.shape, b.shape)
    return Minimum.apply(a, b)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating))


def _number_bound(fn: str, name: str, value, dtype: np.dtype):
    """A number bound of ``clip`` as a scalar of x's float dtype, so that it compares as x's elements
    do; beyond the dtype's range it becomes ±inf, which bounds nothing. None stays None."""
    if value is None:
        return None
    value = check_float(fn, name, value)  # refuses bools and NaN
    if dtype.itemsize < 8 and math.fabs(value) > float(np.finfo(dtype).max):  # (a cast would warn of overflow)
        value = math.copysign(math.inf, value)
    return dtype.type(value)


def clip(x, lo, hi):
    """x limited to [lo, hi], elementwise: min(max(x, lo), hi), as ``np.clip``. ``lo`` or ``hi`` may be None
    (no bound on that side), not both. Bounds are numbers, arrays or Tensors; x, lo and hi broadcast
    together, and promote as the operators do (a number bound keeps x's dtype; a float64 array bound
    widens a float32 x to float64, as in NumPy).

    Gradient: to x where lo <= x <= hi, both ends included (as TensorFlow's clip_by_value); to a bound
    that is a Tensor where it is active, i.e. where x < lo, or x > hi. With lo > hi the result is hi
    everywhere, as in NumPy (TensorFlow gives lo), and the gradient goes to hi.

    >>> clip(np.array([-2.0, 0.5, 3.0]), 0.0, 1.0).data
    array([0. , 0.5, 1. ])
    """
    fn = "clip"
    if lo is None and hi is None:
        raise ValueError("clip: lo and hi are both None; give at least one bound (a number, an array or a Tensor)")
    x = to_tensor(fn, "x", x)
    if x.dtype.kind == "f" and (lo is None or _is_number(lo)) and (hi is None or _is_number(hi)):
        return Clip.apply(x, lo=_number_bound(fn, "lo", lo, x.dtype), hi=_number_bound(fn, "hi", hi, x.dtype))
    # array or Tensor bounds (or an integer x): NumPy's definition from the two ops, whose tie rule (the
    # gradient to the first argument) gives x the gradient at lo and at hi
    bounds = {name: value for name, value in (("lo", lo), ("hi", hi)) if value is not None}
    for name, value in bounds.items():
        if not _is_number(value):
            check_tensor_like(fn, name, value)
    check_broadcast_together(fn, x=x.shape, **{name: np.shape(value) for name, value in bounds.items()})
    if lo is not None:
        x = Maximum.apply(*_operands(fn, x, lo, ("x", "lo")))
    if hi is not None:
        x = Minimum.apply(*_operands(fn, x, hi, ("x", "hi")))
    return x


def _condition(fn: str, cond) -> np.ndarray:
    """``cond`` (a bool array, list, Tensor or bool) as a bool ndarray; any other dtype is a TypeError."""
    T = _tensor_module()
    data = cond.data if isinstance(cond, T.Tensor) else cond
    if isinstance(data, list):
        check_tensor_like(fn, "cond", data)  # refuses ragged lists
        data = np.asarray(data)
    elif isinstance(data, (bool, np.bool_)):
        data = np.asarray(data)
    if isinstance(data, np.ndarray) and data.dtype == np.bool_:
        return data
    if isinstance(cond, T.Tensor):
        raise TypeError(f"{fn}: cond must hold bools, got a Tensor of dtype {cond.dtype} (a comparison such as "
                        f"x > 0 gives one; Tensor(mask) makes float32 unless dtype=bool)")
    raise TypeError(f"{fn}: cond must be a bool array, Tensor or bool (a comparison such as x > 0), "
                    f"got {describe(cond)}")


def where(cond, a, b):
    """``a`` where ``cond`` is True, else ``b``, elementwise, as ``np.where``. ``cond``: bools (an array, a
    list, a Tensor such as ``x > 0``, or a bool), never differentiated; a non-bool cond is a TypeError.
    ``a``, ``b``: Tensors, arrays or numbers, promoted as the operators promote; cond, a and b broadcast
    together. The gradient goes to ``a`` where cond holds and to ``b`` elsewhere.

    >>> where(np.array([True, False]), np.array([1.0, 2.0]), 0.0).data
    array([1., 0.])
    """
    fn = "where"
    cond = _condition(fn, cond)
    a, b = _operands(fn, a, b)
    check_broadcast_together(fn, cond=cond.shape, a=a.shape, b=b.shape)
    return Where.apply(a, b, cond=cond)
