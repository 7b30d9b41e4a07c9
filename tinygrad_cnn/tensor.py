"""Tensor: a NumPy array that remembers the op that made it.

Every operator and method below is a one-line call of an op in ``tinygrad_cnn.ops``; the op runs on
NumPy arrays and, when an input needs a gradient, records a node on its output. ``backward()`` then
walks those nodes (see ``autograd.py``).

dtype policy: float64 arrays stay float64 (that is what gradcheck needs); everything else (Python
numbers and lists, ints, float16, ...) becomes float32 unless ``dtype`` says otherwise. A Python
number combined with a tensor takes the tensor's dtype, so ``x * 2`` stays float32.
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
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_node", "_released", "__weakref__")
    __array_ufunc__ = None  # ``ndarray + Tensor`` defers to Tensor.__radd__ instead of looping

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data: np.ndarray = _as_array(data, dtype)
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"Tensor: requires_grad=True needs a floating dtype, got {self.data.dtype}")
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._node: autograd.Node | None = None
        self._released = False  # set when backward() dropped the node that made this tensor

    @classmethod
    def _from_op(cls, data: np.ndarray, node: autograd.Node | None) -> Tensor:
        t = cls.__new__(cls)
        t.data, t.grad, t.name, t._node, t._released = data, None, None, node, False
        t.requires_grad = node is not None
        return t

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
        return len(self.data)

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
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, shape is {self.shape}")
        return float(self.data.item())

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

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
    # Each checks its other operand (a Tensor, an array or a number) and that the shapes broadcast, so
    # a mistake is reported as "mul: shapes (2, 3) and (4,) do not broadcast", not from inside NumPy.
    def _operand(self, other: Any, fn: str) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float, bool)):  # takes the tensor's dtype, unless that would truncate it
            return Tensor(other, dtype=self.dtype if self.dtype.kind == "f" or not isinstance(other, float) else None)
        check_tensor_like(fn, "other", other)
        return Tensor(other)

    def _binary(self, op: type, fn: str, other: Any, reflected: bool = False) -> Tensor:
        other = self._operand(other, fn)
        a, b = (other, self) if reflected else (self, other)
        check_broadcast(fn, a.shape, b.shape)
        _check_integer_arithmetic(fn, a, b)
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

    def __getitem__(self, index):
        """Slices, ints, None, ``...`` and integer/boolean arrays (or Tensors), as NumPy. A wrong kind of
        index raises TypeError; a position out of range raises IndexError (Python's convention for ``[]``)."""
        index = check_index("getitem", _plain_index(index))
        try:
            return movement.GetItem.apply(self, index=index)
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor shape {self.shape})") from None

    # comparisons give boolean tensors with no gradient; == and != with a non-number give NotImplemented
    # (so Python falls back to identity, as for any two unrelated objects)
    def _compare(self, ufunc, fn: str, other: Any) -> Tensor:
        other = self._operand(other, fn)
        check_broadcast(fn, self.shape, other.shape)
        return Tensor(ufunc(self.data, other.data), dtype=bool)

    def _equality(self, ufunc, fn: str, other: Any):
        try:
            return self._compare(ufunc, fn, other)
        except TypeError:
            return NotImplemented

    def __lt__(self, other): return self._compare(np.less, "lt", other)
    def __le__(self, other): return self._compare(np.less_equal, "le", other)
    def __gt__(self, other): return self._compare(np.greater, "gt", other)
    def __ge__(self, other): return self._compare(np.greater_equal, "ge", other)
    def __eq__(self, other): return self._equality(np.equal, "eq", other)
    def __ne__(self, other): return self._equality(np.not_equal, "ne", other)
    __hash__ = object.__hash__

    # -- methods ---------------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return R.Sum.apply(self, **R.reduce_args("sum", self, axis, keepdims))
    def mean(self, axis=None, keepdims=False): return R.Mean.apply(self, **R.reduce_args("mean", self, axis, keepdims))
    def max(self, axis=None, keepdims=False): return R.Max.apply(self, **R.reduce_args("max", self, axis, keepdims))
    # the elementwise functions need a floating tensor (an int or bool Tensor made with dtype= is refused)
    def exp(self): return E.Exp.apply(self._floating("exp"))
    def log(self): return E.Log.apply(self._floating("log"))
    def sqrt(self): return E.Sqrt.apply(self._floating("sqrt"))
    def relu(self): return E.Relu.apply(self._floating("relu"))
    def sigmoid(self): return E.Sigmoid.apply(self._floating("sigmoid"))
    def tanh(self): return E.Tanh.apply(self._floating("tanh"))

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


def _check_integer_arithmetic(fn: str, a: Tensor, b: Tensor) -> None:
    """The two things NumPy refuses for int/bool tensors (made with ``dtype=``), refused here by name."""
    if fn == "sub" and a.dtype == b.dtype == np.bool_:
        raise TypeError("sub: both operands are bool tensors; make one a number dtype first")
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
