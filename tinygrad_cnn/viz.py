"""Drawing the computation graph, with gradients and a timing/memory profile on it.

Every tensor made by an op remembers a node (its op, the op's arguments and its input tensors; see
``autograd.py``). :func:`draw_graph` walks those nodes back from an output, exactly as the backward
pass does, and turns them into a ``graphviz.Digraph``::

    a = Tensor([1.0, 2.0], requires_grad=True, name="a")
    b = Tensor([3.0, 4.0], requires_grad=True, name="b")
    y = (a * b + a).sum()
    draw_graph(y)                       # 5 nodes: a, b, Mul, Add, Sum;  5 edges (a has two)

What the picture shows (the torchviz layout: ops are the nodes, tensors are the edges):

* one **op node** per recorded op: the op's name, its arguments (stride, axis, shape, ...), the shape
  of the tensor it produced, and that tensor's name if it has one ("h = Relu"). Intermediate tensors
  get no node of their own: each belongs to exactly one op, so the op node carries its shape.
* one **leaf node** per leaf tensor (an input, a constant or a parameter): its name, shape and dtype.
  A tensor used twice is drawn once with two out-edges. Parameters (``requires_grad=True``) are
  filled boxes; inputs and constants are white ovals (an unnamed one-element constant shows its value).
  Anything the engine did not record (computed under ``no_grad``, or from constants only) is a leaf.
* the **output** has a double border.
* edges point the way data flows: input -> op, in the op's argument order.

Optional annotations: ``show_grads`` adds each tensor's gradient norm (needs
``backward(retain_graph=True)``); ``profile`` adds each op's forward/backward time and the bytes it
kept for backward, colours the ops by their share of the time, and puts totals in the caption.
The profile comes from :func:`profile`, a recorder built on ``autograd.record_profile``, the engine's
one optional hook (nothing here touches the ops).

**A jitted plan.** ``draw_graph(step)`` for a ``tc.jit`` function draws the plan its calls replay
(``jit.Plan.program``), not a graph of tensors: the forward ops in the order they run, so after the
rewrites (``MaxPool2d`` before ``Relu``), as grey boxes with their output shapes; each op's backward as an
orange box in a "backward" cluster, drawn level with its forward op (a dotted line: it reads the
arrays that op saved) so the backward pass climbs back up beside the forward pass; the engine's own
steps as small grey nodes ("+" sums the gradients of a value used twice, "sum to (2,)" un-broadcasts,
"as float32" casts; the copies that make each call return new memory are left out); inputs named
by their place in the call's arguments ("conv1/w" inside a params dict, "x" by the parameter's name),
parameters (inputs an op needs a gradient for) as blue boxes; outputs as double ovals named by their
path in what the call returns ("output 1/conv1/w"). A keyword argument that is an array (labels,
running statistics, a dropout generator) is an edge labelled with its keyword. The shapes come from
running the program once on zeros of the signature's shapes (copies of its constants: nothing of
yours is touched); ``show_shapes=False`` skips that run.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import time
import warnings
import weakref
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import graphviz
import numpy as np

from . import autograd
from .files import atomic_write
from .jit import Jitted, Plan, _rebuild, _signature
from .pytree import tree_leaves, tree_paths, tree_unflatten
from .tensor import Tensor

__all__ = ["draw_graph", "draw_plan", "save_graph", "profile", "Profile", "param_tensors"]

_PARAM_FILL = "#cfe2ff"    # parameters: light blue boxes
_OP_FILL = "#f2f2f2"       # ops: light grey rounded boxes
_BACKWARD_FILL = "#fde4cf"  # a jitted plan's backward ops: light orange rounded boxes
_STEP_COLOR = "#777777"     # a jitted plan's engine steps (gradient sums, un-broadcasting): small grey nodes
_CLUSTER_COLOR = "#8c8c8c"
_NO_COMPACT = {"shape", "axes", "axis", "index"}  # kwargs whose tuples must keep every entry
_NO_COMPACT |= {"pad_width", "reps", "repeats"}  # movement ops: NumPy reads a shorter form differently


# ---------------------------------------------------------------------------------------------- #
# Profiling


class Profile:
    """Forward and backward times and saved bytes of every op run while it was recording.

    Made by :func:`profile` and used as a context manager (``with profile() as prof:``). Per op
    *instance* (keyed by its context object, which is unique to a node and alive as long as the node)
    it keeps ``forward`` and ``backward`` seconds and ``saved`` bytes (``autograd.saved_bytes`` after
    the forward: arrays the node holds for its backward; an array shared with a live tensor counts
    too). Per op *type* it keeps totals for :meth:`table`.
    """

    def __init__(self):
        self._per_ctx: dict[int, tuple[weakref.ref, dict]] = {}
        self._per_op: dict[str, dict] = defaultdict(
            lambda: {"calls": 0, "forward": 0.0, "backward": 0.0, "saved": 0})
        self.wall = 0.0  # seconds spent inside ``with`` blocks
        self._recording = None

    def __enter__(self) -> Profile:
        if self._recording is not None:
            raise RuntimeError("profile: this recorder is already recording")
        outer = autograd._profiler.get()  # profiles nest: pass every record on to an enclosing recorder

        def callback(op, phase, seconds, ctx):
            self._record(op, phase, seconds, ctx)
            if outer is not None:
                outer(op, phase, seconds, ctx)

        self._recording = autograd.record_profile(callback)
        self._recording.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._start
        recording, self._recording = self._recording, None
        recording.__exit__(*exc)

    def _record(self, op: type, phase: str, seconds: float, ctx: autograd.Context) -> None:
        key = id(ctx)
        entry = self._per_ctx.get(key)
        if entry is None or entry[0]() is not ctx:
            record = {"op": op.__name__, "forward": None, "backward": None, "saved": 0}
            # the record dies with its node, so a later context reusing the id starts afresh
            ref = weakref.ref(ctx, lambda r, k=key: self._forget(k, r))
            entry = self._per_ctx[key] = (ref, record)
        record, totals = entry[1], self._per_op[op.__name__]
        record[phase] = (record[phase] or 0.0) + seconds
        totals[phase] += seconds
        if phase == "forward":
            record["saved"] = autograd.saved_bytes(ctx)
            totals["saved"] += record["saved"]
            totals["calls"] += 1

    def _forget(self, key: int, ref: weakref.ref) -> None:
        entry = self._per_ctx.get(key)
        if entry is not None and entry[0] is ref:
            del self._per_ctx[key]

    def lookup(self, ctx: autograd.Context) -> dict | None:
        """``{"op", "forward", "backward", "saved"}`` for one op instance (times ``None`` if not run)."""
        entry = self._per_ctx.get(id(ctx))
        return entry[1] if entry is not None and entry[0]() is ctx else None

    @property
    def total_forward(self) -> float:
        return sum(t["forward"] for t in self._per_op.values())

    @property
    def total_backward(self) -> float:
        return sum(t["backward"] for t in self._per_op.values())

    @property
    def total_saved(self) -> int:
        return sum(t["saved"] for t in self._per_op.values())

    def table(self) -> list[dict]:
        """One row per op type, slowest first: ``{"op", "calls", "forward", "backward", "total",
        "share", "saved"}`` (seconds, fraction of all op time, bytes summed over calls)."""
        grand = self.total_forward + self.total_backward
        rows = [{"op": op, "calls": t["calls"], "forward": t["forward"], "backward": t["backward"],
                 "total": t["forward"] + t["backward"], "saved": t["saved"]} for op, t in self._per_op.items()]
        for row in rows:
            row["share"] = row["total"] / grand if grand > 0 else 0.0
        return sorted(rows, key=lambda r: -r["total"])

    def summary(self) -> str:
        """:meth:`table` as aligned text, with a total line, ready to print."""
        lines = [f"{'op':<16}{'calls':>7}{'forward':>12}{'backward':>12}{'share':>8}{'kept':>11}"]
        for r in self.table():
            lines.append(f"{r['op']:<16}{r['calls']:>7}{_seconds(r['forward']):>12}{_seconds(r['backward']):>12}"
                         f"{r['share']:>8.1%}{_bytes(r['saved']):>11}")
        calls = sum(r["calls"] for r in self.table())
        lines.append(f"{'total':<16}{calls:>7}{_seconds(self.total_forward):>12}"
                     f"{_seconds(self.total_backward):>12}{'':>8}{_bytes(self.total_saved):>11}")
        if self.wall > 0:
            lines.append(f"(ops took {_seconds(self.total_forward + self.total_backward)} "
                         f"of {_seconds(self.wall)} inside the profile block)")
        return "\n".join(lines)

    __str__ = summary

    def __repr__(self) -> str:
        return (f"Profile({sum(t['calls'] for t in self._per_op.values())} forward calls, "
                f"forward {_seconds(self.total_forward)}, backward {_seconds(self.total_backward)})")


def profile() -> Profile:
    """A new :class:`Profile`; use it as a context manager to record the ops run inside the block.

    >>> with profile() as prof:
    ...     loss = (x @ w).relu().sum()
    ...     loss.backward(retain_graph=True)      # keep the graph to draw it
    >>> draw_graph(loss, profile=prof)            # "fwd 12 µs / bwd 30 µs (41%)", "keeps 1.2 kB"
    >>> print(prof.summary())                     # totals per op type

    ``prof = profile(); with prof: ...`` works the same; a recorder may be entered again to add more.
    """
    return Profile()


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------------- #
# Labels


@functools.lru_cache(maxsize=None)
def _defaults(op: type) -> dict:
    """Keyword defaults of ``op.forward``; an argument equal to its default is left off the label."""
    try:
        params = inspect.signature(op.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _is_default(op: type, key: str, value: Any) -> bool:
    defaults = _defaults(op)
    if key not in defaults or isinstance(value, np.ndarray):
        return False
    try:
        return type(value) is type(defaults[key]) and bool(value == defaults[key])
    except Exception:  # an exotic __eq__: show the value
        return False


def _compact(value: Any) -> Any:
    """(1, 1) -> 1 and ((0, 0), (0, 0)) -> 0: an (h, w) pair with equal halves is shown once."""
    if isinstance(value, (tuple, list)):
        inner = [_compact(v) for v in value]
        if len(inner) == 2 and not isinstance(inner[0], (tuple, list)) and inner[0] == inner[1]:
            return inner[0]
        return tuple(inner)
    return value


def _format_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 4 and value.ndim <= 1:
            return "[" + ", ".join(_format_value(v) for v in value.tolist()) + "]"
        return f"{value.dtype}{tuple(value.shape)}"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, slice):
        parts = ["" if p is None else _format_value(p) for p in (value.start, value.stop, value.step)]
        return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
    if value is Ellipsis:
        return "..."
    if isinstance(value, (tuple, list)):
        return f"({', '.join(map(_format_value, value))}{',' if len(value) == 1 else ''})"
    return type(value).__name__


def _format_kwargs(op: type, kwargs: dict) -> list[str]:
    """``key=value`` for each argument worth showing (not None, not the forward's default)."""
    items = []
    for key, value in kwargs.items():
        if value is None or _is_default(op, key, value):
            continue
        if key not in _NO_COMPACT:
            value = _compact(value)
        if key == "index":  # index=[0:2, ::2] as in x[0:2, ::2]
            text = "[" + ", ".join(map(_format_value, value if isinstance(value, tuple) else (value,))) + "]"
        else:
            text = _format_value(value)
        items.append(f"{key}={text}")
    return items


def _fit(items: list[str], width: int, sep: str = ", ") -> list[str]:
    """Packs ``items`` into lines of at most ``width`` characters; an item longer than that is cut."""
    lines: list[str] = []
    for item in items:
        item = item if len(item) <= width else item[: max(width - 1, 1)] + "…"
        if lines and len(lines[-1]) + len(sep) + len(item) <= width:
            lines[-1] += sep + item
        else:
            lines.append(item)
    return lines


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(map(str, shape)) + ")" if len(shape) != 1 else f"({shape[0]},)"


def _grad_norm(t: Tensor) -> float | None:
    if t.grad is None:
        return None
    return float(np.sqrt(np.sum(np.square(t.grad, dtype=np.float64))))


def _label(lines: list[str]) -> str:
    """A plain Graphviz label (never HTML), one centred line per entry."""
    return graphviz.nohtml("\\n".join(line.replace("\\", "\\\\") for line in lines))


# ---------------------------------------------------------------------------------------------- #
# The graph walk


def _name_prefix_cluster(order: list[Tensor]) -> dict[int, str]:
    """The default grouping: a leaf named "conv1/w" belongs to cluster "conv1"; an op joins the
    cluster of its leaf inputs when they name exactly one (so conv1's Conv2d or MatMul joins conv1,
    the ReLU after it does not)."""
    clusters: dict[int, str] = {}
    for t in order:
        if t._node is None:
            if t.name and "/" in t.name:
                clusters[id(t)] = t.name.rsplit("/", 1)[0]
        else:
            names = {clusters[id(p)] for p in t._node.inputs if p._node is None and id(p) in clusters}
            if len(names) == 1:
                clusters[id(t)] = names.pop()
    return clusters


def _depth_and_width(order: list[Tensor]) -> tuple[int, int]:
    """Longest input-to-output path (in nodes) and the largest number of nodes at one depth."""
    level: dict[int, int] = {}
    for t in order:
        node = t._node
        level[id(t)] = 0 if node is None else 1 + max(level[id(p)] for p in node.inputs)
    counts = np.bincount(list(level.values()))
    return len(counts), int(counts.max())


def draw_graph(output: Tensor | Jitted, *, show_shapes: bool = True, show_grads: bool = False,
               profile: Profile | None = None, rankdir: str | None = None,
               cluster: bool | Callable[[Tensor], str | None] | None = None, max_label: int = 40,
               plan: int | Plan | None = None) -> graphviz.Digraph:
    """A ``graphviz.Digraph`` of everything ``output`` was computed from, or of a ``tc.jit`` function's plan.

    Nodes: one per recorded op (name, arguments, output shape) and one per leaf tensor (name, shape,
    dtype); parameters are blue boxes, inputs and constants white ovals, the output has a double border.
    Edges run input -> op. See the module docstring for the full legend.

    Args:
        output: the Tensor to draw back from (usually the loss). Draw *before* a plain ``backward()``,
            which releases the graph, or use ``backward(retain_graph=True)``. Or a ``tc.jit`` function,
            called at least once: its plan (below).
        show_shapes: put shapes (and leaves' dtypes) on the nodes.
        show_grads: put ``|grad|``, the L2 norm of each tensor's gradient, on the nodes (leaves: their
            ``.grad``; ops: their output's ``.grad``). Needs ``output.backward(retain_graph=True)``
            first, else ``ValueError``.
        profile: a :class:`Profile` from ``with profile() as prof:`` around the forward (and backward)
            pass: each op gets "fwd .. / bwd .. (share of the time)" and "keeps .." (bytes saved for
            backward), a fill from white to red by its time relative to the slowest op, and the graph a
            caption with the totals.
        rankdir: "TB" (top to bottom), "LR", "BT" or "RL". By default "TB", since pages and notebooks
            scroll vertically and shrink wide images; "LR" only when the graph is wider than it is deep
            (more than 6 nodes side by side).
        cluster: groups nodes into labelled boxes. ``None`` (default): by parameter-name prefix, a leaf
            named "conv1/w" goes into cluster "conv1" and an op joins the one cluster its leaf inputs
            name (nothing is grouped unless names contain "/", as ``value_and_grad`` gives them).
            ``False``: no clusters. A callable ``cluster(tensor) -> str | None`` is called with each
            leaf and each op's output tensor (``tensor.op`` is the op's name) and names its cluster.
        max_label: the widest a label line may be, in characters; longer argument lists wrap, longer
            single items are cut with "…".
        plan: with a ``tc.jit`` function as ``output``, which of its plans to draw (one per signature it
            was called with): an index in the order they were traced, or the Plan itself. Needed only
            when it has several; :func:`draw_plan` picks the plan for example arguments instead.

    Given a ``tc.jit`` function (``output=step``), draws the plan its calls replay: the ops in the order
    they run after the rewrites, each op's backward, the engine's own steps, and the outputs (module
    docstring). ``ValueError`` if ``step`` was never called, or has several plans and ``plan`` is not
    given. ``show_grads`` and ``profile`` belong to eager graphs and are refused; ``cluster`` may be
    None/True (parameter-name prefixes, and one "backward" box) or False.

    Returns a ``graphviz.Digraph``: shown inline in Jupyter, ``.source`` is the DOT text,
    ``.pipe(format="svg")`` / ``.render()`` and :func:`save_graph` need Graphviz's ``dot`` program.
    """
    if isinstance(output, Jitted):
        if show_grads or profile is not None:
            raise ValueError("draw_graph: show_grads and profile annotate an eager graph (draw the loss Tensor "
                             "of a step run without tc.jit); a jitted plan has neither gradients nor timings")
        if not (cluster is None or isinstance(cluster, bool)):
            raise TypeError(f"draw_graph: for a jitted plan cluster must be None, True or False, got "
                            f"{type(cluster).__name__}")
    elif plan is not None:
        raise TypeError("draw_graph: plan= picks one of a tc.jit function's plans; output is not one")
    elif not isinstance(output, Tensor):
        raise TypeError(f"draw_graph: output must be a Tensor or a tc.jit function, got {type(output).__name__}")
    if profile is not None and not isinstance(profile, Profile):
        raise TypeError(f"draw_graph: profile must be the recorder from `with tc.viz.profile() as prof:`, "
                        f"got {type(profile).__name__}")
    if rankdir is not None and rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"draw_graph: rankdir must be 'TB', 'LR', 'BT' or 'RL', got {rankdir!r}")
    if not (cluster is None or isinstance(cluster, bool) or callable(cluster)):
        raise TypeError(f"draw_graph: cluster must be None, a bool or a callable, got {type(cluster).__name__}")
    if not isinstance(max_label, int) or max_label < 8:
        raise ValueError(f"draw_graph: max_label must be an int >= 8, got {max_label!r}")
    if isinstance(output, Jitted):
        return _draw_plan(output, _select_plan(output, plan), show_shapes=show_shapes, rankdir=rankdir,
                          cluster=cluster is not False, max_label=max_label)
    if show_grads and output.grad is None:
        raise ValueError("draw_graph(show_grads=True): the output has no gradient yet. Run "
                         "output.backward(retain_graph=True) first: a plain backward() releases the graph "
                         "and keeps gradients on leaves only.")
    if output._node is None and output.requires_grad:
        warnings.warn("draw_graph: the output records no op, so the graph is one node. If ops computed it, "
                      "backward() has released its graph: draw before backward(), or call "
                      "backward(retain_graph=True).", stacklevel=2)

    order = autograd.topological_order(output, constants=True)
    ids = {id(t): f"n{i}" for i, t in enumerate(order)}
    records = {}
    if profile is not None:
        records = {id(t): profile.lookup(t._node.ctx) for t in order if t._node is not None}
        records = {k: r for k, r in records.items() if r is not None}
        if any(t._node is not None for t in order) and not records:
            raise ValueError("draw_graph: the profile holds no op of this graph; run the forward pass inside "
                             "`with tc.viz.profile() as prof:`")
    op_time = {k: (r["forward"] or 0.0) + (r["backward"] or 0.0) for k, r in records.items()}
    total_time, slowest = sum(op_time.values()), max(op_time.values(), default=0.0)

    def leaf_node(t: Tensor) -> tuple[list[str], dict]:
        if t.requires_grad:
            attrs = {"shape": "box", "style": "filled", "fillcolor": _PARAM_FILL}
        else:
            attrs = {"shape": "oval", "style": "solid"}
        if not t.name and t.ndim == 0 and not t.requires_grad:           # a constant such as ``x * 2``
            return [_format_value(t.data.item())], {**attrs, "fontsize": "9", "height": "0.2"}
        lines = [t.name] if t.name else []
        if show_shapes:
            lines.append(f"{_shape(t.shape)} {t.dtype}")
        return lines or ["param" if t.requires_grad else "input"], attrs

    def op_node(t: Tensor) -> tuple[list[str], dict]:
        node = t._node
        lines = [f"{t.name} = {node.name}" if t.name else node.name]
        lines += _fit(_format_kwargs(node.op, node.kwargs), max_label)
        if show_shapes:
            lines.append(_shape(t.shape))
        attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": _OP_FILL}
        record = records.get(id(t))
        if record is not None:
            share = op_time[id(t)] / total_time if total_time > 0 else 0.0
            lines.append(f"fwd {_seconds(record['forward'])} / bwd {_seconds(record['backward'])} ({share:.0%})")
            if record["saved"]:
                lines.append(f"keeps {_bytes(record['saved'])}")
            heat = op_time[id(t)] / slowest if slowest > 0 else 0.0
            attrs["fillcolor"] = f"0.000 {0.85 * heat:.3f} 1.000"  # HSV: white -> red
        return lines, attrs

    groups: dict[str | None, list[tuple[str, str, dict]]] = defaultdict(list)
    if cluster is None or cluster is True:
        cluster_of = _name_prefix_cluster(order)
    elif cluster is False:
        cluster_of = {}
    else:
        cluster_of = {id(t): cluster(t) for t in order}
    for t in order:
        lines, attrs = leaf_node(t) if t._node is None else op_node(t)
        if show_grads:
            norm = _grad_norm(t)
            if norm is not None:
                lines.append(f"|grad| {norm:.6g}")
        if t is output:
            attrs.update(peripheries="2", penwidth="1.5")
        lines = [line if len(line) <= max_label else line[: max_label - 1] + "…" for line in lines]
        groups[cluster_of.get(id(t))].append((ids[id(t)], _label(lines), attrs))

    depth, width = _depth_and_width(order)
    if rankdir is None:
        rankdir = "LR" if width > max(6, depth) else "TB"
    graph = graphviz.Digraph(
        name=output.name,
        graph_attr={"rankdir": rankdir, "nodesep": "0.25", "ranksep": "0.35"},
        node_attr={"fontname": "Helvetica", "fontsize": "10", "margin": "0.08,0.04", "height": "0.3"},
        edge_attr={"arrowsize": "0.6", "color": "#555555"},
    )
    if records:
        n_ops = sum(t._node is not None for t in order)
        kept = sum(r["saved"] for r in records.values())
        fwd = sum(r["forward"] or 0.0 for r in records.values())
        bwd = sum(r["backward"] or 0.0 for r in records.values())
        graph.attr(label=_label([f"{n_ops} ops: forward {_seconds(fwd)}, backward {_seconds(bwd)}, "
                                 f"kept for backward {_bytes(kept)}"]),
                   labelloc="t", fontname="Helvetica", fontsize="11")
    for k, (name, members) in enumerate(groups.items()):
        if name is None:
            for node_id, label, attrs in members:
                graph.node(node_id, label, **attrs)
            continue
        with graph.subgraph(name=f"cluster_{k}") as sub:
            sub.attr(label=_label([str(name)]), style="rounded,dashed", color=_CLUSTER_COLOR,
                     fontname="Helvetica", fontsize="10", labeljust="l")
            for node_id, label, attrs in members:
                sub.node(node_id, label, **attrs)
    for t in order:
        if t._node is not None:
            for parent in t._node.inputs:
                graph.edge(ids[id(parent)], ids[id(t)])
    return graph


