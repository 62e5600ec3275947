"""What the clients of OpenAI-compatible HTTP APIs share: which failures to retry, which
count against a circuit breaker, Retry-After hints, and errors that never show the key."""

from __future__ import annotations

import email.utils
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from hirag_oz.errors import (
    ConfigurationError,
    HiragError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy

T = TypeVar("T")

_MAX_UPSTREAM_MESSAGE = 300


def endpoint_url(url: str, route: str, setting: str) -> httpx.URL:
    """The endpoint for a configured URL: a path already ending in `route` is used as is;
    an empty path (a bare host) gets `/v1` + `route`; any other path (`.../v1`, a proxy
    prefix) gets `route` appended. Trailing slashes are ignored, the query string is kept.
    `setting` names the configuration key in errors."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"{setting} is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"{setting} must be an http(s) URL with a host")
    path = parsed.path.rstrip("/")
    if not path.endswith(route):
        path = path + route if path else "/v1" + route
    return parsed.copy_with(path=path)


class StatusFailure(Exception):
    """The upstream answered with a non-2xx status."""

    def __init__(self, status: int, retry_after: float | None, upstream_message: str) -> None:
        super().__init__(f"status {status}")
        self.status = status
        self.retry_after = retry_after
        self.upstream_message = upstream_message


class MalformedResponse(Exception):
    """The upstream answered 2xx with something that is not a valid response."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, StatusFailure):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def is_upstream_failure(exc: BaseException) -> bool:
    """Counts against the breaker: everything except a 1xx-4xx (other than 429) answer."""
    if isinstance(exc, StatusFailure):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.HTTPError | MalformedResponse)


def retry_after_of(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, StatusFailure) else None


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (delta-seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            ms = float(raw_ms)
        except ValueError:
            pass
        else:
            if math.isfinite(ms):
                return max(0.0, ms / 1000.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        secs = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        secs = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, secs) if math.isfinite(secs) else None


def upstream_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style error body, else the start of the raw body."""
    text = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
        elif isinstance(body.get("message"), str):
            text = body["message"]
    if not text:
        text = response.text
    text = " ".join(text.split())
    return text[:_MAX_UPSTREAM_MESSAGE]


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def map_error(
    exc: httpx.HTTPError | StatusFailure | MalformedResponse,
    *,
    what: str,
    path: str,
    attempts: int,
    timeout: float,
    secret: str,
) -> HiragError:
    """The service's error for a failed call to `what` (e.g. "embedding API")."""
    details: dict[str, Any] = {"path": path, "attempts": attempts}
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(
            f"{what} timed out after {tries} (timeout {timeout:g}s)", details
        )
    if isinstance(exc, httpx.HTTPError):
        reason = redact(type(exc).__name__ + ": " + str(exc), secret)
        if isinstance(exc, httpx.ConnectError):
            return UnavailableError(f"could not reach the {what} after {tries}: {reason}", details)
        return UnavailableError(f"{what} connection failed after {tries}: {reason}", details)
    if isinstance(exc, MalformedResponse):
        return UpstreamError(f"malformed {what} response: {redact(str(exc), secret)}", details)
    details["status"] = exc.status
    if exc.status in (401, 403):
        # The body is left out: providers echo (part of) the rejected key in it.
        return UpstreamError(
            f"{what} authentication failed (status {exc.status}); check the API key", details
        )
    upstream = redact(exc.upstream_message, secret)
    suffix = f": {upstream}" if upstream else ""
    if exc.status == 429:
        return UpstreamError(f"{what} rate limit still hit after {tries}{suffix}", details)
    if exc.status >= 500:
        return UpstreamError(
            f"{what} failed with status {exc.status} after {tries}{suffix}", details
        )
    return UpstreamError(f"{what} rejected the request with status {exc.status}{suffix}", details)


class JsonApi:
    """One endpoint of an OpenAI-compatible API: JSON POSTs with the key (never shown in an
    error), retried by a `RetryPolicy`, guarded by an optional `CircuitBreaker`, counted
    (`calls` is every attempt sent, `failures` those that gave no valid answer), and failing
    with the service's own errors."""

    def __init__(
        self,
        url: httpx.URL,
        api_key: str | None,
        what: str,
        timeout_secs: float,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url
        self.what = what
        self.timeout = timeout_secs
        self._api_key = (api_key or "").strip()
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_secs)
        self._lock = threading.Lock()
        self.calls = 0
        self.failures = 0

    def post(
        self,
        body: dict[str, Any],
        parse: Callable[[httpx.Response], T],
        retry_policy: RetryPolicy,
        breaker: CircuitBreaker | None,
    ) -> T:
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return self._send(body, parse)

        try:
            return retry_policy.call(
                attempt,
                breaker=breaker,
                is_retryable=is_retryable,
                is_failure=is_upstream_failure,
                retry_after=retry_after_of,
            )
        except CircuitOpenError as exc:
            exc.details.update({"path": self.url.path, "attempts": attempts})
            raise
        except (httpx.HTTPError, StatusFailure, MalformedResponse) as exc:
            raise map_error(
                exc,
                what=self.what,
                path=self.url.path,
                attempts=attempts,
                timeout=self.timeout,
                secret=self._api_key,
            ) from exc

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            self._client.close()

    def _send(self, body: dict[str, Any], parse: Callable[[httpx.Response], T]) -> T:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        with self._lock:
            self.calls += 1
        try:
            response = self._client.post(self.url, json=body, headers=headers, timeout=self.timeout)
            if not response.is_success:
                raise StatusFailure(
                    response.status_code,
                    parse_retry_after(response.headers),
                    upstream_message(response),
                )
            return parse(response)
        except Exception:
            with self._lock:
                self.failures += 1
            raise


def first_choice(response: httpx.Response) -> dict[str, Any]:
    """`choices[0]` of an OpenAI-style chat completion, with its `message` an object."""
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse("response body is not valid JSON") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices")
    choice: dict[str, Any] = choices[0]
    if not isinstance(choice.get("message"), dict):
        raise MalformedResponse("choices[0].message is not an object")
    return choice
