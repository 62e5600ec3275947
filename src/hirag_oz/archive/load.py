"""Import: a dump put back, ids kept, idempotent and resumable.

Points are written a batch at a time; a point already stored with the same payload is left
as it is (counted `unchanged`), so importing a dump twice changes nothing the second time.
After each batch the import records how far it got in `<data_dir>/imports/<dump_id>.json`:
an import that a crash cut short resumes from there when run again with the same dump (and
since writes are idempotent, the batch under way at the crash is simply written again).

Vectors are kept when the dump has them and was made with the same embedding model; else
each point is embedded again from the text its kind embeds. A line that cannot be imported
is skipped and reported with its line number and reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hirag_oz.archive import dump
from hirag_oz.archive.export import open_service
from hirag_oz.errors import HiragError, ValidationError
from hirag_oz.kernel.files import remove_partial_writes, write_atomic
from hirag_oz.store.base import PointRecord, SparseVec, StoredPoint
from hirag_oz.store.sparse import Bm25Encoder

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

logger = logging.getLogger(__name__)

BATCH = 128
MAX_SKIPS_LISTED = 50
NO_TERMS = SparseVec([], [])

Progress = Callable[[int], None]
"""Called with how many more lines were read."""


@dataclass
class ImportReport:
    dump_id: str = ""
    written: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    files_written: int = 0
    files_unchanged: int = 0
    embedded: int = 0
    skipped: int = 0
    skips: list[dict[str, Any]] = field(default_factory=list)
    resumed_at_line: int = 0
    complete: bool = False

    def skip(self, line: int, reason: str) -> None:
        self.skipped += 1
        if len(self.skips) < MAX_SKIPS_LISTED:
            self.skips.append({"line": line, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "dump_id": self.dump_id,
            "written": self.written,
            "unchanged": self.unchanged,
            "files_written": self.files_written,
            "files_unchanged": self.files_unchanged,
            "embedded": self.embedded,
            "skipped": self.skipped,
            "skips": self.skips,
            "resumed_at_line": self.resumed_at_line,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def import_dump(hirag: Hirag, source: Path, progress: Progress | None = None) -> ImportReport:
    """Import the dump at `source` into the service's store and data directory."""
    with dump.open_dump(source) as stream:
        return Importer(hirag, progress).run(stream)