# ---------------------------------------------------------------------------------------------- #
# Drawing a jitted plan


def _select_plan(step: Jitted, plan: int | Plan | None) -> tuple[tuple, Plan]:
    """``(signature, Plan)``: the plan ``plan`` names, or ``step``'s only plan."""
    plans = list(step._plans.items())
    how = "or draw the plan for example arguments with tc.viz.draw_plan(step, *args)"
    if not plans:
        raise ValueError(f"draw_graph: {step.__name__} has no plan yet: a tc.jit function traces its plan on its "
                         f"first call. Call it once (step(*args)) and then draw it, {how}")
    if isinstance(plan, Plan):
        found = [entry for entry in plans if entry[1] is plan]
        if not found:
            raise ValueError(f"draw_graph: plan= is not one of {step.__name__}'s plans")
        return found[0]
    if plan is not None and (not isinstance(plan, (int, np.integer)) or isinstance(plan, bool)):
        raise TypeError(f"draw_graph: plan must be an int (the plan's index) or a Plan, got {type(plan).__name__}")
    if plan is None and len(plans) == 1:
        return plans[0]
    if plan is not None and -len(plans) <= plan < len(plans):
        return plans[plan]
    listing = "\n".join(f"  plan={i}: {text}" for i, text in enumerate(_describe_signatures(step)))
    wanted = "" if plan is None else f"plan={plan} is out of range. "
    raise ValueError(f"draw_graph: {wanted}{step.__name__} has {len(plans)} plans, one per signature it was "
                     f"called with (what differs between them):\n{listing}\nChoose one with "
                     f"draw_graph(step, plan=i), {how}")


