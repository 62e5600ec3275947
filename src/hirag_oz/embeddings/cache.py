"""An LRU + TTL cache in front of any Embedder, keyed by model and text."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from cachetools import TTLCache

from hirag_oz.embeddings.base import Embedder, submit


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
        keys, found, unique = self._lookup(texts)
        fresh = self.inner.embed([texts[i] for i in unique.values()]) if unique else []
        return self._fill(keys, found, unique, fresh)

    def submit(self, texts: Sequence[str]) -> Future[list[list[float]]]:
        """`embed(texts)` as a future: the hits at once, the misses when the wrapped
        embedder has run them (on its own thread, if it has one; see `base.submit`)."""
        keys, found, unique = self._lookup(texts)
        out: Future[list[list[float]]] = Future()
        if not unique:
            out.set_result(self._fill(keys, found, unique, []))
            return out

        def fill(misses: Future[list[list[float]]]) -> None:
            try:
                result = self._fill(keys, found, unique, misses.result())
            except BaseException as exc:
                settle(out.set_exception, exc)
            else:
                settle(out.set_result, result)

        submit(self.inner, [texts[i] for i in unique.values()]).add_done_callback(fill)
        return out

    def _lookup(
        self, texts: Sequence[str]
    ) -> tuple[list[str], dict[int, list[float]], dict[str, int]]:
        """Keys of `texts`, the cached vectors by position, and the misses: for each
        distinct missing key, the first position holding it (equal texts are embedded once)."""
        keys = [self._key(t) for t in texts]
        found: dict[int, list[float]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vector = self._cache.get(key)
                if vector is not None:
                    found[i] = vector
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        unique: dict[str, int] = {}
        for i, key in enumerate(keys):
            if i not in found:
                unique.setdefault(key, i)
        return keys, found, unique

    def _fill(
        self,
        keys: list[str],
        found: dict[int, list[float]],
        unique: dict[str, int],
        fresh: list[list[float]],
    ) -> list[list[float]]:
        by_key = dict(zip(unique.keys(), fresh, strict=True))
        if by_key:
            with self._lock:
                for key, vector in by_key.items():
                    self._cache[key] = vector
        return [found[i] if i in found else by_key[key] for i, key in enumerate(keys)]

    def size(self) -> int:
        with self._lock:
            return len(self._cache)


def settle(set_outcome: Callable[[Any], None], value: Any) -> None:
    """Sets a future's outcome unless its caller cancelled it meanwhile (a request gone)."""
    with contextlib.suppress(InvalidStateError):
        set_outcome(value)
