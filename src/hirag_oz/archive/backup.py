"""Backups of a running service, and restore.

A backup is a folder `<backup dir>/<UTC time>/` holding `dump.jsonl.gz` (the whole dump,
vectors included) and `manifest.json`, written last: a folder without a manifest is a
backup that did not finish, and is removed by the next one. The dump is written with the
service's write gate closed (and compressed once it is open again): searches, reads and
prompts go on, writes wait until it is written, and what it holds is the state at one instant (each write wholly in or out, as a
crash at that instant would leave it, and completed the same way at start).

Retention: after each backup, only the `keep` newest are kept (`[backup] keep`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hirag_oz.archive.export import export, open_service
from hirag_oz.archive.load import ImportReport, import_dump
from hirag_oz.archive.move import collections
from hirag_oz.errors import ConflictError, InsufficientStorageError, NotFoundError
from hirag_oz.kernel.disk import is_disk_full
from hirag_oz.kernel.scope import DEFAULT_TENANT

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

DUMP = "dump.jsonl.gz"
MANIFEST = "manifest.json"
_PARTIAL = ".partial-"


@dataclass(frozen=True)
class Backup:
    name: str
    path: Path
    created_at: float
    points: dict[str, int]
    files: int
    bytes: int
    sha256: str
    writes_paused_ms: float
    dump_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "created_at": self.created_at,
            "points": self.points,
            "files": self.files,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "writes_paused_ms": self.writes_paused_ms,
            "dump_id": self.dump_id,
        }

    @classmethod
    def read(cls, folder: Path) -> Backup:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return cls(
            data["name"],
            folder,
            float(data["created_at"]),
            dict(data["points"]),
            int(data["files"]),
            int(data["bytes"]),
            str(data["sha256"]),
            float(data.get("writes_paused_ms", 0.0)),
            str(data["dump_id"]),
        )


def backup_dir(hirag: Hirag) -> Path:
    """`[backup] dir` (a tenant's: a folder of its own in it), or the data directory's
    `backups` (a tenant's data directory is its own)."""
    configured = hirag.settings.backup.dir
    if configured is None:
        return Path(hirag.settings.server.data_dir) / "backups"
    if hirag.tenant_name != DEFAULT_TENANT:
        return Path(configured) / "tenants" / hirag.tenant_name
    return Path(configured)


def create(hirag: Hirag) -> Backup:
    """A backup of the service as it is now, then the old ones beyond `keep` removed."""
    root = backup_dir(hirag)
    root.mkdir(parents=True, exist_ok=True)
    hirag.disk.check()
    open_service(hirag)
    now = datetime.now(UTC)
    name = now.strftime("%Y%m%dT%H%M%S.%fZ")
    partial = root / f"{_PARTIAL}{name}"
    partial.mkdir()
    try:
        plain = partial / "dump.jsonl"
        with hirag.gate.closed():
            started = time.perf_counter()
            report = export(hirag, plain, vectors=True)
            paused_ms = (time.perf_counter() - started) * 1000
        # Compressed after the writes go on again: compression is most of an export's time.
        with plain.open("rb") as src, gzip.open(partial / DUMP, "wb", compresslevel=1) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        plain.unlink()
        made = Backup(
            name,
            root / name,
            now.timestamp(),
            report.points,
            report.files,
            (partial / DUMP).stat().st_size,
            _sha256(partial / DUMP),
            round(paused_ms, 1),
            report.dump_id,
        )
        manifest = made.to_dict()
        manifest.pop("path")
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        partial.rename(made.path)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if is_disk_full(exc):
            raise InsufficientStorageError(
                f"the backup did not fit on the disk of {root}", {"backup_dir": str(root)}
            ) from None
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    prune(hirag)
    return made


def listed(hirag: Hirag) -> list[Backup]:
    """The finished backups, newest first."""
    root = backup_dir(hirag)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and (folder / MANIFEST).is_file():
            try:
                found.append(Backup.read(folder))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return sorted(found, key=lambda b: b.created_at, reverse=True)


def prune(hirag: Hirag) -> list[str]:
    """Remove the backups beyond the `keep` newest, and any that did not finish."""
    root = backup_dir(hirag)
    removed = []
    for old in listed(hirag)[hirag.settings.backup.keep :]:
        shutil.rmtree(old.path, ignore_errors=True)
        removed.append(old.name)
    for partial in root.glob(f"{_PARTIAL}*"):
        shutil.rmtree(partial, ignore_errors=True)
    return removed


def find(hirag: Hirag, name_or_path: str | Path) -> Backup:
    """A backup by its name (in the backup folder) or by its folder's path."""
    folder = Path(name_or_path)
    if not (folder / MANIFEST).is_file():
        folder = backup_dir(hirag) / str(name_or_path)
    if not (folder / MANIFEST).is_file() or not (folder / DUMP).is_file():
        raise NotFoundError("no such backup", {"backup": str(name_or_path)[:200]})
    return Backup.read(folder)


def restore(hirag: Hirag, backup: Backup) -> ImportReport:
    """Put `backup` into `hirag`, which must hold nothing yet (or a restore of the same
    backup that a crash cut short, which this one resumes); the dump is checked first."""
    if _sha256(backup.path / DUMP) != backup.sha256:
        raise ConflictError(
            "the backup's dump does not match its manifest (sha256): it was changed or damaged",
            {"backup": backup.name},
        )
    open_service(hirag)
    prefix = f"{hirag.settings.vector_db.collection_prefix}_format"
    held = sum(hirag.store.count(name) for name in collections(hirag) if name != prefix)
    vision = Path(hirag.settings.server.data_dir) / "vision"
    files = any(p.is_file() for p in vision.rglob("*")) if vision.is_dir() else False
    resuming = (
        Path(hirag.settings.server.data_dir) / "imports" / f"{backup.dump_id}.json"
    ).exists()
    if (held or files) and not resuming:
        raise ConflictError(
            "restore into an empty data directory (or collection prefix): this one holds "
            f"{held} stored items{' and document files' if files else ''}",
            {"items": held, "files": files},
        )
    return import_dump(hirag, backup.path / DUMP)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
