"""Optimizers as pure functions over parameter pytrees (nested dicts/lists/tuples of arrays).

An optimizer is a pair of functions, as in optax: ``init(params) -> state`` and
``update(params, grads, state) -> (new_params, new_state)``. Nothing is mutated: every step returns
fresh arrays, so old params stay valid (handy for checkpoints, line searches and tests)::

    opt = optim.adam(1e-3)
    state = opt.init(params)
    for x, y in batches(x_train, y_train, 64):
        loss, grads = value_and_grad(loss_fn)(params, x, y)
        params, state = opt.update(params, grads, state)

The update rules, per parameter array ``p`` with gradient ``g`` (``t`` counts updates from 1; the
learning rate of update ``t`` is ``lr(t - 1)`` when ``lr`` is a schedule):

SGD, PyTorch semantics (weight decay is an L2 term added to the gradient)::

    g <- g + wd * p
    v <- mu * v + g                                   (v starts at 0, so the first v is g)
    p <- p - lr * (g + mu * v)   if nesterov   else   p - lr * v          (p - lr * g when mu = 0)

Adam with decoupled weight decay (AdamW, Loshchilov & Hutter 2019)::

    m <- b1 * m + (1 - b1) * g                        (moving averages of g and g^2)
    v <- b2 * v + (1 - b2) * g^2
    mhat = m / (1 - b1^t),   vhat = v / (1 - b2^t)    (bias correction: m and v start at 0)
    p <- p - lr * wd * p - lr * mhat / (sqrt(vhat) + eps)

The state is a dict: ``{"step": int, "velocity": tree or None}`` for SGD (``None`` without momentum),
``{"step": int, "m": tree, "v": tree}`` for Adam; moment trees mirror ``params``. It is a pytree of
arrays and ints, so ``tinygrad_cnn.io.save`` can checkpoint it.

Dtypes: every returned parameter has its input's dtype (float32 stays float32): gradients are cast to
the parameter's dtype and all scalars (``lr``, betas, bias corrections) are Python floats, which NumPy
treats as "weak" and never upcasts with. Moment trees have the parameters' dtypes too, except that Adam
keeps float16 parameters' moments (and does their arithmetic) in float32.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten

__all__ = ["Optimizer", "adam", "cosine_decay", "sgd", "step_decay", "warmup_cosine"]

Schedule = Callable[[int], float]


class Optimizer:
    """The pair ``init(params) -> state``, ``update(params, grads, state) -> (params, state)``, both pure.

    ``hyperparams`` records the constructor's arguments (for ``repr`` and logging).
    """

    __slots__ = ("hyperparams", "init", "name", "update")

    def __init__(self, name: str, hyperparams: dict, init: Callable, update: Callable):
        self.name, self.hyperparams, self.init, self.update = name, hyperparams, init, update

    def __repr__(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items()) + ")"


# ---------------------------------------------------------------------------------------------- checks

def _real(name: str, arg: str, value, ok: Callable[[float], bool], expected: str) -> float:
    """``value`` as a Python float, or TypeError (not a real number) / ValueError (``ok`` fails)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: {arg} must be a real number ({expected}), got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name}: {arg} must be {expected}, got {value!r}")
    return value


def _int(name: str, arg: str, value, lowest: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: {arg} must be an int >= {lowest}, got {value!r}")
    if value < lowest:
        raise ValueError(f"{name}: {arg} must be an int >= {lowest}, got {value!r}")
    return int(value)


def _schedule(name: str, lr) -> Schedule:
    """A constant ``lr`` becomes the schedule ``step -> lr``; a callable is used as is."""
    if callable(lr):
        return lr
    lr = _real(name, "lr", lr, lambda v: v > 0, "> 0, or a callable step -> lr")
    return lambda step: lr


def _lr_at(name: str, schedule: Schedule, step: int) -> float:
    lr = schedule(step)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"{name}: the lr schedule returned {lr!r} at step {step}; expected a finite number >= 0")
    return float(lr)  # a Python float: np.float64 would upcast float32 params


def _kind(tree) -> str:
    return ("a dict" if isinstance(tree, dict) else "a list" if isinstance(tree, list)
            else "a tuple" if isinstance(tree, tuple) else "None" if tree is None else "an array")


