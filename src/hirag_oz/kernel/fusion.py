"""Hybrid search scores: the engine's raw score as a similarity, and dense + BM25 fusion.

Contexts, facts and regions all rank by these, so a score means the same in each.
"""

from __future__ import annotations

from hirag_oz.store.base import Distance, ScoredHit


def similarity_from_score(distance: str, score: float) -> float:
    """The engine's raw score as a higher-is-better similarity in [0, 1]."""
    if distance == "Euclid":
        return 1.0 / (1.0 + max(0.0, score))  # Qdrant returns the distance for Euclid
    return min(1.0, max(0.0, score))


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
