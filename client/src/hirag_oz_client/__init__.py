"""The client of the hirag-oz service: its operation catalogue, wire models and errors.

Depends on httpx and pydantic only; the service's models and storage are not needed.
"""

from hirag_oz_client import catalogue, models
from hirag_oz_client._client import AsyncClient, Client, error_from_response
from hirag_oz_client.catalogue import OPERATIONS, Operation
from hirag_oz_client.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    HiragError,
    InsufficientStorageError,
    InternalError,
    MalformedRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "OPERATIONS",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "HiragError",
    "InsufficientStorageError",
    "InternalError",
    "MalformedRequestError",
    "NotFoundError",
    "Operation",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "ValidationError",
    "catalogue",
    "error_from_response",
    "models",
]
