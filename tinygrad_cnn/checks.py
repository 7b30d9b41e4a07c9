"""Argument validation shared by every public op: bad input becomes a ``ValueError``/``TypeError``
that names the function, the argument, what was expected and what was given, raised at the op's
boundary instead of a NumPy error from deep inside.

    conv2d: x has 3 channels but w expects 2 (x.shape=(2, 3, 8, 8), w.shape=(4, 2, 3, 3))
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np


def check_int(fn: str, name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (bools and floats are refused), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_pair(fn: str, name: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair of ints, each at least ``minimum``, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or an (h, w) pair, got {value!r}")
        return check_int(fn, name, value[0], minimum), check_int(fn, name, value[1], minimum)
    v = check_int(fn, name, value, minimum)
    return v, v


def check_choice(fn: str, name: str, value: Any, choices: Iterable) -> Any:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_ndim(fn: str, name: str, shape: tuple, ndims: int | tuple[int, ...], layout: str = "") -> None:
    """Raises unless ``len(shape)`` is one of ``ndims``; ``layout`` (e.g. "(N, C, H, W)") explains it."""
    allowed = (ndims,) if isinstance(ndims, int) else ndims
    if len(shape) not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed) + (f" {layout}" if layout else "")
        raise ValueError(f"{fn}: {name} must be {want}, got shape {shape}")


def check_axis(fn: str, name: str, axis: Any, ndim: int) -> int:
    """An axis index in ``[-ndim, ndim)`` as a non-negative int."""
    a = check_int(fn, name, axis)
    if not -ndim <= a < ndim:
        raise ValueError(f"{fn}: {name}={a} is out of range for a {ndim}-D input")
    return a % ndim


def check_float_dtype(fn: str, name: str, dtype: np.dtype) -> None:
    if getattr(dtype, "kind", None) != "f" and not np.issubdtype(dtype, np.floating):  # a float dtype: at once
        raise TypeError(f"{fn}: {name} must have a floating dtype, got {dtype}")


def check_tensor_like(fn: str, name: str, value: Any) -> None:
    """Accepts a Tensor, an ndarray or a number/nested list of real numbers (bools, ints, floats);
    refuses strings, None, dicts, complex numbers and object arrays."""
    from .tensor import Tensor

    if isinstance(value, Tensor):
        return
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind in REAL_KINDS:
            return
        raise TypeError(f"{fn}: {name} must hold real numbers (bool, int or float), got dtype {value.dtype}")
    if isinstance(value, (int, float)):
        return
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise TypeError(f"{fn}: {name} must be a Tensor or an array, got a ragged {type(value).__name__}") from e
        if arr.dtype.kind in REAL_KINDS:
            return
        raise TypeError(f"{fn}: {name} must be a Tensor or an np.ndarray, got a {type(value).__name__} "
                        f"holding {arr.dtype} values")
    raise TypeError(f"{fn}: {name} must be a Tensor or an np.ndarray, got {type(value).__name__}")


def check_bool(fn: str, name: str, value: Any) -> bool:
    """``value`` as a bool; ints, strings and None are refused (``training=0`` is usually a slip)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_float(fn: str, name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False) -> float:
    """A real number (bools refused) as a float, in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = v == v  # False for NaN
    if low is not None:
        ok = ok and (v > low if low_open else v >= low)
    if high is not None:
        ok = ok and v <= high
    if not ok:
        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {low:g}"
        else:
            want = "a number, not NaN" if high is None else f"<= {high:g}"
        raise ValueError(f"{fn}: {name} must be {want}, got {value!r}")
    return v


def check_finite(fn: str, name: str, value: Any, low: float | None = None) -> float:
    """A finite real number as a float (NaN and ±inf refused), greater than ``low`` when given."""
    try:
        v = check_float(fn, name, value)
    except ValueError:  # NaN: said below, as "a finite number"
        v = float("nan")
    if not np.isfinite(v) or (low is not None and v <= low):
        want = "a finite number" + (f" > {low:g}" if low is not None else "")
        raise ValueError(f"{fn}: {name} must be {want}, got {value!r}")
    return v


# ---------------------------------------------------------------------------------------------- #
# Arrays and tensors

REAL_KINDS = "biuf"  # bool, signed int, unsigned int, float: what a Tensor may hold (no complex, str, object)


def describe(value: Any) -> str:
    """A short description of an argument for a message: its type and, when short, its repr."""
    if isinstance(value, np.ndarray):
        return f"an np.ndarray of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    return type(value).__name__ + (f" {text}" if len(text) <= 40 else "")


def check_real_dtype(fn: str, name: str, dtype: Any) -> np.dtype:
    """``dtype`` as a ``np.dtype`` of real numbers or bools; complex, strings and objects are refused."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a NumPy dtype such as np.float32, got {dtype!r}") from None
    if dtype.kind not in REAL_KINDS:
        raise TypeError(f"{fn}: {name} must hold real numbers (bool, int or float), got dtype {dtype}")
    return dtype


def to_tensor(fn: str, name: str, value: Any):
    """``value`` as a Tensor (itself if it is one) after :func:`check_tensor_like`: the usual first line
    of a public op, ``x = to_tensor("conv2d", "x", x)``."""
    from .tensor import Tensor

    if isinstance(value, Tensor):
        return value
    check_tensor_like(fn, name, value)
    return Tensor(value)


def check_min_ndim(fn: str, name: str, shape: tuple, minimum: int, layout: str = "") -> None:
    """Raises unless ``len(shape) >= minimum``; ``layout`` (e.g. "(..., in_features)") explains it."""
    if len(shape) < minimum:
        raise ValueError(f"{fn}: {name} must be at least {minimum}-D{' ' + layout if layout else ''}, "
                         f"got shape {tuple(shape)}")


