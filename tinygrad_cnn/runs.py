"""A training run on disk: the directory ``train`` writes, and the checkpoint inside it.

    runs/20261201-230042/
        params.npz     {"params", "state", "meta"} (tc.io format): the last completed epoch
        metrics.json   what train measured; curves.png, phase.png (ising)
        resume.npz     only while the run is interrupted: the training state ``train --resume`` continues

``evaluate`` and ``predict`` accept the run directory or the ``params.npz`` inside it.
"""

from __future__ import annotations

import os

from . import io

__all__ = ["CHECKPOINT", "RESUME", "checkpoint_path", "load_resume", "load_run"]

CHECKPOINT = "params.npz"
RESUME = "resume.npz"
RESUME_KEYS = {"params", "state", "opt_state", "resume", "meta", "args"}


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


def load_resume(run: str | os.PathLike) -> dict:
    """The training state an interrupted ``train`` left in the run directory ``run`` (``run/resume.npz``:
    params, state, opt_state, the position ``resume`` of ``training.Interrupted``, meta and the train
    options ``args``). ``FileNotFoundError`` saying why there is none; ``ValueError`` for a file that is
    not one."""
    run = os.fspath(run)
    if not os.path.isdir(run):
        raise FileNotFoundError(f"{run} is not a run directory (--resume takes the directory train wrote into)")
    path = os.path.join(run, RESUME)
    if not os.path.isfile(path):
        done = os.path.isfile(os.path.join(run, "metrics.json"))
        raise FileNotFoundError(f"{run} has no {RESUME}: " + ("the run finished, there is nothing to resume" if done
                                else "only an interrupted train writes one (Ctrl-C)"))
    saved = io.load(path)
    if not isinstance(saved, dict) or not RESUME_KEYS <= set(saved):
        raise ValueError(f"{path} is not the state of an interrupted train (it needs {', '.join(sorted(RESUME_KEYS))})")
    return saved
