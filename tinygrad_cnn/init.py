"""Weight initialisers: draw each layer's starting weights at the scale that keeps signals alive.

A layer computes sums of ``fan_in`` products ``w * x``. If the weights have variance ``s^2`` and the
inputs unit variance, each output has variance ``fan_in * s^2``; stacking layers multiplies these
factors, so unless ``fan_in * s^2`` is about 1 activations (and gradients) explode or vanish with depth.

- He / Kaiming normal (He et al. 2015), for ReLU nets: ReLU zeroes half of its inputs, halving the
  variance, so double it back:  ``w ~ N(0, std^2)``, ``std = sqrt(2 / fan_in)``.
- Glorot / Xavier uniform (Glorot & Bengio 2010): a compromise between the forward (``fan_in``) and
  backward (``fan_out``) passes, ``Var(w) = 2 / (fan_in + fan_out)``; a uniform ``U(-a, a)`` has
  variance ``a^2 / 3``, hence ``w ~ U(-limit, limit)``, ``limit = sqrt(6 / (fan_in + fan_out))``.

Fans by shape (the framework's layouts):

==================================  =====================  =====================
shape                               fan_in                 fan_out
==================================  =====================  =====================
``(n,)`` (a bias, a scale)          ``n``                  ``n``
``(in_features, out_features)``     ``in_features``        ``out_features``
``(out_ch, in_ch, KH, KW)`` (conv)  ``in_ch * KH * KW``    ``out_ch * KH * KW``
==================================  =====================  =====================

Filters of other ranks (``(out_ch, in_ch, *kernel)``) follow the conv rule. Example::

    rng = np.random.default_rng(0)
    params = {"conv1": {"w": he_normal(rng, (8, 1, 3, 3)), "b": zeros(8)},
              "fc": {"w": glorot_uniform(rng, (128, 10)), "b": zeros(10)}}
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["fans", "glorot_uniform", "he_normal", "zeros"]


def _shape(name: str, shape) -> tuple[int, ...]:
    try:
        shape = (operator.index(shape),) if np.ndim(shape) == 0 else tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name}: shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: shape must not have negative sizes, got {shape}")
    return shape


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape (see the module docstring for the rules).

    >>> fans((128, 10)), fans((8, 1, 3, 3)), fans((5,))
    ((128, 10), (9, 72), (5, 5))
    """
    shape = _shape("fans", shape)
    if len(shape) == 0:
        raise ValueError("fans: a scalar (shape ()) has no fan_in/fan_out; give at least one dimension")
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])  # KH * KW for conv2d filters
    return shape[1] * receptive, shape[0] * receptive


def _check(name: str, rng, shape, dtype) -> tuple[tuple[int, ...], np.dtype]:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be a np.random.Generator (e.g. np.random.default_rng(0)), "
                        f"got {type(rng).__name__}")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{name}: dtype must be a floating-point dtype, got {dtype}")
    return _shape(name, shape), dtype


def he_normal(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    """He (Kaiming) normal: ``N(0, std^2)`` with ``std = sqrt(2 / fan_in)`` (not truncated).

    ``rng``: a ``np.random.Generator`` (TypeError otherwise); ``shape``: an int or tuple, e.g.
    ``(in, out)`` or ``(out_ch, in_ch, KH, KW)``. Returns an array of ``shape`` and ``dtype`` (float32).
    Same seed, same weights.

    >>> w = he_normal(np.random.default_rng(0), (16, 3, 3, 3))   # fan_in = 27, std ~ 0.272
    """
    shape, dtype = _check("he_normal", rng, shape, dtype)
    fan_in, _ = fans(shape)
    std = math.sqrt(2.0 / max(fan_in, 1))  # max: an empty shape gets an empty array, not a ZeroDivisionError
    return (rng.standard_normal(shape) * std).astype(dtype)


def glorot_uniform(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    """Glorot (Xavier) uniform: ``U(-limit, limit)`` with ``limit = sqrt(6 / (fan_in + fan_out))``.

    Arguments and result as :func:`he_normal`.

    >>> w = glorot_uniform(np.random.default_rng(0), (784, 10))   # limit = sqrt(6 / 794) ~ 0.0869
    """
    shape, dtype = _check("glorot_uniform", rng, shape, dtype)
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def zeros(shape, dtype=np.float32) -> np.ndarray:
    """An array of zeros of ``shape`` (int or tuple) and ``dtype`` (float32), for biases.

    >>> zeros(10).shape
    (10,)
    """
    return np.zeros(_shape("zeros", shape), dtype=dtype)
