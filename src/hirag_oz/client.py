"""Typed HTTP clients for the hirag-oz service, sync (`Client`) and async (`AsyncClient`).

    from hirag_oz.client import Client

    with Client("http://127.0.0.1:8081", api_key="...") as hirag:
        hirag.store("User prefers dark mode", level="LongTerm")
        found = hirag.search("What does the user prefer?", max_tokens=500)

Every error response becomes the error class of its envelope code (the same classes the
library raises in-process: `NotFoundError`, `ValidationError`, `RateLimitedError`, ...).
Each call is described once (`_Call`: method, path, body, how to read the answer); the two
client classes only send it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from hirag_oz import errors
from hirag_oz.api.schemas import (
    BatchStoreRequest,
    BatchStoreResponse,
    BuildRequest,
    BuildResponse,
    ClearedResponse,
    ClearRequest,
    ContextOut,
    DeletedResponse,
    FactIn,
    FactInserted,
    FactOut,
    FactQueryIn,
    FactQueryRequest,
    FactQueryResponse,
    JobOut,
    PatchContextRequest,
    SearchRequest,
    SearchResponse,
    StoreContextRequest,
    StoreContextResponse,
    VisionDecodeRequest,
    VisionDecodeResponse,
    VisionFilters,
    VisionIndexRequest,
    VisionSearchRequest,
    VisionSearchResponse,
)

__all__ = ["AsyncClient", "Client", "error_from_response"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Timestamp = datetime | float | None

_BY_CODE: dict[str, type[errors.HiragError]] = {
    "UNAUTHORIZED": errors.UnauthorizedError,
    "FORBIDDEN": errors.ForbiddenError,
    "NOT_FOUND": errors.NotFoundError,
    "CONFLICT": errors.ConflictError,
    "PAYLOAD_TOO_LARGE": errors.PayloadTooLargeError,
    "UNSUPPORTED_MEDIA_TYPE": errors.UnsupportedMediaTypeError,
    "RATE_LIMIT": errors.RateLimitedError,
    "TIMEOUT": errors.UpstreamTimeoutError,
    "INTERNAL_ERROR": errors.InternalError,
}
_BY_STATUS: dict[int, type[errors.HiragError]] = {
    400: errors.BadRequestError,
    422: errors.ValidationError,
    502: errors.UpstreamError,
    503: errors.UnavailableError,
}


def error_from_response(response: httpx.Response) -> errors.HiragError:
    """The typed error for an error response (one without the envelope included)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and {"code", "message"} <= body.keys():
        code, message = str(body["code"]), str(body["message"])
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
    else:
        code, message, details = "", response.text[:300] or response.reason_phrase, {}
    cls = _BY_STATUS.get(response.status_code) or _BY_CODE.get(code) or errors.HiragError
    if cls is errors.RateLimitedError:
        retry = response.headers.get("retry-after", "1")
        return errors.RateLimitedError(
            message, details, retry_after=int(retry) if retry.isdigit() else 1
        )
    error = cls(message, details)
    error.status = response.status_code
    if code:
        error.code = code
    return error


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes]] | None = None
    data: Mapping[str, str] | None = None


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate(response.json())


