"""Every error leaves the HTTP service as `{code, message, details}`, with the status that
`hirag_oz.errors.WIRE` gives its class."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hirag_oz.errors import HiragError, PayloadTooLargeError, wire
from hirag_oz.kernel.validation import is_utf8

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT",
}


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once a body passes the limit; the app answers 413.

    An HTTPException, because FastAPI turns any other error raised while it reads a body
    into a 400.
    """

    def __init__(self, max_bytes: int) -> None:
        self.error = PayloadTooLargeError(
            f"request body is larger than {max_bytes} bytes", {"max_bytes": max_bytes}
        )
        super().__init__(413, self.error.message)


def envelope(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={
            "code": code,
            "message": _wire_safe(message),
            "details": _wire_safe(details or {}),
        },
    )


def _wire_safe(value: Any) -> Any:
    """`value` with what JSON cannot carry replaced: an error may echo the caller's input,
    and that input may hold lone surrogates (`\\ud800` is valid JSON) or non-finite numbers."""
    if isinstance(value, str):
        if is_utf8(value):
            return value
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_wire_safe(k): _wire_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire_safe(v) for v in value]
    return value


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HiragError)
    async def _hirag(_: Request, exc: HiragError) -> JSONResponse:
        status = wire(exc).status
        if status >= 500:
            logger.warning("request failed: %s %s", exc.code, exc.message)
        return envelope(status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return envelope(400, "VALIDATION_ERROR", "request body is not valid JSON")
        fields = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in errors
        ]
        return envelope(
            422, "VALIDATION_ERROR", "request does not match the schema", {"errors": fields}
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        error = exc.error
        return envelope(wire(error).status, error.code, error.message, error.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(
            exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "ERROR"
        )
        return envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        logger.error(
            "unexpected error", extra={"request_id": request_id, "error": repr(exc)}, exc_info=exc
        )
        response = envelope(
            500, "INTERNAL_ERROR", "unexpected server error", {"request_id": request_id}
        )
        response.headers["x-request-id"] = request_id
        return response
