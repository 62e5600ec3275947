"""Routes over the context store: /api/v1/contexts..."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from hirag_oz.api.deps import components, embed_then, metrics, require_json
from hirag_oz.api.schemas import (
    ERROR_RESPONSES,
    BatchStoreRequest,
    BatchStoreResponse,
    ClearedResponse,
    ClearRequest,
    ContextOut,
    DeletedResponse,
    DeleteRequest,
    PatchContextRequest,
    SearchRequest,
    SearchResponse,
    StoreContextRequest,
    StoreContextResponse,
)
from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.levels import Level
from hirag_oz.memory.manager import HiRAG
from hirag_oz.memory.models import NewContext, SearchResult, StoredRef
from hirag_oz.store.filters import parse_filter

router = APIRouter(
    prefix="/api/v1/contexts",
    tags=["contexts"],
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)


def _memory(request: Request) -> HiRAG:
    return components(request).memory


def _new(item: StoreContextRequest) -> NewContext:
    return NewContext(
        text=item.text,
        level=item.level,
        agent_id=item.agent_id or DEFAULT_AGENT,
        session_id=item.session_id,
        user_id=item.user_id,
        metadata=item.metadata or {},
        timestamp=item.timestamp,
    )


@router.post("", status_code=201, response_model=StoreContextResponse)
async def store_context(body: StoreContextRequest, request: Request) -> JSONResponse:
    """Store one context; 201 means it is durable."""
    memory = _memory(request)
    items = [_new(body)]

    def store(vectors: list[list[float]] | None) -> StoredRef:
        return memory.store_many(items, vectors=vectors)[0]

    with metrics(request).operation("store"):
        ref = await embed_then(memory, memory.submit_items, items, store)
    # A Response is sent as it is; a returned model would be checked against
    # `response_model` on a worker thread, one more handoff per request.
    return JSONResponse(
        {"id": ref.id, "token_count": ref.token_count, "level": ref.level.value}, 201
    )


@router.post("/batch", status_code=201, response_model=BatchStoreResponse)
def store_batch(body: BatchStoreRequest, request: Request) -> BatchStoreResponse:
    """Store many contexts with one embedding batch and one write per level."""
    with metrics(request).operation("store_batch"):
        refs = _memory(request).store_many([_new(item) for item in body.items])
    return BatchStoreResponse(ids=[r.id for r in refs], token_counts=[r.token_count for r in refs])


@router.post("/search", response_model=SearchResponse)
async def search_contexts(body: SearchRequest, request: Request) -> JSONResponse:
    """The most relevant contexts that fit `max_tokens`, sorted by score."""
    memory = _memory(request)
    recorder = metrics(request)

    def search(vectors: list[list[float]] | None) -> SearchResult:
        return memory.search(
            body.query,
            body.max_tokens,
            levels=body.levels,
            agent_id=body.agent_id or DEFAULT_AGENT,
            session_id=body.session_id,
            user_id=body.user_id,
            filters=filters,
            as_of=body.as_of,
            query_vector=None if vectors is None else vectors[0],
        )

    with recorder.operation("search"):
        filters = parse_filter(body.filters)  # a bad filter fails before the model runs
        result = await embed_then(memory, memory.submit_query, body.query, search)
    recorder.observe_budget("search", result.total_tokens, body.max_tokens)
    return JSONResponse(result.to_dict())


@router.post("/delete", response_model=DeletedResponse)
def delete_by_body(body: DeleteRequest, request: Request) -> DeletedResponse:
    """Delete by id in the body (the original service's route)."""
    with metrics(request).operation("delete"):
        _memory(request).delete(body.id)
    return DeletedResponse(id=body.id, deleted=True)


@router.post("/clear", response_model=ClearedResponse)
def clear_level(
    request: Request, body: Annotated[ClearRequest | str, Body(examples=["ShortTerm"])]
) -> ClearedResponse:
    """Delete a level's items (only `agent_id`'s when given). The body may be a bare string."""
    level, agent = (body, None) if isinstance(body, str) else (body.level, body.agent_id)
    with metrics(request).operation("clear"):
        cleared = _memory(request).clear_level(level, agent_id=agent)
    return ClearedResponse(level=Level.parse(level).value, cleared=cleared)


@router.get("/{context_id}", response_model=ContextOut)
def get_context(
    context_id: str, request: Request, agent_id: Annotated[str | None, Query()] = None
) -> dict[str, object]:
    """One context by id (404 when unknown, or not `agent_id`'s)."""
    with metrics(request).operation("get"):
        return _memory(request).get(context_id, agent_id=agent_id).to_dict()


@router.patch("/{context_id}", response_model=ContextOut)
def patch_context(
    context_id: str,
    body: PatchContextRequest,
    request: Request,
    agent_id: Annotated[str | None, Query()] = None,
) -> dict[str, object]:
    """Change text (re-embedded), merge metadata, move to another level."""
    with metrics(request).operation("update"):
        context = _memory(request).update(
            context_id,
            text=body.text,
            metadata=body.metadata,
            level=body.level,
            timestamp=body.timestamp,
            agent_id=agent_id,
        )
    return context.to_dict()


@router.delete("/{context_id}", response_model=DeletedResponse)
def delete_context(
    context_id: str, request: Request, agent_id: Annotated[str | None, Query()] = None
) -> DeletedResponse:
    """Delete one context (404 when unknown)."""
    with metrics(request).operation("delete"):
        _memory(request).delete(context_id, agent_id=agent_id)
    return DeletedResponse(id=context_id, deleted=True)
