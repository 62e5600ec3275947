"""Facts: subject-predicate-object triples with their provenance and time of validity."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hirag_oz.kernel.ids import DEFAULT_AGENT

# Fact ids are UUIDv5 in this namespace: the same fact of the same agent always gets one id.
FACT_NAMESPACE = uuid.UUID("6f1d2c1e-5b0a-4f5e-9d7e-2a9c3b4f8e10")
ANCHOR_FIELDS = ("doc_id", "page", "region_id", "vt_ref", "path_line")


@dataclass(frozen=True)
class Anchor:
    """Where in a source the fact was read."""

    doc_id: str | None = None
    page: int | None = None
    region_id: str | None = None
    vt_ref: str | None = None
    path_line: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ANCHOR_FIELDS}


@dataclass(frozen=True)
class NewFact:
    subject: str
    predicate: str
    object: str
    confidence: float
    agent_id: str = DEFAULT_AGENT
    datatype: str | None = None
    source_doc: str | None = None
    source_anchor: Anchor = field(default_factory=Anchor)
    # Epoch seconds or datetimes (ISO 8601 strings too).
    observed_at: float | datetime | str | None = None
    valid_from: float | datetime | str | None = None
    valid_to: float | datetime | str | None = None
    # Closes the agent's current facts with this subject and predicate and another object.
    exclusive: bool = False


@dataclass(frozen=True)
class Fact:
    id: str
    hash: str
    subject: str
    predicate: str
    object: str
    confidence: float
    agent_id: str
    datatype: str | None
    source_doc: str | None
    source_anchor: Anchor
    observed_at: float
    valid_from: float | None
    valid_to: float | None


@dataclass(frozen=True)
class Inserted:
    fact_id: str
    hash: str
    duplicate: bool
    # Facts whose validity this insert ended (functional predicates).
    closed: tuple[str, ...] = ()


def fact_hash(subject: str, predicate: str, obj: str, anchor: Anchor) -> str:
    """SHA-256 of the JSON array [subject, predicate, object, [doc_id, page, region_id,
    vt_ref, path_line]] (compact separators, UTF-8, no ASCII escaping). JSON quotes and
    escapes every string, so no choice of texts makes two different facts hash alike, as a
    plain separator would ("a|b" + "c" against "a" + "b|c")."""
    canonical = json.dumps(
        [subject, predicate, obj, [getattr(anchor, name) for name in ANCHOR_FIELDS]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fact_id(agent_id: str, digest: str) -> str:
    """The point id: one per agent and hash, so agents never see each other's facts as
    duplicates of theirs."""
    return str(uuid.uuid5(FACT_NAMESPACE, f"{agent_id}\n{digest}"))


def sentence(subject: str, predicate: str, obj: str) -> str:
    """How a triple is embedded for semantic queries."""
    return f"{subject} {predicate.replace('_', ' ')} {obj}"
