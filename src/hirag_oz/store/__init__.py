"""Vector store adapters behind the `VectorStore` protocol."""

from hirag_oz.store.base import (
    CollectionSpec,
    Condition,
    Filter,
    PointRecord,
    Range,
    ScoredHit,
    SparseVec,
    StoredPoint,
    VectorStore,
)

__all__ = [
    "CollectionSpec",
    "Condition",
    "Filter",
    "PointRecord",
    "Range",
    "ScoredHit",
    "SparseVec",
    "StoredPoint",
    "VectorStore",
]