def _positional_names(fn: Callable) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _leaf_names(fn: Callable, treedef) -> list[str]:
    """A name for every leaf of a call's arguments, in ``tree_flatten`` order (as jit flattens them).

    A leaf inside a dict/list argument is named by its path there, as ``value_and_grad`` names
    parameters ("conv1/w"); an argument that is a leaf by its parameter name in ``fn``'s signature
    ("x"), or "arg<n>"; a keyword argument by its keyword. When two arguments hold the same path
    (params and grads), every path is prefixed with its argument's name ("p/conv1/w").
    """
    args, kwargs = tree_unflatten(treedef, list(range(treedef.num_leaves)))
    positional = _positional_names(fn)
    owners = [(positional[n] if n < len(positional) else f"arg{n}", a) for n, a in enumerate(args)]
    owners += sorted(kwargs.items())
    where = {}  # leaf index -> (argument name, path inside the argument)
    for arg_name, tree in owners:
        for index, path in zip(tree_leaves(tree), tree_paths(tree)):
            where[index] = (arg_name, path)
    paths = [path for _, path in where.values() if path]
    clash = len(set(paths)) < len(paths) or bool(set(paths) & {name for name, _ in owners})
    return [f"{arg}/{path}" if path and clash else (path or arg) for arg, path in (where[i] for i in sorted(where))]


