"""Files replaced whole: after a crash a reader finds the old content or the new."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TMP_PREFIX = ".tmp-"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: a reader, or a process started after a
    crash, finds the old content or the new, never part of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_writes(folder: Path) -> int:
    """Delete what `write_atomic` left in `folder` when a crash stopped it; returns how many."""
    removed = 0
    for leftover in folder.glob(f"{_TMP_PREFIX}*.tmp"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
