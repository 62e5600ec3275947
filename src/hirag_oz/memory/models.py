"""What the memory layer takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.levels import Level


@dataclass
class NewContext:
    """One item to store. `timestamp` is when the event happened (default: now)."""

    text: str
    level: Level | str = Level.SHORT_TERM
    agent_id: str = DEFAULT_AGENT
    session_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | float | None = None


@dataclass(frozen=True)
class StoredRef:
    id: str
    token_count: int
    level: Level


@dataclass
class Context:
    id: str
    text: str
    level: Level
    token_count: int
    timestamp: datetime
    agent_id: str
    session_id: str | None
    user_id: str | None
    metadata: dict[str, Any]
    access_count: int
    stored_at: datetime
    relevance_score: float | None = None
    similarity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "level": self.level.value,
            "relevance_score": self.relevance_score,
            "similarity": self.similarity,
            "token_count": self.token_count,
            "timestamp": self.timestamp.isoformat(),
            "stored_at": self.stored_at.isoformat(),
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "access_count": self.access_count,
            "metadata": self.metadata,
        }


@dataclass
class SearchResult:
    contexts: list[Context]
    total_tokens: int
    retrieval_time_ms: float
    level_distribution: dict[str, int]
    avg_relevance: float
    total_searched: int
    skipped_malformed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "contexts": [c.to_dict() for c in self.contexts],
            "total_tokens": self.total_tokens,
            "retrieval_time_ms": self.retrieval_time_ms,
            "metadata": {
                "level_distribution": self.level_distribution,
                "avg_relevance": self.avg_relevance,
                "total_searched": self.total_searched,
                "skipped_malformed": self.skipped_malformed,
            },
        }


@dataclass(frozen=True)
class MaintenanceReport:
    consolidated: int = 0
    expired_l2: int = 0
    expired_l3: int = 0


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
