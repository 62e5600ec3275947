"""The Qdrant REST calls the service makes, answered by qdrant-client's own local mode: a
stand-in for a Qdrant server that filters, searches and counts like the real engine, to
put behind a real HTTP server on loopback (`QdrantRest` is a responder for one)."""

from __future__ import annotations

import importlib.metadata
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pydantic
from qdrant_client import QdrantClient
from qdrant_client import models as qm

QDRANT_VERSION = importlib.metadata.version("qdrant-client")


class QdrantRest:
    """`(method, path, body) -> (status, body)` for the REST routes qdrant-client uses."""

    def __init__(self) -> None:
        self.local = QdrantClient(location=":memory:")
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        url = urlsplit(path)
        route = url.path.strip("/").split("/")
        if method == "GET" and route == [""]:
            return 200, json.dumps({"title": "qdrant", "version": QDRANT_VERSION}).encode()
        data: Any = json.loads(body) if body else {}
        handler = self._route(method, route)
        if handler is None:
            return _status(404, f"no route {method} {url.path}")
        try:
            with self.lock:
                result = handler(route, data, parse_qs(url.query))
        except (ValueError, pydantic.ValidationError) as exc:
            # Local mode's "collection not found" and bad requests alike: the server's 4xx.
            return _status(404 if "not found" in str(exc) else 400, str(exc))
        return 200, json.dumps({"result": _jsonable(result), "status": "ok", "time": 0.0}).encode()

    def _route(self, method: str, route: list[str]) -> Callable[..., Any] | None:
        if route[0] != "collections":
            return None
        tail = tuple(route[2:])
        table: dict[tuple[str, int | tuple[str, ...]], Callable[..., Any]] = {
            ("GET", 1): lambda r, d, q: self.local.get_collections(),
            ("GET", ("exists",)): lambda r, d, q: {"exists": self.local.collection_exists(r[1])},
            ("GET", ()): lambda r, d, q: self.local.get_collection(r[1]),
            ("PUT", ()): self._create_collection,
            ("PUT", ("index",)): lambda r, d, q: _done(),
            ("PUT", ("points",)): self._upsert,
            ("POST", ("points",)): self._retrieve,
            ("POST", ("points", "delete")): self._delete,
            ("POST", ("points", "payload")): self._set_payload,
            ("POST", ("points", "query")): self._query,
            ("POST", ("points", "query", "batch")): self._query_batch,
            ("POST", ("points", "scroll")): self._scroll,
            ("POST", ("points", "count")): self._count,
        }
        return table.get((method, 1)) if len(route) == 1 else table.get((method, tail))

    def _create_collection(self, route: list[str], data: Any, _: Any) -> bool:
        spec = qm.CreateCollection.model_validate(data)
        return self.local.create_collection(
            route[1], vectors_config=spec.vectors, sparse_vectors_config=spec.sparse_vectors
        )

    def _upsert(self, route: list[str], data: Any, _: Any) -> Any:
        batch = qm.PointsList.model_validate(data)
        return self.local.upsert(route[1], points=batch.points, update_mode=batch.update_mode)

    def _retrieve(self, route: list[str], data: Any, _: Any) -> Any:
        request = qm.PointRequest.model_validate(data)
        return self.local.retrieve(
            route[1],
            ids=request.ids,
            with_payload=request.with_payload if request.with_payload is not None else True,
            with_vectors=request.with_vector if request.with_vector is not None else False,
        )

    def _delete(self, route: list[str], data: Any, _: Any) -> Any:
        selector: qm.PointIdsList | qm.FilterSelector
        if "points" in data:
            selector = qm.PointIdsList.model_validate(data)
        else:
            selector = qm.FilterSelector.model_validate(data)
        return self.local.delete(route[1], points_selector=selector)

    def _set_payload(self, route: list[str], data: Any, _: Any) -> Any:
        request = qm.SetPayload.model_validate(data)
        points: Any = request.points
        if points is None:
            points = qm.FilterSelector(filter=request.filter or qm.Filter())
        return self.local.set_payload(route[1], payload=request.payload, points=points)

    def _query(self, route: list[str], data: Any, _: Any) -> Any:
        request = qm.QueryRequest.model_validate(data)
        return self.local.query_points(
            route[1],
            query=request.query,
            using=request.using,
            query_filter=request.filter,
            limit=request.limit or 10,
            with_payload=request.with_payload if request.with_payload is not None else False,
        )

    def _query_batch(self, route: list[str], data: Any, _: Any) -> Any:
        batch = qm.QueryRequestBatch.model_validate(data)
        return self.local.query_batch_points(route[1], requests=batch.searches)

    def _scroll(self, route: list[str], data: Any, _: Any) -> Any:
        request = qm.ScrollRequest.model_validate(data)
        points, offset = self.local.scroll(
            route[1],
            scroll_filter=request.filter,
            limit=request.limit or 10,
            offset=request.offset,
            order_by=request.order_by,
            with_payload=request.with_payload if request.with_payload is not None else True,
            with_vectors=request.with_vector if request.with_vector is not None else False,
        )
        return {"points": points, "next_page_offset": offset}

    def _count(self, route: list[str], data: Any, _: Any) -> Any:
        request = qm.CountRequest.model_validate(data)
        return self.local.count(route[1], count_filter=request.filter, exact=True)


def _done() -> qm.UpdateResult:
    return qm.UpdateResult(operation_id=0, status=qm.UpdateStatus.COMPLETED)


def _status(code: int, error: str) -> tuple[int, bytes]:
    return code, json.dumps({"status": {"error": error}, "time": 0.0}).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
