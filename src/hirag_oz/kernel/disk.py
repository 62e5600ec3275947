"""Writes refused before the data directory's disk is full, reads going on.

The embedded store maps its files into memory: a write that meets a full disk there is a
SIGBUS, which ends the process. So every write of the store and of the document index first
asks `DiskGuard.check`, which refuses it while less than a reserve is free. The reserve is
far larger than one request can write, so the checks need no lock.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from hirag_oz.errors import InsufficientStorageError

_MB = 1024 * 1024


class DiskGuard:
    def __init__(self, path: Path, min_free_mb: int) -> None:
        self.path = Path(path)
        self.min_free_bytes = min_free_mb * _MB

    def free_bytes(self) -> int | None:
        """Bytes free for this process on the disk of `path` (None if it cannot tell)."""
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def check(self) -> None:
        """Raise `InsufficientStorageError` while the disk has less than the reserve free."""
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free is not None and free < self.min_free_bytes:
            raise self.error(free)

    def error(self, free: int | None) -> InsufficientStorageError:
        min_mb = self.min_free_bytes // _MB
        state = "is full" if free is None else f"has {free // _MB} MB free"
        return InsufficientStorageError(
            f"the data directory's disk {state}, under the {min_mb} MB kept free "
            "(server.min_free_disk_mb): writes are refused until space is freed; reads go on",
            {"free_mb": None if free is None else free // _MB, "min_free_mb": min_mb},
        )


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
