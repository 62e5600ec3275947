"""Move: every collection of one store copied into another, vectors and all, then verified.

The copy goes a page at a time in id order and writes only what the target lacks or holds
differently, so a move that stopped part way is resumed by running it again. The check at
the end compares each collection's count, and the payload and vectors of a sample of points
spread over it. The documents' files stay in the data directory, which both stores share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hirag_oz.archive import dump
from hirag_oz.archive.export import open_service
from hirag_oz.store.base import PointRecord, SparseVec, StoredPoint, VectorStore, scan

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

Progress = Callable[[int], None]
"""Called with how many more points were read."""

_TOLERANCE = 1e-5


@dataclass
class MoveReport:
    copied: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per collection, (source, target) counts after the copy."""
    sampled: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {
            "copied": self.copied,
            "unchanged": self.unchanged,
            "counts": {k: list(v) for k, v in self.counts.items()},
            "sampled": self.sampled,
            "mismatches": self.mismatches,
            "verified": self.verified,
        }


def collections(hirag: Hirag) -> list[str]:
    """Every collection of the service, its format record's included."""
    prefix = hirag.settings.vector_db.collection_prefix
    return [f"{prefix}_format", *(dump.collection(prefix, k) for k in dump.KINDS)]


def total(hirag: Hirag) -> int:
    """Points in every tenant's collections."""
    found = 0
    for view in [hirag, *(hirag.tenant(t) for t in hirag.known_tenants())]:
        open_service(view)
        found += sum(view.store.count(name) for name in collections(view))
    return found


def views(source: Hirag, target: Hirag) -> list[tuple[Hirag, Hirag]]:
    """The default tenant's service and each known tenant's, of both sides, opened."""
    pairs = [(source, target)]
    pairs += [(source.tenant(t), target.tenant(t)) for t in source.known_tenants()]
    for pair in pairs:
        open_service(pair[0])
        open_service(pair[1])
    return pairs


def move(
    source: Hirag, target: Hirag, *, sample: int = 200, progress: Progress | None = None
) -> MoveReport:
    """Copy every collection of `source`'s store (every tenant's) into `target`'s, then
    verify."""
    names = [name for view, _ in views(source, target) for name in collections(view)]
    report = MoveReport()
    for name in names:
        copied = unchanged = 0
        for points in scan(source.store, name, None, 256, with_vectors=True):
            found = {p.id: p for p in target.store.retrieve(name, [p.id for p in points], True)}
            fresh = [p for p in points if not _same(p, found.get(p.id))]
            if fresh:
                target.store.upsert(name, [_record(p) for p in fresh])
            copied += len(fresh)
            unchanged += len(points) - len(fresh)
            if progress is not None:
                progress(len(points))
        report.copied[name], report.unchanged[name] = copied, unchanged
    verify(source.store, target.store, names, sample, report)
    return report


def verify(
    source: VectorStore, target: VectorStore, names: list[str], sample: int, report: MoveReport
) -> None:
    """Counts per collection, and a sample of points spread over each compared whole."""
    for name in names:
        counts = (source.count(name), target.count(name))
        report.counts[name] = counts
        if counts[0] != counts[1]:
            report.mismatches.append(
                f"{name}: {counts[0]} points in the source, {counts[1]} in the target"
            )
        step = max(1, math.ceil(counts[0] / max(1, sample // len(names))))
        index = 0
        for points in scan(source, name, None, 256, with_vectors=True):
            chosen = [p for i, p in enumerate(points, index) if i % step == 0]
            index += len(points)
            if not chosen:
                continue
            found = {p.id: p for p in target.retrieve(name, [p.id for p in chosen], True)}
            for p in chosen:
                report.sampled += 1
                if not _same(p, found.get(p.id)):
                    report.mismatches.append(f"{name}: point {p.id} differs in the target")


def _same(a: StoredPoint, b: StoredPoint | None) -> bool:
    return (
        b is not None
        and a.payload == b.payload
        and _close(a.dense, b.dense)
        and _sparse(a.sparse) == _sparse(b.sparse)
    )


def _close(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(abs(x - y) <= _TOLERANCE for x, y in zip(a, b, strict=True))


def _sparse(vec: SparseVec | None) -> dict[int, float]:
    if vec is None:
        return {}
    return {i: round(v, 5) for i, v in zip(vec.indices, vec.values, strict=True)}


def _record(p: StoredPoint) -> PointRecord:
    assert p.dense is not None, f"point {p.id} has no dense vector"
    return PointRecord(p.id, p.dense, p.sparse or SparseVec([], []), p.payload)
