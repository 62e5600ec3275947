"""The HTTP routes, generated from the operation catalogue.

Each operation gets its route (and its aliases): path fields from the path, query fields
from the query string, the rest from the JSON body, all checked by the request model (a
422 lists each field). The handler runs in a worker thread, or, for the two hot paths
(store_context and search_contexts), with the model on its own thread and the store calls
on the event loop (see `embed_then`). The answer is the response model's JSON, with the
operation's status.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, create_model
from starlette.concurrency import run_in_threadpool

from hirag_oz.api.deps import caller_of, embed_then, hirag_of, require_json
from hirag_oz.handlers import contexts
from hirag_oz.kernel.scope import ADDING, TRUSTED, Caller, authorize
from hirag_oz.service import Hirag
from hirag_oz.store.filters import parse_filter
from hirag_oz_client import catalogue as ops
from hirag_oz_client.catalogue import OPERATIONS, Operation
from hirag_oz_client.models import ErrorBody

FastPath = Callable[[Hirag, Any], Awaitable[BaseModel]]


async def _store_context(hirag: Hirag, request: Any) -> BaseModel:
    memory = hirag.contexts
    items = [contexts.new_context(request)]

    def store(vectors: list[list[float]] | None) -> BaseModel:
        return contexts.store_context(hirag, request, vectors)

    return await embed_then(memory, memory.submit_items, items, store)


async def _search_contexts(hirag: Hirag, request: Any) -> BaseModel:
    memory = hirag.contexts
    parse_filter(request.filters)  # a bad filter fails before the model runs

    def search(vectors: list[list[float]] | None) -> BaseModel:
        return contexts.search_contexts(hirag, request, vectors)

    return await embed_then(memory, memory.submit_query, request.query, search)


_FAST: dict[str, FastPath] = {
    ops.STORE_CONTEXT.name: _store_context,
    ops.SEARCH_CONTEXTS.name: _search_contexts,
}


async def run(
    hirag: Hirag, op: Operation[Any, Any, Any], request: BaseModel, caller: Caller = TRUSTED
) -> BaseModel:
    """`op` with `request` as `caller`, counted and timed like any other call of it."""
    fast = _FAST.get(op.name)
    if fast is None:
        result: BaseModel = await run_in_threadpool(hirag.call, op, request, caller)
        return result
    request = authorize(caller, op, request)
    hirag = hirag.tenant(caller.tenant)
    if op.name in ADDING and hirag.settings.server.max_items_per_tenant is not None:
        # Counting the tenant's items reads the store: off the event loop, and only when a
        # quota is set (store_context is a hot path).
        await run_in_threadpool(hirag.check_quota)
    if hirag.metrics is None:
        return await fast(hirag, request)
    with hirag.metrics.operation(op.name):
        return await fast(hirag, request)


def json_response(model: BaseModel, status: int) -> Response:
    """The response model as JSON; an operation that creates (201) answers 200 when it found
    what it was asked to create already there (`duplicate`)."""
    if status == 201 and getattr(model, "duplicate", False) is True:
        status = 200
    return Response(model.model_dump_json(), status, media_type="application/json")


def _body_model(op: Operation[Any, Any, Any], fields: tuple[str, ...]) -> type[BaseModel]:
    """The request model itself when the body carries all of it, else a model of the body's
    fields alone (`UpdateContextBody`)."""
    if set(fields) == set(op.request.model_fields):
        return op.request
    name = "".join(part.title() for part in op.name.split("_")) + "Body"
    definitions: dict[str, Any] = {
        f: (op.request.model_fields[f].annotation, op.request.model_fields[f]) for f in fields
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **definitions)


def _endpoint(
    op: Operation[Any, Any, Any], method: str, path: str, body_fields: tuple[str, ...]
) -> Callable[..., Awaitable[Response]]:
    """A FastAPI endpoint whose signature declares `op`'s parameters where they travel."""
    path_fields = tuple(f for f in op.path_fields if f"{{{f}}}" in path)
    query_fields = tuple(f for f in op.query_fields if f not in body_fields)
    body = _body_model(op, body_fields) if body_fields else None
    whole = body is op.request

    async def endpoint(request: Request, **given: Any) -> Response:
        hirag = hirag_of(request)
        if whole and given.get("body") is not None:
            call = given["body"]
        elif whole:
            call = op.request()
        else:
            values = {k: v for k, v in given.items() if k != "body" and v is not None}
            if given.get("body") is not None:
                values.update(given["body"].model_dump(exclude_unset=True))
            try:
                call = op.request.model_validate(values)
            except pydantic.ValidationError as exc:
                # A path or query value that breaks a rule of the request model: a 422
                # naming it, as for a body.
                raise RequestValidationError(
                    [{**e, "loc": (_origin(str(e["loc"][0])), *e["loc"])} for e in exc.errors()]
                ) from None
        result = await run(hirag, op, call, caller_of(request))
        return json_response(result, op.status)

    def _origin(field: str) -> str:
        return "path" if field in path_fields else "query" if field in query_fields else "body"

    fields = op.request.model_fields
    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    for name in path_fields:
        in_path: Any = Annotated[str, Path(description=fields[name].description)]
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=in_path)
        )
    for name in query_fields:
        info = fields[name]
        in_query: Any = Annotated[info.annotation, Query(description=info.description)]
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=in_query, default=info.default
            )
        )
    if body is not None:
        # A body whose fields all have defaults may be left out (`POST .../close`).
        optional = not any(f.is_required() for f in body.model_fields.values())
        parameters.append(
            inspect.Parameter(
                "body",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[body, Body()],
                default=None if optional else inspect.Parameter.empty,
            )
        )
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = op.name if path == op.path else f"{op.name}_by_body"
    endpoint.__doc__ = op.doc
    return endpoint