def _check_like(name: str, params, tree, what: str, path: str = "") -> None:
    """ValueError at the first place where ``tree`` differs from ``params`` in structure or leaf shape;
    TypeError if a parameter is not floating point. ``path`` reads like Python: ``['conv1']['w']``."""
    kind = _kind(params)
    if kind != _kind(tree):
        raise ValueError(f"{name}: {what}{path} is {_kind(tree)} but params{path} is {kind}")
    if kind == "a dict":
        if set(params) != set(tree):
            missing, extra = sorted(set(params) - set(tree), key=str), sorted(set(tree) - set(params), key=str)
            raise ValueError(f"{name}: {what}{path} and params{path} have different keys "
                             f"(missing from {what}: {missing}, unexpected: {extra})")
        for k in sorted(params):
            _check_like(name, params[k], tree[k], what, f"{path}[{k!r}]")
    elif kind in ("a list", "a tuple"):
        if len(params) != len(tree):
            raise ValueError(f"{name}: {what}{path} has {len(tree)} items but params{path} has {len(params)}")
        for i, (p, t) in enumerate(zip(params, tree, strict=True)):
            _check_like(name, p, t, what, f"{path}[{i}]")
    elif kind == "an array":
        if not np.issubdtype(np.result_type(params), np.inexact):
            raise TypeError(f"{name}: params{path} has dtype {np.result_type(params)}; "
                            "only floating-point parameters can be optimized")
        if np.shape(params) != np.shape(tree):
            raise ValueError(f"{name}: {what}{path} has shape {np.shape(tree)} "
                             f"but params{path} has shape {np.shape(params)}")


def _zeros_like(params, dtype: Callable = lambda p: p.dtype):
    return tree_map(lambda p: np.zeros(np.shape(p), dtype(np.asarray(p))), params)


def _moment_dtype(p: np.ndarray) -> np.dtype:
    """Adam's moments and arithmetic: the parameter's dtype, but at least float32 (in float16, eps = 1e-8
    rounds to 0 and small g^2 underflow, so 0 / 0 would give NaN)."""
    return np.promote_types(p.dtype, np.float32)


def _map_leaves(fn: Callable, n_out: int, params, *trees) -> list:
    """``fn(p, *xs) -> n_out arrays`` applied leafwise; returns ``n_out`` trees shaped like ``params``."""
    leaves, treedef = tree_flatten(params)
    outs = [fn(*xs) for xs in zip(leaves, *(tree_leaves(t) for t in trees), strict=True)]
    return [tree_unflatten(treedef, [o[i] for o in outs]) for i in range(n_out)]


# ------------------------------------------------------------------------------------------ optimizers

