"""Conversation sessions in the library: order and idempotence of appends, the recent window
and the brief's cap, folds, consolidation, the next prompt and deletion."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.errors import ConflictError, NotFoundError, ValidationError
from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.levels import Level
from hirag_oz.service import Hirag
from hirag_oz.sessions import NewMessage
from hirag_oz.sessions.records import SessionRecord
from hirag_oz.sessions.service import SUMMARY
from hirag_oz.store.base import Condition, Filter, Range
from tests.conftest import FakeClock

WINDOW = 4
BRIEF_CAP = 120


def _settings(data_dir: Path) -> Settings:
    return Settings(  # type: ignore[arg-type]
        server={"data_dir": data_dir},
        hirag={"maintenance_enabled": False, "l1_size": WINDOW},
        token_budget={"running_brief": BRIEF_CAP},
    )


@pytest.fixture
def hirag(model: OnnxMiniLMEmbedder, tmp_path: Path, clock: FakeClock) -> Iterator[Hirag]:
    with Hirag(_settings(tmp_path), model=model, clock=clock) as opened:
        yield opened


def _say(text: str, role: str = "user", **options: object) -> NewMessage:
    return NewMessage(role, text, **options)  # type: ignore[arg-type]


def test_concurrent_appends_keep_each_writers_order_and_store_each_id_once(
    hirag: Hirag,
) -> None:
    sessions = hirag.sessions
    writers, per_writer = 4, 12
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                message = _say(f"writer {w} says {i}", message_id=f"w{w}-{i}")
                sessions.append("busy", [message])
                if i % 3 == 0:  # a retry of what was just acknowledged
                    again = sessions.append("busy", [message])
                    assert again.messages[0][1] is True
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    found = sessions.messages("busy", limit=500)
    assert len(found) == writers * per_writer
    assert len({m.message_id for m in found}) == writers * per_writer
    assert [m.seq for m in found] == sorted(m.seq for m in found)
    for w in range(writers):
        mine = [m.content for m in found if m.message_id and m.message_id.startswith(f"w{w}-")]
        assert mine == [f"writer {w} says {i}" for i in range(per_writer)]
    record = sessions.get("busy")
    assert record.messages == writers * per_writer
    assert sessions.levels(record)[Level.IMMEDIATE.value] == WINDOW


def test_one_append_repeating_an_id_stores_it_once(hirag: Hirag) -> None:
    done = hirag.sessions.append(
        "s", [_say("first", message_id="a"), _say("first again", message_id="a"), _say("b")]
    )
    assert [(m.content, dup) for m, dup in done.messages] == [
        ("first", False),
        ("first", True),
        ("b", False),
    ]
    assert done.session.messages == 2


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=14),
    batch=st.integers(min_value=1, max_value=3),
)
def test_the_window_and_the_brief_cap_hold_for_any_message_sizes(
    hirag: Hirag, sizes: list[int], batch: int
) -> None:
    sessions = hirag.sessions
    session = f"sized-{len(sizes)}-{sum(sizes)}-{batch}"
    sessions.append(session, [_say("start")])
    sessions.delete(session)
    counter = hirag.tokens.counter
    sent = 0
    for start in range(0, len(sizes), batch):
        chunk = sizes[start : start + batch]
        sessions.append(session, [_say(" ".join(["word"] * n), role="user") for n in chunk])
        sent += len(chunk)
        record = sessions.get(session)
        levels = sessions.levels(record)
        assert levels[Level.IMMEDIATE.value] == min(sent, WINDOW)
        assert levels[Level.SHORT_TERM.value] == max(0, sent - WINDOW)
        assert counter.count(record.brief) <= BRIEF_CAP
        assert (record.folds > 0) == (sent > WINDOW)
    sessions.delete(session)


def test_folds_and_consolidation_follow_the_conversation(hirag: Hirag, clock: FakeClock) -> None:
    sessions = hirag.sessions
    for i in range(WINDOW + 3):
        sessions.append("trip", [_say(f"On day {i} we walked the Porto riverside", name="Ana")])
        clock.advance(60)
    record = sessions.get("trip")
    assert record.folds == 3 and "day 0" in record.brief and "Ana (user)" in record.brief
    assert sessions.levels(record) == {"Immediate": WINDOW, "ShortTerm": 3, "LongTerm": 0}
    # Nothing idle yet; then an hour passes.
    assert sessions.consolidate_idle(3600) == 0
    clock.advance(3601)
    assert sessions.consolidate_idle(3600) == 1
    closed = sessions.get("trip")
    assert closed.state == "closed" and closed.summary_id is not None
    assert sessions.levels(closed) == {"Immediate": 0, "ShortTerm": 0, "LongTerm": WINDOW + 3}
    summary = hirag.get_context(context_id=closed.summary_id)
    assert summary.level == "LongTerm" and summary.session_id == "trip"
    assert summary.metadata["kind"] == "session_summary"
    # Appending again reopens it; its new messages start at Immediate.
    sessions.append("trip", [_say("Back home now")])
    reopened = sessions.get("trip")
    assert reopened.state == "active"
    assert sessions.levels(reopened)["Immediate"] == 1


def test_the_next_prompt_is_filled_from_the_servers_state(hirag: Hirag) -> None:
    hirag.store_context(text="The user's dog is called Biscuit", level="LongTerm")
    hirag.add_fact(subject="user", predicate="lives_in", object="Lisbon", confidence=0.9)
    hirag.sessions.append("other", [_say("My sister Rita visits every Sunday")], user_id="u1")
    hirag.sessions.append("private", [_say("My dog Biscuit hates the rain")], user_id="u2")
    hirag.sessions.append(
        "now",
        [
            _say("Hello!"),
            _say("Hi, how can I help?", role="assistant"),
            _say("What is my dog called, where do I live, and who visits on Sundays?"),
        ],
        user_id="u1",
    )
    built = hirag.sessions.context("now", system_prompt="You are a helpful assistant.")
    assert built.messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert [t.content for t in built.recent_turns][-1].startswith("What is my dog called")
    by_source = {(s.source, s.text) for s in built.snippets}
    assert ("retrieved", "The user's dog is called Biscuit") in by_source
    assert ("retrieved", "My sister Rita visits every Sunday") in by_source
    assert ("fact", "user lives_in Lisbon") in by_source
    texts = " ".join(s.text for s in built.snippets)
    assert "hates the rain" not in texts  # another user's conversation
    assert "How can I help" not in texts  # this session's own turns are verbatim, not retrieved


def test_a_session_belongs_to_its_first_user(hirag: Hirag) -> None:
    hirag.sessions.append("mine", [_say("hello")], user_id="u1")
    with pytest.raises(ConflictError):
        hirag.sessions.append("mine", [_say("hello")], user_id="u2")


def test_bad_messages_are_refused_and_nothing_is_stored(hirag: Hirag) -> None:
    with pytest.raises(ValidationError):
        hirag.sessions.append("s", [_say("fine"), NewMessage("robot", "no")])
    with pytest.raises(ValidationError):
        hirag.sessions.append("s", [_say("   ")])
    with pytest.raises(NotFoundError):
        hirag.sessions.get("s")


def test_delete_leaves_nothing_findable(hirag: Hirag) -> None:
    sessions = hirag.sessions
    for i in range(WINDOW + 2):
        sessions.append("gone", [_say(f"The secret harbour code is {4400 + i}")])
    sessions.close("gone")
    assert hirag.search_contexts(query="secret harbour code", max_tokens=2000).contexts
    removed = sessions.delete("gone")
    assert removed == WINDOW + 2 + 1  # the messages and the summary
    assert hirag.search_contexts(query="secret harbour code", max_tokens=2000).contexts == []
    for read in (sessions.get, sessions.messages):
        with pytest.raises(NotFoundError):
            read("gone")
    assert [r.session_id for r in sessions.matching()[0]] == []


def test_a_matching_summary_leads_to_its_sessions_best_messages(
    model: OnnxMiniLMEmbedder, tmp_path: Path, clock: FakeClock
) -> None:
    settings = _settings(tmp_path).model_copy(
        update={"sessions": _settings(tmp_path).sessions.model_copy(update={"summary_sessions": 1})}
    )
    with Hirag(settings, model=model, clock=clock) as hirag:
        sessions = hirag.sessions
        sessions.append(
            "lighthouse",
            [
                _say("We are restoring the old harbour lighthouse this spring"),
                _say("The lighthouse lens needs new brass fittings", role="assistant"),
                _say("Painting of the tower starts in May"),
            ],
        )
        sessions.append("groceries", [_say("Buy oat milk and lemons")])
        for done in ("lighthouse", "groceries"):
            sessions.close(done)
        sessions.append("now", [_say("What is happening with the harbour lighthouse?")])
        # Only Immediate is searched directly: what comes from the closed sessions (LongTerm)
        # came through their summaries.
        led = sessions.context("now", system_prompt="You help.", levels=["Immediate"])
        texts = [s.text for s in led.snippets]
        assert "We are restoring the old harbour lighthouse this spring" in texts
        assert not any("oat milk" in t for t in texts)
        assert all(s.level == "LongTerm" for s in led.snippets)
        off = hirag.sessions
        off.summary_sessions = 0
        assert off.context("now", system_prompt="You help.", levels=["Immediate"]).snippets == []


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("answer", ["hold", "500"])
def test_a_model_rewrites_the_folded_brief_without_holding_up_appends(
    model: OnnxMiniLMEmbedder, tmp_path: Path, answer: str
) -> None:
    from tests.fake_http import serving
    from tests.test_llm_summarizer import SUMMARY, FakeChat, _handler

    chat = FakeChat(default=answer)
    with serving(_handler(chat)) as port:
        chat.port = port
        settings = _settings(tmp_path).model_copy(
            update={
                "summarizer": _settings(tmp_path).summarizer.model_copy(
                    update={"endpoint": chat.url, "max_retries": 0, "timeout_secs": 5}
                )
            }
        )
        with Hirag(settings, model=model) as hirag:
            sessions = hirag.sessions
            for i in range(WINDOW + 1):
                done = sessions.append("llm", [_say(f"Step {i} of the migration is done")])
            # The fold answered at once, extractive, while the model has not answered.
            assert done.folded == 1 and "Step 0" in done.session.brief
            assert sessions.get("llm").brief == done.session.brief
            assert _wait_for(lambda: len(chat.bodies) == 1)
            chat.release.set()
            if answer == "hold":
                assert _wait_for(lambda: sessions.get("llm").brief == SUMMARY)
            else:  # the model failed: the extractive brief stays
                hirag.sessions.shutdown()
                assert sessions.get("llm").brief == done.session.brief


def test_opening_finishes_the_session_writes_a_crash_cut_short(
    model: OnnxMiniLMEmbedder, tmp_path: Path, clock: FakeClock
) -> None:
    """The states a kill leaves inside an append, a close and a delete, written by hand
    with the parts the service uses; opening again finishes each."""

    def said(session: str, n: int) -> list[NewMessage]:
        return [_say(f"In {session}, message {i} about the Douro wine harvest") for i in range(n)]

    def summaries(hirag: Hirag, session: str) -> int:
        return hirag.contexts.backend.count(
            hirag.contexts.collections[Level.LONG_TERM],
            Filter(
                must=(
                    Condition("session_id", match=session),
                    Condition("metadata.kind", match=SUMMARY),
                )
            ),
        )

    with Hirag(_settings(tmp_path), model=model, clock=clock) as hirag:
        sessions, memory = hirag.sessions, hirag.contexts
        for session in ("appending", "closing", "deleting"):
            sessions.append(session, said(session, WINDOW + 2))
        # An append whose messages were stored, its record not yet counting them.
        record = sessions.records.load(DEFAULT_AGENT, "appending")
        assert record is not None and record.messages == WINDOW + 2
        sessions.records.save(replace(record, pending="append"))
        extra = [_say(f"late message {i} on the vintage") for i in range(3)]
        memory.store_many(
            [sessions._item(m, i, DEFAULT_AGENT, "appending", None) for i, m in enumerate(extra)]
        )
        # A session's first append, cut after its record named it.
        sessions.records.save(SessionRecord("first", DEFAULT_AGENT, pending="append"))
        # A close that moved part of the messages and stored a summary it never named (the
        # session had been closed before: its old summary is there too).
        sessions.close("closing")
        sessions.append("closing", said("closing again", 2))
        record = sessions.records.load(DEFAULT_AGENT, "closing")
        assert record is not None
        sessions.records.save(replace(record, pending="close"))
        oldest = sessions.messages("closing", limit=2)
        memory.move_where(
            sessions._scope(DEFAULT_AGENT, "closing")
            & Filter(must=(Condition("seq", range=Range(lte=float(oldest[-1].seq))),)),
            Level.LONG_TERM,
        )
        memory.store(
            "an unnamed summary", "LongTerm", session_id="closing", metadata={"kind": SUMMARY}
        )
        assert summaries(hirag, "closing") == 2
        # A delete that removed part of the messages.
        record = sessions.records.load(DEFAULT_AGENT, "deleting")
        assert record is not None
        sessions.records.save(replace(record, pending="delete"))
        first = sessions.messages("deleting", limit=3)
        memory.delete_where(
            sessions._scope(DEFAULT_AGENT, "deleting")
            & Filter(must=(Condition("seq", range=Range(lte=float(first[-1].seq))),))
        )

    with Hirag(_settings(tmp_path), model=model, clock=clock) as hirag:
        sessions = hirag.sessions
        assert sessions.records.pending() == []
        appended = sessions.get("appending")
        listed = sessions.messages("appending", limit=100)
        assert appended.messages == len(listed) == WINDOW + 5
        assert appended.tokens == sum(m.token_count for m in listed)
        assert sessions.levels(appended) == {"Immediate": WINDOW, "ShortTerm": 5, "LongTerm": 0}
        # Folded are exactly the messages the late ones pushed out of the window.
        assert appended.folded_through == listed[4].seq
        assert "message 4" in appended.brief and "late message" not in appended.brief
        with pytest.raises(NotFoundError):
            sessions.get("first")
        closed = sessions.get("closing")
        assert closed.state == "closed" and closed.messages == WINDOW + 4
        assert sessions.levels(closed) == {"Immediate": 0, "ShortTerm": 0, "LongTerm": WINDOW + 4}
        assert summaries(hirag, "closing") == 1
        assert closed.summary_id is not None
        assert hirag.get_context(context_id=closed.summary_id).text != "an unnamed summary"
        with pytest.raises(NotFoundError):
            sessions.get("deleting")
        found = hirag.search_contexts(query="deleting Douro wine harvest", max_tokens=4000)
        assert not any(c.session_id == "deleting" for c in found.contexts)
