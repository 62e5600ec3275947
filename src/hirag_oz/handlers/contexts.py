"""The contexts operations: wire requests to the memory levels and back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.levels import Level
from hirag_oz.memory.models import NewContext, SearchResult
from hirag_oz.store.filters import parse_filter
from hirag_oz_client import models as m

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

Vectors = list[list[float]] | None


def new_context(item: m.StoreContextRequest) -> NewContext:
    return NewContext(
        text=item.text,
        level=item.level,
        agent_id=item.agent_id or DEFAULT_AGENT,
        session_id=item.session_id,
        user_id=item.user_id,
        metadata=item.metadata or {},
        timestamp=item.timestamp,
    )


def store_context(
    hirag: Hirag, request: m.StoreContextRequest, vectors: Vectors = None
) -> m.StoreContextResponse:
    ref = hirag.contexts.store_many([new_context(request)], vectors=vectors)[0]
    return m.StoreContextResponse(id=ref.id, token_count=ref.token_count, level=ref.level.value)


def store_contexts(hirag: Hirag, request: m.StoreContextsRequest) -> m.StoreContextsResponse:
    refs = hirag.contexts.store_many([new_context(item) for item in request.items])
    return m.StoreContextsResponse(
        ids=[r.id for r in refs], token_counts=[r.token_count for r in refs]
    )


def search_contexts(
    hirag: Hirag, request: m.SearchContextsRequest, vectors: Vectors = None
) -> m.SearchContextsResponse:
    result = search(hirag, request, vectors)
    if hirag.metrics is not None:
        hirag.metrics.observe_budget("search", result.total_tokens, request.max_tokens)
    return m.SearchContextsResponse.model_validate(result.to_dict())


def search(hirag: Hirag, request: m.SearchContextsRequest, vectors: Vectors) -> SearchResult:
    return hirag.contexts.search(
        request.query,
        request.max_tokens,
        levels=request.levels,
        agent_id=request.agent_id or DEFAULT_AGENT,
        session_id=request.session_id,
        user_id=request.user_id,
        filters=parse_filter(request.filters),
        as_of=request.as_of,
        query_vector=None if vectors is None else vectors[0],
    )


def get_context(hirag: Hirag, request: m.GetContextRequest) -> m.ContextOut:
    found = hirag.contexts.get(request.context_id, agent_id=request.agent_id)
    return m.ContextOut.model_validate(found.to_dict())


def update_context(hirag: Hirag, request: m.UpdateContextRequest) -> m.ContextOut:
    changed = hirag.contexts.update(
        request.context_id,
        text=request.text,
        metadata=request.metadata,
        level=request.level,
        timestamp=request.timestamp,
        agent_id=request.agent_id,
    )
    return m.ContextOut.model_validate(changed.to_dict())


def delete_context(hirag: Hirag, request: m.DeleteContextRequest) -> m.DeletedResponse:
    hirag.contexts.delete(request.context_id, agent_id=request.agent_id)
    return m.DeletedResponse(id=request.context_id, deleted=True)


def clear_contexts(hirag: Hirag, request: m.ClearContextsRequest) -> m.ClearedResponse:
    cleared = hirag.contexts.clear_level(request.level, agent_id=request.agent_id)
    return m.ClearedResponse(level=Level.parse(request.level).value, cleared=cleared)