def sgd(lr, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> Optimizer:
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay (as PyTorch).

    ``lr``: a float > 0 or a schedule ``step -> lr`` (``step`` = number of earlier updates);
    ``momentum`` >= 0; ``nesterov`` needs ``momentum > 0``; ``weight_decay`` >= 0 adds ``wd * p`` to
    the gradient. Formulas in the module docstring. Errors: TypeError/ValueError naming the argument.

    >>> opt = sgd(0.1, momentum=0.9)
    >>> params = {"w": np.ones(3, np.float32)}
    >>> state = opt.init(params)                                   # {"step": 0, "velocity": {"w": zeros}}
    >>> params, state = opt.update(params, {"w": np.ones(3, np.float32)}, state)   # w = 0.9
    """
    name = "sgd"
    schedule = _schedule(name, lr)
    mu = _real(name, "momentum", momentum, lambda v: v >= 0, ">= 0")
    wd = _real(name, "weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
    if nesterov and mu == 0:
        raise ValueError(f"{name}: nesterov=True requires momentum > 0, got momentum={momentum!r}")
    nesterov = bool(nesterov)

    def init(params) -> dict:
        _check_like(name, params, params, "params")
        return {"step": 0, "velocity": _zeros_like(params) if mu else None}

    def update(params, grads, state: dict) -> tuple[Any, dict]:
        _check_like(f"{name}.update", params, grads, "grads")
        step = int(state["step"])
        lr_t = _lr_at(name, schedule, step)

        def leaf(p, g, v=None):
            p = np.asarray(p)
            g = np.asarray(g, dtype=p.dtype)
            if wd:
                g = g + wd * p
            if not mu:
                return (p - lr_t * g,)
            v = mu * v + g
            return p - lr_t * (g + mu * v if nesterov else v), v

        if not mu:
            (params,) = _map_leaves(leaf, 1, params, grads)
            return params, {"step": step + 1, "velocity": None}
        _check_like(f"{name}.update", params, state["velocity"], "state['velocity']")
        params, velocity = _map_leaves(leaf, 2, params, grads, state["velocity"])
        return params, {"step": step + 1, "velocity": velocity}

    hyper = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    return Optimizer(name, hyper, init, update)


def adam(lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0) -> Optimizer:
    """Adam with bias correction and decoupled weight decay (AdamW when ``weight_decay > 0``).

    ``lr``: a float > 0 or a schedule ``step -> lr``; ``0 <= b1, b2 < 1``; ``eps > 0``;
    ``weight_decay >= 0`` shrinks ``p`` by ``lr * wd * p`` each step, separately from the gradient.
    Formulas in the module docstring. The first step moves each entry by about ``lr * sign(g)``.

    >>> opt = adam(1e-3)
    >>> params = {"w": np.ones(3, np.float32)}
    >>> state = opt.init(params)                                   # {"step": 0, "m": zeros, "v": zeros}
    >>> params, state = opt.update(params, {"w": np.array([2.0, -1.0, 0.0], np.float32)}, state)
    >>> params["w"]                                                # each entry moves by ~lr * sign(g)
    array([0.999, 1.001, 1.   ], dtype=float32)
    """
    name = "adam"
    schedule = _schedule(name, lr)
    b1 = _real(name, "b1", b1, lambda v: 0 <= v < 1, "in [0, 1)")
    b2 = _real(name, "b2", b2, lambda v: 0 <= v < 1, "in [0, 1)")
    eps = _real(name, "eps", eps, lambda v: v > 0, "> 0")
    wd = _real(name, "weight_decay", weight_decay, lambda v: v >= 0, ">= 0")

    def init(params) -> dict:
        _check_like(name, params, params, "params")
        return {"step": 0, "m": _zeros_like(params, _moment_dtype), "v": _zeros_like(params, _moment_dtype)}

    def update(params, grads, state: dict) -> tuple[Any, dict]:
        _check_like(f"{name}.update", params, grads, "grads")
        _check_like(f"{name}.update", params, state["m"], "state['m']")
        _check_like(f"{name}.update", params, state["v"], "state['v']")
        step = int(state["step"])
        lr_t, t = _lr_at(name, schedule, step), step + 1
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t  # bias corrections

        def leaf(p, g, m, v):
            p = np.asarray(p)
            g = np.asarray(g, dtype=_moment_dtype(p))
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            new_p = p - (lr_t / c1) * m / (np.sqrt(v / c2) + eps)  # lr * mhat / (sqrt(vhat) + eps)
            if wd:
                new_p = new_p - (lr_t * wd) * p
            return new_p.astype(p.dtype, copy=False), m, v

        params, m, v = _map_leaves(leaf, 3, params, grads, state["m"], state["v"])
        return params, {"step": step + 1, "m": m, "v": v}

    hyper = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}
    return Optimizer(name, hyper, init, update)


# ------------------------------------------------------------------------------------------- schedules

def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``step -> lr * gamma ** (step // step_size)``: multiply by ``gamma`` every ``step_size`` updates.

    >>> [step_decay(1.0, 2, 0.5)(s) for s in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    lr = _real("step_decay", "lr", lr, lambda v: v > 0, "> 0")
    step_size = _int("step_decay", "step_size", step_size, 1)
    gamma = _real("step_decay", "gamma", gamma, lambda v: v > 0, "> 0")
    return lambda step: lr * gamma ** (step // step_size)


def cosine_decay(lr: float, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """Half a cosine from ``lr`` (step 0) down to ``final_lr`` (step ``total_steps``), then flat:
    ``final_lr + (lr - final_lr) * (1 + cos(pi * min(step, total_steps) / total_steps)) / 2``.

    >>> [cosine_decay(1.0, 4)(s) for s in (0, 2, 4, 9)]
    [1.0, 0.5, 0.0, 0.0]
    """
    lr = _real("cosine_decay", "lr", lr, lambda v: v > 0, "> 0")
    total_steps = _int("cosine_decay", "total_steps", total_steps, 1)
    final_lr = _real("cosine_decay", "final_lr", final_lr, lambda v: v >= 0, ">= 0")
    return lambda step: final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps)
                                                                             / total_steps))


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """Linear warm-up ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` updates, then
    :func:`cosine_decay` from ``lr`` to ``final_lr`` over the remaining ``total_steps - warmup_steps``.

    >>> [round(warmup_cosine(1.0, 2, 4)(s), 3) for s in range(5)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    lr = _real("warmup_cosine", "lr", lr, lambda v: v > 0, "> 0")
    warmup_steps = _int("warmup_cosine", "warmup_steps", warmup_steps, 0)
    total_steps = _int("warmup_cosine", "total_steps", total_steps, warmup_steps + 1)
    final_lr = _real("warmup_cosine", "final_lr", final_lr, lambda v: v >= 0, ">= 0")
    decay = cosine_decay(lr, total_steps - warmup_steps, final_lr)
    return lambda step: lr * (step + 1) / warmup_steps if step < warmup_steps else decay(step - warmup_steps)
