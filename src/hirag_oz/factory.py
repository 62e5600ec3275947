"""Builds the object graph from settings, in one place, for the library, the CLI and the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hirag_oz.config import Settings, load_settings
from hirag_oz.context.builder import Summarizer
from hirag_oz.context.service import ContextBuilder
from hirag_oz.embeddings.base import Embedder
from hirag_oz.embeddings.batching import CoalescingEmbedder
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.facts.store import FactStore
from hirag_oz.kernel.clock import Clock
from hirag_oz.memory.manager import HiRAG
from hirag_oz.resilience import CircuitBreaker
from hirag_oz.store.base import VectorStore
from hirag_oz.tokens import TokenCounter, TokenCounterInfo, load_token_counter

if TYPE_CHECKING:
    from hirag_oz.observability.metrics import Metrics
    from hirag_oz.observability.tracing import Tracing
    from hirag_oz.vision.ocr import OcrEngine
    from hirag_oz.vision.service import VisionService


def build_breaker(settings: Settings, name: str) -> CircuitBreaker:
    """A circuit breaker for the remote dependency `name`, tuned by `[circuit_breaker]`."""
    cfg = settings.circuit_breaker
    return CircuitBreaker(
        name,
        failure_threshold=cfg.failure_threshold,
        success_threshold=cfg.success_threshold,
        reset_timeout_secs=cfg.reset_timeout_secs,
    )


def build_store(settings: Settings) -> VectorStore:
    """The configured vector store; a Qdrant server gets a breaker named "vector_store"."""
    db = settings.vector_db
    if db.url:
        from hirag_oz.store.server import ServerStore

        return ServerStore.connect(
            db.url,
            api_key=db.api_key.get_secret_value() if db.api_key else None,
            timeout=db.timeout_secs,
            verify=db.tls_verify,
            breaker=build_breaker(settings, "vector_store") if db.url != ":memory:" else None,
            shard_number=db.shard_number,
            replication_factor=db.replication_factor,
            write_consistency_factor=db.write_consistency_factor,
        )
    from hirag_oz.store.edge import EdgeStore

    return EdgeStore(
        Path(settings.server.data_dir) / "qdrant",
        optimize_after_points=db.optimize_after_points,
        search_threads=db.search_threads,
    )


@dataclass
class Components:
    """The object graph of one service instance, built from settings in one place."""

    settings: Settings
    memory: HiRAG
    store: VectorStore
    model: CoalescingEmbedder
    """The embedder under the cache: a call to it reaches the model."""
    cache: CachedEmbedder | None
    tokens: TokenCounterInfo
    context: ContextBuilder
    facts: FactStore
    vision: VisionService
    breakers: list[CircuitBreaker] = field(default_factory=list)

    def close(self) -> None:
        self.vision.close()
        self.memory.stop_maintenance()
        self.memory.close()
        self.context.close()
        self.model.close()


def build_model(settings: Settings, breakers: list[CircuitBreaker]) -> Embedder:
    """The configured embedding model, local or remote (its breaker goes to `breakers`)."""
    cfg = settings.embedding
    if cfg.provider == "openai":
        from hirag_oz.embeddings.openai import OpenAICompatibleEmbedder

        assert cfg.api_url is not None
        breaker = build_breaker(settings, "embedding")
        breakers.append(breaker)
        return OpenAICompatibleEmbedder(
            api_url=cfg.api_url,
            api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
            model=cfg.model,
            dimensions=cfg.dimensions,
            batch_size=cfg.batch_size,
            timeout_secs=cfg.timeout_secs,
            max_retries=cfg.max_retries,
            breaker=breaker,
        )
    if cfg.runtime == "onnx":
        from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder, default_cache_dir

        return OnnxMiniLMEmbedder(
            cfg.model_cache_dir or default_cache_dir(), cfg.batch_size, cfg.threads
        )
    from hirag_oz.embeddings.local import LocalMiniLMEmbedder

    return LocalMiniLMEmbedder(batch_size=cfg.batch_size)


def build_summarizer(
    settings: Settings, counter: TokenCounter, breakers: list[CircuitBreaker]
) -> Summarizer | None:
    """The configured LLM summarizer (its breaker goes to `breakers`), or None for the
    local extractive one alone."""
    cfg = settings.summarizer
    if not cfg.endpoint:
        return None
    from hirag_oz.context.llm import OpenAICompatibleSummarizer

    breaker = build_breaker(settings, "summarizer")
    breakers.append(breaker)
    return OpenAICompatibleSummarizer(
        cfg.endpoint,
        cfg.api_key.get_secret_value() if cfg.api_key else None,
        cfg.model,
        counter,
        timeout_secs=cfg.timeout_secs,
        max_retries=cfg.max_retries,
        temperature=cfg.temperature,
        breaker=breaker,
    )


def build_ocr_engine(settings: Settings, breakers: list[CircuitBreaker]) -> OcrEngine | None:
    """The configured OCR engine; with `auto`, Tesseract when its binary is installed, else
    RapidOCR when its package is, else None (only PDF text layers can be indexed)."""
    from hirag_oz.errors import ConfigurationError
    from hirag_oz.vision.ocr import TesseractEngine, tesseract_available
    from hirag_oz.vision.rapid import RapidOcrEngine, rapidocr_available

    cfg = settings.vision
    if cfg.engine == "deepseek":
        from hirag_oz.vision.deepseek import DeepSeekOcrEngine

        ds = cfg.deepseek
        assert ds.endpoint is not None
        breaker = build_breaker(settings, "vision_ocr")
        breakers.append(breaker)
        return DeepSeekOcrEngine(
            ds.endpoint,
            ds.api_key.get_secret_value() if ds.api_key else None,
            ds.model,
            timeout_secs=ds.timeout_secs,
            max_retries=ds.max_retries,
            max_concurrency=ds.max_concurrency,
            breaker=breaker,
            enabled=ds.enabled,
        )
    if cfg.engine in ("auto", "tesseract") and tesseract_available():
        return TesseractEngine(cfg.tesseract_lang)
    if cfg.engine == "tesseract":
        raise ConfigurationError(
            "vision.engine is 'tesseract' but the tesseract binary is not on PATH "
            "(Debian: apt-get install tesseract-ocr tesseract-ocr-eng)"
        )
    if cfg.engine in ("auto", "rapidocr") and rapidocr_available():
        return RapidOcrEngine()
    if cfg.engine == "rapidocr":
        raise ConfigurationError(
            "vision.engine is 'rapidocr' but rapidocr-onnxruntime is not installed "
            "(pip install 'hirag-oz[rapidocr]')"
        )
    return None


def build_components(
    settings: Settings,
    *,
    model: Embedder | None = None,
    store: VectorStore | None = None,
    tokens: TokenCounterInfo | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
    start_jobs: bool = True,
) -> Components:
    """Everything a service instance needs. `model` replaces the configured embedding
    model (it still gets batching, metering, tracing and the cache). With `tracing` turned
    on, the model, the store, the summarizers and the OCR engine are wrapped in spans. With
    `start_jobs`, index jobs left unfinished by an earlier process are queued again."""
    traced = tracing if tracing is not None and tracing.enabled else None
    breakers: list[CircuitBreaker] = []
    base = model or build_model(settings, breakers)
    if metrics is not None:
        from hirag_oz.observability.metrics import MeteredEmbedder

        base = MeteredEmbedder(base, metrics)
    if traced is not None:
        remote = model is None and settings.embedding.provider == "openai"
        base = traced.embedder(base, remote=remote)
    # Concurrent requests each embed one query; one model call for all of them costs much
    # less per text than one call each.
    inner = CoalescingEmbedder(base, max_batch=settings.embedding.batch_size)
    cfg = settings.embedding
    cache = CachedEmbedder(inner, cfg.cache_size, cfg.cache_ttl_secs) if cfg.cache_enabled else None
    tokens = tokens or load_token_counter(
        settings.token_estimator.kind, settings.token_estimator.tokens_per_word
    )
    store = store or build_store(settings)
    # A store with a breaker (a Qdrant server, built here or passed in) shows it in /health
    # and /metrics like the other remote dependencies.
    store_breaker = getattr(store, "breaker", None)
    if isinstance(store_breaker, CircuitBreaker):
        breakers.append(store_breaker)
    if traced is not None:
        store = traced.store(store)
    memory = HiRAG(
        store,
        cache or inner,
        tokens.counter,
        settings.hirag,
        collection_prefix=settings.vector_db.collection_prefix,
        distance=settings.vector_db.distance,
        clock=clock,
    )
    summarizer = build_summarizer(settings, tokens.counter, breakers)
    if summarizer is not None and metrics is not None:
        from hirag_oz.observability.metrics import MeteredSummarizer

        summarizer = MeteredSummarizer(summarizer, metrics)
    if summarizer is not None and traced is not None:
        summarizer = traced.summarizer(summarizer, remote=True)
    context = ContextBuilder(memory, tokens.counter, settings.token_budget, summarizer)
    if traced is not None:
        # The extractive summarizer: the builder's fallback, and its only one without an LLM.
        fallback = traced.summarizer(context.fallback)
        if context.summarizer is context.fallback:
            context.summarizer = fallback
        context.fallback = fallback
    facts = FactStore(
        store,
        cache or inner,
        settings.facts,
        collection_prefix=settings.vector_db.collection_prefix,
        distance=settings.vector_db.distance,
        clock=clock,
    )
    from hirag_oz.vision.service import VisionService

    engine = build_ocr_engine(settings, breakers)
    if engine is not None and traced is not None:
        engine = traced.ocr(engine, remote=engine.name == "deepseek")
    vision = VisionService(
        settings.vision,
        Path(settings.server.data_dir),
        store,
        cache or inner,
        tokens.counter,
        engine,
        collection_prefix=settings.vector_db.collection_prefix,
        distance=settings.vector_db.distance,
        observer=metrics,
        start=start_jobs,
    )
    return Components(
        settings, memory, store, inner, cache, tokens, context, facts, vision, breakers
    )


def build_memory(
    settings: Settings,
    *,
    model: Embedder | None = None,
    store: VectorStore | None = None,
    tokens: TokenCounterInfo | None = None,
    clock: Clock | None = None,
) -> HiRAG:
    """A HiRAG over the configured (or given) components."""
    return build_components(settings, model=model, store=store, tokens=tokens, clock=clock).memory


def open_memory(
    data_dir: str | Path | None = None, config: str | Path | None = None, **overrides: Any
) -> HiRAG:
    """A ready HiRAG on the embedded store: `open_memory("./data")`."""
    if data_dir is not None:
        server = dict(overrides.get("server", {}))
        server["data_dir"] = Path(data_dir)
        overrides["server"] = server
    return build_memory(load_settings(config, **overrides))
