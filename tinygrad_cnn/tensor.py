"""Tensor: a NumPy array that remembers the op that made it.

Every operator and method below is a one-line call of an op in ``tinygrad_cnn.ops``; the op runs on
NumPy arrays and, when an input needs a gradient, records a node on its output. ``backward()`` then
walks those nodes (see ``autograd.py``).

dtype policy: float64 arrays stay float64 (that is what gradcheck needs); everything else (Python
numbers and lists, ints, float16, ...) becomes float32 unless ``dtype`` says otherwise.

Operators promote as NumPy 2 does, with a Python number "weak" (NEP 50): it adapts to the tensor, so
``x * 2`` stays float32, an int8 tensor + 3 is int8, and ``(x > 0) * 3`` (bool times int) is int64.
One exception, from the policy: float64 comes only from float64. Where NumPy would widen narrower
operands to float64 (an int tensor * 2.5, int / int, an int64 tensor + a float32 tensor), the result
is float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import autograd
from .checks import (check_broadcast, check_float_dtype, check_index, check_new_shape, check_permutation,
                     check_real_dtype, check_tensor_like)
from .ops import elementwise as E
from .ops import linalg, movement
from .ops import reduce as R


def _as_array(data: Any, dtype=None) -> np.ndarray:
    """``data`` as an ndarray under the dtype policy; anything but real numbers raises TypeError."""
    if dtype is None and isinstance(data, np.ndarray) and data.dtype in (np.float32, np.float64):
        return data  # the common case, first and cheap
    if dtype is not None:
        dtype = check_real_dtype("Tensor", "dtype", dtype)
    if isinstance(data, (bool, int, float)):  # a Python number: straight to the float dtype (10**30 too)
        dtype = np.dtype(np.float32) if dtype is None else dtype
        try:
            return np.asarray(data, dtype=dtype)
        except (OverflowError, ValueError):  # 10**400 in float32, -1 in uint8, nan as an int
            raise ValueError(f"Tensor: {data!r} does not fit in {dtype}") from None
    keeps_float64 = isinstance(data, (np.ndarray, np.generic))  # lists of Python floats become float32
    if not keeps_float64:
        if data is None or isinstance(data, (str, bytes, dict, set)):
            raise TypeError(f"Tensor: data must be a number, a (nested) list of numbers, an np.ndarray or a "
                            f"Tensor, got {type(data).__name__}")
        try:
            data = np.asarray(data)
        except (ValueError, TypeError):
            raise TypeError(f"Tensor: data must be an array of numbers, got a ragged or mixed "
                            f"{type(data).__name__}") from None
    check_real_dtype("Tensor", "data", data.dtype)
    if dtype is None:
        dtype = np.float64 if keeps_float64 and data.dtype == np.float64 else np.float32
    return np.asarray(data, dtype=dtype)


class Tensor:
    """An n-dimensional array with reverse-mode autodiff.

    >>> w = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True, name="w")
    >>> loss = (w * w).sum()
    >>> loss.backward()
    >>> w.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)

    It behaves like an ndarray where it looks like one. ``bool(t)`` is the truth value of a
    one-element tensor and a ValueError otherwise (so ``if x == y:`` on vectors fails loudly); ``len``
    and iteration go over the first axis and refuse a 0-d tensor; ``np.array(t)`` is a copy and
    ``np.asarray(t)`` shares ``t.data``. ``+ - * / **`` promote dtypes as NumPy 2 does (a Python
    number adapts to the tensor: ``(x > 0) * 3`` is int64 ``[0, 3]``, ``x * 2`` stays float32), except
    that float64 comes only from float64 (an int tensor * 2.5 and int / int give float32):

    >>> m = Tensor([-1.0, 2.0]) > 0
    >>> (m * 3).data, (m * 0.5).dtype, (Tensor([1, 2], dtype=np.int64) / 2).dtype
    (array([0, 3]), dtype('float32'), dtype('float32'))
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_node", "_released", "__weakref__")
    __array_ufunc__ = None  # ``ndarray + Tensor`` defers to Tensor.__radd__ instead of looping

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, np.ndarray) and autograd._tape.get() is not None:
            self.data: np.ndarray = autograd._step(_as_array, data, dtype)  # jit replays a conversion (int -> float)
        else:
            self.data = _as_array(data, dtype)
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"Tensor: requires_grad=True needs a floating dtype, got {self.data.dtype}")
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._node: autograd.Node | None = None
        self._released = False  # set when backward() dropped the node that made this tensor

    # -- properties ------------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    T = property(lambda self: self.transpose())

    @property
    def op(self) -> str | None:
        """Name of the op that made this tensor (None for a leaf or after the graph was released)."""
        return None if self._node is None else self._node.name

    def __len__(self) -> int:
        """The size of the first axis, as NumPy; a 0-d tensor has no length (TypeError)."""
        if self.ndim == 0:
            raise TypeError("len: len() of a 0-d tensor (shape ()); use .size or .item()")
        return len(self.data)

    def __iter__(self):
        """``t[0], t[1], ...`` over the first axis (each recorded as an op); a 0-d tensor is not iterable."""
        if self.ndim == 0:
            raise TypeError("iter: a 0-d tensor (shape ()) is not iterable; use .item()")
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        """The truth value of a one-element tensor. Any other size raises ValueError, as in NumPy 2: the
        truth of ``x == y`` for vectors is ambiguous (all? any?), and an empty tensor has none."""
        if self.size != 1:
            raise ValueError(f"bool: the truth value of a tensor with {self.size} elements (shape {self.shape}) "
                             f"is ambiguous; use .data.any() or .data.all()")
        autograd.refuse_in_trace("bool(tensor) (an if or while on a tensor)")
        return bool(self.data.item())

    def __repr__(self) -> str:
        parts = [f"shape={self.shape}", f"dtype={self.dtype}"]
        if self.op is not None:
            parts.append(f"op={self.op}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        if self.requires_grad and self._node is None:
            parts.append("requires_grad=True")
        if self.size <= 6:
            parts.insert(0, np.array2string(self.data, separator=", ").replace("\n", ""))
        return f"Tensor({', '.join(parts)})"

    # -- leaving the graph -------------------------------------------------------------------------
    def detach(self) -> Tensor:
        """The same data with no history and no gradient."""
        return Tensor(self.data, dtype=self.dtype)

    def numpy(self) -> np.ndarray:
        autograd.refuse_in_trace(".numpy()")
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, shape is {self.shape}")
        autograd.refuse_in_trace(".item()")
        return float(self.data.item())

    def __array__(self, dtype=None, copy=None):
        """NumPy 2's conversion protocol: ``np.array(t)`` (copy=True) gets a new array, ``np.asarray(t)``
        (copy=None) gets ``t.data`` itself when ``dtype`` matches, and copy=False raises ValueError when
        the dtype needs a copy."""
        if copy is False and dtype is not None and np.dtype(dtype) != self.dtype:
            raise ValueError(f"__array__: copy=False, but converting the {self.dtype} tensor to "
                             f"{np.dtype(dtype)} needs a copy")
        return np.array(self.data, dtype=dtype, copy=copy)

    # -- autodiff --------------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Reverse pass: accumulates d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the upstream gradient, of ``self``'s shape; it defaults to 1 for a scalar.
        The graph is released afterwards unless ``retain_graph=True`` (then intermediate tensors keep
        their ``.grad`` as well, and backward may run again).
        """
        if not self.requires_grad:
            raise ValueError("backward: this tensor does not require grad (no input had requires_grad=True)")
        if self._released:
            raise RuntimeError("backward: the graph behind this tensor was released by an earlier backward(); "
                               "pass retain_graph=True to that call to run backward through it again")
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: grad can be omitted only for a scalar output, shape is {self.shape}")
            grad = np.ones(self.shape, dtype=self.dtype)
        check_tensor_like("backward", "grad", grad)
        grad = _as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has shape {self.shape}")
        autograd.backward(self, grad, retain_graph=retain_graph)

    # -- operators -------------------------------------------------------------------------------
    # Each checks its other operand (a Tensor, an array or a number), promotes the dtypes (module
    # docstring) and checks that the shapes broadcast, so a mistake is reported as "mul: shapes (2, 3)
    # and (4,) do not broadcast", not from inside NumPy.
    def _binary(self, op: type, fn: str, other: Any, reflected: bool = False) -> Tensor:
        dtype, kind = self.data.dtype, type(other)
        if dtype.kind == "f" and (kind is float or kind is int):
            # the common cases first, with nothing to promote: a Python number takes a float tensor's
            # dtype, and always broadcasts (0-d) ...
            other = _from_op(_number(fn, other, dtype), None)
            return op.apply(other, self) if reflected else op.apply(self, other)
        if kind is Tensor and other.data.dtype == dtype and dtype.kind == "f":
            # ... and two float tensors of one dtype
            a, b = (other, self) if reflected else (self, other)
            check_broadcast(fn, a.data.shape, b.data.shape)
            return op.apply(a, b)
        if not isinstance(other, (Tensor, bool, int, float)):
            check_tensor_like(fn, "other", other)
            other = Tensor(other)
        a, b = (other, self) if reflected else (self, other)
        dtype = _result_dtype(fn, a, b)
        a, b = _promote(fn, a, dtype), _promote(fn, b, dtype)
        check_broadcast(fn, a.shape, b.shape)
        _check_integer_power(fn, a, b)
        return op.apply(a, b)

    def __add__(self, other): return self._binary(E.Add, "add", other)
    def __radd__(self, other): return self._binary(E.Add, "add", other, reflected=True)
    def __sub__(self, other): return self._binary(E.Sub, "sub", other)
    def __rsub__(self, other): return self._binary(E.Sub, "sub", other, reflected=True)
    def __mul__(self, other): return self._binary(E.Mul, "mul", other)
    def __rmul__(self, other): return self._binary(E.Mul, "mul", other, reflected=True)
    def __truediv__(self, other): return self._binary(E.Div, "div", other)
    def __rtruediv__(self, other): return self._binary(E.Div, "div", other, reflected=True)
    def __pow__(self, other): return self._binary(E.Pow, "pow", other)
    def __rpow__(self, other): return self._binary(E.Pow, "pow", other, reflected=True)
    def __matmul__(self, other): return linalg.matmul(self, other)
    def __rmatmul__(self, other): return linalg.matmul(other, self)
    def __neg__(self):
        if self.dtype == np.bool_:
            raise TypeError("neg: x is a bool tensor; use a number dtype (or ~ on its .data)")
        return E.Neg.apply(self)
    def __abs__(self): return E.Abs.apply(self)

    def __getitem__(self, index):
        """Slices, ints, None, ``...`` and integer/boolean arrays (or Tensors), as NumPy. A wrong kind of
        index raises TypeError; a position out of range raises IndexError (Python's convention for ``[]``)."""
        index = check_index("getitem", _plain_index(index))
        try:
            return movement.GetItem.apply(self, index=index)
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor shape {self.shape})") from None
        except OverflowError as e:  # an int beyond int64, e.g. t[2**63]: out of range for any axis
            raise IndexError(f"getitem: index out of range, {e} (tensor shape {self.shape})") from None

    # comparisons give boolean tensors with no gradient; == and != with a non-number give NotImplemented
    # (so Python falls back to identity, as for any two unrelated objects)
    def _compare(self, fn: str, other: Any) -> Tensor:
        """A boolean Tensor, no gradient; an op (``Compare``), so a jitted function recomputes it each call."""
        if isinstance(other, (bool, int, float)):  # compared exactly, as NumPy does (int8 tensor < 1000 is True)
            return E.Compare.apply(self.detach(), op=fn, number=other)
        if not isinstance(other, Tensor):
            check_tensor_like(fn, "other", other)
            other = Tensor(other)
        check_broadcast(fn, self.shape, other.shape)
        return E.Compare.apply(self.detach(), other.detach(), op=fn)

    def _equality(self, fn: str, other: Any):
        try:
            return self._compare(fn, other)
        except TypeError:
            return NotImplemented

    def __lt__(self, other): return self._compare("lt", other)
    def __le__(self, other): return self._compare("le", other)
    def __gt__(self, other): return self._compare("gt", other)
    def __ge__(self, other): return self._compare("ge", other)
    def __eq__(self, other): return self._equality("eq", other)
    def __ne__(self, other): return self._equality("ne", other)
    __hash__ = object.__hash__

    # -- methods ---------------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return R.Sum.apply(self, **R.reduce_args("sum", self, axis, keepdims))
    def mean(self, axis=None, keepdims=False): return R.Mean.apply(self, **R.reduce_args("mean", self, axis, keepdims))
    def max(self, axis=None, keepdims=False): return R.Max.apply(self, **R.reduce_args("max", self, axis, keepdims))
    def min(self, axis=None, keepdims=False): return R.Min.apply(self, **R.reduce_args("min", self, axis, keepdims))
    def prod(self, axis=None, keepdims=False): return R.Prod.apply(self, **R.reduce_args("prod", self, axis, keepdims))
    def var(self, axis=None, keepdims=False, ddof=0): return R.var(self, axis, keepdims, ddof)
    def std(self, axis=None, keepdims=False, ddof=0): return R.std(self, axis, keepdims, ddof)
    def logsumexp(self, axis=None, keepdims=False): return R.logsumexp(self, axis, keepdims)
    # integer Tensors (np.intp) without gradient, as NumPy's argmax/argmin (the first one on a tie)
    def argmax(self, axis=None, keepdims=False): return R.argmax(self, axis, keepdims)
    def argmin(self, axis=None, keepdims=False): return R.argmin(self, axis, keepdims)
    # the elementwise functions need a floating tensor (an int or bool Tensor made with dtype= is refused)
    def exp(self): return E.Exp.apply(self._floating("exp"))
    def log(self): return E.Log.apply(self._floating("log"))
    def sqrt(self): return E.Sqrt.apply(self._floating("sqrt"))
    def relu(self): return E.Relu.apply(self._floating("relu"))
    def sigmoid(self): return E.Sigmoid.apply(self._floating("sigmoid"))
    def tanh(self): return E.Tanh.apply(self._floating("tanh"))
    def log1p(self): return E.Log1p.apply(self._floating("log1p"))
    def expm1(self): return E.Expm1.apply(self._floating("expm1"))
    # abs and square keep any real dtype, as NumPy's; clip: number bounds as an op, array/Tensor bounds composed
    def abs(self): return E.Abs.apply(self)
    def square(self): return E.Square.apply(self)
    def clip(self, lo=None, hi=None): return E.clip(self, lo, hi)

    def _floating(self, fn: str) -> Tensor:
        check_float_dtype(fn, "x", self.dtype)
        return self

    def reshape(self, *shape):
        """``t.reshape(2, -1)`` or ``t.reshape((2, -1))``; one -1 is inferred from the element count."""
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return movement.Reshape.apply(self, shape=check_new_shape("reshape", shape, self.shape))

    def transpose(self, *axes):
        """Reverses the axes, or permutes them as given: ``t.transpose(0, 2, 1)``."""
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = check_permutation("transpose", "axes", axes, self.ndim) if axes else None
        return movement.Transpose.apply(self, axes=axes)

    def flatten(self, start_dim: int = 1):
        """Merges the axes from ``start_dim`` on: (N, C, H, W) -> (N, C*H*W) by default."""
        return movement.flatten(self, start_dim)

    def squeeze(self, axis=None): return movement.squeeze(self, axis)          # as np.squeeze
    def repeat(self, repeats, axis=None): return movement.repeat(self, repeats, axis)  # np.repeat, not torch's


def _from_op(data: np.ndarray, node: autograd.Node | None) -> Tensor:
    """A Tensor of an op's output ``data`` made by ``node`` (None: not recorded, or a constant operand),
    without ``__init__``'s conversion and checks: ``data`` is already an array of its final dtype."""
    t = _new(Tensor)
    t.data, t.grad, t.name, t._node, t._released = data, None, None, node, False
    t.requires_grad = node is not None
    return t


_new = object.__new__  # (a module-level function and object.__new__: the cheapest way to make one)

_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "pow": np.power}
_UFUNCS["maximum"] = np.maximum  # ops.elementwise's maximum, minimum, clip and where promote as np.maximum does


