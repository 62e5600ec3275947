"""A gate on a store's writes, closed while a backup reads a point-in-time copy.

Every write of the service goes through `GatedStore`, and holds the gate open (shared) for
the one store call. `WriteGate.closed()` waits for the writes under way to end, stops new
ones until it is left, and lets reads and searches go on. A backup taken inside it is the
state a crash at that instant would have left: each write wholly in or out, which the
recovery the service runs at start (crash marks, unfinished jobs) already completes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hirag_oz.store.base import (
    CollectionSpec,
    Filter,
    OrderedScroll,
    PointRecord,
    ScoredHit,
    SparseVec,
    StoredPoint,
    VectorStore,
)


class WriteGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._writers = 0
        self._closing = 0

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._closing)
            self._writers += 1
        try:
            yield
        finally:
            with self._cond:
                self._writers -= 1
                self._cond.notify_all()

    @contextmanager
    def closed(self) -> Iterator[None]:
        """No write runs inside: the ones under way end first, new ones wait. A closing
        waits for none to be open, then holds every other out (one backup at a time)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._closing)
            self._closing += 1
            self._cond.wait_for(lambda: not self._writers)
        try:
            yield
        finally:
            with self._cond:
                self._closing -= 1
                self._cond.notify_all()


class GatedStore:
    """The store, each write holding `gate` open for its one call."""

    def __init__(self, inner: VectorStore, gate: WriteGate) -> None:
        self.inner = inner
        self.gate = gate
        self.name = inner.name
        self.parallel_queries = inner.parallel_queries

    def __getattr__(self, name: str) -> Any:
        # What an adapter offers beyond the port (a breaker, its root) stays reachable.
        return getattr(self.inner, name)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        with self.gate.write():
            self.inner.ensure_collection(spec)

    def upsert(
        self, collection: str, points: Sequence[PointRecord], insert_only: bool = False
    ) -> None:
        with self.gate.write():
            self.inner.upsert(collection, points, insert_only)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        with self.gate.write():
            self.inner.delete(collection, ids)

    def delete_by_filter(self, collection: str, flt: Filter) -> None:
        with self.gate.write():
            self.inner.delete_by_filter(collection, flt)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        with self.gate.write():
            self.inner.set_payload(collection, ids, payload)

    def retrieve(
        self, collection: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        return self.inner.retrieve(collection, ids, with_vectors)

    def hybrid_search(
        self,
        collection: str,
        dense: list[float],
        sparse: SparseVec,
        limit: int,
        flt: Filter | None,
        payload_keys: Sequence[str] | None = None,
    ) -> tuple[list[ScoredHit], list[ScoredHit]]:
        return self.inner.hybrid_search(collection, dense, sparse, limit, flt, payload_keys)

    def scroll(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        order_by: str | None = None,
        with_vectors: bool = False,
        descending: bool = False,
    ) -> list[StoredPoint]:
        return self.inner.scroll(collection, flt, limit, order_by, with_vectors, descending)

    def scroll_many(
        self, collection: str, scrolls: Sequence[OrderedScroll]
    ) -> list[list[StoredPoint]]:
        return self.inner.scroll_many(collection, scrolls)

    def page(
        self,
        collection: str,
        flt: Filter | None,
        offset: str | None,
        limit: int,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], str | None]:
        return self.inner.page(collection, flt, offset, limit, with_vectors)

    def count(self, collection: str, flt: Filter | None = None) -> int:
        return self.inner.count(collection, flt)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()
