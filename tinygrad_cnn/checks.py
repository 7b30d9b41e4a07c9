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
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{fn}: {name} must have a floating dtype, got {dtype}")


def check_tensor_like(fn: str, name: str, value: Any) -> None:
    """Accepts a Tensor, an ndarray or a number/nested list of numbers; refuses strings, None, objects."""
    from .tensor import Tensor

    if isinstance(value, (Tensor, np.ndarray, int, float, np.number)):
        return
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except ValueError as e:
            raise TypeError(f"{fn}: {name} must be a Tensor or an array, got a ragged {type(value).__name__}") from e
        if np.issubdtype(arr.dtype, np.number):
            return
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
            want = "a number, not NaN," if high is None else f"<= {high:g}"
        raise ValueError(f"{fn}: {name} must be {want}, got {value!r}")
    return v
