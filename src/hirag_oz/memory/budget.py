"""Choosing what fits a token budget, as a pure function over scored candidates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from hirag_oz.memory.levels import Level


class Candidate(NamedTuple):
    key: str
    level: Level
    score: float
    similarity: float
    tokens: int
    order: int = 0
    """Breaks ties of score: the lower first (the turn stored first), then the key."""
    speaker: str | None = None
    timestamp: float | None = None
    session: str | None = None
    """The session of a candidate that has a `seq` in it: where its neighbouring turns are."""


def select_within_budget(
    candidates: Sequence[Candidate],
    max_tokens: int,
    allocation: Mapping[Level, float],
    min_per_level: int = 0,
    threshold: float = 0.0,
) -> list[Candidate]:
    """Pick candidates whose tokens sum to at most `max_tokens`, best score first.

    1. Drop candidates below `threshold` similarity.
    2. Each level first gets its best `min_per_level` candidates that fit.
    3. Each level with candidates fills its share of the budget (its allocation, renormalised
       over the levels that have candidates, so an absent or empty level leaves its share
       to the others), skipping what does not fit and continuing.
    4. Whatever budget is left goes to the remaining candidates by score, skip-and-continue.
    The result is sorted by score, best first.
    """
    if max_tokens <= 0:
        return []
    ranked = sorted(
        (c for c in candidates if c.similarity >= threshold and 0 <= c.tokens <= max_tokens),
        key=lambda c: (-c.score, c.order, c.key),
    )
    chosen: dict[str, Candidate] = {}
    used = 0
    per_level_used: dict[Level, int] = {}

    def take(c: Candidate) -> bool:
        nonlocal used
        if c.key in chosen or used + c.tokens > max_tokens:
            return False
        chosen[c.key] = c
        used += c.tokens
        per_level_used[c.level] = per_level_used.get(c.level, 0) + c.tokens
        return True

    by_level: dict[Level, list[Candidate]] = {}
    for c in ranked:
        by_level.setdefault(c.level, []).append(c)

    if min_per_level > 0:
        for level_items in by_level.values():
            taken = 0
            for c in level_items:
                if taken >= min_per_level:
                    break
                if take(c):
                    taken += 1

    active = {lvl: max(0.0, allocation.get(lvl, 0.0)) for lvl in by_level}
    total_share = sum(active.values())
    for level, level_items in by_level.items():
        weight = active[level] / total_share if total_share > 0 else 1.0 / len(active)
        share = int(max_tokens * weight)
        for c in level_items:
            if per_level_used.get(level, 0) >= share:
                break
            if per_level_used.get(level, 0) + c.tokens <= share:
                take(c)

    # No early stop on a full budget: a candidate of 0 tokens still fits.
    for c in ranked:
        take(c)

    return sorted(chosen.values(), key=lambda c: (-c.score, c.order, c.key))