def _result_dtype(fn: str, a: Any, b: Any) -> np.dtype:
    """The dtype of ``a <fn> b`` (fn: add, sub, mul, div, pow) for Tensors and Python numbers.

    NumPy 2's promotion, with a Python number weak (NEP 50: it takes the tensor's kind when it can,
    so float32 * 2.5 is float32, int8 + 3 is int8; else NumPy's default, so bool * 3 is int64), except
    that float64 comes only from float64: where NumPy would give float64 from narrower operands
    (int64 * 2.5, int / int, int64 + float32), the result is float32 (the package's dtype policy).
    Bool - bool raises TypeError, as in NumPy.
    """
    own = [x.dtype for x in (a, b) if isinstance(x, Tensor)]
    if own[0].kind == "f" and own[-1] == own[0]:  # the common case: a float tensor with its like or a number
        return own[0]
    dtypes = tuple(x.dtype if isinstance(x, Tensor) else np.dtype(bool) if isinstance(x, bool) else type(x)
                   for x in (a, b))
    try:
        dtype = _UFUNCS[fn].resolve_dtypes(dtypes + (None,))[-1]
    except TypeError:  # bool - bool, the one mix of real dtypes NumPy refuses
        raise TypeError(f"{fn}: NumPy has no {fn} for operands of dtype {dtypes[0]} and {dtypes[1]}; "
                        f"make one a number dtype first") from None
    if dtype == np.float64 and not any(isinstance(x, Tensor) and x.dtype == np.float64 for x in (a, b)):
        return np.dtype(np.float32)
    return dtype