def _describe_leaf(name: str, part: tuple) -> str:
    if part[0] == "array":
        return f"{name} {np.dtype(part[2]).name}{_shape(part[1])}"
    if part[0] == "rng":
        return f"{name} Generator"
    return f"{name}={part[2]!r}"


def _describe_signatures(step: Jitted) -> list[str]:
    """Per plan, the argument leaves (and static arguments) that not all of ``step``'s plans share."""
    positional = _positional_names(step.fn)
    described = []
    for treedef, parts, static in step._plans:
        texts = [_describe_leaf(name, part) for name, part in zip(_leaf_names(step.fn, treedef), parts)]
        texts += [f"{positional[n] if n < len(positional) else f'arg{n}'}={value!r}" for n, value in static]
        described.append(texts)
    common = set.intersection(*(set(texts) for texts in described))
    out = []
    for texts in described:
        differ = [t for t in texts if t not in common] or ["the same leaves, in another tree structure"]
        out.append(", ".join(differ[:4]) + (f", … ({len(differ) - 4} more)" if len(differ) > 4 else ""))
    return out


def _input_parts(key: tuple) -> list[tuple]:
    return [part for part in key[1] if part[0] in ("array", "rng")]


def _shapes_by_running(plan: Plan, key: tuple) -> dict[int, tuple]:
    """``{slot: (shape, dtype)}`` of every array the plan makes, learnt by running its program once on
    zeros of the signature's shapes (a rewrite may change what a slot holds, so the trace's own arrays
    do not tell). Its constants are copied first: nothing the user holds is written. ``{}`` (with a
    warning) if an op refuses the zeros."""
    slots: list = [None] * plan.n_slots
    slots[:plan.n_inputs] = [np.zeros(part[1], np.dtype(part[2])) if part[0] == "array" else np.random.default_rng(0)
                             for part in _input_parts(key)]
    for index, value in plan.constants.items():
        writable = isinstance(value, np.ndarray) and value.flags.writeable
        slots[index] = copy.deepcopy(value) if writable or isinstance(value, np.random.Generator) else value
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for kind, what, spec, out in plan.program:
                args = [_rebuild(s, slots) for s in spec]
                if kind == "context":
                    slots[out] = autograd.Context(what)
                elif kind == "forward":
                    slots[out] = what[0].forward(*args, **{k: _rebuild(v, slots) for k, v in what[1]})
                elif kind == "one":
                    slots[out] = what(*args)
                else:
                    results = (what.backward(args[0], autograd._read_only(args[1])) if kind == "backward"
                               else what(*args))
                    for index, value in zip(out, results if isinstance(results, tuple) else (results,)):
                        if index is not None:
                            slots[index] = value
    except Exception as e:  # a user op that refuses zeros: draw without shapes rather than fail
        warnings.warn(f"draw_graph: running the plan on zeros to learn its shapes failed ({type(e).__name__}: "
                      f"{e}); drawn without the shapes of its ops", RuntimeWarning, stacklevel=4)
        return {}
    return {i: (np.shape(v), np.result_type(v)) for i, v in enumerate(slots) if isinstance(v, (np.ndarray, np.generic))}


