"""Softmax, log-softmax, the cross-entropy loss and dropout.

Softmax turns scores into probabilities: softmax(x)_k = exp(x_k) / sum_j exp(x_j). It does not change
when a constant is added to every x_k, so we subtract the maximum first: then every exponent is
<= 0, exp cannot overflow, and the largest term is exp(0) = 1, so the sum lies in [1, K] and its log
is harmless. Logits of size 1e4 stay finite in float32.

    log_softmax(x)_k = (x_k - max x) - log sum_j exp(x_j - max x)

Derivatives, with y = softmax(x) and upstream g (along the softmax axis):

    d softmax:       dx = y * (g - sum(g * y))          (the Jacobian is diag(y) - y y^T)
    d log_softmax:   dx = g - softmax(x) * sum(g)       (the Jacobian is I - 1 y^T)

Cross-entropy of logits (N, K) with integer labels (N,) is the mean (or sum) over rows of
-log_softmax(x)[label]. Fused, its gradient is the famous softmax minus one-hot:

    d loss_i / d x_i = softmax(x_i) - onehot(label_i)     (divided by N for the mean)

so each row of the gradient sums to zero. One fused op is both faster and steadier than composing
log_softmax with indexing.

Dropout (inverted): while training, each element is kept with probability 1 - p and scaled by
1 / (1 - p), so the expectation of the output equals the input and eval mode is the identity.
The gradient is the same mask: dx = g * mask.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..checks import (check_axis, check_bool, check_choice, check_float, check_float_dtype, check_min_ndim,
                      check_ndim, to_tensor)

__all__ = ["Softmax", "LogSoftmax", "CrossEntropy", "Dropout",
           "softmax", "log_softmax", "cross_entropy", "dropout"]


class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along ``axis``.   dx = y * (g - sum(g * y))."""

    @staticmethod
    def forward(ctx, x, axis):
        y = x - np.max(x, axis=axis, keepdims=True)      # <= 0: exp cannot overflow
        np.exp(y, out=y)
        y /= np.sum(y, axis=axis, keepdims=True)         # the sum is in [1, K]
        ctx.axis = axis
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        dx = g * y
        s = np.sum(dx, axis=ctx.axis, keepdims=True)     # sum(g * y)
        np.subtract(g, s, out=dx)
        dx *= y
        return dx


