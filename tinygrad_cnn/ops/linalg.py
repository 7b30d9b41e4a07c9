"""Matrix products: matmul and the dense layer.

For y = a @ b with a (..., M, K) and b (..., K, N):  da = g @ b^T  and  db = a^T @ g, batched over
the leading axes (the engine sums a broadcast batch axis back). A 1-D ``a`` acts as a row (1, K) and
a 1-D ``b`` as a column (K, 1), as in NumPy, and that axis is dropped again from the gradient.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..parallel import over_batch


def _swap(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


class MatMul(Function):
    """y = a @ b.   da = g @ b^T,   db = a^T @ g."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a2 = a[None, :] if a.ndim == 1 else a      # (..., M, K)
        b2 = b[:, None] if b.ndim == 1 else b      # (..., K, N)
        g2 = g.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))  # (..., M, N)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = g2 @ _swap(b2)
            da = da[..., 0, :] if a.ndim == 1 else da
        if ctx.needs_input_grad[1]:
            db = _swap(a2) @ g2
            db = db[..., 0] if b.ndim == 1 else db
        return da, db


class Linear(Function):
    """y = x @ w + b for x (..., in), w (in, out), b (out,).

    dx = g @ w^T,   dw = x^T @ g (summed over the leading axes),   db = g summed over the leading axes.

    The rows of x (every leading index) are cut into slices run in parallel threads, as conv2d's
    images are (``parallel.over_batch``): inside ``value_and_grad`` BLAS runs single-threaded, so one
    call would use one core. Each slice adds its part of dw and db, summed in slice order.
    """

    @staticmethod
    def forward(ctx, x, w, b=None):
        ctx.save_for_backward(x, w)
        x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])              # (M, in); no -1: fine when empty
        y = ctx.empty((len(x2), w.shape[1]), np.result_type(x, w, *([] if b is None else [b])))  # (M, out)

        def kernel(s: slice) -> None:
            np.matmul(x2[s], w, out=y[s])
            if b is not None:
                y[s] += b

        over_batch(kernel, len(x2), work=x2.size + y.size)
        return y.reshape(x.shape[:-1] + (w.shape[1],))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need_b = len(needs) == 3 and needs[2]
        m = math.prod(g.shape[:-1])                                       # no -1: fine when empty
        g2, x2 = g.reshape(m, g.shape[-1]), x.reshape(m, x.shape[-1])     # (M, out), (M, in)
        dx = ctx.empty((m, w.shape[0]), np.result_type(g, w)) if needs[0] else None
        ones = np.ones(m, dtype=g.dtype) if need_b else None

        def kernel(s: slice) -> tuple:
            if needs[0]:
                np.matmul(g2[s], w.T, out=dx[s])
            dw = x2[s].T @ g2[s] if needs[1] else None                    # (in, out) partial sum
            db = ones[s] @ g2[s] if need_b else None                      # column sums by BLAS
            return dw, db

        parts = over_batch(kernel, m, work=x2.size + g2.size)
        dx = dx.reshape(g.shape[:-1] + (w.shape[0],)) if needs[0] else None
        dw = sum(p[0] for p in parts) if needs[1] else None
        if len(needs) == 2:
            return dx, dw
        return dx, dw, (sum(p[1] for p in parts) if need_b else None)


def matmul(a, b):
    """``a @ b`` with NumPy's rules: 1-D, 2-D, and batched (..., M, K) @ (..., K, N) -> (..., M, N)
    with broadcast batch axes.

    >>> matmul(np.ones((2, 3)), np.ones((3, 4))).shape
    (2, 4)
    """
    from ..checks import to_tensor

    a, b = to_tensor("matmul", "a", a), to_tensor("matmul", "b", b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: inputs must be at least 1-D, got a.shape={a.shape}, b.shape={b.shape}")
    k_a, k_b = a.shape[-1], b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: a has {k_a} columns but b has {k_b} rows "
                         f"(a.shape={a.shape}, b.shape={b.shape})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch axes do not broadcast (a.shape={a.shape}, b.shape={b.shape})") from None
    return MatMul.apply(a, b)


def linear(x, w, b=None):
    """The dense layer ``x @ w + b``: x (..., in_features), w (in_features, out_features), b (out_features,).

    >>> linear(np.ones((8, 3)), np.ones((3, 2)), np.zeros(2)).shape
    (8, 2)
    """
    from ..checks import check_min_ndim, check_ndim, to_tensor

    x, w = to_tensor("linear", "x", x), to_tensor("linear", "w", w)
    check_min_ndim("linear", "x", x.shape, 1, "(..., in_features)")
    check_ndim("linear", "w", w.shape, 2, "(in_features, out_features)")
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"linear: x has {x.shape[-1]} features but w expects {w.shape[0]} "
                         f"(x.shape={x.shape}, w.shape={w.shape})")
    if b is None:
        return Linear.apply(x, w)
    b = to_tensor("linear", "b", b)
    if b.shape != (w.shape[1],):
        raise ValueError(f"linear: b must have shape ({w.shape[1]},) to match w.shape={w.shape}, got {b.shape}")
    return Linear.apply(x, w, b)
