"""The VectorStore port: collections of points with a dense and a sparse (BM25) vector."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Distance = Literal["Cosine", "Dot", "Euclid"]
FieldType = Literal["keyword", "tenant", "integer", "float", "bool"]

DENSE = "dense"
SPARSE = "bm25"


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


@dataclass
class PointRecord:
    id: str
    dense: list[float]
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(slots=True)
class StoredPoint:
    id: str
    payload: dict[str, Any]
    dense: list[float] | None = None
    sparse: SparseVec | None = None


@dataclass(slots=True)
class ScoredHit:
    """A search hit. `score` is the engine's raw score (for Euclid: a distance, lower is better).

    A lexical (BM25) hit also carries `dense_score`, the engine's dense score of the same
    point for the same query, so both signals can be fused for every candidate.
    """

    id: str
    score: float
    payload: dict[str, Any]
    dense_score: float | None = None


def stored_point(point_id: object, payload: dict[str, Any], vector: object) -> StoredPoint:
    """A StoredPoint from either client's record: `vector` is a name -> vector dict or None."""
    dense = sparse = None
    if isinstance(vector, dict):
        dense = vector.get(DENSE)
        raw = vector.get(SPARSE)
        if raw is not None:
            sparse = SparseVec(list(raw.indices), list(raw.values))
    return StoredPoint(str(point_id), payload, dense, sparse)


def scored_hit(point_id: object, score: float, payload: dict[str, Any]) -> ScoredHit:
    return ScoredHit(str(point_id), float(score), payload)


def complete_sparse_hits(
    dense_hits: Sequence[ScoredHit],
    sparse_hits: Sequence[ScoredHit],
    fetch: Callable[[list[str]], dict[str, tuple[float, dict[str, Any]]]],
) -> list[ScoredHit]:
    """BM25 hits, queried without payload, given their `dense_score` and payload.

    Both come from the dense hit of the same point where the dense query found it too (most
    do), else from `fetch(ids)`: one id-restricted dense query for the rest, returning each
    one's dense score and payload. A hit that `fetch` no longer finds (deleted meanwhile) is
    dropped.
    """
    known = {h.id: h for h in dense_hits}
    missing = [h.id for h in sparse_hits if h.id not in known]
    fetched = fetch(missing) if missing else {}
    out = []
    for h in sparse_hits:
        same = known.get(h.id)
        if same is not None:
            h.dense_score, h.payload = same.score, same.payload
        elif h.id in fetched:
            h.dense_score, h.payload = fetched[h.id]
        else:
            continue
        out.append(h)
    return out


def scan(
    store: VectorStore,
    collection: str,
    flt: Filter | None = None,
    batch: int = 256,
    with_vectors: bool = False,
) -> Iterator[list[StoredPoint]]:
    """Every point of `collection` that matches `flt`, a page at a time, in id order."""
    offset: str | None = None
    while True:
        points, offset = store.page(collection, flt, offset, batch, with_vectors)
        if points:
            yield points
        if offset is None:
            return


@dataclass(frozen=True)
class Range:
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class Condition:
    """One field condition: exactly one of `match`, `any_of`, `range`, `is_null` is set."""

    key: str
    match: str | int | float | bool | None = None
    any_of: tuple[str | int, ...] | None = None
    range: Range | None = None
    is_null: bool = False


@dataclass(frozen=True)
class Filter:
    must: tuple[Condition | Filter, ...] = ()
    should: tuple[Condition | Filter, ...] = ()
    must_not: tuple[Condition | Filter, ...] = ()
    has_ids: tuple[str, ...] = ()

    def __and__(self, other: Filter | None) -> Filter:
        if other is None or other.is_empty():
            return self
        if self.is_empty():
            return other
        return Filter(must=(self, other))

    def is_empty(self) -> bool:
        return not (self.must or self.should or self.must_not or self.has_ids)


@dataclass(frozen=True)
class OrderedScroll:
    """One scroll of a batch (`VectorStore.scroll_many`): the first `limit` points that
    match `filter`, in the order of the integer field `order_by`."""

    filter: Filter | None
    order_by: str
    descending: bool = False
    limit: int = 1


@dataclass
class CollectionSpec:
    name: str
    dimension: int
    distance: Distance = "Cosine"
    indexes: Mapping[str, FieldType] = field(default_factory=dict)


class VectorStore(Protocol):
    """What the memory layer needs from a vector database. Every write is durable on return."""

    name: str
    parallel_queries: int
    """How many queries threads of one process usefully run at once: 1 for a store whose
    calls hold the GIL, more for one that waits on the network."""

    def ensure_collection(self, spec: CollectionSpec) -> None: ...

    def upsert(
        self, collection: str, points: Sequence[PointRecord], insert_only: bool = False
    ) -> None:
        """Write the points; with `insert_only`, a point whose id exists is left as it is
        (atomically: of concurrent inserts of one id, exactly one is stored)."""
        ...

    def retrieve(
        self, collection: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredPoint]: ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def delete_by_filter(self, collection: str, flt: Filter) -> None: ...

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Set scalar fields on the points of `ids` that exist; unknown ids are skipped."""
        ...

    def hybrid_search(
        self,
        collection: str,
        dense: list[float],
        sparse: SparseVec,
        limit: int,
        flt: Filter | None,
        payload_keys: Sequence[str] | None = None,
    ) -> tuple[list[ScoredHit], list[ScoredHit]]:
        """Dense hits and BM25 hits (each best first, BM25 hits with `dense_score`), with
        only `payload_keys` of each payload when given (all of it otherwise)."""
        ...

    def scroll(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        order_by: str | None = None,
        with_vectors: bool = False,
        descending: bool = False,
    ) -> list[StoredPoint]: ...

    def scroll_many(
        self, collection: str, scrolls: Sequence[OrderedScroll]
    ) -> list[list[StoredPoint]]:
        """Several ordered scrolls in one call (one round trip to a server), with payload;
        the results in the order of `scrolls`."""
        ...

    def page(
        self,
        collection: str,
        flt: Filter | None,
        offset: str | None,
        limit: int,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], str | None]:
        """Up to `limit` points matching `flt`, in id order from the id `offset` on (from
        the first when None), and the id the next page starts at (None after the last)."""
        ...

    def count(self, collection: str, flt: Filter | None = None) -> int: ...

    def ping(self) -> None:
        """Raise if the store cannot answer."""
        ...

    def close(self) -> None: ...
