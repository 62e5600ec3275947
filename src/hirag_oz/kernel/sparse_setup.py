"""BM25 set-up of a store's collections, the same for contexts, facts and regions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hirag_oz.store.base import CollectionSpec, Distance, FieldType, VectorStore
from hirag_oz.store.sparse import Bm25Encoder


def open_hybrid_collections(
    backend: VectorStore,
    names: Iterable[str],
    dimension: int,
    distance: Distance,
    indexes: Mapping[str, FieldType],
    encoder: Bm25Encoder | None = None,
) -> Bm25Encoder:
    """Open each collection (created, or checked against `dimension` and `distance`) with a
    dense vector, the BM25 sparse vector and the payload `indexes`; return the BM25 encoder
    for their points and queries: `encoder` when given, else a new one.

    The store applies IDF to the sparse vector at query time, so the encoder only counts
    terms and one encoder serves every collection of a store.
    """
    for name in names:
        backend.ensure_collection(CollectionSpec(name, dimension, distance, indexes))
    return encoder or Bm25Encoder()
