"""Writing files so that nothing the user saved is ever lost or half-written.

Every file this package writes (checkpoints, metrics, plots, graphs, data caches) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same directory, which is flushed to
disk and then renamed over the target in one step. A crash or an exception mid-write leaves the old
file untouched and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once (changing it is process-wide): new files get the usual 0666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_write("out.json", "w") as f: f.write(...)``: ``path`` appears complete or not at all.

    The file keeps an existing file's permissions, else gets 0666 & ~umask (not mkstemp's 0600).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)[:64]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mode_bits = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_UMASK
        os.chmod(tmp, mode_bits)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