def check_broadcast(fn: str, a_shape: tuple, b_shape: tuple) -> tuple:
    """The broadcast shape of two operands, or "mul: shapes (2, 3) and (4,) do not broadcast"."""
    if a_shape == b_shape or not b_shape:  # the common cases at once (np.broadcast_shapes costs microseconds)
        return a_shape
    if not a_shape:
        return b_shape
    try:
        return np.broadcast_shapes(a_shape, b_shape)
    except ValueError:
        raise ValueError(f"{fn}: shapes {a_shape} and {b_shape} do not broadcast") from None


def check_broadcast_together(fn: str, **shapes: tuple) -> tuple:
    """The broadcast shape of named operands (``cond=(2,), a=(3,), b=()``), or "where: cond, a and b have
    shapes (2,), (3,) and (), which do not broadcast together"."""
    given = [s for s in shapes.values() if s]  # 0-d shapes broadcast with anything
    if all(s == given[0] for s in given[1:]):
        return given[0] if given else ()
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        names, values = list(shapes), [str(tuple(s)) for s in shapes.values()]
        listed = lambda items: ", ".join(items[:-1]) + " and " + items[-1]  # noqa: E731
        raise ValueError(f"{fn}: {listed(names)} have shapes {listed(values)}, which do not broadcast "
                         f"together") from None


# ---------------------------------------------------------------------------------------------- #
# Axes, shapes, permutations, indices

def check_axes(fn: str, name: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None for all, an int, or a tuple/list of ints; negative counts from the end) as a sorted
    tuple of non-negative ints; out-of-range and repeated axes are refused (NumPy's rules)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(check_axis(fn, name, a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{fn}: {name}={tuple(axis)!r} names an axis twice (for a {ndim}-D input)")
        return tuple(sorted(axes))
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be None, an int or a tuple of ints, got {describe(axis)}")
    return (check_axis(fn, name, axis, ndim),)


def check_permutation(fn: str, name: str, axes: Any, ndim: int) -> tuple[int, ...]:
    """``axes`` as a permutation of ``range(ndim)`` (negative entries count from the end)."""
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"{fn}: {name} must be a tuple of ints, got {describe(axes)}")
    want = f"{fn}: {name} must be a permutation of {tuple(range(ndim))} for a {ndim}-D input, got {tuple(axes)!r}"
    if len(axes) != ndim:
        raise ValueError(want)
    perm = tuple(check_axis(fn, name, a, ndim) for a in axes)
    if len(set(perm)) != ndim:
        raise ValueError(want)
    return perm


def check_new_shape(fn: str, shape: Any, old_shape: tuple) -> tuple[int, ...]:
    """A reshape target for ``old_shape``: ints >= 0 and at most one -1 (inferred), same element count."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fn}: shape must be an int or a tuple of ints, got {describe(shape)}")
    shape = tuple(check_int(fn, "shape", n, minimum=-1) for n in shape)
    size, known = int(np.prod(old_shape, dtype=np.int64)), int(np.prod([n for n in shape if n != -1], dtype=object))
    unknown = shape.count(-1)
    if unknown > 1:
        raise ValueError(f"{fn}: shape {shape} has more than one -1 (only one axis can be inferred)")
    if (unknown and (known == 0 or size % known)) or (not unknown and known != size):
        raise ValueError(f"{fn}: cannot reshape a tensor of shape {tuple(old_shape)} ({size} elements) into {shape}")
    return shape


_INDEX_HELP = "ints, slices, None, ... and integer or boolean arrays"


def check_index(fn: str, index: Any) -> Any:
    """``index`` with lists turned into arrays, after checking every part is something ``[]`` accepts:
    ints, slices of ints, None, Ellipsis, and integer or boolean arrays. Wrong types raise TypeError;
    positions out of range are left to indexing itself (``IndexError``, Python's convention)."""
    if isinstance(index, tuple):
        return tuple(_check_index_part(fn, p) for p in index)
    return _check_index_part(fn, index)


def _check_index_part(fn: str, part: Any) -> Any:
    if part is None or part is Ellipsis or isinstance(part, (int, np.integer, bool, np.bool_)):
        return part
    if isinstance(part, slice):
        for bound in (part.start, part.stop, part.step):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, np.integer))):
                raise TypeError(f"{fn}: slice bounds must be ints or None, got {describe(bound)} in {part!r}")
        if part.step == 0:
            raise ValueError(f"{fn}: slice step cannot be zero ({part!r})")
        return part
    if isinstance(part, list):
        try:
            part = np.asarray(part)
        except ValueError:
            raise TypeError(f"{fn}: index lists must not be ragged, got {describe(part)}") from None
        if part.size == 0:
            part = part.astype(np.intp)
    if isinstance(part, np.ndarray) and part.dtype.kind in "biu":
        return part
    raise TypeError(f"{fn}: index must be made of {_INDEX_HELP}, got {describe(part)}")


def check_path(fn: str, name: str, value: Any) -> None:
    """A file-system path: ``str`` or ``os.PathLike``."""
    import os

    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{fn}: {name} must be a str or os.PathLike path, got {describe(value)}")


def check_nonempty(fn: str, name: str, shape: tuple, axes: tuple[int, ...], what: str) -> None:
    """Raises unless every axis in ``axes`` of ``shape`` has at least one element (``what`` names them)."""
    if any(shape[a] < 1 for a in axes):
        raise ValueError(f"{fn}: {name} must have {what} >= 1, got {name}.shape={tuple(shape)}")
