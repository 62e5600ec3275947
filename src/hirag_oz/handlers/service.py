"""The service's own operations: health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hirag_oz import __version__
from hirag_oz.errors import UnavailableError
from hirag_oz_client import models as m

if TYPE_CHECKING:
    from hirag_oz.service import Hirag


def health(hirag: Hirag, request: m.HealthRequest) -> m.HealthResponse:
    """Every component probed for real (briefly cached), and the store's counts when ready;
    unhealthy raises `UnavailableError` with the same body as its details."""
    result = hirag.health_checker.check()
    body: dict[str, Any] = {"version": __version__, **result.to_dict()}
    body["store"] = store_stats(hirag) if result.ready else None
    if result.status == "unhealthy":
        down = [c.name for c in result.components if c.status == "unhealthy"]
        raise UnavailableError(f"unhealthy: {', '.join(down)}", body)
    return m.HealthResponse.model_validate(body)


def store_stats(hirag: Hirag) -> dict[str, Any] | None:
    try:
        return hirag.contexts.stats()
    except Exception:  # the store went away since the probe; the probe will say so next
        return None
