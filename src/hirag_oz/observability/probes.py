"""The health probes of a service instance: each component asked to do real work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hirag_oz.observability.health import Component, HealthChecker, ProbeResult

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

_HEALTH_CHECK_TEXT = "health check"
_MB = 1024 * 1024


def build_health(hirag: Hirag) -> HealthChecker:
    """A real probe per component: the store answers, the model embeds, tokens count.
    Builds every capability first, so the breakers of all remote dependencies are known."""
    for name in ("contexts", "prompts", "facts", "documents"):
        getattr(hirag, name)

    def vector_store() -> ProbeResult:
        hirag.store.ping()
        return "healthy", hirag.store.name

    def embedder() -> ProbeResult:
        model = hirag.model
        vector = model.embed([_HEALTH_CHECK_TEXT])[0]
        if len(vector) != model.dimension:
            return "unhealthy", f"returned {len(vector)} dimensions, not {model.dimension}"
        return "healthy", model.model_name

    def token_counter() -> ProbeResult:
        tokens = hirag.tokens
        if tokens.counter.count(_HEALTH_CHECK_TEXT) < 1:
            return "unhealthy", "counted no tokens"
        if tokens.fallback_reason:
            return "degraded", f"word estimate in use: {tokens.fallback_reason}"
        return "healthy", tokens.counter.name

    def ocr_engine() -> ProbeResult:
        engine = hirag.documents.engine
        if engine is None:
            return "degraded", (
                "no OCR engine: only PDF text layers can be indexed "
                "(install tesseract-ocr, or rapidocr-onnxruntime)"
            )
        version = getattr(engine, "version", None)
        return "healthy", f"{engine.name} {version}" if version else engine.name

    def data_disk() -> ProbeResult:
        free, floor = hirag.disk.free_bytes(), hirag.disk.min_free_bytes
        if free is None:
            return "degraded", f"cannot read the free space under {hirag.disk.path}"
        if free < floor:
            return "degraded", (
                f"{free // _MB} MB free, under the {floor // _MB} MB kept free: writes are refused"
            )
        return "healthy", f"{free // _MB} MB free"

    checks = [
        Component("vector_store", vector_store),
        Component("data_disk", data_disk, required=False),
        Component("embedder", embedder),
        Component("token_counter", token_counter),
        Component("ocr_engine", ocr_engine, required=False),
    ]
    for breaker in hirag.breakers:

        def state(b: Any = breaker) -> ProbeResult:
            status = {"closed": "healthy", "half_open": "degraded"}.get(b.state, "unhealthy")
            return status, f"circuit {b.state}"  # type: ignore[return-value]

        checks.append(Component(f"circuit_breaker:{breaker.name}", state, required=False))
    return HealthChecker(checks)
