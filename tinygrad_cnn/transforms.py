"""Function transforms: models are plain functions of a params pytree, and these turn such a
function into one that also returns its gradient, as JAX does.

    def loss(params, x, y):
        return tc.cross_entropy(tc.linear(x, params["w"], params["b"]), y)

    value, grads = tc.value_and_grad(loss)(params, x, y)   # grads mirrors params

Each leaf of the differentiated argument becomes a fresh ``Tensor(requires_grad=True)`` named by
its path in the tree ("conv1/w"), the function runs, ``backward()`` fills the leaves' ``.grad``,
and the gradients are put back into the argument's structure as NumPy arrays of the leaves' dtypes.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .autograd import _tape
from .checks import check_int, check_tensor_like
from .parallel import blas_single_threaded
from .pytree import tree_flatten, tree_paths, tree_unflatten
from .tensor import Tensor

__all__ = ["value_and_grad", "grad"]


def _as_leaf(value: Any, name: str, fn: str) -> Tensor:
    check_tensor_like(fn, f"the differentiated leaf {name!r}", value)
    data = value.data if isinstance(value, Tensor) else value
    if not isinstance(data, np.ndarray):
        data = np.asarray(data, dtype=np.float32)
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"{fn}: the differentiated leaf {name!r} must be floating point, got dtype {data.dtype}")
    return Tensor(data, requires_grad=True, name=value.name if isinstance(value, Tensor) and value.name else name,
                  dtype=data.dtype)


def _argnums_tuple(argnums: Any, nargs: int, fn: str) -> tuple[int, ...]:
    nums = (argnums,) if not isinstance(argnums, (tuple, list)) else tuple(argnums)
    for n in nums:
        check_int(fn, "argnums", n)
        if not -nargs <= n < nargs:
            raise ValueError(f"{fn}: argnums={n} is out of range for {nargs} positional arguments")
    return tuple(n % nargs for n in nums)


def value_and_grad(f: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False,
                   _fn: str = "value_and_grad") -> Callable:
    """Returns ``g(*args, **kwargs) -> (value, grads)``; with ``has_aux``: ``((value, aux), grads)``.

    ``f`` must return a scalar Tensor (with ``has_aux``, a pair ``(scalar, aux)``); ``value`` is a
    Python float. ``args[argnums]`` may be an array, a Tensor, or a nested dict/list/tuple of them;
    ``grads`` mirrors that structure with ``np.ndarray`` leaves of the same shapes and dtypes (zeros
    for leaves the value does not depend on). With a tuple ``argnums``, ``grads`` is a tuple.
    """
    fn = _fn
    if not callable(f):
        raise TypeError(f"{fn}: f must be callable, got {type(f).__name__}")

    def wrapped(*args, **kwargs):
        with blas_single_threaded():  # one BLAS limit for the whole forward and backward (parallel.py)
            return run(*args, **kwargs)

    def run(*args, **kwargs):
        nums = _argnums_tuple(argnums, len(args), fn)
        args = list(args)
        trees = []
        for n in nums:
            leaves, treedef = tree_flatten(args[n])
            names = tree_paths(args[n])
            tensors = [_as_leaf(v, name or f"arg{n}", fn) for v, name in zip(leaves, names)]
            args[n] = tree_unflatten(treedef, tensors)
            trees.append((treedef, tensors))
        out = f(*args, **kwargs)
        if has_aux and not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{fn}: with has_aux=True f must return a pair (scalar Tensor, aux), "
                            f"got {type(out).__name__}")
        value, aux = out if has_aux else (out, None)
        if not isinstance(value, Tensor) or value.size != 1:
            got = f"shape {value.shape}" if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"{fn}: f must return a scalar Tensor{' (as the first of (value, aux))' if has_aux else ''}"
                            f", got {got}")
        if value.requires_grad:
            value.backward()
        grads = tuple(tree_unflatten(td, [t.grad if t.grad is not None else np.zeros_like(t.data) for t in ts])
                      for td, ts in trees)
        grads = grads if isinstance(argnums, (tuple, list)) else grads[0]
        result = float(value.data.item())
        tape = _tape.get()
        if tape is not None:  # jit: the float returned is the loss array's value
            tape.scalar(value.data, result)
        return ((result, aux) if has_aux else result), grads

    wrapped.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    wrapped.__doc__ = f.__doc__
    wrapped.__wrapped__ = f  # inspect.signature shows f's arguments (draw_graph names a jitted step's inputs by them)
    return wrapped


def grad(f: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """Like :func:`value_and_grad` but returns only ``grads`` (with ``has_aux``: ``(grads, aux)``)."""
    vg = value_and_grad(f, argnums, has_aux, _fn="grad")

    def wrapped(*args, **kwargs):
        value, grads = vg(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    wrapped.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    wrapped.__wrapped__ = f
    return wrapped
