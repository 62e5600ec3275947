"""The ranking formula: w_sim*similarity + w_rec*recency + w_lvl*level + w_freq*frequency."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hirag_oz.memory.levels import Level
from hirag_oz.store.base import Distance, ScoredHit

_LOG_101 = math.log10(101)


@dataclass(frozen=True)
class Weights:
    similarity: float = 0.6
    recency: float = 0.2
    level: float = 0.2
    frequency: float = 0.0


def recency(age_seconds: float) -> float:
    """exp(-age_hours / 24); an item from the future of `as_of` counts as brand new."""
    return math.exp(-max(0.0, age_seconds) / 3600.0 / 24.0)


def frequency(access_count: int) -> float:
    """log10(1 + n) / log10(101), capped at 1 (reached at 100 accesses)."""
    if access_count <= 0:
        return 0.0
    return min(1.0, math.log10(1 + access_count) / _LOG_101)


def similarity_from_score(distance: str, score: float) -> float:
    """The engine's raw score as a higher-is-better similarity in [0, 1]."""
    if distance == "Euclid":
        return 1.0 / (1.0 + max(0.0, score))  # Qdrant returns the distance for Euclid
    return min(1.0, max(0.0, score))


def composite(
    similarity: float, age_seconds: float, level: Level, access_count: int, weights: Weights
) -> float:
    return (
        weights.similarity * similarity
        + weights.recency * recency(age_seconds)
        + weights.level * level.weight
        + weights.frequency * frequency(access_count)
    )


def fuse_hybrid(
    dense_hits: list[ScoredHit], sparse_hits: list[ScoredHit], alpha: float, distance: Distance
) -> list[tuple[ScoredHit, float]]:
    """Union of dense and BM25 hits with similarity = alpha*dense + (1-alpha)*lexical.

    Lexical is BM25 divided by the best BM25 score of this query, so it lies in [0, 1]. A
    BM25-only hit's dense similarity comes from the store (`dense_score`).
    """
    top_bm25 = max((h.score for h in sparse_hits), default=0.0)
    scale = (1 - alpha) / top_bm25 if top_bm25 > 0 else 0.0
    lexical = {h.id: h.score * scale for h in sparse_hits}
    out = [
        (h, alpha * similarity_from_score(distance, h.score) + lexical.get(h.id, 0.0))
        for h in dense_hits
    ]
    seen = {h.id for h in dense_hits}
    for h in sparse_hits:
        if h.id not in seen:
            dense = 0.0 if h.dense_score is None else similarity_from_score(distance, h.dense_score)
            out.append((h, alpha * dense + lexical[h.id]))
    return out
