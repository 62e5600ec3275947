"""Public operations endpoints: `/`, `/health`, `/health/live`, `/health/ready`, `/metrics`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from hirag_oz import __version__
from hirag_oz.api.deps import components, metrics
from hirag_oz.api.errors import envelope
from hirag_oz.factory import Components
from hirag_oz.observability.health import Component, HealthChecker, ProbeResult

router = APIRouter(tags=["operations"])

_HEALTH_CHECK_TEXT = "health check"


def build_health(parts: Components) -> HealthChecker:
    """A real probe per component: the store answers, the model embeds, tokens count."""

    def vector_store() -> ProbeResult:
        parts.store.ping()
        return "healthy", parts.store.name

    def embedder() -> ProbeResult:
        vector = parts.model.embed([_HEALTH_CHECK_TEXT])[0]
        if len(vector) != parts.model.dimension:
            return "unhealthy", f"returned {len(vector)} dimensions, not {parts.model.dimension}"
        return "healthy", parts.model.model_name

    def token_counter() -> ProbeResult:
        if parts.tokens.counter.count(_HEALTH_CHECK_TEXT) < 1:
            return "unhealthy", "counted no tokens"
        if parts.tokens.fallback_reason:
            return "degraded", f"word estimate in use: {parts.tokens.fallback_reason}"
        return "healthy", parts.tokens.counter.name

    def ocr_engine() -> ProbeResult:
        engine = parts.vision.engine
        if engine is None:
            return "degraded", (
                "no OCR engine: only PDF text layers can be indexed "
                "(install tesseract-ocr, or rapidocr-onnxruntime)"
            )
        version = getattr(engine, "version", None)
        return "healthy", f"{engine.name} {version}" if version else engine.name

    checks = [
        Component("vector_store", vector_store),
        Component("embedder", embedder),
        Component("token_counter", token_counter),
        Component("ocr_engine", ocr_engine, required=False),
    ]
    for breaker in parts.breakers:

        def state(b: Any = breaker) -> ProbeResult:
            status = {"closed": "healthy", "half_open": "degraded"}.get(b.state, "unhealthy")
            return status, f"circuit {b.state}"  # type: ignore[return-value]

        checks.append(Component(f"circuit_breaker:{breaker.name}", state, required=False))
    return HealthChecker(checks)


def _stats(parts: Components) -> dict[str, Any] | None:
    try:
        return parts.memory.stats()
    except Exception:  # the store went away since the probe; the probe will say so next
        return None


def _checker(request: Request) -> HealthChecker:
    checker: HealthChecker = request.app.state.health
    return checker


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
    health = _checker(request).check()
    if health.ready:
        return JSONResponse({"status": "ready"})
    down = [c.name for c in health.components if c.required and c.status == "unhealthy"]
    return envelope(
        503,
        "UPSTREAM_ERROR",
        f"not ready: {', '.join(down)} unavailable",
        {**health.to_dict(), "status": "not_ready"},
    )


@router.get("/health", responses={503: {"description": "The service is unhealthy."}})
def health(request: Request) -> JSONResponse:
    """Every component with its status and response time; 503 only when unhealthy."""
    result = _checker(request).check()
    body = {"version": __version__, **result.to_dict()}
    body["store"] = _stats(components(request)) if result.ready else None
    if result.status == "unhealthy":
        down = [c.name for c in result.components if c.status == "unhealthy"]
        return envelope(503, "UPSTREAM_ERROR", f"unhealthy: {', '.join(down)}", body)
    return JSONResponse(body)


@router.get("/metrics", response_class=Response)
def metrics_text(request: Request) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(metrics(request).render(), media_type=CONTENT_TYPE_LATEST)
