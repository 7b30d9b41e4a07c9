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

RMSprop, PyTorch semantics (Tieleman & Hinton 2012; ``a`` = ``decay``; weight decay as in SGD)::

    g <- g + wd * p
    v <- a * v + (1 - a) * g^2                        (moving average of g^2; no bias correction)
    d = sqrt(v) + eps                                 (eps outside the sqrt, as PyTorch; Keras puts it inside)
    centered:  g_avg <- a * g_avg + (1 - a) * g,   d = sqrt(max(v - g_avg^2, 0)) + eps
    buf <- mu * buf + g / d,   p <- p - lr * buf      (p - lr * g / d when mu = 0)

``v - g_avg^2`` is >= 0 in exact arithmetic but rounding can make it slightly negative (a gradient that
stays constant for many steps does it in float32), where PyTorch's sqrt returns NaN; here it is clamped
at 0. That is the only difference from ``torch.optim.RMSprop``.

Gradient clipping by the global norm (:func:`clip_grad_norm`, PyTorch's ``clip_grad_norm_`` made pure),
with ``n`` the L2 norm of all gradient entries together::

    g <- g * min(1, max_norm / (n + 1e-6))

The state is a dict: ``{"step": n, "velocity": tree or None}`` for SGD (``None`` without momentum),
``{"step": n, "m": tree, "v": tree}`` for Adam, ``{"step": n, "v": tree, "g_avg": tree or None,
"buf": tree or None}`` for RMSprop (``g_avg`` when centered, ``buf`` with momentum); moment trees
mirror ``params``; ``n`` counts the updates so far, a 0-d int64 array (an int is accepted too). It is a
pytree of arrays and ``None``, so ``tinygrad_cnn.io.save`` can checkpoint it, and a training step that
applies the optimizer can be jitted as a whole (``Optimizer.update`` is then one recorded instruction).

Subnormal moments are flushed to zero. A moment whose gradient has become exactly zero (the weights of
a feature that never fires) decays, ``0.9 * m`` each step, into float32's subnormal range, and there it
sticks: 0.9 times 1 to 4 units of the last place rounds back to itself, so it never reaches 0. On x86
CPUs every arithmetic operation on a subnormal takes a slow microcode path; training cnn-bn on
Fashion-MNIST with AdamW, 100,000 of the 225,130 first moments were stuck from the second epoch on,
and AdamW's update took 8.7 ms instead of 4.5 with that many (101,437 set to 3 units, measured alone).
Flushed, the same bits come out for every parameter above about 1e-21 in size: a first moment (or
SGD's velocity, RMSprop's buffer) below the smallest normal number, 1.2e-38, makes a step under
``lr * 1e-29``, less than half a unit of the last place of such a parameter, and a flushed second
moment (or RMSprop's moving mean) leaves ``sqrt(v) + eps = eps`` as it was. Only a parameter that is
exactly 0 with a zero gradient differs: it stays 0 instead of drifting into the subnormals itself.

Dtypes: every returned parameter has its input's dtype (float32 stays float32): gradients are cast to
the parameter's dtype and all scalars (``lr``, betas, bias corrections) are Python floats, which NumPy
treats as "weak" and never upcasts with. Moment trees have the parameters' dtypes too, except that Adam
and RMSprop keep float16 parameters' moments (and do their arithmetic) in float32.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .autograd import _step, _tape, tracing
from .pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten

__all__ = ["Optimizer", "adam", "clip_grad_norm", "cosine_decay", "rmsprop", "sgd", "step_decay",
           "warmup_cosine"]

Schedule = Callable[[int], float]


class Optimizer:
    """The pair ``init(params) -> state``, ``update(params, grads, state) -> (params, state)``, both pure.

    ``hyperparams`` records the constructor's arguments (for ``repr`` and logging).
    """

    __slots__ = ("hyperparams", "init", "name", "_update")

    def __init__(self, name: str, hyperparams: dict, init: Callable, update: Callable):
        self.name, self.hyperparams, self.init, self._update = name, hyperparams, init, update

    def update(self, params, grads, state) -> tuple[Any, Any]:
        """``(new_params, new_state)``. Inside a function ``tc.jit`` traces (a whole training step), the
        update is recorded as one instruction of the plan: it is NumPy code, which the trace would
        otherwise freeze at its first values."""
        if not tracing():
            return self._update(params, grads, state)
        leaves, treedef = tree_flatten((params, grads, state))
        out_treedef = None

        def flat_update(*leaves):
            nonlocal out_treedef
            new_leaves, out_treedef = tree_flatten(self._update(*tree_unflatten(treedef, list(leaves))))
            return tuple(new_leaves)

        out = _step(flat_update, *leaves)  # recorded as one instruction; sets out_treedef
        return tree_unflatten(out_treedef, list(out))

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


# The exponent bits of each float type, as the integer type of its size sees them.
_EXPONENT = {np.dtype(np.float16): (np.int16, 0x7C00), np.dtype(np.float32): (np.int32, 0x7F800000),
             np.dtype(np.float64): (np.int64, 0x7FF0000000000000)}


def _flushed(a) -> np.ndarray:
    """A fresh moment array with its subnormal entries set to 0, in place (see the module docstring).
    Found by the exponent bits, as integers: float arithmetic on subnormals is what is slow."""
    a = np.asarray(a)  # 0-d arithmetic gives NumPy scalars
    if a.dtype in _EXPONENT:
        int_type, exponent = _EXPONENT[a.dtype]
        bits = a.view(int_type)
        bits *= (bits & exponent) != 0
    return a


def _count(n: int) -> np.ndarray:
    """The state's step counter, a 0-d int64 array: an input to a jitted step like the other leaves (a
    Python int would be part of jit's signature and retrace every step)."""
    return np.asarray(n, dtype=np.int64)


def _zeros_like(params, dtype: Callable = lambda p: p.dtype):
    return tree_map(lambda p: np.zeros(np.shape(p), dtype(np.asarray(p))), params)


def _moment_dtype(p: np.ndarray) -> np.dtype:
    """Adam's and RMSprop's moments and arithmetic: the parameter's dtype, but at least float32 (in float16, eps = 1e-8
    rounds to 0 and small g^2 underflow, so 0 / 0 would give NaN)."""
    return np.promote_types(p.dtype, np.float32)


def _map_leaves(fn: Callable, n_out: int, params, *trees) -> list:
    """``fn(p, *xs) -> n_out arrays`` applied leafwise; returns ``n_out`` trees shaped like ``params``."""
    leaves, treedef = tree_flatten(params)
    outs = [fn(*xs) for xs in zip(leaves, *(tree_leaves(t) for t in trees), strict=True)]
    return [tree_unflatten(treedef, [np.asarray(o[i]) for o in outs]) for i in range(n_out)]  # 0-d stay arrays


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
        return {"step": _count(0), "velocity": _zeros_like(params) if mu else None}

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
            v = _flushed(mu * v + g)
            return p - lr_t * (g + mu * v if nesterov else v), v

        if not mu:
            (params,) = _map_leaves(leaf, 1, params, grads)
            return params, {"step": _count(step + 1), "velocity": None}
        _check_like(f"{name}.update", params, state["velocity"], "state['velocity']")
        params, velocity = _map_leaves(leaf, 2, params, grads, state["velocity"])
        return params, {"step": _count(step + 1), "velocity": velocity}

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
        return {"step": _count(0), "m": _zeros_like(params, _moment_dtype), "v": _zeros_like(params, _moment_dtype)}

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
            m = _flushed(b1 * m + (1.0 - b1) * g)
            v = _flushed(b2 * v + (1.0 - b2) * (g * g))
            new_p = p - (lr_t / c1) * m / (np.sqrt(v / c2) + eps)  # lr * mhat / (sqrt(vhat) + eps)
            if wd:
                new_p = new_p - (lr_t * wd) * p
            return new_p.astype(p.dtype, copy=False), m, v

        params, m, v = _map_leaves(leaf, 3, params, grads, state["m"], state["v"])
        return params, {"step": _count(step + 1), "m": m, "v": v}

    hyper = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}
    return Optimizer(name, hyper, init, update)


def rmsprop(lr, decay: float = 0.99, eps: float = 1e-8, momentum: float = 0.0, centered: bool = False,
            weight_decay: float = 0.0) -> Optimizer:
    """RMSprop as ``torch.optim.RMSprop`` (``decay`` is PyTorch's ``alpha``): each step divides the gradient
    by a moving root mean square of the past gradients.

    ``lr``: a float > 0 or a schedule ``step -> lr``; ``0 <= decay < 1``; ``eps > 0`` (added outside
    the sqrt); ``momentum >= 0``; ``centered=True`` divides by the moving standard deviation instead of
    the root mean square (it also keeps the moving mean ``g_avg``); ``weight_decay >= 0`` adds
    ``wd * p`` to the gradient (L2, as SGD). Formulas in the module docstring. No bias correction: with
    the default ``decay`` the first step moves each entry by about ``lr * sign(g) / sqrt(1 - decay)``,
    ten times ``lr``.

    >>> opt = rmsprop(0.01, decay=0.0)                               # decay 0: steps of lr * g / (|g| + eps)
    >>> params = {"w": np.ones(3, np.float32)}
    >>> state = opt.init(params)                     # {"step": 0, "v": zeros, "g_avg": None, "buf": None}
    >>> params, state = opt.update(params, {"w": np.array([2.0, -1.0, 0.0], np.float32)}, state)
    >>> params["w"]
    array([0.99, 1.01, 1.  ], dtype=float32)
    """
    name = "rmsprop"
    schedule = _schedule(name, lr)
    a = _real(name, "decay", decay, lambda v: 0 <= v < 1, "in [0, 1)")
    eps = _real(name, "eps", eps, lambda v: v > 0, "> 0")
    mu = _real(name, "momentum", momentum, lambda v: v >= 0, ">= 0")
    wd = _real(name, "weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
    centered = bool(centered)

    def init(params) -> dict:
        _check_like(name, params, params, "params")
        zeros = lambda: _zeros_like(params, _moment_dtype)  # noqa: E731
        return {"step": _count(0), "v": zeros(), "g_avg": zeros() if centered else None, "buf": zeros() if mu else None}

    def update(params, grads, state: dict) -> tuple[Any, dict]:
        _check_like(f"{name}.update", params, grads, "grads")
        trees = [grads, state["v"]]
        for key, used in (("g_avg", centered), ("buf", mu)):
            if used:
                _check_like(f"{name}.update", params, state[key], f"state[{key!r}]")
                trees.append(state[key])
        step = int(state["step"])
        lr_t = _lr_at(name, schedule, step)

        def leaf(p, g, v, *rest):
            p = np.asarray(p)
            g = np.asarray(g, dtype=_moment_dtype(p))
            if wd:
                g = g + wd * p
            v = _flushed(a * v + (1.0 - a) * (g * g))
            out = [v]
            if centered:
                g_avg = _flushed(a * rest[0] + (1.0 - a) * g)
                d = np.sqrt(np.maximum(v - g_avg * g_avg, 0.0)) + eps  # rounding can make v - g_avg^2 < 0
                out.append(g_avg)
            else:
                d = np.sqrt(v) + eps
            if mu:
                buf = _flushed(mu * rest[-1] + g / d)
                new_p = p - lr_t * buf
                out.append(buf)
            else:
                new_p = p - lr_t * (g / d)
            return new_p.astype(p.dtype, copy=False), *out

        n_out = 2 + centered + bool(mu)
        params, v, *rest = _map_leaves(leaf, n_out, params, *trees)
        g_avg = rest.pop(0) if centered else None
        buf = rest.pop(0) if mu else None
        return params, {"step": _count(step + 1), "v": v, "g_avg": g_avg, "buf": buf}

    hyper = {"lr": lr, "decay": decay, "eps": eps, "momentum": momentum, "centered": centered,
             "weight_decay": weight_decay}
    return Optimizer(name, hyper, init, update)


# ------------------------------------------------------------------------------------ gradient clipping

def _leaves_with_paths(tree, path: str = ""):
    """``(path, leaf)`` in ``tree_flatten`` order; paths read like Python: ``['conv1']['w']``."""
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves_with_paths(tree[k], f"{path}[{k!r}]")
    elif isinstance(tree, (list, tuple)):
        for i, sub in enumerate(tree):
            yield from _leaves_with_paths(sub, f"{path}[{i}]")
    elif tree is not None:
        yield path, tree


def _l2_norm(x: np.ndarray) -> float:
    """The L2 norm of ``x`` in float64; rescaled by the largest entry if the squares overflow."""
    x = x.astype(np.float64).ravel()
    with np.errstate(over="ignore"):
        sq = float(np.dot(x, x))
    if math.isinf(sq) and np.isfinite(x).all():
        big = float(np.abs(x).max())
        x = x / big
        return big * math.sqrt(float(np.dot(x, x)))
    return math.sqrt(sq)


def clip_grad_norm(grads, max_norm: float) -> tuple[Any, float]:
    """Scales all gradients together so that their global L2 norm is at most ``max_norm``, as PyTorch's
    ``clip_grad_norm_`` but pure: returns ``(clipped, norm)``.

    ``grads``: a pytree of floating-point ``np.ndarray`` leaves (what ``value_and_grad`` returns).
    ``norm`` is a Python float, the global norm *before* clipping, ``sqrt(sum of g^2 over every
    entry of every leaf)``, computed in float64 whatever the leaves' dtypes. Every leaf is multiplied
    by ``min(1, max_norm / (norm + 1e-6))``, so directions are kept and the clipped norm is
    ``max_norm`` (a hair under, as PyTorch) when ``norm > max_norm``; ``clipped`` has ``grads``'
    structure, shapes and dtypes, in new arrays (``grads`` is not touched).

    Non-finite norm (a NaN or inf in ``grads``, or a norm beyond float64's range): ``clipped`` holds
    copies of ``grads`` unchanged and ``norm`` is ``nan`` or ``inf``, so the caller can test
    ``math.isfinite(norm)`` and skip the step. (PyTorch multiplies by ``max_norm / nan`` or
    ``max_norm / inf = 0``, which spreads NaN to every entry or zeros the finite ones.)

    Errors: ValueError unless ``max_norm`` is a finite number > 0 (TypeError if not a number);
    TypeError naming the leaf if a leaf is not a floating-point ``np.ndarray``.

    >>> g, norm = clip_grad_norm({"w": np.array([3.0, 4.0], np.float32)}, max_norm=1.0)
    >>> g["w"].round(4), norm                          # g * 1 / (5 + 1e-6): 0.5999999, 0.7999998
    (array([0.6, 0.8], dtype=float32), 5.0)
    """
    name = "clip_grad_norm"
    max_norm = _real(name, "max_norm", max_norm, lambda v: v > 0, "> 0")
    leaves, treedef = tree_flatten(grads)
    for path, g in _leaves_with_paths(grads):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{name}: grads{path} must be a np.ndarray, got {type(g).__name__}")
        if not np.issubdtype(g.dtype, np.floating):
            raise TypeError(f"{name}: grads{path} has dtype {g.dtype}; gradients must be floating point")
    out = _step(lambda *gs: _clip(gs, max_norm), *leaves)  # recorded while jit traces
    norm = float(out[-1])
    tape = _tape.get()
    if tape is not None:
        tape.scalar(out[-1], norm)  # returned by a jitted fn, the norm is each replay's own
    return tree_unflatten(treedef, list(out[:-1])), norm


def _clip(leaves: tuple, max_norm: float) -> tuple:
    """(clipped leaves..., the norm as a 0-d float64 array)."""
    norm = math.hypot(*(_l2_norm(g) for g in leaves))  # hypot: no overflow when combining the leaves
    if not math.isfinite(norm):
        return (*(g.copy() for g in leaves), np.asarray(norm))
    scale = min(1.0, max_norm / (norm + 1e-6))  # a Python float: keeps float16/float32 leaves' dtypes
    return (*(np.asarray(g * scale) for g in leaves), np.asarray(norm))  # 0-d leaves stay arrays


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
