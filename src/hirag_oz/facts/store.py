"""The facts store: idempotent inserts, filtered and semantic queries, validity over time."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hirag_oz.config import FactsSettings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.errors import NotFoundError, ValidationError
from hirag_oz.facts.models import (
    ANCHOR_FIELDS,
    Anchor,
    Fact,
    Inserted,
    NewFact,
    fact_hash,
    fact_id,
    sentence,
)
from hirag_oz.kernel.clock import Clock, SystemClock
from hirag_oz.kernel.fusion import similarity_from_score
from hirag_oz.kernel.ids import DEFAULT_AGENT, check_agent_id, is_uuid
from hirag_oz.kernel.sparse_setup import open_hybrid_collections
from hirag_oz.kernel.validation import check_text, check_timestamp
from hirag_oz.store.base import (
    Condition,
    Distance,
    FieldType,
    Filter,
    PointRecord,
    Range,
    SparseVec,
    StoredPoint,
    VectorStore,
)

MAX_TERM_CHARS = 2000
MAX_FIELD_CHARS = 512
FACT_INDEXES: dict[str, FieldType] = {
    "agent_id": "tenant",
    "subject": "keyword",
    "predicate": "keyword",
    "object": "keyword",
    "source_doc": "keyword",
    "confidence": "float",
    # Times for filtering and ordering, in integer microseconds: exact, where the store's
    # float ranges miss some values at their own bounds.
    "observed_us": "integer",
    "valid_start_us": "integer",
    "valid_to_us": "integer",
}


@dataclass(frozen=True)
class FactQuery:
    subject: str | None = None
    predicate: str | None = None
    object: str | None = None
    source_doc: str | None = None
    min_confidence: float | None = None
    agent_id: str = DEFAULT_AGENT
    valid_at: Any = None
    text: str | None = None
    limit: int = 20
    offset: int = 0


@dataclass(frozen=True)
class FactPage:
    facts: list[Fact]
    total: int
    scores: list[float] | None = None


class FactStore:
    """Facts in one collection, `<prefix>_facts`, on either store adapter."""

    def __init__(
        self,
        backend: VectorStore,
        embedder: Embedder,
        settings: FactsSettings,
        *,
        collection_prefix: str = "contexts",
        distance: Distance = "Cosine",
        clock: Clock | None = None,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.settings = settings
        self.distance = distance
        self.clock = clock or SystemClock()
        self.collection = f"{collection_prefix}_facts"
        self.sparse = open_hybrid_collections(
            backend, [self.collection], embedder.dimension, distance, FACT_INDEXES
        )
        self._functional = frozenset(settings.functional_predicates)
        # Closing the current facts of a functional predicate reads, then writes.
        self._closing = threading.Lock()

    # ----------------------------------------------------------------------------- insert
    def insert(self, new: NewFact) -> Inserted:
        return self.insert_many([new])[0]

    def insert_many(self, items: Sequence[NewFact]) -> list[Inserted]:
        """Each fact once per agent: a fact already stored (same hash) is not written again,
        and of concurrent inserts of one fact exactly one is stored; all get its id."""
        checked = [self._check(item, f"facts[{i}]") for i, item in enumerate(items)]
        # One record per id: a fact repeated within the batch is a duplicate of its first.
        first = {point_id: payload for point_id, payload in reversed(checked)}
        texts = [sentence(p["subject"], p["predicate"], p["object"]) for p in first.values()]
        vectors = self.embedder.embed(texts) if texts else []
        tokens = {point_id: uuid.uuid4().hex for point_id in first}
        records = [
            PointRecord(
                point_id,
                vector,
                self.sparse.document(text),
                {**payload, "insert_token": tokens[point_id]},
            )
            for (point_id, payload), vector, text in zip(first.items(), vectors, texts, strict=True)
        ]
        self.backend.upsert(self.collection, records, insert_only=True)
        stored = {p.id: p for p in self.backend.retrieve(self.collection, list(tokens))}
        results = []
        seen: set[str] = set()
        for (point_id, payload), item in zip(checked, items, strict=True):
            winner = stored.get(point_id)
            duplicate = (
                point_id in seen
                or winner is None
                or winner.payload.get("insert_token") != tokens[point_id]
            )
            seen.add(point_id)
            closed: tuple[str, ...] = ()
            if not duplicate and (item.exclusive or payload["predicate"] in self._functional):
                closed = self._close_others(point_id, payload)
            results.append(Inserted(point_id, payload["hash"], duplicate, closed))
        return results

    def _check(self, item: NewFact, where: str) -> tuple[str, dict[str, Any]]:
        subject = check_text(item.subject, f"{where}.subject", MAX_TERM_CHARS).strip()
        predicate = check_text(item.predicate, f"{where}.predicate", MAX_TERM_CHARS).strip()
        obj = check_text(item.object, f"{where}.object", MAX_TERM_CHARS).strip()
        confidence = item.confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise ValidationError(f"{where}.confidence must be a number", {"field": "confidence"})
        if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
            raise ValidationError(
                f"{where}.confidence must be between 0 and 1", {"field": "confidence"}
            )
        threshold = self.settings.confidence_threshold
        if confidence < threshold:
            raise ValidationError(
                f"confidence {confidence} is below the threshold {threshold}",
                {"field": "confidence", "confidence": confidence, "threshold": threshold},
            )
        agent = check_agent_id(item.agent_id, f"{where}.agent_id")
        for name in ("datatype", "source_doc"):
            value = getattr(item, name)
            if value is not None:
                check_text(value, f"{where}.{name}", MAX_FIELD_CHARS)
        anchor = item.source_anchor
        for name in ANCHOR_FIELDS:
            value = getattr(anchor, name)
            if isinstance(value, str):
                check_text(value, f"{where}.source_anchor.{name}", MAX_FIELD_CHARS)
        page = anchor.page
        if page is not None and (
            isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < 2**63
        ):
            # Out of range, the store would keep it as a float, and it would no longer read back.
            raise ValidationError(
                f"{where}.source_anchor.page must be an integer from 0 to 2**63 - 1",
                {"field": "source_anchor.page"},
            )
        observed = check_timestamp(item.observed_at, f"{where}.observed_at")
        observed = self.clock.now() if observed is None else observed
        valid_from = check_timestamp(item.valid_from, f"{where}.valid_from")
        valid_to = check_timestamp(item.valid_to, f"{where}.valid_to")
        start = observed if valid_from is None else valid_from
        if valid_to is not None and valid_to <= start:
            raise ValidationError(
                f"{where}.valid_to must be after valid_from", {"field": "valid_to"}
            )
        digest = fact_hash(subject, predicate, obj, anchor)
        payload = {
            "subject": subject,
            "predicate": predicate,
            "object": obj,
            "datatype": item.datatype,
            "confidence": float(confidence),
            "agent_id": agent,
            "source_doc": item.source_doc,
            "source_anchor": anchor.as_dict(),
            "observed_at": observed,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "observed_us": _us(observed),
            "valid_start_us": _us(start),
            "valid_to_us": None if valid_to is None else _us(valid_to),
            "hash": digest,
        }
        return fact_id(agent, digest), payload

    def _close_others(self, point_id: str, payload: dict[str, Any]) -> tuple[str, ...]:
        """End the validity of the agent's facts with this subject and predicate and another
        object that are still valid when the new one starts."""
        start = payload["valid_start_us"]
        current = Filter(
            must=(
                Condition("agent_id", match=payload["agent_id"]),
                Condition("subject", match=payload["subject"]),
                Condition("predicate", match=payload["predicate"]),
                Condition("valid_start_us", range=Range(lt=start)),
                _open_at(start),
            ),
            must_not=(Condition("object", match=payload["object"]),),
        )
        with self._closing:
            closed = [p.id for p in self.backend.scroll(self.collection, current, 10_000)]
            if closed:
                end = {"valid_to": start / 1e6, "valid_to_us": start}
                self.backend.set_payload(self.collection, closed, end)
        return tuple(closed)

    # ------------------------------------------------------------------------------- read
    def get(self, fact_id: str, agent_id: str | None = None) -> Fact:
        found = self._find(fact_id, agent_id)
        if found is None:
            raise NotFoundError(f"fact {fact_id} not found", {"id": fact_id})
        return found

    def delete(self, fact_id: str, agent_id: str | None = None) -> None:
        if self._find(fact_id, agent_id) is None:
            raise NotFoundError(f"fact {fact_id} not found", {"id": fact_id})
        self.backend.delete(self.collection, [fact_id])

    def _find(self, point_id: str, agent_id: str | None) -> Fact | None:
        if not is_uuid(point_id):
            raise ValidationError("id must be a UUID", {"field": "id"})
        points = self.backend.retrieve(self.collection, [point_id])
        if not points or (agent_id is not None and points[0].payload.get("agent_id") != agent_id):
            return None
        return _fact(points[0])

    def query(self, q: FactQuery) -> FactPage:
        """Matching facts and how many match in all. With `text`, ordered by similarity of
        the triple's sentence to it; otherwise by observed_at, then id."""
        if not 1 <= q.limit <= self.settings.max_facts_per_query:
            raise ValidationError(
                f"limit must be 1 to {self.settings.max_facts_per_query}",
                {"field": "limit", "max": self.settings.max_facts_per_query},
            )
        if q.offset < 0:
            raise ValidationError("offset must be 0 or more", {"field": "offset"})
        flt = self._filter(q)
        text = None if q.text is None else check_text(q.text, "text", MAX_TERM_CHARS)
        total = self.backend.count(self.collection, flt)
        if q.offset >= total:
            # Past the end there is nothing to read; asking the store for offset + limit
            # points would only cost time, or overflow its 64-bit limit.
            return FactPage([], total, None if text is None else [])
        if text is not None:
            dense, _ = self.backend.hybrid_search(
                self.collection,
                self.embedder.embed([text])[0],
                SparseVec([], []),
                q.offset + q.limit,
                flt,
            )
            scored = [(h, similarity_from_score(self.distance, h.score)) for h in dense]
            scored.sort(key=lambda pair: (-pair[1], pair[0].id))
            page = scored[q.offset : q.offset + q.limit]
            facts = [_fact(StoredPoint(h.id, h.payload)) for h, _ in page]
            return FactPage(facts, total, [round(score, 6) for _, score in page])
        return FactPage(self._by_time(flt, q.offset, q.limit), total)

    def _by_time(self, flt: Filter, offset: int, limit: int) -> list[Fact]:
        """A page in (observed_at, id) order. Ordering by observed_at returns the first n
        points; only those at its last value may have peers left out, so that value's
        points are read again in id order."""
        wanted = offset + limit
        window = self.backend.scroll(self.collection, flt, wanted, order_by="observed_us")
        if not window:
            return []
        last = window[-1].payload["observed_us"]
        before = sorted(
            (p for p in window if p.payload["observed_us"] < last),
            key=lambda p: (p.payload["observed_us"], p.id),
        )
        at_last = self.backend.scroll(
            self.collection,
            flt & Filter(must=(Condition("observed_us", range=Range(gte=last, lte=last)),)),
            wanted - len(before),
        )
        ordered = before + sorted(at_last, key=lambda p: p.id)
        return [_fact(p) for p in ordered[offset : offset + limit]]

    def _filter(self, q: FactQuery) -> Filter:
        agent = check_agent_id(q.agent_id)
        must: list[Condition | Filter] = [Condition("agent_id", match=agent)]
        for name in ("subject", "predicate", "object", "source_doc"):
            value = getattr(q, name)
            if value is not None:
                must.append(Condition(name, match=check_text(value, name, MAX_TERM_CHARS).strip()))
        if q.min_confidence is not None:
            must.append(Condition("confidence", range=Range(gte=float(q.min_confidence))))
        at = check_timestamp(q.valid_at, "valid_at")
        if at is not None:
            must.append(Condition("valid_start_us", range=Range(lte=_us(at))))
            must.append(_open_at(_us(at)))
        return Filter(must=tuple(must))

    def count(self, agent_id: str | None = None) -> int:
        flt = Filter(must=(Condition("agent_id", match=agent_id),)) if agent_id else None
        return self.backend.count(self.collection, flt)


def _us(epoch: float) -> int:
    return round(epoch * 1_000_000)


def _open_at(moment_us: int) -> Filter:
    """Still valid at `moment_us`: no end, or an end after it."""
    return Filter(
        should=(
            Condition("valid_to_us", is_null=True),
            Condition("valid_to_us", range=Range(gt=moment_us)),
        )
    )


def _fact(point: StoredPoint) -> Fact:
    p = point.payload
    anchor = p.get("source_anchor") or {}
    return Fact(
        id=point.id,
        hash=p["hash"],
        subject=p["subject"],
        predicate=p["predicate"],
        object=p["object"],
        confidence=float(p["confidence"]),
        agent_id=p["agent_id"],
        datatype=p.get("datatype"),
        source_doc=p.get("source_doc"),
        source_anchor=Anchor(**{k: anchor.get(k) for k in ANCHOR_FIELDS}),
        observed_at=float(p["observed_at"]),
        valid_from=p.get("valid_from"),
        valid_to=p.get("valid_to"),
    )