class Importer:
    def __init__(self, hirag: Hirag, progress: Progress | None = None) -> None:
        self.hirag = hirag
        self.progress = progress
        self.prefix = hirag.settings.vector_db.collection_prefix
        self.data_dir = Path(hirag.settings.server.data_dir)
        self.bm25 = Bm25Encoder()
        self.pending: list[tuple[int, dump.Kind, StoredPoint]] = []
        self.embed_again = True
        self.max_seq = 0
        self.files_since_save = 0

    def run(self, stream: IO[bytes]) -> ImportReport:
        read = dump.lines(stream)
        first = next(read, None)
        if not isinstance(first, dict):
            raise ValidationError("the dump is empty or its first line is not JSON", {})
        head = dump.check_header(first)
        open_service(self.hirag)
        embedder = self.hirag.embedder
        model = head["model"]
        self.embed_again = not head.get("vectors") or (
            model["name"] != embedder.model_name or model["dimension"] != embedder.dimension
        )
        report = self._resume(head["dump_id"])
        number = 1
        for line in read:
            number += 1
            if self.progress is not None:
                self.progress(1)
            if number <= report.resumed_at_line:
                continue
            if isinstance(line, dump.BadLine):
                report.skip(number, str(line))
                continue
            kind = line.get("type")
            try:
                if kind == "point":
                    self.pending.append((number, *dump.check_point(line)))
                    if len(self.pending) >= BATCH:
                        self._flush(report, number)
                elif kind == "file":
                    self._file(report, *dump.check_file(line))
                    self.files_since_save += 1
                    if not self.pending and self.files_since_save >= 16:
                        self._flush(report, number)
                elif kind == "end":
                    report.complete = True
                else:
                    raise dump.BadLine(f"unknown line type {str(kind)[:40]!r}")
            except dump.BadLine as bad:
                report.skip(number, str(bad))
        self._flush(report, number)
        if self.max_seq:
            self.hirag.contexts.observe_seq(self.max_seq)
        if report.complete:
            self._checkpoint_path(report.dump_id).unlink(missing_ok=True)
        else:
            report.skip(number, "the dump ends before its end line: it was cut short")
        return report

    # ------------------------------------------------------------------------- points
    def _flush(self, report: ImportReport, line: int) -> None:
        batch, self.pending = self.pending, []
        by_kind: dict[str, list[tuple[int, dump.Kind, StoredPoint]]] = {}
        for item in batch:
            by_kind.setdefault(item[1].suffix, []).append(item)
        for suffix, items in by_kind.items():
            self._write(report, suffix, items)
        self._save(report, line)

    def _write(
        self,
        report: ImportReport,
        suffix: str,
        items: list[tuple[int, dump.Kind, StoredPoint]],
    ) -> None:
        kind = items[0][1]
        name = dump.collection(self.prefix, kind)
        latest = {p.id: (number, p) for number, _, p in items}  # the last line of an id wins
        stored = {p.id: p.payload for p in self.hirag.store.retrieve(name, list(latest))}
        fresh = [(n, p) for n, p in latest.values() if stored.get(p.id) != _normal(p.payload)]
        report.unchanged[suffix] = report.unchanged.get(suffix, 0) + len(latest) - len(fresh)
        if not fresh:
            return
        records = self._records(report, kind, [p for _, p in fresh])
        try:
            self.hirag.store.upsert(name, records)
            written = len(records)
        except HiragError:
            raise  # the store is down or the disk full: the import stops, to be resumed
        except Exception:
            # A value the store cannot hold (a number out of its range, say): the others
            # are written, one at a time, and that one is reported.
            written = 0
            for (number, _), record in zip(fresh, records, strict=True):
                try:
                    self.hirag.store.upsert(name, [record])
                    written += 1
                except HiragError:
                    raise
                except Exception as exc:
                    report.skip(number, f"the store refused the {kind.name}: {str(exc)[:120]}")
        report.written[suffix] = report.written.get(suffix, 0) + written
        for _, p in fresh:
            seq = p.payload.get("seq")
            if kind.name == "context" and isinstance(seq, int) and seq > self.max_seq:
                self.max_seq = seq

    def _records(
        self, report: ImportReport, kind: dump.Kind, points: list[StoredPoint]
    ) -> list[PointRecord]:
        dimension = self.hirag.embedder.dimension
        unit = [1.0] + [0.0] * (dimension - 1)
        keep = [
            not self.embed_again and p.dense is not None and len(p.dense) == dimension
            for p in points
        ]
        texts = (
            [kind.text(p.payload) for p, kept in zip(points, keep, strict=True) if not kept]
            if kind.text is not None
            else []
        )
        vectors = iter(self.hirag.embedder.embed(texts) if texts else [])
        report.embedded += len(texts)
        records = []
        for p, kept in zip(points, keep, strict=True):
            if kind.text is None:
                dense = unit
            elif kept:
                dense = p.dense  # type: ignore[assignment]
            else:
                dense = next(vectors)
            if p.sparse is not None and not self.embed_again:
                sparse = p.sparse
            elif kind.terms is not None:
                sparse = self.bm25.document(kind.terms(p.payload))
            else:
                sparse = NO_TERMS
            records.append(PointRecord(p.id, dense, sparse, p.payload))
        return records

    # -------------------------------------------------------------------------- files
    def _file(self, report: ImportReport, relative: str, data: bytes) -> None:
        path = self.data_dir / relative
        try:
            if path.read_bytes() == data:
                report.files_unchanged += 1
                return
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        self.hirag.disk.check()
        with self.hirag.gate.write():
            write_atomic(path, data)
        report.files_written += 1

    # --------------------------------------------------------------------- checkpoint
    def _checkpoint_path(self, dump_id: str) -> Path:
        safe = "".join(c for c in dump_id if c.isalnum() or c == "-")[:64] or "dump"
        return self.data_dir / "imports" / f"{safe}.json"

    def _resume(self, dump_id: str) -> ImportReport:
        path = self._checkpoint_path(dump_id)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            report = ImportReport.from_dict(saved)
        except (OSError, ValueError, TypeError):
            return ImportReport(dump_id=dump_id)
        logger.info("resuming the import of dump %s after line %d", dump_id, report.resumed_at_line)
        report.complete = False
        return report

    def _save(self, report: ImportReport, line: int) -> None:
        self.files_since_save = 0
        path = self._checkpoint_path(report.dump_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(path.parent)
        saved = report.to_dict() | {"resumed_at_line": line}
        write_atomic(path, json.dumps(saved).encode())


def _normal(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as the store gives it back (JSON's view of numbers and keys)."""
    return json.loads(json.dumps(payload))  # type: ignore[no-any-return]
