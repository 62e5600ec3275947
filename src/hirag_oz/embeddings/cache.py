"""An LRU + TTL cache in front of any Embedder, keyed by model and text."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence

from cachetools import TTLCache

from hirag_oz.embeddings.base import Embedder


class CachedEmbedder:
    """Serves repeated texts from memory and sends only the misses to the wrapped embedder."""

    def __init__(
        self,
        inner: Embedder,
        max_entries: int = 10_000,
        ttl_secs: float = 3600.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self._cache: TTLCache[str, list[float]] = TTLCache(
            maxsize=max_entries, ttl=ttl_secs, timer=timer
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_name}\x00{text}".encode()).hexdigest()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        keys = [self._key(t) for t in texts]
        found: dict[int, list[float]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vector = self._cache.get(key)
                if vector is not None:
                    found[i] = vector
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        missing = [i for i in range(len(texts)) if i not in found]
        if missing:
            # Equal texts within one call are embedded once.
            unique: dict[str, int] = {}
            for i in missing:
                unique.setdefault(keys[i], i)
            fresh = self.inner.embed([texts[i] for i in unique.values()])
            by_key = dict(zip(unique.keys(), fresh, strict=True))
            with self._lock:
                for key, vector in by_key.items():
                    self._cache[key] = vector
            for i in missing:
                found[i] = by_key[keys[i]]
        return [found[i] for i in range(len(texts))]

    def size(self) -> int:
        with self._lock:
            return len(self._cache)
