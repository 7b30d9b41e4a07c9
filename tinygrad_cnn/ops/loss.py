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
log_softmax with indexing. With label smoothing eps the target is q = (1 - eps) onehot + eps / K
instead of the one-hot row, the loss -sum_k q_k log_softmax(x)_k, and the gradient softmax - q.

Elementwise losses compare an input with a target of the same shape, d = input - target, and reduce
the per-element losses by their mean, their sum, or not at all ("none"):

    mse:     d^2                                        d/dinput = 2 d
    l1:      |d|                                        d/dinput = sign(d)   (0 at d = 0)
    huber:   d^2 / 2 if |d| <= delta,                   d/dinput = clip(d, -delta, delta)
             else delta (|d| - delta / 2)

and d/dtarget = -d/dinput. Binary cross-entropy of logits x against probabilities t,
-t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)), is computed as

    max(x, 0) - x t + log1p(exp(-|x|))                  d/dx = sigmoid(x) - t,   d/dt = -x

whose only exponent is <= 0: finite for logits of any size, where log(sigmoid(x)) would be log(0).

Dropout (inverted): while training, each element is kept with probability 1 - p and scaled by
1 / (1 - p), so the expectation of the output equals the input and eval mode is the identity.
The gradient is the same mask: dx = g * mask.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, TraceError, tracing
from ..checks import (check_axis, check_bool, check_choice, check_finite, check_float, check_float_dtype,
                      check_min_ndim, check_ndim, to_tensor)

__all__ = ["Softmax", "LogSoftmax", "CrossEntropy", "Dropout", "MseLoss", "L1Loss", "HuberLoss",
           "BinaryCrossEntropyWithLogits", "softmax", "log_softmax", "cross_entropy", "dropout", "mse_loss",
           "l1_loss", "huber_loss", "binary_cross_entropy_with_logits"]

REDUCTIONS = ("mean", "sum", "none")


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
    """loss_i = log sum_k exp(x_ik) - sum_k q_ik x_ik for logits x (N, K), reduced by mean, sum or none,
    q_i = (1 - eps) onehot(label_i) + eps / K (eps = label_smoothing; q_i the one-hot row when 0).

    dx_i = (softmax(x_i) - q_i) * g_i   (g / N for the mean, g for the sum).
    ``labels`` is an integer array (N,) of class indices (any integer dtype), outside the graph.
    """

    @staticmethod
    def forward(ctx, logits, *, labels, reduction="mean", label_smoothing=0.0):
        _check_label_values(labels, logits.shape)
        rows = np.arange(len(labels))
        p = logits - np.max(logits, axis=1, keepdims=True)   # (N, K), <= 0
        picked = p[rows, labels]                              # (N,) shifted logit of the true class
        if label_smoothing:
            row_mean = np.mean(p, axis=1)                     # (N,) sum_k x_ik / K, shifted as picked
        np.exp(p, out=p)
        s = np.sum(p, axis=1, keepdims=True)                  # (N, 1), in [1, K]
        p /= s                                                # softmax
        loss = np.log(s[:, 0]) - picked                       # (N,)
        if label_smoothing:                                   # the shift cancels: sum_k q_ik = 1
            loss += label_smoothing * picked
            loss -= label_smoothing * row_mean
        ctx.labels, ctx.reduction, ctx.label_smoothing = labels, reduction, label_smoothing
        ctx.save_for_backward(p)
        if reduction == "mean":
            return np.mean(loss)
        return np.sum(loss) if reduction == "sum" else loss

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        labels, n, eps = ctx.labels, len(ctx.labels), ctx.label_smoothing
        if ctx.reduction == "none":
            weight, w_label = g[:, None], g                   # (N, 1), (N,)
        else:
            weight = w_label = g / n if ctx.reduction == "mean" else g   # 0-d
        dx = p * weight
        dx[np.arange(n), labels] -= w_label * (1 - eps) if eps else w_label
        if eps:
            dx -= weight * (eps / p.shape[1])
        return dx


def _reduce(loss: np.ndarray, reduction: str):
    """The per-element losses reduced: their mean or sum (0-d), or themselves ("none")."""
    if reduction == "mean":
        return np.mean(loss)
    return np.sum(loss) if reduction == "sum" else loss


def _per_element(g, reduction: str, size: int):
    """The upstream gradient of each per-element loss: g / size for the mean, else g (0-d or full)."""
    return g / size if reduction == "mean" else g


