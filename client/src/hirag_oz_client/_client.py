"""`Client` and `AsyncClient`: every catalogued operation as a method, over HTTP.

One `Caller` base builds every request from the catalogue (httpx's `BaseClient` idea); the
two classes only send it. Methods take the request model's fields as keyword arguments and
return the response model:

    with Client("http://127.0.0.1:8081", api_key="...") as hirag:
        hirag.store_context(text="User prefers dark mode", level="LongTerm")
        found = hirag.search_contexts(query="Which theme?", max_tokens=500)

An error response raises the class its envelope names (`NotFoundError`, `ValidationError`,
`RateLimitedError`, ...): the classes the library raises in-process.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import pydantic
from pydantic import BaseModel

from hirag_oz_client import catalogue as ops
from hirag_oz_client import errors
from hirag_oz_client.catalogue import Operation
from hirag_oz_client.models import JobOut

P = ParamSpec("P")
Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

__all__ = [
    "AsyncClient",
    "AsyncOperations",
    "Caller",
    "Client",
    "Operations",
    "build_request",
    "error_from_response",
]


def build_request(op: Operation[P, Q, R], *args: P.args, **fields: P.kwargs) -> Q:
    """`op`'s request from its fields; fields that break its schema raise `ValidationError`
    listing each one (as the service's 422 does)."""
    try:
        return op.request(*args, **fields)
    except pydantic.ValidationError as exc:
        raise schema_error(exc) from None


def schema_error(exc: pydantic.ValidationError) -> errors.ValidationError:
    """A request that does not match its schema, field by field."""
    fields = [
        {
            "field": ".".join(str(part) for part in e.get("loc", ())),
            "message": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]
    return errors.ValidationError("request does not match the schema", {"errors": fields})


def error_from_response(response: httpx.Response) -> errors.HiragError:
    """The error an error response describes (by its envelope, else by its status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and {"code", "message"} <= body.keys()):
        body = {"code": "", "message": response.text[:300] or response.reason_phrase}
    retry = response.headers.get("retry-after", "1")
    error = errors.from_envelope(
        body, response.status_code, retry_after=int(retry) if retry.isdigit() else 1
    )
    if not body["code"]:
        fallback = errors.error_class(_STATUS_CODES.get(response.status_code, ""))
        error = fallback(error.message, error.details)
        error.status = response.status_code
    return error


_STATUS_CODES = {
    w.status: w.code for cls, w in reversed(errors.WIRE.items()) if cls is not errors.HiragError
}


class _Http:
    """One HTTP request of an operation."""

    def __init__(self, op: Operation[Any, Any, Any], request: BaseModel) -> None:
        self.method = op.method
        self.path = op.url_path(request)
        query = request.model_dump(mode="json", include=set(op.query_fields), exclude_none=True)
        self.params: Mapping[str, Any] | None = query or None
        body_fields = op.body_fields
        self.json: Any = None
        if body_fields:
            self.json = request.model_dump(
                mode="json", include=set(body_fields), exclude_unset=True
            )


class Caller:
    """What both clients share: the request of an operation, and reading its answer."""

    @staticmethod
    def _http(op: Operation[Any, Any, Any], request: BaseModel) -> _Http:
        return _Http(op, request)

    @staticmethod
    def _read(op: Operation[Any, Any, R], response: httpx.Response) -> R:
        if response.is_error:
            raise error_from_response(response)
        return op.response.model_validate(response.json())


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def sync_method(op: Operation[P, Q, R]) -> Callable[Concatenate[Any, P], R]:
    """A method that runs `op` through its object's `call`."""

    def method(self: Any, /, *args: P.args, **fields: P.kwargs) -> R:
        result: R = self.call(op, build_request(op, *args, **fields))
        return result

    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = op.doc
    return method


def async_method(op: Operation[P, Q, R]) -> Callable[Concatenate[Any, P], Awaitable[R]]:
    """An awaitable method that runs `op` through its object's `call`."""

    async def method(self: Any, /, *args: P.args, **fields: P.kwargs) -> R:
        result: R = await self.call(op, build_request(op, *args, **fields))
        return result

    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = op.doc
    return method


class Operations:
    """One method per catalogued operation, run by the object's `call` (a client sends it,
    the library's `Hirag` runs it in-process)."""

    def call(self, op: Operation[Any, Any, R], request: BaseModel) -> R:
        raise NotImplementedError

    store_context = sync_method(ops.STORE_CONTEXT)
    store_contexts = sync_method(ops.STORE_CONTEXTS)
    search_contexts = sync_method(ops.SEARCH_CONTEXTS)
    get_context = sync_method(ops.GET_CONTEXT)
    update_context = sync_method(ops.UPDATE_CONTEXT)
    delete_context = sync_method(ops.DELETE_CONTEXT)
    clear_contexts = sync_method(ops.CLEAR_CONTEXTS)
    build_context = sync_method(ops.BUILD_CONTEXT)
    add_fact = sync_method(ops.ADD_FACT)
    query_facts = sync_method(ops.QUERY_FACTS)
    get_fact = sync_method(ops.GET_FACT)
    delete_fact = sync_method(ops.DELETE_FACT)
    index_document = sync_method(ops.INDEX_DOCUMENT)
    get_job = sync_method(ops.GET_JOB)
    search_regions = sync_method(ops.SEARCH_REGIONS)
    decode_regions = sync_method(ops.DECODE_REGIONS)
    append_messages = sync_method(ops.APPEND_MESSAGES)
    session_context = sync_method(ops.SESSION_CONTEXT)
    get_session = sync_method(ops.GET_SESSION)
    list_sessions = sync_method(ops.LIST_SESSIONS)
    list_messages = sync_method(ops.LIST_MESSAGES)
    update_brief = sync_method(ops.UPDATE_BRIEF)
    close_session = sync_method(ops.CLOSE_SESSION)
    delete_session = sync_method(ops.DELETE_SESSION)
    health = sync_method(ops.HEALTH)


class AsyncOperations:
    """The methods of `Operations`, awaited."""

    async def call(self, op: Operation[Any, Any, R], request: BaseModel) -> R:
        raise NotImplementedError

    store_context = async_method(ops.STORE_CONTEXT)
    store_contexts = async_method(ops.STORE_CONTEXTS)
    search_contexts = async_method(ops.SEARCH_CONTEXTS)
    get_context = async_method(ops.GET_CONTEXT)
    update_context = async_method(ops.UPDATE_CONTEXT)
    delete_context = async_method(ops.DELETE_CONTEXT)
    clear_contexts = async_method(ops.CLEAR_CONTEXTS)
    build_context = async_method(ops.BUILD_CONTEXT)
    add_fact = async_method(ops.ADD_FACT)
    query_facts = async_method(ops.QUERY_FACTS)
    get_fact = async_method(ops.GET_FACT)
    delete_fact = async_method(ops.DELETE_FACT)
    index_document = async_method(ops.INDEX_DOCUMENT)
    get_job = async_method(ops.GET_JOB)
    search_regions = async_method(ops.SEARCH_REGIONS)
    decode_regions = async_method(ops.DECODE_REGIONS)
    append_messages = async_method(ops.APPEND_MESSAGES)
    session_context = async_method(ops.SESSION_CONTEXT)
    get_session = async_method(ops.GET_SESSION)
    list_sessions = async_method(ops.LIST_SESSIONS)
    list_messages = async_method(ops.LIST_MESSAGES)
    update_brief = async_method(ops.UPDATE_BRIEF)
    close_session = async_method(ops.CLOSE_SESSION)
    delete_session = async_method(ops.DELETE_SESSION)
    health = async_method(ops.HEALTH)


class Client(Caller, Operations):
    """The service over HTTP, synchronously. `transport` takes any httpx transport."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http_client = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def call(self, op: Operation[Any, Any, R], request: BaseModel) -> R:
        """Run the operation `op` with `request` (a model of `op.request`)."""
        http = self._http(op, request)
        response = self._http_client.request(
            http.method, http.path, params=http.params, json=http.json
        )
        return self._read(op, response)

    def upload_document(
        self,
        content: bytes,
        filename: str,
        *,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        agent_id: str | None = None,
    ) -> JobOut:
        """index_document for a document sent in the request (multipart upload)."""
        files, data = _upload(content, filename, metadata, force_reindex, agent_id)
        response = self._http_client.post(ops.INDEX_DOCUMENT.path, files=files, data=data)
        return self._read(ops.INDEX_DOCUMENT, response)

    def ready(self) -> dict[str, Any]:
        """`/health/ready`: whether the service can serve."""
        return _json(self._http_client.get("/health/ready"))

    def live(self) -> dict[str, Any]:
        """`/health/live`: whether the process serves HTTP."""
        return _json(self._http_client.get("/health/live"))

    def metrics(self) -> str:
        """The Prometheus text exposition of `/metrics`."""
        response = self._http_client.get("/metrics")
        if response.is_error:
            raise error_from_response(response)
        return response.text

    def close(self) -> None:
        self._http_client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(Caller, AsyncOperations):
    """The service over HTTP, with the methods of `Client` awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http_client = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def call(self, op: Operation[Any, Any, R], request: BaseModel) -> R:
        """Run the operation `op` with `request` (a model of `op.request`)."""
        http = self._http(op, request)
        response = await self._http_client.request(
            http.method, http.path, params=http.params, json=http.json
        )
        return self._read(op, response)

    async def upload_document(
        self,
        content: bytes,
        filename: str,
        *,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        agent_id: str | None = None,
    ) -> JobOut:
        """index_document for a document sent in the request (multipart upload)."""
        files, data = _upload(content, filename, metadata, force_reindex, agent_id)
        response = await self._http_client.post(ops.INDEX_DOCUMENT.path, files=files, data=data)
        return self._read(ops.INDEX_DOCUMENT, response)

    async def ready(self) -> dict[str, Any]:
        """`/health/ready`: whether the service can serve."""
        return _json(await self._http_client.get("/health/ready"))

    async def live(self) -> dict[str, Any]:
        """`/health/live`: whether the process serves HTTP."""
        return _json(await self._http_client.get("/health/live"))

    async def metrics(self) -> str:
        """The Prometheus text exposition of `/metrics`."""
        response = await self._http_client.get("/metrics")
        if response.is_error:
            raise error_from_response(response)
        return response.text

    async def aclose(self) -> None:
        await self._http_client.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _upload(
    content: bytes,
    filename: str,
    metadata: dict[str, Any] | None,
    force_reindex: bool,
    agent_id: str | None,
) -> tuple[dict[str, tuple[str, bytes]], dict[str, str]]:
    form = {"force_reindex": "true" if force_reindex else "false"}
    if metadata is not None:
        form["metadata"] = json.dumps(metadata)
    if agent_id is not None:
        form["agent_id"] = agent_id
    return {"file": (filename, content)}, form


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise error_from_response(response)
    body: dict[str, Any] = response.json()
    return body
