"""Conversation sessions: messages in, the next prompt out; the levels follow the conversation.

A message is stored as a context of its session (`metadata.kind == "message"`, with its role,
name and client message id), at Immediate. The memory keeps a session's Immediate items
within `hirag.l1_size` (its recent window): the oldest move to ShortTerm, and an append folds
those into the session's brief (`SessionRecord.folded_through` says how far). Closing a
session (or its going idle, in maintenance) consolidates it: its messages move to LongTerm
and a session summary, linked to the session, is stored there.

Folds use the extractive summarizer, so an append never waits on a model; a fold is only a
write of the session's record, after the messages it folds are durable.

Crashes: an append, a close and a delete first save the record naming the write under way
(`SessionRecord.pending`), and clear it in the save that ends the write. Opening the sessions
finishes every write a record still names: an append's record counts the messages stored
after the newest it had counted (`last_seq`) and folds what the window pushed out, or, for a
session's first append that stored nothing, is deleted; a close and a delete are done again
(both can be: moves between levels are crash-safe, a session's summaries are replaced
whole). So no acknowledged message is lost, and a message is folded only once it is stored.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from hirag_oz.context.builder import BuiltContext, Priority, Snippet, Summarizer, Turn
from hirag_oz.context.service import ContextBuilder
from hirag_oz.errors import ConflictError, NotFoundError, ValidationError
from hirag_oz.facts.store import FactQuery, FactStore
from hirag_oz.kernel.clock import Clock, SystemClock
from hirag_oz.kernel.ids import check_agent_id, check_scope_id
from hirag_oz.kernel.periodic import Periodic
from hirag_oz.kernel.validation import check_metadata, check_text
from hirag_oz.memory.levels import Level
from hirag_oz.memory.manager import HiRAG
from hirag_oz.memory.models import NewContext, StoredRef
from hirag_oz.sessions.records import SessionRecord, SessionRecords
from hirag_oz.store.base import Condition, Filter, Range, StoredPoint

logger = logging.getLogger(__name__)

Role = Literal["user", "assistant", "system", "tool"]
ROLES: tuple[Role, ...] = ("user", "assistant", "system", "tool")
MESSAGE = "message"
SUMMARY = "session_summary"
MAX_MESSAGES_PER_APPEND = 100
MAX_PAGE = 500
_LOCK_STRIPES = 256


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    name: str | None = None
    timestamp: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None


@dataclass(frozen=True)
class Message:
    id: str
    session_id: str
    seq: int
    role: str
    content: str
    name: str | None
    message_id: str | None
    timestamp: float
    level: str
    token_count: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Appended:
    messages: list[tuple[Message, bool]]
    """Each message of the append, in order, and whether it was stored already."""
    session: SessionRecord
    folded: int


def _text(content: str, name: str | None) -> str:
    """What is stored, embedded and retrieved: the message with its speaker's name, so that
    a search for what someone said finds it."""
    return f"{name}: {content}" if name else content


def _message(point: StoredPoint, level: Level) -> Message:
    p = point.payload
    meta = p.get("metadata") or {}
    name = meta.get("name")
    text = str(p["text"])
    prefix = f"{name}: " if name else ""
    return Message(
        id=point.id,
        session_id=p["session_id"],
        seq=int(p["seq"]),
        role=meta.get("role", "user"),
        content=text[len(prefix) :] if prefix and text.startswith(prefix) else text,
        name=name,
        message_id=meta.get("message_id"),
        timestamp=float(p["timestamp"]),
        level=level.value,
        token_count=int(p.get("token_count", 0)),
        metadata=meta.get("metadata") or {},
    )


def _rendered(message: Message) -> str:
    speaker = f"{message.name} ({message.role})" if message.name else message.role
    return f"{speaker}: {message.content}"


class Sessions:
    """Append, read, list, page, brief, delete, close; and the next prompt of a session."""

    def __init__(
        self,
        memory: HiRAG,
        records: SessionRecords,
        builder: ContextBuilder,
        facts: FactStore | None,
        *,
        facts_in_prompt: int = 5,
        summaries: bool = True,
        summary_tokens: int = 128,
        summary_sessions: int = 0,
        messages_per_summary: int = 3,
        summaries_retrieved: bool = False,
        refiner: Summarizer | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.memory = memory
        self.records = records
        self.builder = builder
        self.facts = facts
        self.facts_in_prompt = facts_in_prompt
        self.summaries = summaries
        self.summary_tokens = summary_tokens
        self.summary_sessions = summary_sessions
        self.messages_per_summary = messages_per_summary
        self.summaries_retrieved = summaries_retrieved
        self.clock = clock or SystemClock()
        # Appends to one session are serialized; a fixed set of locks, shared by sessions
        # that hash alike, keeps memory bounded however many sessions there are.
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._maintenance: Periodic | None = None
        # A model summarizer, when configured, rewrites each fold's brief in the background;
        # one at a time, so refinements of one session land in the order of its folds.
        self.refiner = refiner
        self._refining = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hirag-brief")
        self._finish_pending()

    def start_maintenance(self, interval_secs: float, idle_secs: float) -> None:
        """Consolidate idle sessions every `interval_secs` on a daemon thread."""
        if self._maintenance is None:
            self._maintenance = Periodic(
                "hirag-sessions",
                "consolidating idle sessions",
                lambda: self.consolidate_idle(idle_secs),
            )
        self._maintenance.start(interval_secs)

    def stop_maintenance(self) -> None:
        if self._maintenance is not None:
            self._maintenance.stop()

    def shutdown(self) -> None:
        """Stop the maintenance and finish the brief refinements under way (the store is
        still open: its owner closes it after)."""
        self.stop_maintenance()
        self._refining.shutdown(wait=True)

    @property
    def folder(self) -> Summarizer:
        """Folds never wait on a model: the extractive summarizer."""
        return self.builder.fallback

    def _lock(self, agent: str, session: str) -> threading.Lock:
        return self._locks[hash((agent, session)) % _LOCK_STRIPES]

    # ---------------------------------------------------------------------------- append
    def append(
        self,
        session_id: str,
        messages: Sequence[NewMessage],
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
    ) -> Appended:
        """Store `messages` in order at the end of the session (created on first use). A
        message whose `message_id` the session has already is not stored again."""
        agent = check_agent_id(agent_id)
        session = self._session_id(session_id)
        user = check_scope_id(user_id, "user_id")
        if not messages:
            raise ValidationError("an append needs at least one message", {"field": "messages"})
        if len(messages) > MAX_MESSAGES_PER_APPEND:
            raise ValidationError(
                f"an append holds at most {MAX_MESSAGES_PER_APPEND} messages",
                {"field": "messages", "max_items": MAX_MESSAGES_PER_APPEND},
            )
        items = [self._item(m, i, agent, session, user) for i, m in enumerate(messages)]
        with self._lock(agent, session):
            loaded = self.records.load(agent, session)
            record = loaded or SessionRecord(session, agent, user)
            if record.user_id != user and user is not None:
                raise ConflictError(
                    f"session {session} belongs to another user",
                    {"session_id": session, "field": "user_id"},
                )
            existing = self._by_message_id(agent, session, [m.message_id for m in messages])
            fresh = [
                (i, item)
                for i, (m, item) in enumerate(zip(messages, items, strict=True))
                if m.message_id is None or m.message_id not in existing
            ]
            fresh = _first_of_each_id(fresh, messages)
            refs = self._store(record, [i for _, i in fresh], new=loaded is None) if fresh else []
            stored = dict(zip((i for i, _ in fresh), refs, strict=True))
            read = self._read_ids([r.id for r in refs])
            self._count(record, [read[r.id] for r in refs])
            folded = self._fold(record)
            record.pending = None
            self.records.save(record)
            known = dict(existing)
            for i, ref in stored.items():
                mid = messages[i].message_id
                if mid is not None:
                    known[mid] = read[ref.id]
            answer = [
                (read[stored[i].id], False) if i in stored else (known[m.message_id or ""], True)
                for i, m in enumerate(messages)
            ]
        return Appended(answer, record, folded)

    def _store(
        self, record: SessionRecord, items: list[NewContext], *, new: bool
    ) -> list[StoredRef]:
        """Store the messages of an append, the record naming the append saved first."""
        now = self.clock.now()
        record.first_at = record.first_at or now
        record.last_at = now
        record.state = "active"
        record.pending = "append"
        self.records.save(record)
        try:
            return self.memory.store_many(items)
        except Exception:
            # Nothing of a failed batch is left (store_many takes it back): neither is the
            # record's mark, nor the record of a session this append would have begun.
            with contextlib.suppress(Exception):
                if new:
                    self.records.delete(record.agent_id, record.session_id)
                else:
                    self.records.save(replace(record, pending=None))
            raise

    def _item(
        self, message: NewMessage, index: int, agent: str, session: str, user: str | None
    ) -> NewContext:
        where = f"messages[{index}]"
        if message.role not in ROLES:
            raise ValidationError(
                f"{where}.role must be one of {', '.join(ROLES)}", {"field": f"{where}.role"}
            )
        if message.name is not None:
            check_text(message.name, f"{where}.name", 128)
        if message.message_id is not None:
            check_scope_id(message.message_id, f"{where}.message_id")
        meta = {
            "kind": MESSAGE,
            "role": message.role,
            "name": message.name,
            "message_id": message.message_id,
            "metadata": check_metadata(message.metadata),
        }
        check_text(message.content, f"{where}.content", self.memory.settings.max_text_chars)
        return NewContext(
            _text(message.content, message.name),
            Level.IMMEDIATE,
            agent,
            session,
            user,
            meta,
            message.timestamp,
        )

    def _session_id(self, session_id: str) -> str:
        checked = check_scope_id(session_id, "session_id", required=True)
        assert checked is not None
        return checked

    def _scope(self, agent: str, session: str) -> Filter:
        return Filter(
            must=(
                Condition("agent_id", match=agent),
                Condition("session_id", match=session),
                Condition("metadata.kind", match=MESSAGE),
            )
        )

    def _by_message_id(
        self, agent: str, session: str, ids: Sequence[str | None]
    ) -> dict[str, Message]:
        wanted = tuple(sorted({i for i in ids if i is not None}))
        if not wanted:
            return {}
        flt = self._scope(agent, session) & Filter(
            must=(Condition("metadata.message_id", any_of=wanted),)
        )
        found: dict[str, Message] = {}
        for level in Level:
            for p in self.memory.backend.scroll(self.memory.collections[level], flt, len(wanted)):
                message = _message(p, level)
                if message.message_id is not None:
                    found.setdefault(message.message_id, message)
        return found

    def _read_ids(self, ids: Sequence[str]) -> dict[str, Message]:
        found: dict[str, Message] = {}
        for level in Level:
            for p in self.memory.backend.retrieve(self.memory.collections[level], list(ids)):
                found.setdefault(p.id, _message(p, level))
        return found

    # ------------------------------------------------------------------------------ fold
    def _fold(self, record: SessionRecord) -> int:
        """Fold the session's messages pushed out of its recent window (and not folded yet)
        into its brief; returns how many."""
        pushed = self._messages(
            record.agent_id,
            record.session_id,
            levels=(Level.SHORT_TERM, Level.LONG_TERM),
            after=record.folded_through,
            limit=MAX_PAGE,
        )
        if not pushed:
            return 0
        cap = self.builder.budget.running_brief
        texts = (
            [record.brief, *(_rendered(m) for m in pushed)]
            if record.brief
            else [_rendered(m) for m in pushed]
        )
        record.brief = self.folder.summarize(texts, cap)
        record.folded_through = max(m.seq for m in pushed)
        record.folds += 1
        if self.refiner is not None:
            fold = (record.agent_id, record.session_id, record.folded_through, record.brief)
            self._refining.submit(self._refine, fold, texts, cap)
        return len(pushed)

    def _refine(self, fold: tuple[str, str, int, str], texts: list[str], cap: int) -> None:
        """The model's brief for a fold, in place of the extractive one, unless the session
        folded again (or its brief was replaced) meanwhile; on any failure the extractive
        one stays."""
        assert self.refiner is not None
        agent, session, folded_through, extractive = fold
        try:
            brief = self.refiner.summarize(texts, cap)
        except Exception as exc:
            logger.warning("the brief of a session stays extractive: %s", exc)
            return
        if not brief.strip() or self.builder.counter.count(brief) > cap:
            return
        with self._lock(agent, session):
            record = self.records.load(agent, session)
            if record is None or (record.folded_through, record.brief) != (
                folded_through,
                extractive,
            ):
                return
            record.brief = brief
            self.records.save(record)

    # ------------------------------------------------------------------------------ read
    def _messages(
        self,
        agent: str,
        session: str,
        *,
        levels: Sequence[Level] = tuple(Level),
        after: int = 0,
        limit: int = MAX_PAGE,
    ) -> list[Message]:
        flt = self._scope(agent, session) & Filter(must=(Condition("seq", range=_after(after)),))
        merged: list[Message] = []
        for level in levels:
            points = self.memory.backend.scroll(
                self.memory.collections[level], flt, limit, order_by="seq"
            )
            merged.extend(_message(p, level) for p in points)
        unique = {m.id: m for m in merged}  # a move in flight may show one id twice
        return sorted(unique.values(), key=lambda m: m.seq)[:limit]

    def get(self, session_id: str, *, agent_id: str | None = None) -> SessionRecord:
        agent = check_agent_id(agent_id)
        session = self._session_id(session_id)
        record = self.records.load(agent, session)
        if record is None:
            raise NotFoundError(f"session {session} not found", {"session_id": session})
        return record

    def levels(self, record: SessionRecord) -> dict[str, int]:
        scope = self._scope(record.agent_id, record.session_id)
        return {
            level.value: self.memory.backend.count(self.memory.collections[level], scope)
            for level in Level
        }

    def matching(
        self,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        state: Literal["active", "closed"] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[SessionRecord], int]:
        """A page of the agent's sessions, most recently active first, and how many match."""
        agent = check_agent_id(agent_id)
        user = check_scope_id(user_id, "user_id")
        found = self.records.matching(agent, user, state)
        return found[offset : offset + limit], len(found)

    def messages(
        self,
        session_id: str,
        *,
        agent_id: str | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> list[Message]:
        """The session's messages after the `seq` `after`, oldest first, at most `limit`."""
        record = self.get(session_id, agent_id=agent_id)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be 1 to {MAX_PAGE}", {"field": "limit"})
        return self._messages(record.agent_id, record.session_id, after=after, limit=limit)

    # ----------------------------------------------------------------------------- write
    def set_brief(
        self, session_id: str, brief: str, *, agent_id: str | None = None
    ) -> SessionRecord:
        """Replace the session's brief (what the caller knows better than the folds)."""
        agent = check_agent_id(agent_id)
        session = self._session_id(session_id)
        if brief:
            check_text(brief, "brief", self.memory.settings.max_text_chars)
        with self._lock(agent, session):
            record = self.get(session, agent_id=agent)
            record.brief = brief
            self.records.save(record)
        return record

    def delete(self, session_id: str, *, agent_id: str | None = None) -> int:
        """Delete the session: its messages on every level, its summary, its record.
        Returns how many messages were deleted."""
        agent = check_agent_id(agent_id)
        session = self._session_id(session_id)
        with self._lock(agent, session):
            return self._delete(self.get(session, agent_id=agent))

    def _delete(self, record: SessionRecord) -> int:
        record.pending = "delete"
        self.records.save(record)
        removed = self.memory.delete_where(
            Filter(
                must=(
                    Condition("agent_id", match=record.agent_id),
                    Condition("session_id", match=record.session_id),
                    Condition("metadata.kind", any_of=(MESSAGE, SUMMARY)),
                )
            )
        )
        self.records.delete(record.agent_id, record.session_id)
        return removed

    def close(self, session_id: str, *, agent_id: str | None = None) -> SessionRecord:
        """Consolidate the session: fold what is left, move its messages to LongTerm and
        store its summary there (a summary already stored is replaced)."""
        agent = check_agent_id(agent_id)
        session = self._session_id(session_id)
        with self._lock(agent, session):
            record = self.get(session, agent_id=agent)
            self._consolidate(record)
        return record

    def _consolidate(self, record: SessionRecord) -> None:
        record.pending = "close"
        self.records.save(record)
        scope = self._scope(record.agent_id, record.session_id)
        self.memory.move_where(scope, Level.LONG_TERM)
        self._fold(record)
        # Every summary of the session, not only the one its record names: a close cut
        # short after storing one left it unnamed.
        self.memory.delete_where(
            Filter(
                must=(
                    Condition("agent_id", match=record.agent_id),
                    Condition("session_id", match=record.session_id),
                    Condition("metadata.kind", match=SUMMARY),
                )
            )
        )
        record.summary_id = None
        summary = record.brief or "\n".join(
            _rendered(m) for m in self._messages(record.agent_id, record.session_id)
        )
        if self.summaries and summary.strip():
            ref = self.memory.store_many(
                [
                    NewContext(
                        self.folder.summarize([summary], self.summary_tokens),
                        Level.LONG_TERM,
                        record.agent_id,
                        record.session_id,
                        record.user_id,
                        {"kind": SUMMARY, "messages": record.messages},
                        record.last_at,
                    )
                ]
            )[0]
            record.summary_id = ref.id
        record.state = "closed"
        record.pending = None
        self.records.save(record)

    # ---------------------------------------------------------------------------- repair
    def _finish_pending(self) -> None:
        """Finish the writes that records still name (see the module's docstring)."""
        finished: dict[str, int] = {}
        for record in self.records.pending():
            op = record.pending
            if op == "append":
                # The append's messages, if they were stored: at most one append is pending.
                self._count(
                    record,
                    self._messages(record.agent_id, record.session_id, after=record.last_seq),
                )
                if record.messages == 0:  # the session's first append, undone
                    self.records.delete(record.agent_id, record.session_id)
                else:
                    self._fold(record)
                    record.pending = None
                    self.records.save(record)
            elif op == "close":
                self._consolidate(record)
            elif op == "delete":
                self._delete(record)
            finished[str(op)] = finished.get(str(op), 0) + 1
        if finished:
            logger.warning("finished session writes interrupted by a crash: %s", finished)

    def _count(self, record: SessionRecord, messages: Sequence[Message]) -> None:
        """Count `messages`, newly stored, in the record."""
        record.messages += len(messages)
        record.tokens += sum(m.token_count for m in messages)
        record.last_seq = max([record.last_seq, *(m.seq for m in messages)])

    def consolidate_idle(self, idle_secs: float) -> int:
        """Close every active session of any agent idle for `idle_secs`; returns how many."""
        now = self.clock.now()
        closed = 0
        for record in self.records.idle(now - idle_secs):
            with self._lock(record.agent_id, record.session_id):
                current = self.records.load(record.agent_id, record.session_id)
                if current is None or current.state != "active":
                    continue
                if (current.last_at or now) > now - idle_secs:
                    continue
                self._consolidate(current)
                closed += 1
        return closed

    # ---------------------------------------------------------------------------- prompt
    def context(
        self,
        session_id: str,
        *,
        system_prompt: str,
        query: str | None = None,
        agent_id: str | None = None,
        snippets: Sequence[Snippet] = (),
        filters: Filter | None = None,
        levels: Sequence[str] | None = None,
        budget: dict[str, int] | None = None,
    ) -> BuiltContext:
        """The next prompt of the session: its brief, its newest messages verbatim, and what
        the agent remembers from elsewhere (its other sessions, stored contexts, facts valid
        now) for `query`, by default the last user message."""
        record = self.get(session_id, agent_id=agent_id)
        recent = self._messages(record.agent_id, record.session_id, levels=(Level.IMMEDIATE,))
        unfolded = self._messages(
            record.agent_id,
            record.session_id,
            levels=(Level.SHORT_TERM, Level.LONG_TERM),
            after=record.folded_through,
        )
        brief = "\n".join([record.brief, *(_rendered(m) for m in unfolded)]).strip()
        if query is None:
            users = [m.content for m in recent if m.role == "user"]
            query = users[-1] if users else ""
        elsewhere = Filter(must_not=(Condition("session_id", match=record.session_id),))
        if record.user_id is not None:
            # Another user's conversations never reach this user's prompt.
            elsewhere = elsewhere & Filter(
                should=(
                    Condition("user_id", match=record.user_id),
                    Condition("user_id", is_null=True),
                )
            )
        offered = [
            *snippets,
            *self._facts(record.agent_id, query),
            *self._through_summaries(record.agent_id, query, elsewhere & filters),
        ]
        if not self.summaries_retrieved:
            # A summary in the retrieved slot repeats in brief what turns say, and crowds
            # them out; summaries lead to messages instead (above), when that is on.
            elsewhere = elsewhere & Filter(must_not=(Condition("metadata.kind", match=SUMMARY),))
        return self.builder.build(
            query,
            system_prompt=system_prompt,
            agent_id=record.agent_id,
            running_brief=brief,
            recent_turns=[Turn(m.role, _text(m.content, m.name)) for m in recent],
            levels=levels,
            filters=elsewhere & filters,
            snippets=offered,
            budget=budget,
        )

    def _through_summaries(self, agent: str, query: str, scope: Filter) -> list[Snippet]:
        """The best messages of the sessions whose summaries best match `query`: the
        hierarchy, summary then messages, that lets a question reach turns spread over
        sessions."""
        if self.summary_sessions <= 0 or not query.strip():
            return []
        kind = Filter(must=(Condition("metadata.kind", match=SUMMARY),))
        found = self.memory.search(
            query,
            self.builder.budget.retrieved_context,
            levels=[Level.LONG_TERM],
            agent_id=agent,
            filters=scope & kind,
        )
        led: list[Snippet] = []
        for summary in found.contexts[: self.summary_sessions]:
            if summary.session_id is None:
                continue
            messages = self.memory.search(
                query,
                self.builder.budget.retrieved_context,
                agent_id=agent,
                session_id=summary.session_id,
                filters=scope & Filter(must=(Condition("metadata.kind", match=MESSAGE),)),
            )
            led += [
                Snippet(
                    c.text,
                    Priority.MEDIUM,
                    c.relevance_score or 0.0,
                    id=c.id,
                    level=c.level.value,
                    source="retrieved",
                )
                for c in messages.contexts[: self.messages_per_summary]
            ]
        return led

    def _facts(self, agent: str, query: str) -> list[Snippet]:
        if self.facts is None or not query.strip() or self.facts_in_prompt <= 0:
            return []
        page = self.facts.query(
            FactQuery(
                agent_id=agent, text=query, valid_at=self.clock.now(), limit=self.facts_in_prompt
            )
        )
        scores = page.scores or [0.0] * len(page.facts)
        return [
            Snippet(
                f"{f.subject} {f.predicate} {f.object}",
                Priority.MEDIUM,
                max(0.0, min(1.0, score)),
                id=f.id,
                source="fact",
            )
            for f, score in zip(page.facts, scores, strict=True)
        ]


def _first_of_each_id(
    fresh: list[tuple[int, NewContext]], messages: Sequence[NewMessage]
) -> list[tuple[int, NewContext]]:
    """One append that repeats a message id stores it once (the first)."""
    seen: set[str] = set()
    kept = []
    for i, item in fresh:
        mid = messages[i].message_id
        if mid is not None:
            if mid in seen:
                continue
            seen.add(mid)
        kept.append((i, item))
    return kept


def _after(seq: int) -> Range:
    return Range(gt=float(seq))
