"""Public operations endpoints besides the catalogue's health: `/`, `/health/live`,
`/health/ready`, `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from hirag_oz import __version__
from hirag_oz.api.deps import hirag_of, metrics
from hirag_oz.api.errors import envelope

router = APIRouter(tags=["service"])


@router.get("/")
def root() -> dict[str, str]:
    """What this service is."""
    return {"service": "hirag-oz", "version": __version__, "status": "running", "docs": "/docs"}


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {"description": "A required component is down."}})
def ready(request: Request) -> JSONResponse:
    """Ready when the vector store, the embedder and the token counter can serve."""
    health = hirag_of(request).health_checker.check()
    if health.ready:
        return JSONResponse({"status": "ready"})
    down = [c.name for c in health.components if c.required and c.status == "unhealthy"]
    return envelope(
        503,
        "UPSTREAM_ERROR",
        f"not ready: {', '.join(down)} unavailable",
        {**health.to_dict(), "status": "not_ready"},
    )


@router.get("/metrics", response_class=Response)
def metrics_text(request: Request) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(metrics(request).render(), media_type=CONTENT_TYPE_LATEST)