class MseLoss(Function):
    """loss = reduce((x - t)^2).   dx = 2 (x - t) g_e,   dt = -dx   (g_e = g / size for the mean, else g)."""

    @staticmethod
    def forward(ctx, x, t, *, reduction="mean"):
        d = np.subtract(x, t, out=ctx.empty_like(x), dtype=x.dtype)   # the input's dtype (t may differ)
        ctx.reduction = reduction
        ctx.save_for_backward(d)
        return _reduce(np.square(d), reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        dx = d * (2 * _per_element(g, ctx.reduction, d.size))
        return dx, (-dx if ctx.needs_input_grad[1] else None)


class L1Loss(Function):
    """loss = reduce(|x - t|).   dx = sign(x - t) g_e (0 where x = t),   dt = -dx."""

    @staticmethod
    def forward(ctx, x, t, *, reduction="mean"):
        d = np.subtract(x, t, out=ctx.empty_like(x), dtype=x.dtype)
        ctx.reduction = reduction
        ctx.save_for_backward(d)
        return _reduce(np.abs(d), reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        dx = np.sign(d)
        dx *= _per_element(g, ctx.reduction, d.size)
        return dx, (-dx if ctx.needs_input_grad[1] else None)


class HuberLoss(Function):
    """loss = reduce(h(x - t)),  h(d) = d^2 / 2 if |d| <= delta else delta (|d| - delta / 2).
    dx = clip(x - t, -delta, delta) g_e,   dt = -dx.
    """

    @staticmethod
    def forward(ctx, x, t, *, delta=1.0, reduction="mean"):
        d = np.subtract(x, t, out=ctx.empty_like(x), dtype=x.dtype)
        a = np.abs(d)
        quadratic = a <= delta
        loss = np.subtract(a, 0.5 * delta, out=ctx.empty_like(a))
        loss *= delta
        np.copyto(loss, 0.5 * np.square(d), where=quadratic)
        ctx.delta, ctx.reduction = delta, reduction
        ctx.save_for_backward(d)
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        dx = np.clip(d, -ctx.delta, ctx.delta)
        dx *= _per_element(g, ctx.reduction, d.size)
        return dx, (-dx if ctx.needs_input_grad[1] else None)


class BinaryCrossEntropyWithLogits(Function):
    """loss = reduce(max(x, 0) - x t + log1p(exp(-|x|)))  (= -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x))).
    dx = (sigmoid(x) - t) g_e,   dt = -x g_e.
    """

    @staticmethod
    def forward(ctx, x, t, *, reduction="mean"):
        t = t.astype(x.dtype, copy=False)
        e = np.exp(-np.abs(x))                           # in (0, 1]: the only exponent, never overflows
        loss = np.log1p(e, out=ctx.empty_like(x))
        loss += np.maximum(x, 0)
        loss -= x * t
        ctx.reduction = reduction
        ctx.save_for_backward(x, t, e)
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        x, t, e = ctx.saved_tensors
        g_e = _per_element(g, ctx.reduction, x.size)
        dx = np.where(x >= 0, 1, e)
        dx /= 1 + e                                      # sigmoid(x), stably
        dx -= t
        dx *= g_e
        return dx, (-x * g_e if ctx.needs_input_grad[1] else None)


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


def _check_labels(fn: str, labels, n: int, logits_shape: tuple) -> np.ndarray:
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
    return arr  # as given: an array made here (a cast to intp) would be a constant to tc.jit's trace


def _check_label_values(labels: np.ndarray, logits_shape: tuple) -> None:
    """Every label a class index in [0, K). Run by the op's forward, so that a jitted replay, which skips
    the wrapper's checks, refuses a bad label too instead of indexing from the end with it."""
    bad = (labels < 0) | (labels >= logits_shape[1])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"cross_entropy: labels[{i}] = {labels[i]} is not a class index in [0, {logits_shape[1]}) "
                         f"(logits.shape={logits_shape})")


def cross_entropy(logits, labels, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of ``logits`` (N, K) against integer class ``labels`` (N,).

    loss_i = -log softmax(logits_i)[labels_i] = logsumexp(logits_i) - logits_i[labels_i], computed
    stably (large logits give finite losses). ``reduction``: "mean" (a scalar, the usual training
    loss), "sum" (a scalar) or "none" (the (N,) losses). ``labels``: an integer np.ndarray, a list of
    ints, or a Tensor with an integer dtype; every value in [0, K). Returns a Tensor in the logits'
    dtype; the gradient w.r.t. the logits is (softmax - onehot) / N for the mean.

    ``label_smoothing`` eps in [0, 1], as PyTorch's: the target row is (1 - eps) onehot + eps / K,
    loss_i = -sum_k q_ik log softmax(logits_i)_k, and the gradient softmax - q.

    >>> float(cross_entropy(np.array([[0.0, 0.0]]), [1]).item())   # log 2
    0.6931471805599453
    """
    fn = "cross_entropy"
    logits = to_tensor(fn, "logits", logits)
    check_ndim(fn, "logits", logits.shape, 2, "(N, K)")
    check_float_dtype(fn, "logits", logits.dtype)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    label_smoothing = check_float(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    n, k = logits.shape
    if n == 0 or k == 0:
        raise ValueError(f"{fn}: logits must have at least one row and one class, got shape {logits.shape}")
    labels = _check_labels(fn, labels, n, logits.shape)
    return CrossEntropy.apply(logits, labels=labels, reduction=reduction, label_smoothing=label_smoothing)


def _check_loss_args(fn: str, x, target, reduction: str, x_name: str = "input"):
    """(x, target) as Tensors after the checks every elementwise loss makes: x floating, target of x's
    shape exactly (never broadcast), a known reduction, and something to average for the mean."""
    x = to_tensor(fn, x_name, x)
    check_float_dtype(fn, x_name, x.dtype)
    target = to_tensor(fn, "target", target)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    if target.shape != x.shape:
        hint = f" (target.reshape({x.shape}) if its elements match {x_name}'s)" if target.size == x.size else ""
        raise ValueError(f"{fn}: target must have the shape of {x_name}, {x.shape}, got {target.shape}: a loss "
                         f"compares element by element and never broadcasts the target{hint}")
    if reduction == "mean" and x.size == 0:
        raise ValueError(f"{fn}: the mean of no elements is undefined ({x_name}.shape={x.shape}); "
                         f"use reduction='sum' or 'none'")
    return x, target


def mse_loss(input, target, reduction="mean"):
    """The squared error (input - target)^2 of each element, reduced: "mean" (a scalar, over every
    element), "sum" (a scalar) or "none" (input's shape). ``target`` must have input's shape (it is not
    broadcast: a (N,) target against (N, 1) predictions is an error, not an (N, N) table). The loss
    has input's dtype (target is converted to it); both get gradients (2 (input - target) / size for
    the mean, and its negative).

    >>> mse_loss(np.array([1.0, 2.0]), np.array([1.0, 4.0])).item()
    2.0
    """
    fn = "mse_loss"
    input, target = _check_loss_args(fn, input, target, reduction)
    return MseLoss.apply(input, target, reduction=reduction)


def l1_loss(input, target, reduction="mean"):
    """The absolute error |input - target| of each element, reduced as :func:`mse_loss` (same shapes,
    dtypes and reductions). The gradient is sign(input - target), 0 where they are equal.

    >>> l1_loss(np.array([1.0, 2.0]), np.array([1.0, 4.0]), reduction="none").data
    array([0., 2.])
    """
    fn = "l1_loss"
    input, target = _check_loss_args(fn, input, target, reduction)
    return L1Loss.apply(input, target, reduction=reduction)


def huber_loss(input, target, delta=1.0, reduction="mean"):
    """The Huber loss of each element, d = input - target: d^2 / 2 where |d| <= delta, else
    delta (|d| - delta / 2) (quadratic near 0, linear beyond delta, one continuous slope), reduced as
    :func:`mse_loss` (same shapes, dtypes and reductions). ``delta``: a finite number > 0. The gradient
    is clip(d, -delta, delta). As PyTorch's huber_loss and Keras' Huber.

    >>> huber_loss(np.array([0.5, 3.0]), np.zeros(2), reduction="none").data
    array([0.125, 2.5  ])
    """
    fn = "huber_loss"
    delta = check_finite(fn, "delta", delta, low=0.0)
    input, target = _check_loss_args(fn, input, target, reduction)
    return HuberLoss.apply(input, target, delta=delta, reduction=reduction)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """Binary cross-entropy of ``logits`` x (sigmoid(x) is the predicted probability) against target
    probabilities t in [0, 1] (labels 0/1, or soft labels), elementwise, reduced as :func:`mse_loss`:
    -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)), computed as max(x, 0) - x t + log1p(exp(-|x|)),
    finite for logits of any size. ``target`` must have the logits' shape; a target outside [0, 1]
    (labels -1/+1, say) is a ValueError. Gradients: sigmoid(x) - t for the logits, -x for the target.

    >>> binary_cross_entropy_with_logits(np.array([0.0, 100.0]), np.array([1.0, 0.0]), reduction="none").data
    array([  0.69314718, 100.        ])
    """
    fn = "binary_cross_entropy_with_logits"
    logits, target = _check_loss_args(fn, logits, target, reduction, x_name="logits")
    if target.size and (np.min(target.data) < 0 or np.max(target.data) > 1):
        raise ValueError(f"{fn}: target must hold probabilities in [0, 1], got values in "
                         f"[{np.min(target.data):g}, {np.max(target.data):g}]")
    return BinaryCrossEntropyWithLogits.apply(logits, target, reduction=reduction)


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
        if training and p > 0.0 and tracing():
            raise TraceError(f"{fn}: inside a jitted function pass rng= (a np.random.Generator that is an argument "
                             f"of the function, fresh masks on every call); without it each call would draw from "
                             f"a new unseeded generator, which a replay cannot repeat")
        rng = np.random.default_rng()
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a np.random.Generator (e.g. np.random.default_rng(0)) or None, "
                        f"got {type(rng).__name__}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p, rng=rng)
