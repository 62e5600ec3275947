"""Qdrant Edge: Qdrant's engine in-process, one shard directory per collection, WAL on."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from hirag_oz.errors import ConfigurationError, ValidationError
from hirag_oz.kernel.disk import DiskGuard
from hirag_oz.store.base import (
    DENSE,
    SPARSE,
    CollectionSpec,
    Condition,
    Filter,
    OrderedScroll,
    PointRecord,
    ScoredHit,
    SparseVec,
    StoredPoint,
    complete_sparse_hits,
    scored_hit,
    stored_point,
)

logger = logging.getLogger(__name__)

_DISTANCES = {"Cosine": qe.Distance.Cosine, "Dot": qe.Distance.Dot, "Euclid": qe.Distance.Euclid}
_SCHEMAS: dict[str, Any] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}
# qdrant-edge-py 0.9 converts a Python bool in MatchValue to an integer, so a match on a
# stored boolean never succeeds. The adapter keeps a shadow copy of every boolean as 0/1
# under this key and matches booleans there; the key never leaves the adapter.
_BOOLS = "_bools"
_SPEC_FILE = "hirag-collection.json"


class _Shard:
    def __init__(self, shard: Any, spec: CollectionSpec) -> None:
        self.shard = shard
        self.spec = spec
        self.write_lock = threading.Lock()
        self.unoptimized = 0
        self.optimizing = False


class EdgeStore:
    """The embedded default. Each collection lives in `<root>/<name>/`."""

    name = "qdrant-edge"
    parallel_queries = 1  # Qdrant Edge's calls hold the GIL

    def __init__(
        self,
        root: Path,
        optimize_after_points: int = 5000,
        search_threads: int | None = None,
        disk: DiskGuard | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Qdrant Edge maps its files: a write meeting a full disk would end the process.
        self.disk = disk or DiskGuard(self.root, 0)
        self._shards: dict[str, _Shard] = {}
        self._lock = threading.Lock()
        self._optimize_after = optimize_after_points
        self._search_threads = search_threads
        self._optimizers: list[threading.Thread] = []
        self._closed = False

    # --- collections -------------------------------------------------------------------
    def ensure_collection(self, spec: CollectionSpec) -> None:
        with self._lock:
            if spec.name in self._shards:
                self._check_spec(self._shards[spec.name].spec, spec)
                return
            path = self.root / spec.name
            spec_file = path / _SPEC_FILE
            # Creating a collection, and opening one (Qdrant Edge then starts a segment of its
            # own, some 70 MB), take space: a start-up refused beats a SIGBUS.
            self.disk.check()
            config = qe.EdgeConfig(
                vectors={
                    DENSE: qe.EdgeVectorParams(
                        size=spec.dimension, distance=_DISTANCES[spec.distance]
                    )
                },
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                max_search_threads=self._search_threads,
            )
            if spec_file.exists():
                stored = json.loads(spec_file.read_text())
                self._check_spec(
                    CollectionSpec(spec.name, int(stored["dimension"]), stored["distance"]), spec
                )
                shard = qe.EdgeShard.load(str(path), config)
            else:
                if path.exists():  # a directory left by a create that never finished
                    shutil.rmtree(path)
                shard = qe.EdgeShard.create(str(path), config)
                spec_file.write_text(
                    json.dumps({"dimension": spec.dimension, "distance": spec.distance})
                )
            for field_name, kind in spec.indexes.items():
                shard.update(qe.UpdateOperation.create_field_index(field_name, _schema(kind)))
            self._shards[spec.name] = _Shard(shard, spec)

    @staticmethod
    def _check_spec(existing: CollectionSpec, wanted: CollectionSpec) -> None:
        if existing.dimension != wanted.dimension or existing.distance != wanted.distance:
            raise ConfigurationError(
                f"collection '{wanted.name}' holds {existing.dimension}-d {existing.distance} "
                f"vectors but the embedder gives {wanted.dimension}-d {wanted.distance}; "
                "use another data directory or collection prefix, or re-index",
                {
                    "collection": wanted.name,
                    "stored_dimension": existing.dimension,
                    "embedder_dimension": wanted.dimension,
                },
            )

    def _get(self, collection: str) -> _Shard:
        try:
            return self._shards[collection]
        except KeyError:
            raise ConfigurationError(f"collection '{collection}' was not opened") from None

    # --- writes ------------------------------------------------------------------------
    def upsert(
        self, collection: str, points: Sequence[PointRecord], insert_only: bool = False
    ) -> None:
        if not points:
            return
        entry = self._get(collection)
        edge_points = [
            qe.Point(
                p.id,
                {DENSE: p.dense, SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values)},
                _with_bools(p.payload),
            )
            for p in points
        ]
        self.disk.check()
        with entry.write_lock:
            mode = qe.UpdateMode.InsertOnly if insert_only else None
            entry.shard.update(qe.UpdateOperation.upsert_points(edge_points, update_mode=mode))
            entry.unoptimized += len(points)
        self._maybe_optimize(entry)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        entry = self._get(collection)
        with entry.write_lock:
            entry.shard.update(qe.UpdateOperation.delete_points(list(ids)))

    def delete_by_filter(self, collection: str, flt: Filter) -> None:
        entry = self._get(collection)
        with entry.write_lock:
            entry.shard.update(qe.UpdateOperation.delete_points_by_filter(_filter(flt)))

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if not ids:
            return
        if any(isinstance(v, bool | dict | list) for v in payload.values()):
            raise ValidationError("set_payload takes scalar, non-boolean fields only")
        entry = self._get(collection)
        self.disk.check()
        # By filter, so that an id deleted meanwhile is skipped rather than failing the batch.
        operation = qe.UpdateOperation.set_payload_by_filter(
            _filter(Filter(has_ids=tuple(ids))), payload
        )
        with entry.write_lock:
            entry.shard.update(operation)

    # --- reads -------------------------------------------------------------------------
    def retrieve(
        self, collection: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._get(collection).shard.retrieve(
            list(ids), with_payload=True, with_vector=bool(with_vectors)
        )
        return [_stored(r) for r in records]

    def hybrid_search(
        self,
        collection: str,
        dense: list[float],
        sparse: SparseVec,
        limit: int,
        flt: Filter | None,
        payload_keys: Sequence[str] | None = None,
    ) -> tuple[list[ScoredHit], list[ScoredHit]]:
        with_payload: bool | list[str] = list(payload_keys) if payload_keys is not None else True
        edge_filter = _where(flt)
        queries = [
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(dense, using=DENSE),
                filter=edge_filter,
                with_payload=with_payload,
                with_vector=False,
            )
        ]
        if sparse.indices:
            queries.append(
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(
                        qe.SparseVector(sparse.indices, sparse.values), using=SPARSE
                    ),
                    filter=edge_filter,
                    # Most BM25 hits are dense hits too: their payload comes from there.
                    with_payload=False,
                    with_vector=False,
                )
            )
        shard = self._get(collection).shard
        results = shard.query_batch(qe.QueryBatchRequest(queries))
        # Selected keys never include the private boolean mirror: no cleaning needed.
        convert = _hit if payload_keys is None else _selected_hit
        dense_hits = [convert(p) for p in results[0]]
        sparse_hits = [_bare_hit(p) for p in results[1]] if len(results) > 1 else []

        def fetch(ids: list[str]) -> dict[str, tuple[float, dict[str, Any]]]:
            found = shard.query(
                qe.QueryRequest(
                    limit=len(ids),
                    query=qe.Query.Nearest(dense, using=DENSE),
                    filter=_filter(Filter(has_ids=tuple(ids))),
                    with_payload=with_payload,
                    with_vector=False,
                )
            )
            return {h.id: (h.score, h.payload) for h in map(convert, found)}

        return dense_hits, complete_sparse_hits(dense_hits, sparse_hits, fetch)

    def scroll(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        order_by: str | None = None,
        with_vectors: bool = False,
        descending: bool = False,
    ) -> list[StoredPoint]:
        direction = qe.Direction.Desc if descending else qe.Direction.Asc
        request = qe.ScrollRequest(
            limit=limit,
            filter=_where(flt),
            with_payload=True,
            with_vector=bool(with_vectors),
            order_by=qe.OrderBy(key=order_by, direction=direction) if order_by else None,
        )
        records, _next = self._get(collection).shard.scroll(request)
        return [_stored(r) for r in records]

    def scroll_many(
        self, collection: str, scrolls: Sequence[OrderedScroll]
    ) -> list[list[StoredPoint]]:
        if not scrolls:
            return []
        queries = [
            qe.QueryRequest(
                limit=s.limit,
                query=qe.OrderBy(
                    key=s.order_by,
                    direction=qe.Direction.Desc if s.descending else qe.Direction.Asc,
                ),
                filter=_where(s.filter),
                with_payload=True,
                with_vector=False,
            )
            for s in scrolls
        ]
        results = self._get(collection).shard.query_batch(qe.QueryBatchRequest(queries))
        return [[_stored(p) for p in points] for points in results]

    def page(
        self,
        collection: str,
        flt: Filter | None,
        offset: str | None,
        limit: int,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], str | None]:
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=_where(flt),
            with_payload=True,
            with_vector=bool(with_vectors),
        )
        records, after = self._get(collection).shard.scroll(request)
        return [_stored(r) for r in records], None if after is None else str(after)

    def count(self, collection: str, flt: Filter | None = None) -> int:
        request = qe.CountRequest(filter=_where(flt), exact=True)
        return int(self._get(collection).shard.count(request))

    def ping(self) -> None:
        for entry in list(self._shards.values()):
            entry.shard.info()

    # --- maintenance -------------------------------------------------------------------
    def _maybe_optimize(self, entry: _Shard) -> None:
        # Edge runs no optimizer of its own: without this, fresh points stay in a plain
        # (brute-force) segment and search slows linearly with every write.
        with self._lock:
            if entry.optimizing or entry.unoptimized < self._optimize_after or self._closed:
                return
            entry.optimizing = True
            entry.unoptimized = 0
            thread = threading.Thread(
                target=self._optimize,
                args=(entry,),
                name=f"optimize-{entry.spec.name}",
                daemon=True,
            )
            self._optimizers = [t for t in self._optimizers if t.is_alive()] + [thread]
        thread.start()

    def _optimize(self, entry: _Shard) -> None:
        try:
            _optimize_shard(entry.shard)
        except Exception as exc:
            if "Not enough space" in str(exc):  # Qdrant checks before it begins
                logger.warning("optimizing %s waits for disk space: %s", entry.spec.name, exc)
            else:
                logger.exception("optimizing %s failed", entry.spec.name)
        finally:
            entry.optimizing = False

    def optimize(self) -> None:
        """Optimize every collection now, blocking (used after bulk loads and by benchmarks)."""
        self.wait_for_optimizers()
        for entry in list(self._shards.values()):
            with entry.write_lock:
                _optimize_shard(entry.shard)
                entry.unoptimized = 0

    def wait_for_optimizers(self) -> None:
        for thread in list(self._optimizers):
            thread.join()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.wait_for_optimizers()
        for entry in self._shards.values():
            with entry.write_lock:
                entry.shard.flush()
                entry.shard.close()
        self._shards.clear()


def _optimize_shard(shard: Any) -> None:
    # qdrant-edge-py 0.9 keeps the segments an optimization replaced, on disk and mapped in
    # memory, until the next flush: without it, each optimization of a collection that also
    # deletes left ~75 MB of resident mappings (tests/test_resources.py).
    shard.optimize()
    shard.flush()


def _schema(kind: str) -> Any:
    if kind == "tenant":
        return qe.KeywordIndexParams(is_tenant=True)
    if kind == "integer":
        return qe.IntegerIndexParams(lookup=True, range=True)
    return _SCHEMAS[kind]


def _with_bools(payload: dict[str, Any]) -> dict[str, Any]:
    mirror = _bool_mirror(payload)
    if not mirror:
        return payload
    return {**payload, _BOOLS: mirror}


def _bool_mirror(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            mirrored = _bool_mirror(item)
            if mirrored is not None:
                out[key] = mirrored
        return out or None
    if isinstance(value, list):
        items = [int(v) for v in value if isinstance(v, bool)]
        return items or None
    return None


def _clean(payload: dict[str, Any] | None) -> dict[str, Any]:
    if not payload:
        return {}
    payload.pop(_BOOLS, None)
    return payload


def _stored(record: Any) -> StoredPoint:
    return stored_point(record.id, _clean(record.payload), record.vector)


def _hit(point: Any) -> ScoredHit:
    return scored_hit(point.id, point.score, _clean(point.payload))


def _selected_hit(point: Any) -> ScoredHit:
    return ScoredHit(str(point.id), point.score, point.payload or {})


def _bare_hit(point: Any) -> ScoredHit:
    return ScoredHit(str(point.id), point.score, {})


def _where(flt: Filter | None) -> Any:
    """A request's filter: none for a missing or empty one."""
    return None if flt is None or flt.is_empty() else _filter(flt)


