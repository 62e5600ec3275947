from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hirag_oz.memory.budget import Candidate, select_within_budget
from hirag_oz.memory.levels import Level

ALLOC = {Level.IMMEDIATE: 0.3, Level.SHORT_TERM: 0.4, Level.LONG_TERM: 0.3}

candidates = st.lists(
    st.builds(
        Candidate,
        key=st.uuids().map(str),
        level=st.sampled_from(list(Level)),
        score=st.floats(0, 1),
        similarity=st.floats(0, 1),
        tokens=st.integers(0, 400),
    ),
    max_size=60,
    unique_by=lambda c: c.key,
)


@settings(max_examples=300)
@given(candidates, st.integers(0, 2000), st.integers(0, 3), st.floats(0, 1))
def test_budget_is_never_exceeded(
    items: list[Candidate], budget: int, min_per_level: int, threshold: float
) -> None:
    chosen = select_within_budget(items, budget, ALLOC, min_per_level, threshold)
    assert sum(c.tokens for c in chosen) <= budget
    assert len({c.key for c in chosen}) == len(chosen)
    assert all(c.similarity >= threshold for c in chosen)
    assert [c.score for c in chosen] == sorted((c.score for c in chosen), reverse=True)


@settings(max_examples=300)
@given(candidates, st.integers(1, 2000))
def test_nothing_that_fits_is_left_out_when_all_are_relevant(
    items: list[Candidate], budget: int
) -> None:
    chosen = select_within_budget(items, budget, ALLOC, 0, 0.0)
    used = sum(c.tokens for c in chosen)
    left = [c for c in items if c not in chosen]
    assert all(c.tokens > budget - used for c in left)


def _c(key: str, level: Level, score: float, tokens: int) -> Candidate:
    return Candidate(key, level, score, 1.0, tokens)


def test_skip_what_does_not_fit_and_continue() -> None:
    items = [
        _c("big", Level.LONG_TERM, 0.9, 80),
        _c("a", Level.LONG_TERM, 0.8, 30),
        _c("b", Level.LONG_TERM, 0.7, 30),
    ]
    chosen = select_within_budget(items, 100, ALLOC)
    assert [c.key for c in chosen] == ["big"]
    chosen = select_within_budget(items, 70, ALLOC)
    assert [c.key for c in chosen] == ["a", "b"]


def test_each_level_gets_its_share_before_the_best_scores_take_the_rest() -> None:
    items = [_c(f"l3-{i}", Level.LONG_TERM, 0.9, 10) for i in range(20)] + [
        _c(f"l2-{i}", Level.SHORT_TERM, 0.5, 10) for i in range(20)
    ]
    chosen = select_within_budget(items, 100, ALLOC)
    by_level = {lvl: sum(1 for c in chosen if c.level is lvl) for lvl in Level}
    # Immediate has no candidates: its share goes to the others (0.4 : 0.3 of 100 tokens).
    assert by_level[Level.SHORT_TERM] == 5
    assert by_level[Level.LONG_TERM] == 5
    assert sum(c.tokens for c in chosen) == 100


def test_a_lone_level_can_use_the_whole_budget() -> None:
    items = [_c(f"l3-{i}", Level.LONG_TERM, 0.5, 10) for i in range(20)]
    assert sum(c.tokens for c in select_within_budget(items, 150, ALLOC)) == 150


def test_min_per_level_keeps_a_weak_level() -> None:
    items = [_c(f"l3-{i}", Level.LONG_TERM, 0.9, 10) for i in range(5)] + [
        _c("l1", Level.IMMEDIATE, 0.1, 10)
    ]
    chosen = select_within_budget(
        items, 20, {Level.IMMEDIATE: 0.0, Level.LONG_TERM: 1.0}, min_per_level=1
    )
    assert {c.key for c in chosen} == {"l1", "l3-0"}
