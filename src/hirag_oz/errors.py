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


class NotFoundError(HiragError):
    status = 404
    code = "NOT_FOUND"


class ConflictError(HiragError):
    status = 409
    code = "CONFLICT"


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