def _error_example(
    code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "content": {
            "application/json": {
                "example": {"code": code, "message": message, "details": details or {}}
            }
        },
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_example("VALIDATION_ERROR", "request body is not valid JSON"),
    401: _error_example("UNAUTHORIZED", "the API key is not valid"),
    404: _error_example("NOT_FOUND", "no context with id 3f1c..."),
    413: _error_example(
        "PAYLOAD_TOO_LARGE", "request body is larger than 10485760 bytes", {"max_bytes": 10485760}
    ),
    415: _error_example("UNSUPPORTED_MEDIA_TYPE", "expected 'Content-Type: application/json'"),
    422: _error_example(
        "VALIDATION_ERROR",
        "request does not match the schema",
        {"errors": [{"field": "max_tokens", "message": "Field required", "type": "missing"}]},
    ),
    429: _error_example(
        "RATE_LIMIT",
        "rate limit exceeded; retry after 12 s",
        {"limit": 600, "remaining": 0, "retry_after_seconds": 12},
    ),
    500: _error_example("INTERNAL_ERROR", "unexpected server error", {"request_id": "9b2e..."}),
}


def catalogue_router(skip: frozenset[str] = frozenset()) -> APIRouter:
    """A route for every catalogued operation (and alias), but those named in `skip`."""
    router = APIRouter()
    for op in OPERATIONS:
        if op.name in skip:
            continue
        routes = [(op.method, op.path, op.body_fields)]
        routes += [(m, p, tuple(op.request.model_fields)) for m, p in op.aliases]
        for method, path, body_fields in routes:
            on_api = path.startswith("/api/")
            responses: dict[int | str, dict[str, Any]] = dict(
                ERROR_RESPONSES if on_api else {503: {"model": ErrorBody}}
            )
            if "duplicate" in op.response.model_fields:
                responses[200] = {"model": op.response, "description": "Already stored."}
            router.add_api_route(
                path,
                _endpoint(op, method, path, body_fields),
                methods=[method],
                status_code=op.status,
                response_model=op.response,
                responses=responses,
                tags=[op.group],
                summary=op.name,
                description=op.doc,
                dependencies=[Depends(require_json)] if body_fields else [],
            )
    return router