def _specs(spec) -> list[int]:
    """The slots an argument spec reads, in order."""
    kind, value = spec
    if kind == "slot":
        return [value]
    if kind == "tuple":
        return [i for v in value for i in _specs(v)]
    return []


def _spec_value(spec) -> Any:
    """An argument spec as a value for the label; ``_SLOT`` where it reads a slot (drawn as an edge)."""
    kind, value = spec
    if kind == "slot":
        return _SLOT
    if kind == "tuple":
        values = tuple(_spec_value(v) for v in value)
        return _SLOT if any(v is _SLOT for v in values) else values
    return value


_SLOT = object()


def _engine_label(fn: Callable, spec: tuple, shapes: dict) -> list[str]:
    """Short labels for the engine's own steps: "+" for a gradient sum, what un-broadcasting does."""
    if fn is np.add:
        return ["+"]
    if fn is autograd._as_gradient_of:
        shape, dtype = _spec_value(spec[1]), np.dtype(_spec_value(spec[2]))
        given = shapes.get(spec[0][1]) if spec[0][0] == "slot" else None
        if given is None:
            return [f"to {_shape(shape)} {dtype.name}"]
        lines = [f"sum to {_shape(shape)}"] if tuple(given[0]) != tuple(shape) else []
        return lines + ([f"as {dtype.name}"] if given[1] != dtype else [])
    return [getattr(fn, "__name__", type(fn).__name__)]