def _filter(flt: Filter | None) -> Any:
    if flt is None:
        return None
    return qe.Filter(
        must=[_clause(c) for c in flt.must] + _ids(flt) or None,
        should=[_clause(c) for c in flt.should] or None,
        must_not=[_clause(c) for c in flt.must_not] or None,
    )


def _ids(flt: Filter) -> list[Any]:
    return [qe.HasIdCondition(set(flt.has_ids))] if flt.has_ids else []


def _clause(item: Condition | Filter) -> Any:
    if isinstance(item, Filter):
        return _filter(item)
    if item.is_null:
        return qe.IsNullCondition(item.key)
    if item.range is not None:
        r = item.range
        return qe.FieldCondition(
            key=item.key, range=qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
        )
    if item.any_of is not None:
        return qe.FieldCondition(key=item.key, match=qe.MatchAny(list(item.any_of)))  # type: ignore[arg-type]
    value = item.match
    if isinstance(value, bool):
        return qe.FieldCondition(key=f"{_BOOLS}.{item.key}", match=qe.MatchValue(int(value)))
    if isinstance(value, float):
        # MatchValue takes str/int/bool only; an exact float is the one-point range.
        return qe.FieldCondition(key=item.key, range=qe.RangeFloat(gte=value, lte=value))
    assert value is not None
    return qe.FieldCondition(key=item.key, match=qe.MatchValue(value))
