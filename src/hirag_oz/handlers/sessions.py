"""The sessions operations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hirag_oz.handlers.prompts import built_out, snippets_in
from hirag_oz.memory.models import to_datetime
from hirag_oz.sessions import Message, NewMessage, SessionRecord
from hirag_oz.store.filters import parse_filter
from hirag_oz_client import models as m

if TYPE_CHECKING:
    from hirag_oz.service import Hirag


def append_messages(hirag: Hirag, request: m.AppendMessagesRequest) -> m.AppendMessagesResponse:
    done = hirag.sessions.append(
        request.session_id,
        [
            NewMessage(x.role, x.content, x.name, x.timestamp, x.metadata or {}, x.message_id)
            for x in request.messages
        ],
        agent_id=request.agent_id,
        user_id=request.user_id,
    )
    return m.AppendMessagesResponse(
        messages=[message_out(msg, duplicate) for msg, duplicate in done.messages],
        folded=done.folded,
        session=session_out(hirag, done.session),
    )


def session_context(hirag: Hirag, request: m.SessionContextRequest) -> m.BuildContextResponse:
    built = hirag.sessions.context(
        request.session_id,
        system_prompt=request.system_prompt,
        query=request.query,
        agent_id=request.agent_id,
        snippets=snippets_in(request),
        filters=parse_filter(request.filters),
        levels=request.levels,
        budget=request.budget.model_dump(exclude_none=True) if request.budget else None,
    )
    return built_out(hirag, built)


def get_session(hirag: Hirag, request: m.GetSessionRequest) -> m.SessionOut:
    return session_out(hirag, hirag.sessions.get(request.session_id, agent_id=request.agent_id))


def list_sessions(hirag: Hirag, request: m.ListSessionsRequest) -> m.ListSessionsResponse:
    page, total = hirag.sessions.matching(
        agent_id=request.agent_id,
        user_id=request.user_id,
        state=request.state,
        limit=request.limit,
        offset=request.offset,
    )
    return m.ListSessionsResponse(sessions=[session_out(hirag, r) for r in page], total=total)


def list_messages(hirag: Hirag, request: m.ListMessagesRequest) -> m.ListMessagesResponse:
    found = hirag.sessions.messages(
        request.session_id, agent_id=request.agent_id, after=request.after, limit=request.limit
    )
    return m.ListMessagesResponse(
        messages=[message_out(msg) for msg in found],
        next_after=found[-1].seq if len(found) == request.limit else None,
    )


def update_brief(hirag: Hirag, request: m.UpdateBriefRequest) -> m.SessionOut:
    record = hirag.sessions.set_brief(request.session_id, request.brief, agent_id=request.agent_id)
    return session_out(hirag, record)


def close_session(hirag: Hirag, request: m.CloseSessionRequest) -> m.SessionOut:
    return session_out(hirag, hirag.sessions.close(request.session_id, agent_id=request.agent_id))


def delete_session(hirag: Hirag, request: m.DeleteSessionRequest) -> m.DeletedSessionResponse:
    removed = hirag.sessions.delete(request.session_id, agent_id=request.agent_id)
    return m.DeletedSessionResponse(id=request.session_id, deleted=True, messages_deleted=removed)


def _iso(value: float | None) -> str | None:
    return None if value is None else to_datetime(value).isoformat()


def session_out(hirag: Hirag, record: SessionRecord) -> m.SessionOut:
    return m.SessionOut(
        session_id=record.session_id,
        agent_id=record.agent_id,
        user_id=record.user_id,
        state=record.state,
        brief=record.brief,
        message_count=record.messages,
        token_total=record.tokens,
        first_at=_iso(record.first_at),
        last_at=_iso(record.last_at),
        folds=record.folds,
        summary_id=record.summary_id,
        levels=hirag.sessions.levels(record),
    )


def message_out(message: Message, duplicate: bool = False) -> m.SessionMessageOut:
    return m.SessionMessageOut(
        id=message.id,
        session_id=message.session_id,
        seq=message.seq,
        role=message.role,
        content=message.content,
        name=message.name,
        message_id=message.message_id,
        timestamp=to_datetime(message.timestamp).isoformat(),
        level=message.level,
        token_count=message.token_count,
        metadata=message.metadata,
        duplicate=duplicate,
    )