def _draw_plan(step: Jitted, selected: tuple[tuple, Plan], *, show_shapes: bool, rankdir: str | None,
               cluster: bool, max_label: int) -> graphviz.Digraph:
    """The plan as it runs: ``("forward", ...)`` instructions as op boxes in program order (so after the
    rewrites), ``("backward", ...)`` as orange boxes in a "backward" cluster, each linked by a dotted
    line to the forward op whose saved arrays it reads, the engine's steps as small grey nodes (a copy
    the engine makes so that each call returns new memory is not drawn), inputs by their names in the
    call's arguments, outputs by their paths in what the call returns."""
    key, plan = selected
    shapes = _shapes_by_running(plan, key) if show_shapes else {}
    input_names = [name for name, part in zip(_leaf_names(step.fn, key[0]), key[1]) if part[0] in ("array", "rng")]
    input_parts = _input_parts(key)
    needs = {out: what for kind, what, _, out in plan.program if kind == "context"}
    params = set()  # inputs some op needs a gradient for: drawn as parameters
    for kind, _, spec, _ in plan.program:
        if kind == "forward":
            params.update(s[1] for s, need in zip(spec[1:], needs[spec[0][1]][:len(spec) - 1])
                          if need and s[0] == "slot" and s[1] < plan.n_inputs)

    nodes: dict[str, tuple[list[str], dict, str | None]] = {}  # id -> (label lines, attrs, group)
    edges: list[tuple[str, str, dict]] = []
    producer: dict[int, str] = {}   # slot -> the node that makes it
    group_of: dict[str, str | None] = {}
    upward: set[str] = set()        # the backward pass's nodes, laid out from the loss upwards
    backward = "backward" if cluster else None

    def new_node(lines: list[str], attrs: dict, group: str | None, back: bool = False) -> str:
        node_id = f"n{len(nodes)}"
        lines = [line if len(line) <= max_label else line[: max_label - 1] + "…" for line in lines]
        nodes[node_id] = (lines, attrs, group)
        group_of[node_id] = group
        if back:
            upward.add(node_id)
        return node_id

    def source(slot: int, back: bool) -> str:
        """The node that makes ``slot``: an instruction, or an input/constant node made on first use."""
        if slot in producer:
            return producer[slot]
        if slot < plan.n_inputs:
            name, part = input_names[slot], input_parts[slot]
            attrs = ({"shape": "box", "style": "filled", "fillcolor": _PARAM_FILL} if slot in params
                     else {"shape": "oval", "style": "solid"})
            lines = [name] + ([f"{_shape(part[1])} {np.dtype(part[2]).name}"] if show_shapes and part[0] == "array"
                              else [])
            if part[0] == "rng":
                lines.append("Generator")
            layer = name.rsplit("/", 1)[0] if cluster and "/" in name else None
            producer[slot] = new_node(lines, attrs, layer)
        else:
            value = plan.constants.get(slot)
            attrs = {"shape": "oval", "style": "solid"}
            if isinstance(value, np.ndarray) and value.ndim == 0:
                lines, attrs = [_format_value(value.item())], {**attrs, "fontsize": "9", "height": "0.2"}
            elif isinstance(value, np.ndarray):
                lines = ["constant"] + ([f"{_shape(value.shape)} {value.dtype}"] if show_shapes else [])
            else:
                lines = ["constant", type(value).__name__]
            producer[slot] = new_node(lines, attrs, backward if back else None, back)
        return producer[slot]

    def connect(spec, head: str, back: bool, label: str | None = None) -> None:
        for slot in _specs(spec):
            attrs = {} if label is None else {"label": label, "fontname": "Helvetica", "fontsize": "8",
                                              "fontcolor": "#555555"}
            edges.append((source(slot, back), head, attrs))

    op_of_context: dict[int, str] = {}
    counts = {"forward": 0, "backward": 0, "engine": 0}
    for kind, what, spec, out in plan.program:
        if kind == "context":
            continue
        if kind == "forward":
            op, kwargs = what
            shown = {k: _spec_value(v) for k, v in kwargs}
            lines = [op.__name__] + _fit(_format_kwargs(op, {k: v for k, v in shown.items() if v is not _SLOT}),
                                         max_label)
            if out in shapes:
                lines.append(_shape(shapes[out][0]))
            inputs = [s[1] for s in spec[1:] if s[0] == "slot"] + [i for _, v in kwargs for i in _specs(v)]
            layers = {group_of[source(i, False)] for i in inputs if i < plan.n_inputs} - {None}
            node = new_node(lines, {"shape": "box", "style": "rounded,filled", "fillcolor": _OP_FILL},
                            layers.pop() if len(layers) == 1 else None)
            for s in spec[1:]:
                connect(s, node, False)
            for k, v in kwargs:
                connect(v, node, False, label=k)
            op_of_context[spec[0][1]] = producer[out] = node
            counts["forward"] += 1
        elif kind == "backward":
            node = new_node([f"{what.__name__}.backward"],
                            {"shape": "box", "style": "rounded,filled", "fillcolor": _BACKWARD_FILL}, backward, True)
            connect(spec[1], node, True)
            if spec[0][1] in op_of_context:  # the arrays its forward saved; drawn level with it
                edges.append((op_of_context[spec[0][1]], node, _SAVED))
            for slot in out:
                if slot is not None:
                    producer[slot] = node
            counts["backward"] += 1
        elif what is np.array and len(spec) == 1 and spec[0][0] == "slot":
            producer[out] = source(spec[0][1], True)  # a copy, so that the call returns new memory
        else:
            lines = _engine_label(what, spec, shapes)
            attrs = {"fontsize": "9", "color": _STEP_COLOR, "fontcolor": _STEP_COLOR}
            if lines == ["+"]:
                attrs.update(shape="circle", width="0.3", height="0.3", fixedsize="true", margin="0")
            else:
                attrs.update(shape="box", style="dashed", height="0.2")
            node = new_node(lines, attrs, backward, True)
            for s in spec:
                connect(s, node, True)
            for slot in out if isinstance(out, tuple) else (out,):
                if slot is not None:
                    producer[slot] = node
            counts["engine"] += 1

    out_paths = tree_paths(tree_unflatten(plan.out_treedef, list(range(len(plan.outputs)))))
    for path, (kind, value) in zip(out_paths, plan.outputs):
        lines = [f"output {path}" if path else "output"]
        if kind == "const":
            lines.append(_format_value(value))
        elif show_shapes:
            lines.append("float" if kind == "float" else
                         f"{_shape(shapes[value][0])} {shapes[value][1]}" if value in shapes else "")
        node = new_node([line for line in lines if line], {"shape": "oval", "peripheries": "2", "penwidth": "1.5"},
                        None)
        if kind != "const":
            edges.append((source(value, False), node, {}))

    graph = graphviz.Digraph(
        name=step.__name__,
        graph_attr={"rankdir": rankdir or "TB", "nodesep": "0.25", "ranksep": "0.35"},
        node_attr={"fontname": "Helvetica", "fontsize": "10", "margin": "0.08,0.04", "height": "0.3"},
        edge_attr={"arrowsize": "0.6", "color": "#555555"},
    )
    idle = [name for name in step.rewrites if name not in plan.applied]
    rewrites = (", ".join(plan.applied) or "none") + (f" (on, nothing to rewrite: {', '.join(idle)})" if idle else "")
    graph.attr(label=_label([f"{step.__name__}: {counts['forward']} ops, {counts['backward']} backward, "
                             f"{counts['engine']} engine steps; rewrites: {rewrites}"]),
               labelloc="t", fontname="Helvetica", fontsize="11")
    groups: dict[str | None, list[str]] = defaultdict(list)
    for node_id, (_, _, group) in nodes.items():
        groups[group].append(node_id)
    for k, (name, members) in enumerate(groups.items()):
        if name is None:
            for node_id in members:
                graph.node(node_id, _label(nodes[node_id][0]), **nodes[node_id][1])
            continue
        with graph.subgraph(name=f"cluster_{k}") as sub:
            sub.attr(label=_label([name]), style="rounded,dashed", color=_CLUSTER_COLOR,
                     fontname="Helvetica", fontsize="10", labeljust="l")
            for node_id in members:
                sub.node(node_id, _label(nodes[node_id][0]), **nodes[node_id][1])
    for tail, head, attrs in edges:
        if attrs is not _SAVED and (tail in upward or head in upward):  # the backward pass runs upwards
            graph.edge(head, tail, dir="back", **attrs)
        else:
            graph.edge(tail, head, **attrs)
    return graph