class LogSoftmax(Function):
    """y = (x - max) - log sum(exp(x - max)) along ``axis``.   dx = g - exp(y) * sum(g)."""

    @staticmethod
    def forward(ctx, x, axis):
        y = x - np.max(x, axis=axis, keepdims=True)
        y -= np.log(np.sum(np.exp(y), axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        dx = np.exp(y)                                   # softmax(x)
        dx *= -np.sum(g, axis=ctx.axis, keepdims=True)
        dx += g
        return dx


class CrossEntropy(Function):
    """loss_i = log sum_k exp(x_ik) - x_i,label_i for logits x (N, K), reduced by mean, sum or none.

    dx_i = (softmax(x_i) - onehot(label_i)) * g_i   (g / N for the mean, g for the sum).
    ``labels`` is an integer array (N,) of valid class indices, outside the graph.
    """

    @staticmethod
    def forward(ctx, logits, *, labels, reduction="mean"):
        rows = np.arange(len(labels))
        p = logits - np.max(logits, axis=1, keepdims=True)   # (N, K), <= 0
        picked = p[rows, labels]                              # (N,) shifted logit of the true class
        np.exp(p, out=p)
        s = np.sum(p, axis=1, keepdims=True)                  # (N, 1), in [1, K]
        p /= s                                                # softmax
        loss = np.log(s[:, 0]) - picked                       # (N,)
        ctx.labels, ctx.reduction = labels, reduction
        ctx.save_for_backward(p)
        if reduction == "mean":
            return np.mean(loss)
        return np.sum(loss) if reduction == "sum" else loss

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        labels, n = ctx.labels, len(ctx.labels)
        if ctx.reduction == "none":
            weight, w_label = g[:, None], g                   # (N, 1), (N,)
        else:
            weight = w_label = g / n if ctx.reduction == "mean" else g   # 0-d
        dx = p * weight
        dx[np.arange(n), labels] -= w_label
        return dx


class Dropout(Function):
    """y = x * mask, mask = keep / (1 - p) with keep ~ Bernoulli(1 - p) iid.   dx = g * mask."""

    @staticmethod
    def forward(ctx, x, *, p, rng):
        mask = ctx.empty_like(x)                         # x's memory layout (say channels-last)
        if p == 1.0:
            mask.fill(0)
        else:
            flat = mask.ravel(order="K")                 # a 1-D view of mask's memory
            if flat.dtype in (np.float32, np.float64):
                rng.random(out=flat, dtype=flat.dtype)  # uniform [0, 1), drawn straight into mask
                keep = flat >= flat.dtype.type(p)
            else:
                keep = rng.random(flat.size) >= p
            np.multiply(keep, flat.dtype.type(1 / (1 - p)), out=flat)
        ctx.save_for_backward(mask)
        return np.multiply(x, mask, out=ctx.empty_like(x))

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


def _check_logits_like(fn: str, x, axis):
    """x as a float Tensor of at least 1-D with something along ``axis``; ``axis`` as a non-negative int."""
    x = to_tensor(fn, "x", x)
    check_float_dtype(fn, "x", x.dtype)
    check_min_ndim(fn, "x", x.shape, 1)
    axis = check_axis(fn, "axis", axis, x.ndim)
    if x.shape[axis] == 0:
        raise ValueError(f"{fn}: x has no values along axis {axis} to normalise over (x.shape={x.shape})")
    return x, axis


def softmax(x, axis=-1):
    """Probabilities along ``axis``: exp(x) / sum(exp(x)), computed as exp(x - max) / sum(...), so
    logits of any size give finite values (no overflow). Any shape of at least 1-D; dtype kept.

    >>> softmax(np.array([1000.0, 1000.0])).data
    array([0.5, 0.5])
    """
    x, axis = _check_logits_like("softmax", x, axis)
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed as (x - max) - log(sum(exp(x - max))): finite and
    accurate where log(softmax(x)) would give log(0) = -inf. Any shape of at least 1-D; dtype kept.

    >>> log_softmax(np.array([0.0, -1e4])).data
    array([     0., -10000.])
    """
    x, axis = _check_logits_like("log_softmax", x, axis)
    return LogSoftmax.apply(x, axis=axis)


def _check_labels(fn: str, labels, n: int, k: int, logits_shape: tuple) -> np.ndarray:
    from ..tensor import Tensor

    if isinstance(labels, Tensor):
        arr = labels.data
        hint = " (Tensor(labels) makes float32; pass an integer np.ndarray or Tensor(labels, dtype=np.int64))"
    elif isinstance(labels, np.ndarray):
        arr, hint = labels, ""
    elif isinstance(labels, (list, tuple)):
        try:
            arr, hint = np.asarray(labels), ""
        except ValueError:
            raise TypeError(f"{fn}: labels must be a flat list of class indices, got a ragged "
                            f"{type(labels).__name__}") from None
    else:
        raise TypeError(f"{fn}: labels must be an integer np.ndarray, list or Tensor, got {type(labels).__name__}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{fn}: labels must have an integer dtype (class indices), got {arr.dtype}{hint}")
    if arr.shape != (n,):
        raise ValueError(f"{fn}: labels must have shape ({n},) to match logits.shape={logits_shape}, "
                         f"got {arr.shape}")
    bad = (arr < 0) | (arr >= k)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{fn}: labels[{i}] = {arr[i]} is not a class index in [0, {k}) "
                         f"(logits.shape={logits_shape})")
    return arr.astype(np.intp, copy=False)


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy of ``logits`` (N, K) against integer class ``labels`` (N,).

    loss_i = -log softmax(logits_i)[labels_i] = logsumexp(logits_i) - logits_i[labels_i], computed
    stably (large logits give finite losses). ``reduction``: "mean" (a scalar, the usual training
    loss), "sum" (a scalar) or "none" (the (N,) losses). ``labels``: an integer np.ndarray, a list of
    ints, or a Tensor with an integer dtype; every value in [0, K). Returns a Tensor in the logits'
    dtype; the gradient w.r.t. the logits is (softmax - onehot) / N for the mean.

    >>> float(cross_entropy(np.array([[0.0, 0.0]]), [1]).item())   # log 2
    0.6931471805599453
    """
    fn = "cross_entropy"
    logits = to_tensor(fn, "logits", logits)
    check_ndim(fn, "logits", logits.shape, 2, "(N, K)")
    check_float_dtype(fn, "logits", logits.dtype)
    check_choice(fn, "reduction", reduction, ("mean", "sum", "none"))
    n, k = logits.shape
    if n == 0 or k == 0:
        raise ValueError(f"{fn}: logits must have at least one row and one class, got shape {logits.shape}")
    labels = _check_labels(fn, labels, n, k, logits.shape)
    return CrossEntropy.apply(logits, labels=labels, reduction=reduction)


def dropout(x, p, *, training=True, rng=None):
    """Inverted dropout: while training, zero each element with probability ``p`` and scale the kept
    ones by 1 / (1 - p), so the output's expectation is x; the gradient uses the same mask.

    ``training=False`` or ``p == 0``: the identity (x itself is returned, as a Tensor). ``p == 1``:
    everything is dropped (zeros, zero gradient). ``p`` must be in [0, 1]. ``rng`` is a
    ``np.random.Generator`` (a new unseeded one when None); a generator with the same seed gives the
    same mask for an input of the same shape and memory layout. The mask has x's dtype and layout.

    >>> y = dropout(np.ones((2, 4)), 0.5, rng=np.random.default_rng(0))
    >>> sorted(set(y.data.ravel().tolist()))
    [0.0, 2.0]
    """
    fn = "dropout"
    x = to_tensor(fn, "x", x)
    check_float_dtype(fn, "x", x.dtype)
    p = check_float(fn, "p", p, 0.0, 1.0)
    training = check_bool(fn, "training", training)
    if rng is None:
        rng = np.random.default_rng()
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a np.random.Generator (e.g. np.random.default_rng(0)) or None, "
                        f"got {type(rng).__name__}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p, rng=rng)
