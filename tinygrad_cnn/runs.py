"""A training run on disk: the directory ``train`` writes, and the checkpoint inside it.

    runs/20261201-230042/
        params.npz     {"params", "state", "meta"} (tc.io format): the last completed epoch
        metrics.json   what train measured; curves.png, phase.png (ising)

``evaluate`` and ``predict`` accept the run directory or the ``params.npz`` inside it.
"""

from __future__ import annotations

import os

from . import io

__all__ = ["CHECKPOINT", "checkpoint_path", "load_run"]

CHECKPOINT = "params.npz"


def checkpoint_path(run: str | os.PathLike) -> str:
    """The checkpoint of ``run``: ``run/params.npz`` for a directory, else ``run`` itself.
    ``FileNotFoundError`` naming what was looked for."""
    run = os.fspath(run)
    path = os.path.join(run, CHECKPOINT) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        where = f"{run} has no {CHECKPOINT}" if os.path.isdir(run) else f"no such file or directory: {run}"
        raise FileNotFoundError(f"{where} (give a run directory written by 'train', or its {CHECKPOINT})")
    return path


def load_run(run: str | os.PathLike) -> dict:
    """The checkpoint ``{"params", "state", "meta"}`` of a run directory or params file; ``ValueError``
    when the file is not one ``train`` wrote."""
    path = checkpoint_path(run)
    saved = io.load(path)
    if not isinstance(saved, dict) or not {"params", "state", "meta"} <= set(saved):
        raise ValueError(f"{path} is not a checkpoint written by 'train' (it needs params, state and meta)")
    return saved
