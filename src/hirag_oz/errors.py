"""One error hierarchy. Each error knows its HTTP status and its wire code."""

from __future__ import annotations

from typing import Any


class HiragError(Exception):
    """Base of every error the library raises on purpose."""

    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(HiragError):
    """The input breaks a rule; nothing was changed."""

    status = 422
    code = "VALIDATION_ERROR"


class BadRequestError(ValidationError):
    """The request could not be read at all (malformed JSON, wrong shape)."""

    status = 400


class UnauthorizedError(HiragError):
    """No API key, or one that is not configured."""

    status = 401
    code = "UNAUTHORIZED"


class ForbiddenError(HiragError):
    status = 403
    code = "FORBIDDEN"


class NotFoundError(HiragError):
    status = 404
    code = "NOT_FOUND"


class ConflictError(HiragError):
    status = 409
    code = "CONFLICT"


class PayloadTooLargeError(HiragError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaTypeError(HiragError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimitedError(HiragError):
    """Too many requests for one client; `retry_after` says how many seconds to wait."""

    status = 429
    code = "RATE_LIMIT"

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, retry_after: int = 1
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class InternalError(HiragError):
    """An unexpected failure on the server; `details.request_id` identifies it in the logs."""


class UpstreamError(HiragError):
    """A remote dependency failed or answered nonsense."""

    status = 502
    code = "UPSTREAM_ERROR"


class UnavailableError(UpstreamError):
    """A remote dependency is unavailable (e.g. its circuit breaker is open)."""

    status = 503


class UpstreamTimeoutError(HiragError):
    status = 504
    code = "TIMEOUT"


class ConfigurationError(HiragError):
    """Settings are invalid or inconsistent with stored data; raised at start-up."""

    status = 500
    code = "CONFIGURATION_ERROR"
