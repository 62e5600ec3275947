"""The FastAPI application factory. No global state: every app owns its memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hirag_oz import __version__
from hirag_oz.api.contexts import router as contexts_router
from hirag_oz.api.errors import install_error_handlers
from hirag_oz.config import Settings
from hirag_oz.memory.manager import HiRAG


def create_app(settings: Settings, memory: HiRAG | None = None) -> FastAPI:
    """An app over `memory`, or over one built from `settings` at start-up (and closed at exit)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = memory is None
        if owned:
            from hirag_oz.factory import build_memory

            app.state.memory = build_memory(settings)
        if settings.hirag.maintenance_enabled:
            app.state.memory.start_maintenance()
        try:
            yield
        finally:
            app.state.memory.stop_maintenance()
            if owned:
                app.state.memory.close()

    app = FastAPI(
        title="hirag-oz",
        version=__version__,
        description="Context and memory service for LLM agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if memory is not None:
        app.state.memory = memory
    install_error_handlers(app)
    app.include_router(contexts_router)

    @app.get("/health/live", tags=["operations"])
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, object]:
        stats = app.state.memory.stats()
        return {"status": "healthy", "version": __version__, **stats}

    return app
