"""Pytrees: nested dicts, lists and tuples whose leaves are arrays (or Tensors).

Models here are plain functions of a params pytree, so transforms and optimizers need to walk such
structures. Three functions do it all:

    leaves, treedef = tree_flatten({"w": w, "layers": [a, b]})   # leaves == [a, b, w]
    tree_unflatten(treedef, leaves)                               # the same structure back
    tree_map(lambda p, g: p - 0.1 * g, params, grads)             # leafwise over matching trees

Dict keys are visited in sorted order, so two dicts with the same keys flatten identically whatever
their insertion order. ``None`` is an empty subtree (no leaf), as in JAX.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["tree_flatten", "tree_unflatten", "tree_map", "tree_leaves", "tree_paths"]


class TreeDef:
    """The structure of a pytree without its leaves: ``kind`` is 'dict', 'list', 'tuple', 'none'
    or 'leaf'; ``keys`` are a dict's sorted keys; ``children`` the subtrees' TreeDefs."""

    __slots__ = ("kind", "keys", "children", "num_leaves")

    def __init__(self, kind: str, keys: tuple = (), children: tuple = ()):
        self.kind, self.keys, self.children = kind, keys, children
        self.num_leaves = 1 if kind == "leaf" else sum(c.num_leaves for c in children)

    def __eq__(self, other) -> bool:
        return (isinstance(other, TreeDef) and self.kind == other.kind and self.keys == other.keys
                and self.children == other.children)

    def __hash__(self) -> int:  # jit caches plans by structure
        return hash((self.kind, self.keys, self.children))

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children)) + "}"
        inner = ", ".join(map(repr, self.children))
        return f"[{inner}]" if self.kind == "list" else f"({inner})"


def tree_flatten(tree: Any) -> tuple[list, TreeDef]:
    """Returns ``(leaves, treedef)``; leaves in a deterministic order (dict keys sorted)."""
    leaves: list = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree: Any, leaves: list) -> TreeDef:
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        return TreeDef("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return TreeDef(kind, (), tuple(_flatten(t, leaves) for t in tree))
    if tree is None:
        return TreeDef("none")
    leaves.append(tree)
    return TreeDef("leaf")


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    """Inverse of :func:`tree_flatten`: rebuilds ``treedef``'s structure around ``leaves``."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"tree_unflatten: treedef has {treedef.num_leaves} leaves but {len(leaves)} were given")
    it = iter(leaves)
    return _unflatten(treedef, it)


def _unflatten(td: TreeDef, it) -> Any:
    if td.kind == "leaf":
        return next(it)
    if td.kind == "none":
        return None
    children = [_unflatten(c, it) for c in td.children]
    if td.kind == "dict":
        return dict(zip(td.keys, children))
    return children if td.kind == "list" else tuple(children)


def tree_leaves(tree: Any) -> list:
    return tree_flatten(tree)[0]


def tree_map(f: Callable, tree: Any, *rest: Any) -> Any:
    """``f`` applied leafwise; ``rest`` are trees of the same structure as ``tree``."""
    leaves, treedef = tree_flatten(tree)
    others = []
    for i, r in enumerate(rest):
        r_leaves, r_def = tree_flatten(r)
        if r_def != treedef:
            raise ValueError(f"tree_map: tree {i + 1} has structure {r_def} but tree 0 has {treedef}")
        others.append(r_leaves)
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *others)])


def tree_paths(tree: Any, prefix: str = "") -> list[str]:
    """The path of every leaf, in ``tree_flatten`` order: ``{"conv1": {"w": w}, "fc": [a]}`` gives
    ``["conv1/w", "fc/0"]``. Used to name parameters in graphs and checkpoints."""
    if isinstance(tree, dict):
        return [p for k in sorted(tree) for p in tree_paths(tree[k], f"{prefix}{k}/")]
    if isinstance(tree, (list, tuple)):
        return [p for i, t in enumerate(tree) for p in tree_paths(t, f"{prefix}{i}/")]
    if tree is None:
        return []
    return [prefix[:-1]]
