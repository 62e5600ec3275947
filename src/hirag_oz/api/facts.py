"""Routes over the facts store: /api/v1/facts..."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from hirag_oz.api.deps import components, metrics, require_json
from hirag_oz.api.schemas import (
    ERROR_RESPONSES,
    DeletedResponse,
    FactIn,
    FactInserted,
    FactOut,
    FactQueryRequest,
    FactQueryResponse,
)
from hirag_oz.errors import ValidationError
from hirag_oz.facts import Anchor, Fact, FactQuery, FactStore, NewFact
from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.models import to_datetime

router = APIRouter(
    prefix="/api/v1/facts",
    tags=["facts"],
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)


def _facts(request: Request) -> FactStore:
    return components(request).facts


@router.post(
    "",
    status_code=201,
    response_model=FactInserted,
    responses={200: {"model": FactInserted, "description": "Already stored (duplicate)."}},
)
def add_fact(body: FactIn, request: Request, response: Response) -> FactInserted:
    """Store a fact once: 201 when new, 200 with `duplicate: true` when already stored."""
    recorder = metrics(request)
    anchor = body.source_anchor
    new = NewFact(
        body.subject,
        body.predicate,
        body.object,
        body.confidence,
        agent_id=body.agent_id or DEFAULT_AGENT,
        datatype=body.datatype,
        source_doc=body.source_doc,
        source_anchor=Anchor(**anchor.model_dump()) if anchor else Anchor(),
        observed_at=body.observed_at,
        valid_from=body.valid_from,
        valid_to=body.valid_to,
        exclusive=body.exclusive,
    )
    try:
        with recorder.operation("facts_insert"):
            done = _facts(request).insert(new)
    except ValidationError:
        recorder.fact_inserts.labels("rejected").inc()
        raise
    recorder.fact_inserts.labels("duplicate" if done.duplicate else "new").inc()
    if done.duplicate:
        response.status_code = 200
    return FactInserted(
        fact_id=done.fact_id, hash=done.hash, duplicate=done.duplicate, closed=list(done.closed)
    )


@router.post("/query", response_model=FactQueryResponse)
def query_facts(body: FactQueryRequest, request: Request) -> dict[str, Any]:
    """Facts matching every given filter, with the total; `text` ranks by meaning."""
    q = body.query
    with metrics(request).operation("facts_query"):
        page = _facts(request).query(
            FactQuery(
                subject=q.subject,
                predicate=q.predicate,
                object=q.object,
                source_doc=q.source_doc,
                min_confidence=q.min_confidence,
                agent_id=q.agent_id or DEFAULT_AGENT,
                valid_at=q.valid_at,
                text=q.text,
                limit=q.limit,
                offset=q.offset,
            )
        )
    scores: list[float | None] = (
        list(page.scores) if page.scores is not None else [None] * len(page.facts)
    )
    return {
        "facts": [fact_out(f, score) for f, score in zip(page.facts, scores, strict=True)],
        "total": page.total,
    }


FactId = Annotated[str, Path(description="The fact's id (a UUID).")]


@router.get("/{fact_id}", response_model=FactOut)
def get_fact(fact_id: FactId, request: Request, agent_id: str | None = None) -> dict[str, Any]:
    with metrics(request).operation("facts_get"):
        return fact_out(_facts(request).get(fact_id, agent_id=agent_id))


@router.delete("/{fact_id}", response_model=DeletedResponse)
def delete_fact(fact_id: FactId, request: Request, agent_id: str | None = None) -> DeletedResponse:
    with metrics(request).operation("facts_delete"):
        _facts(request).delete(fact_id, agent_id=agent_id)
    return DeletedResponse(id=fact_id, deleted=True)


def fact_out(fact: Fact, score: float | None = None) -> dict[str, Any]:
    def iso(value: float | None) -> str | None:
        return None if value is None else to_datetime(value).isoformat()

    return {
        "id": fact.id,
        "hash": fact.hash,
        "subject": fact.subject,
        "predicate": fact.predicate,
        "object": fact.object,
        "confidence": fact.confidence,
        "agent_id": fact.agent_id,
        "datatype": fact.datatype,
        "source_doc": fact.source_doc,
        "source_anchor": fact.source_anchor.as_dict(),
        "observed_at": iso(fact.observed_at),
        "valid_from": iso(fact.valid_from),
        "valid_to": iso(fact.valid_to),
        "score": score,
    }
