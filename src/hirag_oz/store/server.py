"""A Qdrant server or cluster through qdrant-client (REST), for when one machine is not enough."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import httpx
import pydantic
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from hirag_oz.errors import (
    ConfigurationError,
    HiragError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError
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
    """qdrant-client adapter. `QdrantClient(":memory:")` speaks the same API, for tests.

    Every call to a server goes through `breaker` when there is one: `connect` gives a
    server URL a breaker named "vector_store" (local mode gets none: there is no remote
    side to cut off). Timeouts, connection errors, 5xx, 429 and malformed answers count
    against it; a client error (4xx) means the server answered. Nothing is retried here: a
    failed write may or may not have been applied (a timeout or a lost answer), and the
    caller decides. Errors name qdrant and the operation: `UnavailableError` (503, also for
    an open breaker), `UpstreamTimeoutError` (504) or `UpstreamError` (502).
    """

    name = "qdrant-server"
    parallel_queries = 16  # mostly waiting on the network, which releases the GIL

    def __init__(
        self,
        client: QdrantClient,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        breaker: CircuitBreaker | None = None,
        timeout_secs: float | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.timeout_secs = timeout_secs
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
        breaker: CircuitBreaker | None = None,
        **placement: int | None,
    ) -> ServerStore:
        """`placement`: shard_number, replication_factor, write_consistency_factor of the
        collections it creates. `timeout` is per request, in whole seconds (qdrant-client
        takes an int; a fraction is rounded up). `breaker` defaults to a new one named
        "vector_store" for a server URL."""
        if url == ":memory:":
            return cls(QdrantClient(location=":memory:"), breaker=breaker, **placement)
        seconds = math.ceil(max(1.0, timeout))
        return cls(
            QdrantClient(url=url, api_key=api_key, timeout=seconds, verify=verify),
            breaker=breaker if breaker is not None else CircuitBreaker("vector_store"),
            timeout_secs=seconds,
            **placement,
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise CircuitOpenError(
                breaker.name,
                f"qdrant {what} not sent: circuit breaker '{breaker.name}' is open after "
                "repeated failures",
                {"operation": what},
            )
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            mapped = self._upstream_error(what, exc)
            if breaker is not None:
                if mapped is not None and mapped[1]:
                    breaker.record_failure()
                else:
                    breaker.record_success()
            if mapped is None:
                raise
            raise mapped[0] from exc
        if breaker is not None:
            breaker.record_success()
        return result

    def _upstream_error(self, what: str, exc: Exception) -> tuple[HiragError, bool] | None:
        """The service's error for a failed call, and whether it counts against the
        breaker; None for an error that is not the server's (it is raised as it is)."""
        details: dict[str, Any] = {"operation": what}
        if isinstance(exc, UnexpectedResponse):
            status = exc.status_code
            details["status"] = status
            reason = _server_message(exc.content)
            suffix = f": {reason}" if reason else ""
            error = UpstreamError(f"qdrant {what} failed with HTTP {status}{suffix}", details)
            return error, status is None or status == 429 or status >= 500
        if isinstance(exc, ResourceExhaustedResponse):
            # qdrant-client raises this, not UnexpectedResponse, for a 429 with Retry-After.
            details.update(status=429, retry_after=exc.retry_after_s)
            message = f"qdrant {what} rate limited (HTTP 429, retry after {exc.retry_after_s}s)"
            return UpstreamError(message, details), True
        if isinstance(exc, QdrantException):
            return UpstreamError(f"qdrant {what} failed: {_short(str(exc))}", details), True
        source: BaseException = exc
        if isinstance(exc, ResponseHandlingException):
            source = exc.source
        if isinstance(source, httpx.TimeoutException | TimeoutError):
            limit = f" (timeout {self.timeout_secs:g}s)" if self.timeout_secs else ""
            return UpstreamTimeoutError(f"qdrant {what} timed out{limit}", details), True
        if isinstance(source, pydantic.ValidationError | json.JSONDecodeError):
            # qdrant-client lets a 2xx body that is not JSON out as a bare JSONDecodeError.
            first = str(source).splitlines()[0] if str(source) else type(source).__name__
            error = UpstreamError(f"malformed qdrant {what} response: {_short(first)}", details)
            return error, True
        if isinstance(exc, ResponseHandlingException) or isinstance(
            source, httpx.HTTPError | ConnectionError | OSError
        ):
            reason = _short(f"{type(source).__name__}: {source}")
            if isinstance(source, httpx.ConnectError | ConnectionRefusedError):
                message = f"could not reach qdrant for {what}: {reason}"
            else:
                message = f"qdrant {what} failed in transit: {reason}"
            return UnavailableError(message, details), True
        return None

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
        query_filter = _where(flt)
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
            scroll_filter=_where(flt),
            limit=limit,
            order_by=qm.OrderBy(key=order_by, direction=direction) if order_by else None,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [_stored(r) for r in records]

    def scroll_many(
        self, collection: str, scrolls: Sequence[OrderedScroll]
    ) -> list[list[StoredPoint]]:
        if not scrolls:
            return []
        requests = [
            qm.QueryRequest(
                query=qm.OrderByQuery(
                    order_by=qm.OrderBy(
                        key=s.order_by,
                        direction=qm.Direction.DESC if s.descending else qm.Direction.ASC,
                    )
                ),
                filter=_where(s.filter),
                limit=s.limit,
                with_payload=True,
            )
            for s in scrolls
        ]
        responses = self._call(
            "scroll", self.client.query_batch_points, collection, requests=requests
        )
        return [[_stored(p) for p in response.points] for response in responses]

    def page(
        self,
        collection: str,
        flt: Filter | None,
        offset: str | None,
        limit: int,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], str | None]:
        records, after = self._call(
            "scroll",
            self.client.scroll,
            collection,
            scroll_filter=_where(flt),
            offset=offset,
            limit=limit,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [_stored(r) for r in records], None if after is None else str(after)

    def count(self, collection: str, flt: Filter | None = None) -> int:
        result = self._call(
            "count",
            self.client.count,
            collection,
            count_filter=_where(flt),
            exact=True,
        )
        return int(result.count)

    def ping(self) -> None:
        self._call("get_collections", self.client.get_collections)

    def close(self) -> None:
        self.client.close()


def _short(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _server_message(content: bytes) -> str:
    """Qdrant's own error text (`status.error`) of an error answer, if it sent one."""
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    status = body.get("status") if isinstance(body, dict) else None
    error = status.get("error") if isinstance(status, dict) else None
    return _short(error) if isinstance(error, str) else ""


def _stored(record: Any) -> StoredPoint:
    return stored_point(record.id, dict(record.payload or {}), record.vector)


def _hit(point: Any) -> ScoredHit:
    return scored_hit(point.id, point.score, dict(point.payload or {}))


def _where(flt: Filter | None) -> qm.Filter | None:
    """A request's filter: none for a missing or empty one."""
    return None if flt is None or flt.is_empty() else _filter(flt)


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
