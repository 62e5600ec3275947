"""A session's own state (brief, counts, activity, what was folded), kept in the vector store.

One point per session in `<prefix>_sessions`, its id derived from the agent and the session,
so that every instance over one store (a Qdrant cluster) reads the same record. Records are
found by id or by payload filter, never by similarity: their vector is a constant.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

from hirag_oz.store.base import (
    CollectionSpec,
    Condition,
    Distance,
    FieldType,
    Filter,
    PointRecord,
    Range,
    SparseVec,
    VectorStore,
)

State = Literal["active", "closed"]
Pending = Literal["append", "close", "delete"]
PENDING: tuple[Pending, ...] = ("append", "close", "delete")
_NAMESPACE = uuid.UUID("5b0c43e2-8a0e-4d65-9d1c-2f3e1b7c9a41")
_INDEXES: dict[str, FieldType] = {
    "agent_id": "tenant",
    "user_id": "keyword",
    "session_id": "keyword",
    "state": "keyword",
    "last_at": "float",
    "pending": "keyword",
}
_NO_TERMS = SparseVec([], [])


@dataclass
class SessionRecord:
    session_id: str
    agent_id: str
    user_id: str | None = None
    brief: str = ""
    state: State = "active"
    messages: int = 0
    tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    last_seq: int = 0
    """The `seq` of the newest message counted in `messages` and `tokens`."""
    folded_through: int = 0
    """The `seq` of the newest message folded into the brief."""
    folds: int = 0
    summary_id: str | None = None
    """The session summary stored in LongTerm when the session was consolidated."""
    pending: Pending | None = None
    """The write under way, saved before it starts and cleared when it ends: opening the
    sessions after a crash finishes what a record still names."""

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SessionRecord:
        known = {k: v for k, v in payload.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def record_id(agent_id: str, session_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{agent_id}\x1f{session_id}"))


class SessionRecords:
    """Load, save, list and delete session records."""

    def __init__(
        self,
        backend: VectorStore,
        dimension: int,
        *,
        collection_prefix: str = "contexts",
        distance: Distance = "Cosine",
    ) -> None:
        self.backend = backend
        self.collection = f"{collection_prefix}_sessions"
        self._vector = [1.0] + [0.0] * (dimension - 1)
        backend.ensure_collection(CollectionSpec(self.collection, dimension, distance, _INDEXES))

    def load(self, agent_id: str, session_id: str) -> SessionRecord | None:
        found = self.backend.retrieve(self.collection, [record_id(agent_id, session_id)])
        return SessionRecord.from_payload(found[0].payload) if found else None

    def save(self, record: SessionRecord) -> None:
        point = PointRecord(
            record_id(record.agent_id, record.session_id),
            self._vector,
            _NO_TERMS,
            record.payload(),
        )
        self.backend.upsert(self.collection, [point])

    def delete(self, agent_id: str, session_id: str) -> None:
        self.backend.delete(self.collection, [record_id(agent_id, session_id)])

    def pending(self) -> list[SessionRecord]:
        """The records whose write a crash (or a failure) cut short."""
        return self._where(Filter(must=(Condition("pending", any_of=PENDING),)))

    def idle(self, before: float) -> list[SessionRecord]:
        """The active sessions of every agent without an append since `before`."""
        return self._where(
            Filter(
                must=(
                    Condition("state", match="active"),
                    Condition("last_at", range=Range(lt=before)),
                )
            )
        )

    def _where(self, flt: Filter) -> list[SessionRecord]:
        total = self.backend.count(self.collection, flt)
        points = self.backend.scroll(self.collection, flt, total) if total else []
        return [SessionRecord.from_payload(p.payload) for p in points]

    def matching(
        self, agent_id: str, user_id: str | None = None, state: State | None = None
    ) -> list[SessionRecord]:
        """An agent's sessions (of one user, in one state), most recently active first."""
        conditions = [Condition("agent_id", match=agent_id)]
        if user_id is not None:
            conditions.append(Condition("user_id", match=user_id))
        if state is not None:
            conditions.append(Condition("state", match=state))
        records = self._where(Filter(must=tuple(conditions)))
        records.sort(key=lambda r: (-(r.last_at or 0.0), r.session_id))
        return records
