"""Embedding adapters behind the `Embedder` protocol."""

from hirag_oz.embeddings.base import Embedder
from hirag_oz.embeddings.cache import CachedEmbedder

__all__ = ["CachedEmbedder", "Embedder"]
