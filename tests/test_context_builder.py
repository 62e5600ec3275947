"""The adaptive context builder: every cap holds on every path."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hirag_oz.config import TokenBudgetSettings
from hirag_oz.context import (
    BuiltContext,
    ExtractiveSummarizer,
    Priority,
    Snippet,
    Turn,
    build_context,
    plan,
)
from hirag_oz.context.builder import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from hirag_oz.errors import ValidationError
from hirag_oz.tokens import TokenCounter

SENTENCES = (
    "the team agreed to ship the release on friday after the load test passed",
    "alice owns the migration plan and bob reviews the schema changes before merge",
    "open question whether the cache needs a warmup step décision naïve 東京 🚀",
)
WORDS = [word for sentence in SENTENCES for word in sentence.split()]


class FailingSummarizer:
    """A summarizer whose endpoint is down."""

    name = "llm"

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str:
        raise ConnectionError("endpoint unreachable")


class WordySummarizer:
    """A summarizer that ignores its target, as a model may."""

    name = "llm"

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str:
        return " ".join(texts) * 3


def _build(counter: TokenCounter, budget: TokenBudgetSettings, **kw: object) -> BuiltContext:
    extractive = ExtractiveSummarizer(counter)
    return build_context(
        counter=counter,
        summarizer=kw.pop("summarizer", extractive),  # type: ignore[arg-type]
        fallback=extractive,
        budget=budget,
        **kw,  # type: ignore[arg-type]
    )


def _check_caps(counter: TokenCounter, budget: TokenBudgetSettings, built: BuiltContext) -> None:
    caps = plan(budget, counter.count(built.system_prompt))
    a = built.allocation
    assert counter.count(built.running_brief) == a.running_brief <= caps.running_brief
    assert sum(counter.count(t.content) for t in built.recent_turns) == a.recent_turns
    assert a.recent_turns <= caps.recent_turns
    assert sum(counter.count(s.text) for s in built.snippets) == a.retrieved_context
    assert a.retrieved_context <= caps.retrieved_context
    measured = (
        sum(counter.count(m["content"]) + MESSAGE_OVERHEAD for m in built.messages) + REPLY_OVERHEAD
    )
    assert measured == a.prompt_tokens <= budget.max_total - budget.completion
    assert a.remaining == budget.max_total - budget.completion - a.prompt_tokens >= 0


def test_everything_fits_untouched(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings()
    turns = [Turn("user", "What did we decide?"), Turn("assistant", "Ship on Friday.")]
    built = _build(
        counter,
        budget,
        system_prompt="You are a careful assistant.",
        running_brief="Release planning.",
        turns=turns,
        snippets=[Snippet("The load test passed on Thursday.", Priority.HIGH)],
    )
    assert [m["role"] for m in built.messages] == [
        "system",
        "system",
        "system",
        "user",
        "assistant",
    ]
    assert built.messages[0]["content"] == "You are a careful assistant."
    assert built.recent_turns == turns
    assert built.actions.summarized is False and built.actions.folded_turns == 0
    _check_caps(counter, budget, built)


def test_old_turns_fold_into_the_brief_and_the_newest_stay(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings(recent_turns=60, running_brief=400)
    turns = [Turn("user", f"Message {i}: " + " ".join(WORDS[i : i + 12])) for i in range(12)]
    built = _build(counter, budget, system_prompt="sys", turns=turns)
    assert built.recent_turns[-1] == turns[-1]
    assert built.recent_turns == turns[len(turns) - len(built.recent_turns) :]
    assert built.actions.folded_turns == len(turns) - len(built.recent_turns) > 0
    assert "Message 0:" in built.running_brief  # folded, not lost
    assert all(t.content not in built.running_brief for t in built.recent_turns)
    _check_caps(counter, budget, built)


def test_a_brief_over_its_slot_is_summarized_by_the_fallback_when_the_llm_fails(
    counter: TokenCounter,
) -> None:
    budget = TokenBudgetSettings(running_brief=50)
    brief = ". ".join(" ".join(WORDS[i : i + 8]) for i in range(0, 40)) + "."
    built = _build(
        counter, budget, system_prompt="sys", running_brief=brief, summarizer=FailingSummarizer()
    )
    assert built.actions.summarized is True and built.actions.summarizer == "extractive"
    assert 0 < counter.count(built.running_brief) <= 50
    _check_caps(counter, budget, built)


def test_an_over_long_summary_is_cut_to_the_slot(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings(running_brief=40)
    built = _build(
        counter,
        budget,
        system_prompt="sys",
        running_brief=" ".join(WORDS * 3),
        summarizer=WordySummarizer(),
    )
    assert built.actions.summarizer == "llm" and built.actions.brief_truncated is True
    _check_caps(counter, budget, built)


def test_snippets_go_by_priority_then_score_and_the_last_is_cut(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings(retrieved_context=120)
    long_text = " ".join(WORDS)  # about 60 tokens
    snippets = [
        Snippet("low " + long_text, Priority.LOW, 0.99),
        Snippet("critical " + long_text, Priority.CRITICAL, 0.1),
        Snippet("high " + long_text, Priority.HIGH, 0.5),
        Snippet("high-better " + long_text, Priority.HIGH, 0.9),
    ]
    built = _build(counter, budget, system_prompt="sys", snippets=snippets)
    firsts = [s.text.split()[0] for s in built.snippets]
    assert firsts[0] == "critical" and firsts[1] == "high-better"
    assert built.actions.truncated_snippets + built.actions.dropped_snippets >= 2
    _check_caps(counter, budget, built)


def test_a_long_system_prompt_is_kept_whole_and_takes_from_the_retrieved_slot(
    counter: TokenCounter,
) -> None:
    budget = TokenBudgetSettings(system_tokens=10, retrieved_context=500)
    system = " ".join(WORDS * 2)
    built = _build(
        counter,
        budget,
        system_prompt=system,
        snippets=[Snippet(" ".join(WORDS * 10))],
    )
    assert built.messages[0]["content"] == system
    overflow = counter.count(system) - 10
    assert built.allocation.system_overflow == overflow
    assert built.allocation.retrieved_context <= 500 - overflow
    _check_caps(counter, budget, built)


def test_only_system_plus_completion_over_max_total_is_an_error(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings(
        system_tokens=10,
        running_brief=0,
        recent_turns=0,
        retrieved_context=0,
        completion=80,
        max_total=100,
    )
    with pytest.raises(ValidationError) as err:
        _build(counter, budget, system_prompt=" ".join(WORDS))
    assert err.value.details["completion"] == 80 and err.value.details["max_total"] == 100


def test_the_newest_turn_alone_too_long_is_cut_from_the_front(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings(recent_turns=20)
    newest = Turn("user", "START " + " ".join(WORDS) + " END")
    built = _build(counter, budget, system_prompt="sys", turns=[Turn("user", "hi"), newest])
    assert len(built.recent_turns) == 1
    assert built.recent_turns[0].content.endswith("END")
    assert "START" not in built.recent_turns[0].content
    _check_caps(counter, budget, built)


def test_retrieve_is_asked_for_the_retrieved_slot(counter: TokenCounter) -> None:
    budget = TokenBudgetSettings(system_tokens=5, retrieved_context=300)
    asked: list[int] = []

    def retrieve(max_tokens: int) -> list[Snippet]:
        asked.append(max_tokens)
        return [Snippet("retrieved fact", Priority.MEDIUM, 0.4, id="x", source="retrieved")]

    built = _build(
        counter, budget, system_prompt="one two three four five six seven eight", retrieve=retrieve
    )
    assert asked == [300 - (counter.count("one two three four five six seven eight") - 5)]
    assert built.snippets[0].source == "retrieved" and built.snippets[0].id == "x"


text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=200).map(" ".join)


@st.composite
def budgets(draw: st.DrawFn) -> TokenBudgetSettings:
    # Slots often smaller than what is offered, and often no headroom for the chat format.
    slots = [draw(st.integers(0, 250)) for _ in range(5)]
    headroom = draw(st.sampled_from([0, 0, 5, 50, 500]))
    return TokenBudgetSettings(
        system_tokens=slots[0],
        running_brief=slots[1],
        recent_turns=slots[2],
        retrieved_context=slots[3],
        completion=slots[4],
        max_total=max(1, sum(slots) + headroom),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=budgets(),
    system=text,
    brief=text,
    turns=st.lists(st.tuples(st.sampled_from(["user", "assistant"]), text), max_size=16),
    snippets=st.lists(
        st.tuples(text, st.sampled_from(list(Priority)), st.floats(0, 1)), max_size=12
    ),
)
def test_every_cap_holds(
    counter: TokenCounter,
    budget: TokenBudgetSettings,
    system: str,
    brief: str,
    turns: list[tuple[str, str]],
    snippets: list[tuple[str, Priority, float]],
) -> None:
    given_turns = [Turn(role, f"turn {i}: {content}") for i, (role, content) in enumerate(turns)]
    try:
        built = _build(
            counter,
            budget,
            system_prompt=system,
            running_brief=brief,
            turns=given_turns,
            snippets=[Snippet(t, p, s) for t, p, s in snippets],
            query="release plan",
        )
    except ValidationError:
        assert counter.count(system) + MESSAGE_OVERHEAD + REPLY_OVERHEAD > (
            budget.max_total - budget.completion
        )
        return
    _check_caps(counter, budget, built)
    assert built.messages[0] == {"role": "system", "content": system}
    kept = built.recent_turns
    # No turn twice; the kept ones are the newest, in order, verbatim except the newest.
    labels = [t.content.split(":")[0] for t in kept[:-1]]
    assert len(labels) == len(set(labels))
    assert kept[:-1] == given_turns[len(given_turns) - len(kept) : -1]
    for t in kept[:-1]:
        assert t.content not in built.running_brief or not t.content
    caps = plan(budget, counter.count(system))
    newest = given_turns[-1].content if given_turns else ""
    if kept:
        assert newest.endswith(kept[-1].content) and "\ufffd" not in kept[-1].content
    elif counter.keep_end(newest, caps.recent_turns):
        # Only when the chat format's tokens took everything else first.
        assert not built.snippets and not built.running_brief


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(text, max_size=8), target=st.integers(0, 120))
def test_the_extractive_summary_always_meets_its_target(
    counter: TokenCounter, texts: list[str], target: int
) -> None:
    summary = ExtractiveSummarizer(counter).summarize(texts, target, "release plan")
    assert counter.count(summary) <= target
    if texts and target >= counter.count("\n".join(t for t in texts if t.strip())):
        assert summary == "\n".join(t for t in texts if t.strip())  # nothing to cut


def test_the_extractive_summary_keeps_what_the_query_asks_about(counter: TokenCounter) -> None:
    texts = [
        "We met on Monday. The weather was grey. Lunch was pasta.",
        "Bob said the database migration must finish before the release. Coffee ran out.",
        "Alice booked the venue. The migration rehearsal is on Thursday.",
    ]
    summary = ExtractiveSummarizer(counter).summarize(texts, 30, "database migration")
    assert "migration must finish before the release" in summary
    assert counter.count(summary) <= 30
    # Kept sentences stay in their original order.
    if "rehearsal" in summary:
        assert summary.index("must finish") < summary.index("rehearsal")
