"""What route handlers take from the request: the app's components and request checks."""

from __future__ import annotations

from fastapi import Request

from hirag_oz.api.middleware import BODY_METHODS
from hirag_oz.errors import UnsupportedMediaTypeError
from hirag_oz.factory import Components
from hirag_oz.observability.metrics import Metrics


def components(request: Request) -> Components:
    found: Components = request.app.state.components
    return found


def metrics(request: Request) -> Metrics:
    found: Metrics = request.app.state.metrics
    return found


def require_json(request: Request) -> None:
    """415 for a body that is not declared as JSON (a missing Content-Type included, so a
    browser cannot send a body without a CORS preflight)."""
    if request.method not in BODY_METHODS:
        return
    declared = request.headers.get("content-type")
    if declared is None:
        if request.headers.get("content-length", "0") == "0" and not request.headers.get(
            "transfer-encoding"
        ):
            return  # no body at all: the schema check answers
        raise UnsupportedMediaTypeError(
            "a request body needs 'Content-Type: application/json'", {"content_type": None}
        )
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            f"expected 'Content-Type: application/json', got {media!r}",
            {"content_type": media},
        )
