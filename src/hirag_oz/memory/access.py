"""Access counts: retrieval increments `access_count`, written to the store in batches.

Why batches: writing each search's increments as it returned (a read and one payload write per
distinct new count, per level) was about a sixth of the time a search held the GIL under
concurrent load. Increments now collect in memory and are written at most every
`flush_interval` seconds, by the search that finds the interval over, by the maintenance task,
and on close. Every read through this class adds the increments not yet written, so counts are
exact within the process. A hard crash loses the increments not yet written; an interval of 0
writes on every search.

A count is written as the value read when the point was first counted plus the accesses since:
every other write of `access_count` in this process goes through `settling()`, so no read is
needed at write time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hirag_oz.errors import InsufficientStorageError
from hirag_oz.store.base import StoredPoint, VectorStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    collection: str
    stored: int  # access_count in the store when the point was first counted
    added: int


class AccessCounts:
    """Pending `access_count` increments by point id."""

    def __init__(
        self,
        store: VectorStore,
        flush_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = flush_interval
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        # Held while stored counts are read or written, so no reader sees a count that has
        # been written and is still pending (counted twice) or neither (counted not at all).
        self._lock = threading.Lock()
        self._last_flush = clock()

    def pending(self, point_id: str) -> int:
        """Accesses of `point_id` not yet in the store (a lock-free read, for ranking)."""
        entry = self._pending.get(point_id)
        return 0 if entry is None else entry.added

    def read(
        self, collections: Sequence[str], ids: Sequence[str], with_vectors: bool = False
    ) -> list[list[StoredPoint]]:
        """The points of each collection as stored, with the pending accesses added to
        `access_count`. All are read under one hold of the lock, which every move between
        collections takes too: a point moving meanwhile is found once, never missed."""
        with self._lock:
            found = [self._store.retrieve(c, ids, with_vectors) for c in collections]
            for points in found:
                for p in points:
                    p.payload["access_count"] = _count(p) + self.pending(p.id)
            return found

    def record(self, by_collection: Mapping[str, Sequence[str]]) -> dict[str, StoredPoint]:
        """Count one access of each id; returns the points as stored now, with the new counts."""
        found: dict[str, StoredPoint] = {}
        with self._lock:
            for collection, ids in by_collection.items():
                for p in self._store.retrieve(collection, ids):
                    entry = self._pending.get(p.id)
                    if entry is None:
                        entry = self._pending[p.id] = _Pending(collection, _count(p), 0)
                    entry.added += 1
                    p.payload["access_count"] = entry.stored + entry.added
                    found[p.id] = p
        return found

    def flush_if_due(self) -> None:
        """Write the pending counts when the flush interval is over; a failure is logged,
        and what was not written waits for the next flush."""
        if self._clock() - self._last_flush < self._interval:
            return
        try:
            self.flush()
        except InsufficientStorageError as exc:  # reads go on while the disk is full
            logger.warning("access counts wait for disk space: %s", exc.message)
        except Exception:  # the search succeeded; its accesses wait for the next flush
            logger.exception("writing access counts failed")

    @contextmanager
    def settling(self) -> Iterator[Callable[[StoredPoint], dict[str, Any]]]:
        """For a caller that rewrites, moves or deletes points: counting and every other
        such caller wait, and `settle(point)` returns the point's payload with its pending
        accesses added and no longer pending, so the caller's write carries them (or, for a
        delete, drops them).

        The caller must read the points it rewrites inside this block: a copy read before
        it may predate a write made meanwhile (an update, a move, a delete, a flush of
        counts), and writing it back would undo that write."""

        def settle(point: StoredPoint) -> dict[str, Any]:
            entry = self._pending.pop(point.id, None)
            added = 0 if entry is None else entry.added
            return {**point.payload, "access_count": _count(point) + added}

        with self._lock:
            yield settle

    def flush(self) -> int:
        """Write every pending count; returns how many counts were handed to the store.

        A point deleted since it was counted is skipped by the store. When the store fails,
        what was not written stays pending and the error is raised.
        """
        with self._lock:
            self._last_flush = self._clock()
            groups: dict[tuple[str, int], list[str]] = {}
            for point_id, entry in self._pending.items():
                groups.setdefault((entry.collection, entry.stored + entry.added), []).append(
                    point_id
                )
            written = 0
            for (collection, value), ids in groups.items():
                self._store.set_payload(collection, ids, {"access_count": value})
                for point_id in ids:
                    del self._pending[point_id]
                written += len(ids)
            return written


def _count(point: StoredPoint) -> int:
    value = point.payload.get("access_count")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
