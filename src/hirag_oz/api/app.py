"""The FastAPI application factory. No global state: every app owns its components and its
metrics registry, so tests can build many apps in one process."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from hirag_oz import __version__
from hirag_oz.api.archive import IMPORT_PATH, remove_stale_uploads
from hirag_oz.api.archive import router as archive_router
from hirag_oz.api.errors import install_error_handlers
from hirag_oz.api.keys import router as keys_router
from hirag_oz.api.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    ObserveMiddleware,
    RateLimitMiddleware,
)
from hirag_oz.api.operations import router as operations_router
from hirag_oz.api.ratelimit import RateLimiter
from hirag_oz.api.routes import catalogue_router
from hirag_oz.api.vision import router as vision_router
from hirag_oz.config import Settings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.kernel.clock import Clock
from hirag_oz.keys import key_store
from hirag_oz.observability.metrics import Metrics
from hirag_oz.observability.tracing import Tracing, TracingMiddleware
from hirag_oz.service import Hirag
from hirag_oz.store.base import VectorStore

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


def create_app(
    settings: Settings,
    *,
    model: Embedder | None = None,
    store: VectorStore | None = None,
    clock: Clock | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """The service over components built from `settings` at start-up and closed at exit.

    `model` and `store` replace the configured embedding model and vector store (tests
    share one loaded model between apps). `span_exporter` turns tracing on with spans going
    to it (tests); otherwise `[telemetry] otlp_endpoint` does, and without it tracing is off.
    """
    metrics = Metrics()
    # Built now, so a bad storage URI or proxy list fails at start-up, not on a request.
    limiter = RateLimiter(settings.rate_limit) if settings.rate_limit.enabled else None
    # Likewise a tracing endpoint without the OpenTelemetry packages.
    tracing = Tracing(settings.telemetry, span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hirag = Hirag(
            settings,
            model=model,
            store=store,
            clock=clock,
            metrics=metrics,
            tracing=tracing,
            serving=True,
            local_files=False,
        )
        try:
            # Everything is built now: a bad setting fails at start-up, not on a request.
            await run_in_threadpool(hirag.open_all)
            remove_stale_uploads(Path(settings.server.data_dir))
        except BaseException:
            await run_in_threadpool(hirag.close)
            raise
        if hirag.cache is not None:
            metrics.watch_cache("embedding", hirag.cache)
        metrics.watch_breakers(hirag.breakers)
        metrics.watch_disk(hirag.disk.free_bytes, hirag.disk.min_free_bytes)
        metrics.watch_health(hirag.health_checker.check)
        app.state.hirag = hirag
        try:
            yield
        finally:
            try:
                await run_in_threadpool(hirag.close)
            finally:
                # Spans still buffered go out now.
                await run_in_threadpool(tracing.shutdown)

    app = FastAPI(
        title="hirag-oz",
        version=__version__,
        description=(
            "Context and memory service for LLM agents. Routes under /api/ need "
            "`Authorization: Bearer <key>` when keys are configured. Every error is "
            "`{code, message, details}`."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.tracing = tracing
    install_error_handlers(app)
    app.include_router(operations_router)
    app.include_router(vision_router)  # index_document, which also takes uploads
    app.include_router(catalogue_router(skip=frozenset({"index_document"})))
    app.include_router(archive_router)  # export, import and backups: whole dumps
    app.include_router(keys_router)

    # Starlette puts the last added middleware outermost.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.server.max_body_size_mb * 1024**2,
        per_path={IMPORT_PATH: settings.server.max_import_mb * 1024**2},
    )
    if limiter is not None:
        app.add_middleware(RateLimitMiddleware, limiter=limiter, metrics=metrics)
    app.state.keys = key_store(settings)
    app.add_middleware(AuthMiddleware, keys=app.state.keys, metrics=metrics)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    if tracing.enabled:
        app.add_middleware(TracingMiddleware, tracing=tracing)
    return app


def server_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """How uvicorn runs an app of `create_app`: logs through our logging, requests logged by
    our middleware, `X-Forwarded-For` left to the rate limiter's `trusted_proxies`."""
    settings: Settings = app.state.settings
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(settings.server.shutdown_timeout_secs),
    )