_SAVED = {"style": "dotted", "color": "#aaaaaa", "arrowhead": "none", "minlen": "0"}


def draw_plan(step: Jitted, *args, **kwargs) -> graphviz.Digraph:
    """``draw_graph`` of the plan that ``step(*args, **kwargs)`` replays (a ``tc.jit`` function has one
    plan per signature: shapes, dtypes, tree structure, static values).

    If ``step`` has no plan for these arguments yet, calls ``step(*args, **kwargs)`` once to trace it:
    a call like any other (batch-norm statistics passed in are updated). To pass drawing options, use
    ``draw_graph(step, plan=i, ...)``.
    """
    if not isinstance(step, Jitted):
        raise TypeError(f"draw_plan: step must be a tc.jit function, got {type(step).__name__}")
    static, _, leaves, treedef = step._split(args, kwargs)
    key = _signature(treedef, leaves, static)
    try:
        known = key in step._plans
    except TypeError:  # unhashable arguments: the call below raises jit's own error
        known = False
    if not known:
        step(*args, **kwargs)
    return draw_graph(step, plan=list(step._plans).index(key))


# ---------------------------------------------------------------------------------------------- #
# Saving


_FORMATS = ("svg", "png", "pdf", "dot", "gv")


def save_graph(graph: graphviz.Digraph, path: str | os.PathLike) -> Path:
    """Writes ``graph`` to ``path`` in the format its extension names: .svg, .png, .pdf (rendered by
    Graphviz's ``dot``) or .dot/.gv (the DOT source, no Graphviz needed). The file is written to a
    temporary name in the same folder and then moved into place, so a reader never sees half a file.
    Missing parent folders are created. Returns the path.

    Raises ``ValueError`` for another extension, ``RuntimeError`` (saying how to install it) when
    ``dot`` is not installed.
    """
    if not isinstance(graph, (graphviz.Digraph, graphviz.Graph)):
        raise TypeError(f"save_graph: graph must be a graphviz graph (from draw_graph), got {type(graph).__name__}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise ValueError(f"save_graph: cannot tell the format from {path.name!r}; use one of "
                         f"{', '.join('.' + f for f in _FORMATS)}")
    if fmt in ("dot", "gv"):
        data = graph.source.encode("utf-8")
    else:
        try:
            data = graph.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise RuntimeError(f"save_graph: rendering .{fmt} needs Graphviz's `dot` program, which is not on the "
                               "PATH. Install it (`apt-get install graphviz`, `brew install graphviz`, "
                               "`conda install graphviz`) or save the source as .dot instead.") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------------------------- #
# Naming parameters for a drawing


def param_tensors(params: Any, requires_grad: bool = True) -> Any:
    """``params`` (a nested dict/list/tuple of arrays) with each leaf made a Tensor named by its path,
    as ``value_and_grad`` names them ("conv1/w"), so that a graph drawn from a model function shows
    parameter names and groups them by layer.

    >>> p = param_tensors({"fc1": {"w": np.zeros((4, 3)), "b": np.zeros(3)}})
    >>> p["fc1"]["w"].name
    'fc1/w'
    """
    from .pytree import tree_flatten, tree_paths, tree_unflatten

    leaves, treedef = tree_flatten(params)
    names = tree_paths(params)
    tensors = []
    for value, name in zip(leaves, names, strict=True):
        data = value.data if isinstance(value, Tensor) else value
        dtype = data.dtype if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating) else None
        tensors.append(Tensor(data, requires_grad=requires_grad, name=name or "param", dtype=dtype))
    return tree_unflatten(treedef, tensors)

