"""Builds each configured adapter from settings: the store, the model, the summarizer, OCR.
`hirag_oz.service.Hirag` composes them, each when first needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hirag_oz.config import Settings
from hirag_oz.resilience import CircuitBreaker

if TYPE_CHECKING:
    from hirag_oz.context.builder import Summarizer
    from hirag_oz.embeddings.base import Embedder
    from hirag_oz.kernel.disk import DiskGuard
    from hirag_oz.store.base import VectorStore
    from hirag_oz.tokens import TokenCounter
    from hirag_oz.vision.ocr import OcrEngine


def build_breaker(settings: Settings, name: str) -> CircuitBreaker:
    """A circuit breaker for the remote dependency `name`, tuned by `[circuit_breaker]`."""
    cfg = settings.circuit_breaker
    return CircuitBreaker(
        name,
        failure_threshold=cfg.failure_threshold,
        success_threshold=cfg.success_threshold,
        reset_timeout_secs=cfg.reset_timeout_secs,
    )


def build_store(settings: Settings, disk: DiskGuard | None = None) -> VectorStore:
    """The configured vector store; a Qdrant server gets a breaker named "vector_store", the
    embedded store checks `disk` before it writes."""
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
        disk=disk,
    )


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
