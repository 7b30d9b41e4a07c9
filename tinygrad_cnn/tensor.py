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
from .ops import elementwise as E
from .ops import linalg, movement
from .ops import reduce as R


def _as_array(data: Any, dtype=None) -> np.ndarray:
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)) and data.dtype == np.float64:
        return np.asarray(data)
    if isinstance(data, np.ndarray) and data.dtype == np.float32:
        return data
    return np.asarray(data, dtype=np.float32)


class Tensor:
    """An n-dimensional array with reverse-mode autodiff.

    >>> w = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True, name="w")
    >>> loss = (w * w).sum()
    >>> loss.backward()
    >>> w.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_node", "__weakref__")
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

    @classmethod
    def _from_op(cls, data: np.ndarray, node: autograd.Node | None) -> Tensor:
        t = cls.__new__(cls)
        t.data, t.grad, t.name, t._node = data, None, None, node
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
        if self.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, shape is {self.shape}")
        return self.data.item()

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
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: grad can be omitted only for a scalar output, shape is {self.shape}")
            grad = np.ones(self.shape, dtype=self.dtype)
        grad = _as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has shape {self.shape}")
        autograd.backward(self, grad, retain_graph=retain_graph)

    # -- operators -------------------------------------------------------------------------------
    def _operand(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float, bool)):
            return Tensor(other, dtype=self.dtype)
        return Tensor(other)

    def __add__(self, other): return E.Add.apply(self, self._operand(other))
    def __radd__(self, other): return E.Add.apply(self._operand(other), self)
    def __sub__(self, other): return E.Sub.apply(self, self._operand(other))
    def __rsub__(self, other): return E.Sub.apply(self._operand(other), self)
    def __mul__(self, other): return E.Mul.apply(self, self._operand(other))
    def __rmul__(self, other): return E.Mul.apply(self._operand(other), self)
    def __truediv__(self, other): return E.Div.apply(self, self._operand(other))
    def __rtruediv__(self, other): return E.Div.apply(self._operand(other), self)
    def __pow__(self, other): return E.Pow.apply(self, self._operand(other))
    def __rpow__(self, other): return E.Pow.apply(self._operand(other), self)
    def __matmul__(self, other): return linalg.MatMul.apply(self, self._operand(other))
    def __rmatmul__(self, other): return linalg.MatMul.apply(self._operand(other), self)
    def __neg__(self): return E.Neg.apply(self)
    def __getitem__(self, index): return movement.GetItem.apply(self, index=_plain_index(index))

    # comparisons give boolean tensors with no gradient
    def __lt__(self, other): return Tensor(self.data < self._operand(other).data, dtype=bool)
    def __le__(self, other): return Tensor(self.data <= self._operand(other).data, dtype=bool)
    def __gt__(self, other): return Tensor(self.data > self._operand(other).data, dtype=bool)
    def __ge__(self, other): return Tensor(self.data >= self._operand(other).data, dtype=bool)
    def __eq__(self, other): return Tensor(self.data == self._operand(other).data, dtype=bool)
    def __ne__(self, other): return Tensor(self.data != self._operand(other).data, dtype=bool)
    __hash__ = object.__hash__

    # -- methods ---------------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return R.Sum.apply(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return R.Mean.apply(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return R.Max.apply(self, axis=axis, keepdims=keepdims)
    def exp(self): return E.Exp.apply(self)
    def log(self): return E.Log.apply(self)
    def sqrt(self): return E.Sqrt.apply(self)
    def relu(self): return E.Relu.apply(self)
    def sigmoid(self): return E.Sigmoid.apply(self)
    def tanh(self): return E.Tanh.apply(self)

    def reshape(self, *shape):
        """``t.reshape(2, -1)`` or ``t.reshape((2, -1))``."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return movement.Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        """Reverses the axes, or permutes them as given: ``t.transpose(0, 2, 1)``."""
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return movement.Transpose.apply(self, axes=axes or None)

    def flatten(self, start_dim: int = 1):
        """Merges the axes from ``start_dim`` on: (N, C, H, W) -> (N, C*H*W) by default."""
        return movement.flatten(self, start_dim)


def _plain_index(index):
    """Replaces Tensors inside an index by their (integer) arrays."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data.astype(np.intp) if np.issubdtype(index.dtype, np.floating) else index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def as_tensor(x: Any) -> Tensor:
    """``x`` itself if it is a Tensor, else a new constant Tensor (dtype policy as ``Tensor``)."""
    return x if isinstance(x, Tensor) else Tensor(x)
