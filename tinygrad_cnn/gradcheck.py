"""gradcheck: compares an op's analytic gradient with central finite differences.

For a scalar output L(x), the central difference (L(x + eps e_i) - L(x - eps e_i)) / (2 eps) has an
error of order eps^2, so in float64 with eps = 1e-6 it agrees with the true derivative to about
1e-9 relative (rounding error ~ 1e-16 / eps). A non-scalar output y is reduced to the scalar
L = sum(y * R) with a fixed random R, so that every output element carries a different weight: with
R = 1 some wrong gradients (batch_norm's input gradient, for one) cancel out and look right.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .autograd import no_grad
from .tensor import Tensor

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck`; the message names the input, the index and both values."""


def _scalar(out: Any, projection: list) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: f must return a Tensor, got {type(out).__name__}")
    if out.size == 1:
        return out.sum()
    if not projection:
        projection.append(np.random.default_rng(0).standard_normal(out.shape))
    return (out * projection[0]).sum()


def gradcheck(f: Callable, *inputs: Any, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3) -> bool:
    """Checks the gradient of ``f(*inputs)`` with respect to every floating-point input.

    Inputs are converted to float64 (integer arrays, such as labels, are passed through unchanged and
    not differentiated). Returns ``True`` when ``|analytic - numeric| <= atol + rtol * |numeric|`` holds
    for every element, else raises :class:`GradcheckError` describing the worst element.

    >>> gradcheck(lambda x: (x * x).sum(), np.array([1.0, 2.0]))
    True
    """
    checked = [isinstance(x, Tensor) or np.issubdtype(np.asarray(x).dtype, np.floating) for x in inputs]
    arrays = [np.array(x.data if isinstance(x, Tensor) else x, dtype=np.float64) if c else x
              for x, c in zip(inputs, checked)]
    projection: list = []

    tensors = [Tensor(a, requires_grad=True, dtype=np.float64) if c else a for a, c in zip(arrays, checked)]
    out = _scalar(f(*tensors), projection)
    if out.requires_grad:  # else the output does not depend on the inputs: every gradient is 0
        out.backward()
    analytic = [t.grad if c and t.grad is not None else np.zeros_like(a) if c else None
                for t, a, c in zip(tensors, arrays, checked)]

    def loss() -> float:
        with no_grad():
            return _scalar(f(*[Tensor(a, dtype=np.float64) if c else a for a, c in zip(arrays, checked)]),
                           projection).item()

    worst = (0.0, None)
    for i, (a, c) in enumerate(zip(arrays, checked)):
        if not c:
            continue
        numeric = np.zeros_like(a)
        for k in np.ndindex(a.shape):  # by index, not a.reshape(-1): that copies a non-C-contiguous input
            orig = a[k]
            a[k] = orig + eps
            up = loss()
            a[k] = orig - eps
            down = loss()
            a[k] = orig
            numeric[k] = (up - down) / (2 * eps)
        excess = np.abs(analytic[i] - numeric) / (atol + rtol * np.abs(numeric))
        if excess.size and excess.max() > worst[0]:
            k = np.unravel_index(int(excess.argmax()), a.shape)
            worst = (float(excess.max()), (i, k, analytic[i][k], numeric[k]))
    if worst[0] > 1:
        i, k, an, num = worst[1]
        name = getattr(inputs[i], "name", None)
        label = f"input {i}" + (f" ({name!r})" if name else "")
        raise GradcheckError(f"gradcheck: gradient of {label} is wrong at index {tuple(map(int, k))}: "
                             f"analytic {an:.8g}, numeric {num:.8g} (|diff| {abs(an - num):.3g} > "
                             f"atol {atol:g} + rtol {rtol:g} * |numeric|)")
    return True
