"""BM25 sparse vectors, computed in-process by Qdrant's own tokenizer and scorer."""

from __future__ import annotations

from qdrant_edge import Bm25, Bm25Config

from hirag_oz.store.base import SparseVec


class Bm25Encoder:
    """Term-frequency document vectors; the store applies IDF at query time (Modifier.IDF)."""

    def __init__(self, avg_len: float = 40.0) -> None:
        self._model = Bm25(Bm25Config(avg_len=avg_len, language="english"))

    def document(self, text: str) -> SparseVec:
        vec = self._model.embed_document(text)
        return SparseVec(list(vec.indices), list(vec.values))

    def query(self, text: str) -> SparseVec:
        vec = self._model.embed_query(text)
        return SparseVec(list(vec.indices), list(vec.values))
