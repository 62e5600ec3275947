"""Builds the object graph from settings, in one place, for the library, the CLI and the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hirag_oz.config import Settings, load_settings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.memory.clock import Clock
from hirag_oz.memory.manager import HiRAG
from hirag_oz.store.base import VectorStore
from hirag_oz.tokens import TokenCounterInfo, load_token_counter


def build_store(settings: Settings) -> VectorStore:
    db = settings.vector_db
    if db.url:
        from hirag_oz.store.server import ServerStore

        return ServerStore.connect(
            db.url,
            api_key=db.api_key.get_secret_value() if db.api_key else None,
            timeout=db.timeout_secs,
            verify=db.tls_verify,
        )
    from hirag_oz.store.edge import EdgeStore

    return EdgeStore(
        Path(settings.server.data_dir) / "qdrant", optimize_after_points=db.optimize_after_points
    )


def build_embedder(settings: Settings) -> Embedder:
    """The configured embedder, behind the LRU+TTL cache when enabled."""
    cfg = settings.embedding
    inner: Embedder
    if cfg.provider == "openai":
        from hirag_oz.embeddings.openai import OpenAICompatibleEmbedder
        from hirag_oz.resilience import CircuitBreaker

        assert cfg.api_url is not None
        inner = OpenAICompatibleEmbedder(
            api_url=cfg.api_url,
            api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
            model=cfg.model,
            dimensions=cfg.dimensions,
            batch_size=cfg.batch_size,
            timeout_secs=cfg.timeout_secs,
            max_retries=cfg.max_retries,
            breaker=CircuitBreaker("embedding"),
        )
    else:
        from hirag_oz.embeddings.local import LocalMiniLMEmbedder

        inner = LocalMiniLMEmbedder(batch_size=cfg.batch_size)
    if cfg.cache_enabled:
        return CachedEmbedder(inner, cfg.cache_size, cfg.cache_ttl_secs)
    return inner


def build_memory(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
    tokens: TokenCounterInfo | None = None,
    clock: Clock | None = None,
) -> HiRAG:
    tokens = tokens or load_token_counter(
        settings.token_estimator.kind, settings.token_estimator.tokens_per_word
    )
    return HiRAG(
        store or build_store(settings),
        embedder or build_embedder(settings),
        tokens.counter,
        settings.hirag,
        collection_prefix=settings.vector_db.collection_prefix,
        distance=settings.vector_db.distance,
        clock=clock,
    )


def open_memory(
    data_dir: str | Path | None = None, config: str | Path | None = None, **overrides: Any
) -> HiRAG:
    """A ready HiRAG on the embedded store: `open_memory("./data")`."""
    if data_dir is not None:
        server = dict(overrides.get("server", {}))
        server["data_dir"] = Path(data_dir)
        overrides["server"] = server
    return build_memory(load_settings(config, **overrides))
