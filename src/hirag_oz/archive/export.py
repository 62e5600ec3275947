"""Export: the dump of everything of a scope (all of it, or one agent's), as a stream of lines."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hirag_oz.archive import dump
from hirag_oz.kernel.ids import check_agent_id
from hirag_oz.store.base import Condition, Filter, scan

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

Progress = Callable[[int], None]
"""Called with how many more points or files were written."""


@dataclass
class ExportReport:
    dump_id: str
    points: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "dump_id": self.dump_id,
            "points": self.points,
            "files": self.files,
            "bytes": self.bytes,
        }


def open_service(hirag: Hirag) -> None:
    """Open every collection of the service (created empty where missing)."""
    hirag.contexts, hirag.facts, hirag.sessions, hirag.documents  # noqa: B018


def totals(hirag: Hirag, agent_id: str | None = None) -> int:
    """How many points and files an export of the scope writes (for a progress bar)."""
    open_service(hirag)
    prefix = hirag.settings.vector_db.collection_prefix
    flt = _scope(agent_id)
    points = sum(hirag.store.count(dump.collection(prefix, k), flt) for k in dump.KINDS)
    return points + sum(1 for _ in _files(hirag, agent_id))


def lines(
    hirag: Hirag,
    *,
    agent_id: str | None = None,
    vectors: bool = True,
    report: ExportReport | None = None,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The dump, line by line: points read a page at a time, files one at a time."""
    agent = check_agent_id(agent_id) if agent_id is not None else None
    open_service(hirag)
    report = report or ExportReport(str(uuid.uuid4()))
    fmt = hirag.data_format
    head = dump.header(
        report.dump_id,
        time.time(),
        agent,
        vectors,
        hirag.embedder.model_name,
        hirag.embedder.dimension,
        sorted(fmt.applied()) if fmt is not None else [],
    )
    yield _counted(report, dump.encode(head))
    prefix = hirag.settings.vector_db.collection_prefix
    flt = _scope(agent)
    for kind in dump.KINDS:
        written = 0
        for points in scan(hirag.store, dump.collection(prefix, kind), flt, 256, vectors):
            for point in points:
                yield _counted(report, dump.encode(dump.point_line(kind.suffix, point, vectors)))
            written += len(points)
            if progress is not None:
                progress(len(points))
        report.points[kind.suffix] = written
    for relative, path in _files(hirag, agent):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # removed since it was listed (a finished upload)
            continue
        yield _counted(report, dump.encode(dump.file_line(relative, data)))
        report.files += 1
        if progress is not None:
            progress(1)
    end = {"type": "end", "points": report.points, "files": report.files}
    yield _counted(report, dump.encode(end))


def export(
    hirag: Hirag,
    out: Path | BinaryIO,
    *,
    agent_id: str | None = None,
    vectors: bool = True,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the dump of the scope to `out` (a path: gzip when it ends in `.gz`)."""
    report = ExportReport(str(uuid.uuid4()))
    stream = lines(hirag, agent_id=agent_id, vectors=vectors, report=report, progress=progress)
    if not isinstance(out, Path):
        for line in stream:
            out.write(line)
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw:
        target: BinaryIO = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)  # type: ignore[assignment]
            if out.name.endswith(".gz")
            else raw
        )
        try:
            for line in stream:
                target.write(line)
        finally:
            if target is not raw:
                target.close()
    return report


def _counted(report: ExportReport, line: bytes) -> bytes:
    report.bytes += len(line)
    return line


def _scope(agent_id: str | None) -> Filter | None:
    return None if agent_id is None else Filter(must=(Condition("agent_id", match=agent_id),))


def _files(hirag: Hirag, agent_id: str | None) -> Iterator[tuple[str, Path]]:
    """(path relative to the data directory, path) of each file of the scope, in order."""
    data_dir = Path(hirag.settings.server.data_dir)
    root = data_dir / "vision"
    jobs = sorted((root / "jobs").glob("job_*.json"))
    docs = sorted((root / "docs").glob("*/*.json"))
    if agent_id is not None:
        jobs = [p for p in jobs if _agent_of(p) == agent_id]
        docs = [p for p in docs if _agent_of(p) == agent_id]
    doc_ids = {p.stem for p in docs}
    pages = sorted(
        p for p in (root / "pages").glob("*/*.png") if agent_id is None or p.parent.name in doc_ids
    )
    job_ids = {p.stem for p in jobs}
    uploads = sorted(p for p in (root / "uploads").glob("job_*.bin") if p.stem in job_ids)
    for path in [*jobs, *docs, *pages, *uploads]:
        yield path.relative_to(data_dir).as_posix(), path


def _agent_of(path: Path) -> str | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("agent_id")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None
