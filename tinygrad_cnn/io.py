"""Save and load pytrees (parameters, batch-norm statistics, optimizer state) as ``.npz`` files, never pickle.

The file is a standard NumPy ``.npz`` archive (a zip of ``.npy`` files), so
``np.load(path, allow_pickle=False)`` reads it without this library:

- one member per leaf, named by its path of dict keys and list/tuple indices joined by ``/``:
  ``"conv1/w"``, ``"layers/0/b"``. Inside a key ``%``, ``/``, ``\\`` and NUL are percent-encoded
  (``%25``, ``%2F``, ``%5C``, ``%00``), so every ``str`` key round-trips and no two leaves share a name;
- ``"__tree__"``: a uint8 array of UTF-8 JSON describing the structure: dicts (keys in their order),
  lists, tuples, ``None``, and for each leaf its member name and Python type.

:func:`load` therefore gives back exactly what was saved: dicts, lists and tuples as such, arrays with
their dtype and shape, and Python ``bool``/``int``/``float``/``complex`` and NumPy scalars as the same
types (they are stored as 0-d arrays: int64, float64, ...). Dict keys must be ``str``; the top-level key
``"__tree__"`` is reserved.

Safety: pickle is never used (object arrays are refused on save with TypeError, and on load NumPy's
``allow_pickle=False`` refuses them). :func:`save` is atomic: it writes a temporary file in the target's
directory and renames it over ``path`` only once complete, so a crash or error mid-save leaves any old
file intact and no temporary file behind.

Paths are used exactly as given (``str`` or ``pathlib.Path``): unlike ``np.savez``, no ``.npz`` is
appended, so ``save("ckpt", p)`` writes ``ckpt`` and ``load("ckpt")`` reads it. Example::

    save("model.npz", {"conv1": {"w": w, "b": b}, "opt_state": state})
    params = load("model.npz")["conv1"]
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from .checks import check_path
from .files import atomic_write

__all__ = ["load", "save"]

TREE = "__tree__"
_PY_SCALARS = {t.__name__: t for t in (bool, int, float, complex, str)}  # 0-d bool/int64/float64/complex128/unicode


def _escape(key: str) -> str:
    """Percent-encodes the characters a zip member name cannot carry verbatim (``\\`` and NUL too)."""
    return key.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C").replace("\0", "%00")


def _encode(tree: Any, path: tuple[str, ...], arrays: dict) -> Any:
    """The JSON description of ``tree``; fills ``arrays`` with ``{member name: array}``."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        items = []
        for key, sub in tree.items():
            if not isinstance(key, str):
                raise TypeError(f"save: dict keys must be str, got {key!r} at {'/'.join(path) or '<root>'!r}")
            if not path and key == TREE:
                raise ValueError(f"save: the top-level key {TREE!r} is reserved for the structure description")
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"save: key {key!r} is not valid UTF-8 (it holds a lone surrogate)") from None
            items.append([key, _encode(sub, (*path, _escape(key)), arrays)])
        return {"dict": items}
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return {kind: [_encode(sub, (*path, str(i)), arrays) for i, sub in enumerate(tree)]}
    name = "/".join(path)
    if isinstance(tree, np.ndarray):
        kind = "array"
    elif isinstance(tree, np.generic):
        kind = "numpy"
    elif type(tree) in _PY_SCALARS.values():  # exact types: a bool is not saved as an int
        kind = type(tree).__name__
    else:
        raise TypeError(f"save: {name or '<root>'!r} has type {type(tree).__name__}; leaves must be np.ndarray, "
                        "NumPy scalars or Python bool/int/float/complex/str")
    try:
        array = np.asarray(tree, dtype=np.int64) if kind == "int" else np.asarray(tree)
    except OverflowError:
        raise ValueError(f"save: {name or '<root>'!r} = {tree!r} does not fit in int64") from None
    if array.dtype.hasobject:
        raise TypeError(f"save: {name or '<root>'!r} is an object array (dtype {array.dtype}); "
                        "object arrays need pickle and are not supported")
    arrays[name] = array
    return {"leaf": name, "type": kind}


def save(path: str | os.PathLike, params: Any, *, compress: bool = False) -> None:
    """Writes ``params`` (a nested dict/list/tuple of arrays and scalars; ``None`` allowed) to ``path``.

    ``path``: ``str`` or ``pathlib.Path``, written exactly as given (no ``.npz`` appended), atomically.
    ``compress=True`` deflates the members (smaller, slower). Dict subclasses are saved as dicts and
    namedtuples as tuples. Errors, raised before anything is written and naming the leaf's path:
    TypeError for object arrays, non-``str`` dict keys and unsupported leaf types; ValueError for the
    reserved top-level key ``"__tree__"``, ints beyond int64 and keys that are not valid UTF-8. Strings
    are stored as NumPy unicode arrays (no pickle) and come back as ``str``.

    >>> save("ckpt.npz", {"conv1": {"w": np.zeros((8, 1, 3, 3), np.float32)}, "step": 100})
    """
    check_path("save", "path", path)
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(params, (), arrays)
    arrays[TREE] = np.frombuffer(json.dumps(tree).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
            for name, array in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)


def _decode(node: Any, npz) -> Any:
    if node is None:
        return None
    if "leaf" in node:
        array, kind = npz[node["leaf"]], node["type"]
        if kind == "array":
            return array
        if kind == "numpy":
            return array[()]
        if kind in _PY_SCALARS:
            return _PY_SCALARS[kind](array[()])
        raise ValueError(f"unknown leaf type {kind!r}")
    (kind, children), = node.items()
    if kind == "dict":
        return {key: _decode(sub, npz) for key, sub in children}
    if kind in ("list", "tuple"):
        items = [_decode(sub, npz) for sub in children]
        return items if kind == "list" else tuple(items)
    raise ValueError(f"unknown node kind {kind!r}")


def load(path: str | os.PathLike) -> Any:
    """Reads a file written by :func:`save` and returns the same structure (see the module docstring).

    Arrays come back with their saved dtype and shape; Python and NumPy scalars as their own types.
    Errors: ``FileNotFoundError`` etc. as ``open`` raises them; ValueError naming the file if it is not
    such an ``.npz`` (truncated, random bytes, text, a plain ``.npy``/``.npz`` without ``__tree__``, or
    holding object arrays).

    >>> params = load("ckpt.npz")
    """
    check_path("load", "path", path)
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            npz = np.load(f, allow_pickle=False)
            if not hasattr(npz, "files"):  # np.load's other answer is an ndarray (a .npy file)
                raise ValueError("it holds a single .npy array, not an .npz archive")
            with npz:
                if TREE not in npz.files:
                    raise ValueError(f"it has no {TREE!r} entry, so it was not written by tinygrad_cnn.io.save")
                tree = json.loads(npz[TREE].tobytes().decode("utf-8"))
                return _decode(tree, npz)
        except (ValueError, TypeError, KeyError, AttributeError, EOFError, OSError, zipfile.BadZipFile,
                zlib.error) as e:
            raise ValueError(f"load: {path!r} is not a readable tinygrad_cnn .npz file: {e}") from e
