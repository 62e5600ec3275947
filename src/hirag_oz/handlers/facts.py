"""The facts operations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hirag_oz.errors import ValidationError
from hirag_oz.facts import Anchor, Fact, FactQuery, NewFact
from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.models import to_datetime
from hirag_oz_client import models as m

if TYPE_CHECKING:
    from hirag_oz.service import Hirag


def add_fact(hirag: Hirag, request: m.AddFactRequest) -> m.AddFactResponse:
    anchor = request.source_anchor
    new = NewFact(
        request.subject,
        request.predicate,
        request.object,
        request.confidence,
        agent_id=request.agent_id or DEFAULT_AGENT,
        datatype=request.datatype,
        source_doc=request.source_doc,
        source_anchor=Anchor(**anchor.model_dump()) if anchor else Anchor(),
        observed_at=request.observed_at,
        valid_from=request.valid_from,
        valid_to=request.valid_to,
        exclusive=request.exclusive,
    )
    try:
        done = hirag.facts.insert(new)
    except ValidationError:
        if hirag.metrics is not None:
            hirag.metrics.fact_inserts.labels("rejected").inc()
        raise
    if hirag.metrics is not None:
        hirag.metrics.fact_inserts.labels("duplicate" if done.duplicate else "new").inc()
    return m.AddFactResponse(
        fact_id=done.fact_id, hash=done.hash, duplicate=done.duplicate, closed=list(done.closed)
    )


def query_facts(hirag: Hirag, request: m.QueryFactsRequest) -> m.QueryFactsResponse:
    page = hirag.facts.query(
        FactQuery(
            subject=request.subject,
            predicate=request.predicate,
            object=request.object,
            source_doc=request.source_doc,
            min_confidence=request.min_confidence,
            agent_id=request.agent_id or DEFAULT_AGENT,
            valid_at=request.valid_at,
            text=request.text,
            limit=request.limit,
            offset=request.offset,
        )
    )
    scores: list[float | None] = (
        list(page.scores) if page.scores is not None else [None] * len(page.facts)
    )
    return m.QueryFactsResponse(
        facts=[fact_out(f, score) for f, score in zip(page.facts, scores, strict=True)],
        total=page.total,
    )


def get_fact(hirag: Hirag, request: m.GetFactRequest) -> m.FactOut:
    return fact_out(hirag.facts.get(request.fact_id, agent_id=request.agent_id))


def delete_fact(hirag: Hirag, request: m.DeleteFactRequest) -> m.DeletedResponse:
    hirag.facts.delete(request.fact_id, agent_id=request.agent_id)
    return m.DeletedResponse(id=request.fact_id, deleted=True)


def fact_out(fact: Fact, score: float | None = None) -> m.FactOut:
    def iso(value: float | None) -> str | None:
        return None if value is None else to_datetime(value).isoformat()

    return m.FactOut.model_validate(
        {
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
    )
