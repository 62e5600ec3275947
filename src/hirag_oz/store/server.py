"""A Qdrant server or cluster through qdrant-client (REST), for when one machine is not enough."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from hirag_oz.errors import ConfigurationError, UnavailableError, UpstreamError
from hirag_oz.store.base import (
    DENSE,
    SPARSE,
    CollectionSpec,
    Condition,
    Filter,
    PointRecord,
    ScoredHit,
    SparseVec,
    StoredPoint,
    complete_sparse_hits,
    scored_hit,
    stored_point,
)

_DISTANCES = {"Cosine": qm.Distance.COSINE, "Dot": qm.Distance.DOT, "Euclid": qm.Distance.EUCLID}
_NAMES = {v: k for k, v in _DISTANCES.items()}
_SCHEMAS: dict[str, Any] = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "tenant": qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
}


class ServerStore:
    """qdrant-client adapter. `QdrantClient(":memory:")` speaks the same API, for tests."""

    name = "qdrant-server"
    parallel_queries = 16  # mostly waiting on the network, which releases the GIL

    def __init__(
        self,
        client: QdrantClient,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
    ) -> None:
        self.client = client
        self._placement = {
            "shard_number": shard_number,
            "replication_factor": replication_factor,
            "write_consistency_factor": write_consistency_factor,
        }
        self._local = getattr(client, "_client", None).__class__.__name__ == "QdrantLocal"

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        verify: bool = True,
        **placement: int | None,
    ) -> ServerStore:
        """`placement`: shard_number, replication_factor, write_consistency_factor of the
        collections it creates."""
        if url == ":memory:":
            return cls(QdrantClient(location=":memory:"), **placement)
        return cls(
            QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout)), verify=verify),
            **placement,
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UnexpectedResponse as exc:
            raise UpstreamError(
                f"qdrant {what} failed with HTTP {exc.status_code}", {"operation": what}
            ) from exc
        except (ResponseHandlingException, ConnectionError, TimeoutError, OSError) as exc:
            raise UnavailableError(f"qdrant {what} failed: {exc}", {"operation": what}) from exc

    def ensure_collection(self, spec: CollectionSpec) -> None:
        if self._call("collection_exists", self.client.collection_exists, spec.name):
            info = self._call("get_collection", self.client.get_collection, spec.name)
            vectors = info.config.params.vectors
            params = vectors.get(DENSE) if isinstance(vectors, dict) else None
            found_size = params.size if params is not None else None
            found_distance = _NAMES.get(params.distance) if params is not None else None
            if found_size != spec.dimension or found_distance != spec.distance:
                raise ConfigurationError(
                    f"collection '{spec.name}' holds {found_size}-d {found_distance} vectors but "
                    f"the embedder gives {spec.dimension}-d {spec.distance}; use another "
                    "collection prefix, or re-index",
                    {
                        "collection": spec.name,
                        "stored_dimension": found_size,
                        "embedder_dimension": spec.dimension,
                    },
                )
        else:
            self._call(
                "create_collection",
                self.client.create_collection,
                spec.name,
                vectors_config={
                    DENSE: qm.VectorParams(size=spec.dimension, distance=_DISTANCES[spec.distance])
                },
                sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                **{k: v for k, v in self._placement.items() if v is not None},
            )
        if self._local:
            return  # local mode has no payload indexes; it filters without them
        for field_name, kind in spec.indexes.items():
            self._call(
                "create_payload_index",
                self.client.create_payload_index,
                spec.name,
                field_name=field_name,
                field_schema=_SCHEMAS[kind],
                wait=True,
            )

    def upsert(
        self, collection: str, points: Sequence[PointRecord], insert_only: bool = False
    ) -> None:
        if not points:
            return
        structs = [
            qm.PointStruct(
                id=p.id,
                vector={
                    DENSE: p.dense,
                    SPARSE: qm.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=p.payload,
            )
            for p in points
        ]
        self._call(
            "upsert",
            self.client.upsert,
            collection,
            points=structs,
            wait=True,
            update_mode=qm.UpdateMode.INSERT_ONLY if insert_only else None,
        )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._call(
                "delete",
                self.client.delete,
                collection,
                points_selector=qm.PointIdsList(points=list(ids)),
                wait=True,
            )

    def delete_by_filter(self, collection: str, flt: Filter) -> None:
        self._call(
            "delete",
            self.client.delete,
            collection,
            points_selector=qm.FilterSelector(filter=_filter(flt)),
            wait=True,
        )

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self._call(
                "set_payload",
                self.client.set_payload,
                collection,
                payload=payload,
                # By filter, so that an id deleted meanwhile is skipped, not an error.
                points=qm.FilterSelector(filter=_filter(Filter(has_ids=tuple(ids)))),
                wait=True,
            )

    def retrieve(
        self, collection: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._call(
            "retrieve",
            self.client.retrieve,
            collection,
            ids=list(ids),
            with_payload=True,
            with_vectors=with_vectors,
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
        query_filter = _filter(flt) if flt is not None and not flt.is_empty() else None
        requests = [
            qm.QueryRequest(
                query=dense,
                using=DENSE,
                filter=query_filter,
                limit=limit,
                with_payload=with_payload,
            )
        ]
        if sparse.indices:
            requests.append(
                qm.QueryRequest(
                    query=qm.SparseVector(indices=sparse.indices, values=sparse.values),
                    using=SPARSE,
                    filter=query_filter,
                    limit=limit,
                    # Most BM25 hits are dense hits too: their payload comes from there.
                    with_payload=False,
                )
            )
        responses = self._call(
            "query", self.client.query_batch_points, collection, requests=requests
        )
        dense_hits = [_hit(p) for p in responses[0].points]
        sparse_hits = [_hit(p) for p in responses[1].points] if len(responses) > 1 else []

        def fetch(ids: list[str]) -> dict[str, tuple[float, dict[str, Any]]]:
            found = self._call(
                "query",
                self.client.query_points,
                collection,
                query=dense,
                using=DENSE,
                query_filter=qm.Filter(must=[qm.HasIdCondition(has_id=list(ids))]),
                limit=len(ids),
                with_payload=with_payload,
            )
            return {h.id: (h.score, h.payload) for h in map(_hit, found.points)}

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
        direction = qm.Direction.DESC if descending else qm.Direction.ASC
        records, _next = self._call(
            "scroll",
            self.client.scroll,
            collection,
            scroll_filter=_filter(flt) if flt is not None and not flt.is_empty() else None,
            limit=limit,
            order_by=qm.OrderBy(key=order_by, direction=direction) if order_by else None,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [_stored(r) for r in records]

    def count(self, collection: str, flt: Filter | None = None) -> int:
        result = self._call(
            "count",
            self.client.count,
            collection,
            count_filter=_filter(flt) if flt is not None and not flt.is_empty() else None,
            exact=True,
        )
        return int(result.count)

    def ping(self) -> None:
        self._call("get_collections", self.client.get_collections)

    def close(self) -> None:
        self.client.close()


def _stored(record: Any) -> StoredPoint:
    return stored_point(record.id, dict(record.payload or {}), record.vector)


def _hit(point: Any) -> ScoredHit:
    return scored_hit(point.id, point.score, dict(point.payload or {}))


def _filter(flt: Filter) -> qm.Filter:
    must = [_clause(c) for c in flt.must]
    if flt.has_ids:
        must.append(qm.HasIdCondition(has_id=list(flt.has_ids)))
    return qm.Filter(
        must=must or None,
        should=[_clause(c) for c in flt.should] or None,
        must_not=[_clause(c) for c in flt.must_not] or None,
    )


def _clause(item: Condition | Filter) -> Any:
    if isinstance(item, Filter):
        return _filter(item)
    if item.is_null:
        return qm.IsNullCondition(is_null=qm.PayloadField(key=item.key))
    if item.range is not None:
        r = item.range
        return qm.FieldCondition(
            key=item.key, range=qm.Range(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
        )
    if item.any_of is not None:
        return qm.FieldCondition(key=item.key, match=qm.MatchAny(any=list(item.any_of)))
    if isinstance(item.match, float):
        return qm.FieldCondition(key=item.key, range=qm.Range(gte=item.match, lte=item.match))
    assert item.match is not None
    return qm.FieldCondition(key=item.key, match=qm.MatchValue(value=item.match))