def _promote(fn: str, x: Any, dtype: np.dtype) -> Tensor:
    """Operand ``x`` ready for an op whose result is ``dtype``: a Python number as a 0-d tensor of that
    dtype; an int or bool tensor cast to a floating ``dtype`` (NumPy alone would give float64 for int64
    and float32, and they never require grad); any other tensor as it is."""
    if not isinstance(x, Tensor):
        return _from_op(_number(fn, x, dtype), None)
    if dtype.kind == "f" and x.dtype.kind != "f":
        return Tensor(x.data, dtype=dtype)
    return x


def _number(fn: str, x: bool | int | float, dtype: np.dtype) -> np.ndarray:
    """A Python number as a 0-d array of ``dtype``, the dtype of the result of ``fn``."""
    try:
        return np.asarray(x, dtype=dtype)
    except (OverflowError, ValueError):  # uint8 tensor + -1, int8 tensor + 1000, float32 tensor * 10**400
        raise ValueError(f"{fn}: the number {x!r} does not fit in {dtype}, the dtype of the result") from None


def _check_integer_power(fn: str, a: Tensor, b: Tensor) -> None:
    """NumPy refuses an integer tensor to a negative integer power; refused here by name."""
    if fn == "pow" and a.dtype.kind in "biu" and b.dtype.kind in "biu" and (b.data < 0).any():
        raise ValueError(f"pow: an integer tensor ({a.dtype}) to a negative integer power; use a float tensor")


def _plain_index(index):
    """Replaces Tensors inside an index by their integer arrays (a float Tensor, Tensor([0, 2]) made with
    the default dtype, must hold whole numbers)."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        if not np.issubdtype(index.dtype, np.floating):
            return index.data
        if not np.all(np.isfinite(index.data) & (index.data == np.round(index.data))):
            raise TypeError(f"getitem: a float Tensor used as an index must hold whole numbers, got {index!r}")
        return index.data.astype(np.intp)
    return index


def as_tensor(x: Any) -> Tensor:
    """``x`` itself if it is a Tensor, else a new constant Tensor (dtype policy as ``Tensor``)."""
    return x if isinstance(x, Tensor) else Tensor(x)
