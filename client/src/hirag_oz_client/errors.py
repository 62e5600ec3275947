"""Errors by cause. The classes say what went wrong; `WIRE` says how each one travels.

The same classes are raised by the library in-process and by the clients from an error
response, so `except NotFoundError` means the same thing on every surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "WIRE",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "HiragError",
    "InsufficientStorageError",
    "InternalError",
    "MalformedRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "ValidationError",
    "Wire",
    "error_class",
    "from_envelope",
    "wire",
]


class HiragError(Exception):
    """Base of every error raised on purpose."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        # Set only on an error read from an envelope whose code no class here has.
        self.unknown_code: str | None = None
        self.status: int | None = None
        """The HTTP status of the response the error was read from (clients); None for an
        error raised in-process."""

    @property
    def code(self) -> str:
        """The wire code of this error (`VALIDATION_ERROR`, `NOT_FOUND`, ...)."""
        return self.unknown_code or wire(self).code

    def to_dict(self) -> dict[str, Any]:
        """The error envelope: `{code, message, details}`."""
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(HiragError):
    """The input breaks a rule; nothing was changed."""


class MalformedRequestError(ValidationError):
    """The request could not be read at all (malformed JSON, wrong shape)."""


class AuthenticationError(HiragError):
    """No API key, or one that is not configured."""


class PermissionDeniedError(HiragError):
    """The caller is known but may not do this."""


class NotFoundError(HiragError):
    """No such thing, or not the caller's."""


class ConflictError(HiragError):
    """The request contradicts what is stored."""


class PayloadTooLargeError(ValidationError):
    """The request body is larger than the service accepts."""


class UnsupportedMediaTypeError(ValidationError):
    """The request body is not of a type the operation reads."""


class RateLimitedError(HiragError):
    """Too many requests for one client; `retry_after` says how many seconds to wait."""

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, retry_after: int = 1
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class InsufficientStorageError(HiragError):
    """The service cannot store more (its disk is nearly full); reads go on."""


class UpstreamError(HiragError):
    """A remote dependency failed or answered nonsense."""


class UpstreamTimeoutError(UpstreamError):
    """A remote dependency did not answer in time."""


class UnavailableError(UpstreamError):
    """A remote dependency cannot be reached, or its circuit breaker is open."""


class InternalError(HiragError):
    """An unexpected failure; `details.request_id` identifies it in the service's logs."""


class ConfigurationError(HiragError):
    """Settings are invalid or inconsistent with stored data; raised at start-up."""


@dataclass(frozen=True)
class Wire:
    """How an error class travels: its HTTP status and its envelope code."""

    status: int
    code: str


# The one table from causes to the wire. A class not listed travels as its nearest
# listed base. MCP error results carry the same envelope (`isError: true`, as text).
WIRE: dict[type[HiragError], Wire] = {
    HiragError: Wire(500, "INTERNAL_ERROR"),
    ValidationError: Wire(422, "VALIDATION_ERROR"),
    MalformedRequestError: Wire(400, "VALIDATION_ERROR"),
    AuthenticationError: Wire(401, "UNAUTHORIZED"),
    PermissionDeniedError: Wire(403, "FORBIDDEN"),
    NotFoundError: Wire(404, "NOT_FOUND"),
    ConflictError: Wire(409, "CONFLICT"),
    PayloadTooLargeError: Wire(413, "PAYLOAD_TOO_LARGE"),
    UnsupportedMediaTypeError: Wire(415, "UNSUPPORTED_MEDIA_TYPE"),
    RateLimitedError: Wire(429, "RATE_LIMIT"),
    InsufficientStorageError: Wire(507, "INSUFFICIENT_STORAGE"),
    UpstreamError: Wire(502, "UPSTREAM_ERROR"),
    UnavailableError: Wire(503, "UPSTREAM_ERROR"),
    UpstreamTimeoutError: Wire(504, "TIMEOUT"),
    InternalError: Wire(500, "INTERNAL_ERROR"),
    ConfigurationError: Wire(500, "CONFIGURATION_ERROR"),
}

_BY_WIRE: dict[tuple[str, int], type[HiragError]] = {
    (w.code, w.status): cls for cls, w in WIRE.items() if cls is not HiragError
}
# A code alone (an envelope kept without its status, e.g. a failed job's) names this class.
_BY_CODE: dict[str, type[HiragError]] = {}
for _cls, _wire in reversed(WIRE.items()):
    _BY_CODE[_wire.code] = _cls
_BY_CODE.update(VALIDATION_ERROR=ValidationError, UPSTREAM_ERROR=UpstreamError)


def wire(error: HiragError) -> Wire:
    """The status and code `error` travels with."""
    for cls in type(error).__mro__:
        found = WIRE.get(cls)
        if found is not None:
            return found
    return WIRE[HiragError]


def error_class(code: str, status: int | None = None) -> type[HiragError]:
    """The class of an envelope's `code` (and HTTP `status`, where two share a code)."""
    if status is not None and (code, status) in _BY_WIRE:
        return _BY_WIRE[(code, status)]
    return _BY_CODE.get(code, HiragError)


def from_envelope(
    envelope: dict[str, Any], status: int | None = None, retry_after: int = 1
) -> HiragError:
    """The error an envelope `{code, message, details}` describes."""
    code = str(envelope.get("code", ""))
    message = str(envelope.get("message", ""))
    details = envelope.get("details")
    cls = error_class(code, status)
    known = details if isinstance(details, dict) else None
    error = (
        cls(message, known, retry_after)
        if issubclass(cls, RateLimitedError)
        else cls(message, known)
    )
    if code and error.code != code:
        error.unknown_code = code
    error.status = status
    return error