def _json(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return body


def _body(model: BaseModel) -> Any:
    return model.model_dump(mode="json", exclude_none=True)


def _agent(agent_id: str | None) -> dict[str, str] | None:
    return {"agent_id": agent_id} if agent_id is not None else None


class _Calls:
    """Every route of the service, as data."""

    @staticmethod
    def store(item: StoreContextRequest) -> _Call[StoreContextResponse]:
        return _Call("POST", "/api/v1/contexts", _model(StoreContextResponse), _body(item))

    @staticmethod
    def store_many(items: Sequence[StoreContextRequest]) -> _Call[BatchStoreResponse]:
        body = _body(BatchStoreRequest(items=list(items)))
        return _Call("POST", "/api/v1/contexts/batch", _model(BatchStoreResponse), body)

    @staticmethod
    def search(request: SearchRequest) -> _Call[SearchResponse]:
        return _Call("POST", "/api/v1/contexts/search", _model(SearchResponse), _body(request))

    @staticmethod
    def build_context(request: BuildRequest) -> _Call[BuildResponse]:
        return _Call("POST", "/api/v1/context/build", _model(BuildResponse), _body(request))

    @staticmethod
    def add_fact(fact: FactIn) -> _Call[FactInserted]:
        return _Call("POST", "/api/v1/facts", _model(FactInserted), _body(fact))

    @staticmethod
    def query_facts(query: FactQueryIn) -> _Call[FactQueryResponse]:
        body = _body(FactQueryRequest(query=query))
        return _Call("POST", "/api/v1/facts/query", _model(FactQueryResponse), body)

    @staticmethod
    def get_fact(fact_id: str, agent_id: str | None) -> _Call[FactOut]:
        return _Call("GET", f"/api/v1/facts/{fact_id}", _model(FactOut), params=_agent(agent_id))

    @staticmethod
    def delete_fact(fact_id: str, agent_id: str | None) -> _Call[DeletedResponse]:
        path = f"/api/v1/facts/{fact_id}"
        return _Call("DELETE", path, _model(DeletedResponse), params=_agent(agent_id))

    @staticmethod
    def index_document(request: VisionIndexRequest) -> _Call[JobOut]:
        return _Call("POST", "/api/v1/vision/index", _model(JobOut), _body(request))

    @staticmethod
    def upload_document(
        content: bytes,
        filename: str,
        metadata: dict[str, Any] | None,
        force_reindex: bool,
        agent_id: str | None,
    ) -> _Call[JobOut]:
        form = {"force_reindex": "true" if force_reindex else "false"}
        if metadata is not None:
            form["metadata"] = json.dumps(metadata)
        if agent_id is not None:
            form["agent_id"] = agent_id
        return _Call(
            "POST",
            "/api/v1/vision/index",
            _model(JobOut),
            files={"file": (filename, content)},
            data=form,
        )

    @staticmethod
    def get_job(job_id: str) -> _Call[JobOut]:
        return _Call("GET", f"/api/v1/vision/index/jobs/{job_id}", _model(JobOut))

    @staticmethod
    def search_regions(request: VisionSearchRequest) -> _Call[VisionSearchResponse]:
        path = "/api/v1/vision/search"
        return _Call("POST", path, _model(VisionSearchResponse), _body(request))

    @staticmethod
    def decode_regions(request: VisionDecodeRequest) -> _Call[VisionDecodeResponse]:
        path = "/api/v1/vision/decode"
        return _Call("POST", path, _model(VisionDecodeResponse), _body(request))

    @staticmethod
    def get(context_id: str, agent_id: str | None) -> _Call[ContextOut]:
        path = f"/api/v1/contexts/{context_id}"
        return _Call("GET", path, _model(ContextOut), params=_agent(agent_id))

    @staticmethod
    def update(
        context_id: str, patch: PatchContextRequest, agent_id: str | None
    ) -> _Call[ContextOut]:
        path = f"/api/v1/contexts/{context_id}"
        body = patch.model_dump(mode="json", exclude_unset=True)
        return _Call("PATCH", path, _model(ContextOut), body, _agent(agent_id))

    @staticmethod
    def delete(context_id: str, agent_id: str | None) -> _Call[DeletedResponse]:
        path = f"/api/v1/contexts/{context_id}"
        return _Call("DELETE", path, _model(DeletedResponse), params=_agent(agent_id))

    @staticmethod
    def clear(level: str, agent_id: str | None) -> _Call[ClearedResponse]:
        body = _body(ClearRequest(level=level, agent_id=agent_id))
        return _Call("POST", "/api/v1/contexts/clear", _model(ClearedResponse), body)

    @staticmethod
    def operations(path: str) -> _Call[dict[str, Any]]:
        return _Call("GET", path, _json)

    @staticmethod
    def metrics() -> _Call[str]:
        return _Call("GET", "/metrics", lambda response: response.text)


def _item(
    text: str,
    level: str,
    agent_id: str | None,
    session_id: str | None,
    user_id: str | None,
    metadata: dict[str, Any] | None,
    timestamp: Timestamp,
) -> StoreContextRequest:
    return StoreContextRequest(
        text=text,
        level=level,
        agent_id=agent_id,
        session_id=session_id,
        user_id=user_id,
        metadata=metadata,
        timestamp=timestamp,
    )


def _patch(
    text: str | None, metadata: dict[str, Any] | None, level: str | None, timestamp: Timestamp
) -> PatchContextRequest:
    given = {"text": text, "metadata": metadata, "level": level, "timestamp": timestamp}
    return PatchContextRequest(**{k: v for k, v in given.items() if v is not None})


def _search(
    query: str,
    max_tokens: int,
    levels: Sequence[str] | None,
    agent_id: str | None,
    session_id: str | None,
    user_id: str | None,
    filters: dict[str, Any] | None,
    as_of: Timestamp,
) -> SearchRequest:
    return SearchRequest(
        query=query,
        max_tokens=max_tokens,
        levels=list(levels) if levels is not None else None,
        agent_id=agent_id,
        session_id=session_id,
        user_id=user_id,
        filters=filters,
        as_of=as_of,
    )


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """Synchronous client. `transport` lets tests and embedders pass an httpx transport."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def _send(self, call: _Call[T]) -> T:
        response = self._http.request(
            call.method,
            call.path,
            json=call.json,
            params=call.params,
            files=call.files,
            data=call.data,
        )
        if response.is_error:
            raise error_from_response(response)
        return call.read(response)

    def store(
        self,
        text: str,
        *,
        level: str = "ShortTerm",
        agent_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp: Timestamp = None,
    ) -> StoreContextResponse:
        """Store one context; returns its id and token count."""
        item = _item(text, level, agent_id, session_id, user_id, metadata, timestamp)
        return self._send(_Calls.store(item))

    def store_many(self, items: Sequence[StoreContextRequest]) -> BatchStoreResponse:
        return self._send(_Calls.store_many(items))

    def search(
        self,
        query: str,
        max_tokens: int,
        *,
        levels: Sequence[str] | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        filters: dict[str, Any] | None = None,
        as_of: Timestamp = None,
    ) -> SearchResponse:
        """The most relevant contexts within `max_tokens` (filters are Qdrant-shaped)."""
        request = _search(query, max_tokens, levels, agent_id, session_id, user_id, filters, as_of)
        return self._send(_Calls.search(request))

    def build_context(self, request: BuildRequest) -> BuildResponse:
        """The messages to send to the model now, within the token budget."""
        return self._send(_Calls.build_context(request))

    def add_fact(self, fact: FactIn) -> FactInserted:
        """Store a fact once; `duplicate` says it was already stored."""
        return self._send(_Calls.add_fact(fact))

    def query_facts(self, query: FactQueryIn) -> FactQueryResponse:
        return self._send(_Calls.query_facts(query))

    def get_fact(self, fact_id: str, *, agent_id: str | None = None) -> FactOut:
        return self._send(_Calls.get_fact(fact_id, agent_id))

    def delete_fact(self, fact_id: str, *, agent_id: str | None = None) -> DeletedResponse:
        return self._send(_Calls.delete_fact(fact_id, agent_id))

    def index_document(
        self,
        doc_url: str,
        *,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        agent_id: str | None = None,
    ) -> JobOut:
        """Queue the document at a file:// (inside the server's allowed paths) or http(s)://
        URL for indexing; poll `get_job` for the outcome."""
        request = VisionIndexRequest(
            doc_url=doc_url, metadata=metadata, force_reindex=force_reindex, agent_id=agent_id
        )
        return self._send(_Calls.index_document(request))

    def upload_document(
        self,
        content: bytes,
        filename: str,
        *,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        agent_id: str | None = None,
    ) -> JobOut:
        """Upload a PDF or image for indexing; poll `get_job` for the outcome."""
        call = _Calls.upload_document(content, filename, metadata, force_reindex, agent_id)
        return self._send(call)

    def get_job(self, job_id: str) -> JobOut:
        return self._send(_Calls.get_job(job_id))

    def search_regions(
        self,
        query: str,
        *,
        top_k: int = 12,
        filters: VisionFilters | None = None,
        agent_id: str | None = None,
    ) -> VisionSearchResponse:
        request = VisionSearchRequest(query=query, top_k=top_k, filters=filters, agent_id=agent_id)
        return self._send(_Calls.search_regions(request))

    def decode_regions(
        self,
        region_ids: Sequence[str],
        fidelity: str | None = None,
        *,
        agent_id: str | None = None,
    ) -> VisionDecodeResponse:
        """Each region's text at `fidelity` ("1x", "5x", "10x", "20x"), in the order given."""
        request = VisionDecodeRequest.model_validate(
            {"region_ids": list(region_ids), "fidelity": fidelity, "agent_id": agent_id}
        )
        return self._send(_Calls.decode_regions(request))

    def get(self, context_id: str, *, agent_id: str | None = None) -> ContextOut:
        return self._send(_Calls.get(context_id, agent_id))

    def update(
        self,
        context_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        level: str | None = None,
        timestamp: Timestamp = None,
        agent_id: str | None = None,
    ) -> ContextOut:
        patch = _patch(text, metadata, level, timestamp)
        return self._send(_Calls.update(context_id, patch, agent_id))

    def delete(self, context_id: str, *, agent_id: str | None = None) -> DeletedResponse:
        return self._send(_Calls.delete(context_id, agent_id))

    def clear(self, level: str, *, agent_id: str | None = None) -> ClearedResponse:
        return self._send(_Calls.clear(level, agent_id))

    def health(self) -> dict[str, Any]:
        return self._send(_Calls.operations("/health"))

    def ready(self) -> dict[str, Any]:
        return self._send(_Calls.operations("/health/ready"))

    def live(self) -> dict[str, Any]:
        return self._send(_Calls.operations("/health/live"))

    def metrics(self) -> str:
        return self._send(_Calls.metrics())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Asynchronous client with the same methods as `Client`, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def _send(self, call: _Call[T]) -> T:
        response = await self._http.request(
            call.method,
            call.path,
            json=call.json,
            params=call.params,
            files=call.files,
            data=call.data,
        )
        if response.is_error:
            raise error_from_response(response)
        return call.read(response)

    async def store(
        self,
        text: str,
        *,
        level: str = "ShortTerm",
        agent_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp: Timestamp = None,
    ) -> StoreContextResponse:
        item = _item(text, level, agent_id, session_id, user_id, metadata, timestamp)
        return await self._send(_Calls.store(item))

    async def store_many(self, items: Sequence[StoreContextRequest]) -> BatchStoreResponse:
        return await self._send(_Calls.store_many(items))

    async def search(
        self,
        query: str,
        max_tokens: int,
        *,
        levels: Sequence[str] | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        filters: dict[str, Any] | None = None,
        as_of: Timestamp = None,
    ) -> SearchResponse:
        request = _search(query, max_tokens, levels, agent_id, session_id, user_id, filters, as_of)
        return await self._send(_Calls.search(request))

    async def build_context(self, request: BuildRequest) -> BuildResponse:
        """The messages to send to the model now, within the token budget."""
        return await self._send(_Calls.build_context(request))

    async def add_fact(self, fact: FactIn) -> FactInserted:
        """Store a fact once; `duplicate` says it was already stored."""
        return await self._send(_Calls.add_fact(fact))

    async def query_facts(self, query: FactQueryIn) -> FactQueryResponse:
        return await self._send(_Calls.query_facts(query))

    async def get_fact(self, fact_id: str, *, agent_id: str | None = None) -> FactOut:
        return await self._send(_Calls.get_fact(fact_id, agent_id))

    async def delete_fact(self, fact_id: str, *, agent_id: str | None = None) -> DeletedResponse:
        return await self._send(_Calls.delete_fact(fact_id, agent_id))

    async def index_document(
        self,
        doc_url: str,
        *,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        agent_id: str | None = None,
    ) -> JobOut:
        """Queue the document at a file:// (inside the server's allowed paths) or http(s)://
        URL for indexing; poll `get_job` for the outcome."""
        request = VisionIndexRequest(
            doc_url=doc_url, metadata=metadata, force_reindex=force_reindex, agent_id=agent_id
        )
        return await self._send(_Calls.index_document(request))

    async def upload_document(
        self,
        content: bytes,
        filename: str,
        *,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        agent_id: str | None = None,
    ) -> JobOut:
        """Upload a PDF or image for indexing; poll `get_job` for the outcome."""
        call = _Calls.upload_document(content, filename, metadata, force_reindex, agent_id)
        return await self._send(call)

    async def get_job(self, job_id: str) -> JobOut:
        return await self._send(_Calls.get_job(job_id))

    async def search_regions(
        self,
        query: str,
        *,
        top_k: int = 12,
        filters: VisionFilters | None = None,
        agent_id: str | None = None,
    ) -> VisionSearchResponse:
        request = VisionSearchRequest(query=query, top_k=top_k, filters=filters, agent_id=agent_id)
        return await self._send(_Calls.search_regions(request))

    async def decode_regions(
        self,
        region_ids: Sequence[str],
        fidelity: str | None = None,
        *,
        agent_id: str | None = None,
    ) -> VisionDecodeResponse:
        """Each region's text at `fidelity` ("1x", "5x", "10x", "20x"), in the order given."""
        request = VisionDecodeRequest.model_validate(
            {"region_ids": list(region_ids), "fidelity": fidelity, "agent_id": agent_id}
        )
        return await self._send(_Calls.decode_regions(request))

    async def get(self, context_id: str, *, agent_id: str | None = None) -> ContextOut:
        return await self._send(_Calls.get(context_id, agent_id))

    async def update(
        self,
        context_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        level: str | None = None,
        timestamp: Timestamp = None,
        agent_id: str | None = None,
    ) -> ContextOut:
        patch = _patch(text, metadata, level, timestamp)
        return await self._send(_Calls.update(context_id, patch, agent_id))

    async def delete(self, context_id: str, *, agent_id: str | None = None) -> DeletedResponse:
        return await self._send(_Calls.delete(context_id, agent_id))

    async def clear(self, level: str, *, agent_id: str | None = None) -> ClearedResponse:
        return await self._send(_Calls.clear(level, agent_id))

    async def health(self) -> dict[str, Any]:
        return await self._send(_Calls.operations("/health"))

    async def ready(self) -> dict[str, Any]:
        return await self._send(_Calls.operations("/health/ready"))

    async def live(self) -> dict[str, Any]:
        return await self._send(_Calls.operations("/health/live"))

    async def metrics(self) -> str:
        return await self._send(_Calls.metrics())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
