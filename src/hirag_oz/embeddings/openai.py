"""An Embedder over any OpenAI-compatible `/v1/embeddings` HTTP API.

Works with OpenAI itself and with the many servers that copy its API (vLLM, llama.cpp,
Ollama, LiteLLM, text-embeddings-inference, ...). Transient upstream trouble is retried
with backoff (`RetryPolicy`) and a failing upstream is cut off by an optional
`CircuitBreaker`; every failure surfaces as a `hirag_oz.errors` error. The API key is
never put in an error message, a log line or a repr.
"""

from __future__ import annotations

import email.utils
import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from hirag_oz.errors import (
    ConfigurationError,
    HiragError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy

__all__ = ["OpenAICompatibleEmbedder", "embeddings_endpoint"]

_PROBE_TEXT = "dimension probe"
_MAX_UPSTREAM_MESSAGE = 300


def embeddings_endpoint(api_url: str) -> httpx.URL:
    """The embeddings endpoint for a configured `api_url`.

    Rule: trailing slashes are ignored; a path already ending in `/embeddings` is used as
    is; an empty path (a bare host) gets `/v1/embeddings`; any other path (`.../v1`, a
    proxy prefix) gets `/embeddings` appended. The query string is kept. So
    `http://h:8080` -> `http://h:8080/v1/embeddings`, `https://api.openai.com/v1` ->
    `https://api.openai.com/v1/embeddings`, `http://h/v1/embeddings/` ->
    `http://h/v1/embeddings`.
    """
    try:
        url = httpx.URL(api_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError("embedding api_url is not a valid URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("embedding api_url must be an http(s) URL with a host")
    path = url.path.rstrip("/")
    if not path.endswith("/embeddings"):
        path = path + "/embeddings" if path else "/v1/embeddings"
    return url.copy_with(path=path)


class _StatusFailure(Exception):
    """The upstream answered with a non-2xx status."""

    def __init__(self, status: int, retry_after: float | None, upstream_message: str) -> None:
        super().__init__(f"status {status}")
        self.status = status
        self.retry_after = retry_after
        self.upstream_message = upstream_message


class _MalformedResponse(Exception):
    """The upstream answered 2xx with something that is not a valid embeddings response."""


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _StatusFailure):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def _is_upstream_failure(exc: BaseException) -> bool:
    """Counts against the breaker: everything except a 1xx-4xx (other than 429) answer."""
    if isinstance(exc, _StatusFailure):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.HTTPError | _MalformedResponse)


def _retry_after_of(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, _StatusFailure) else None


def _parse_retry_after(headers: httpx.Headers) -> float | None:
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


def _upstream_message(response: httpx.Response) -> str:
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


class OpenAICompatibleEmbedder:
    """Embeds texts through an OpenAI-compatible embeddings endpoint, synchronously.

    - `api_url`: the endpoint, or a base URL it is derived from (see `embeddings_endpoint`).
    - `api_key`: sent as `Authorization: Bearer <key>` only when non-empty.
    - `dimensions`: when set, every vector must have exactly this length and `dimension`
      returns it without a request; when unset, `dimension` is discovered once from the
      first response (or a one-text probe) and later responses must agree with it. It
      is not sent to the API, which keeps servers that do not know the field working.
    - `batch_size`: texts per request; `timeout_secs`: per request (each attempt).
    - `max_retries`: extra attempts on timeouts, connection errors, 5xx and 429 (honouring
      Retry-After). Other 4xx are not retried. `retry_policy` may be replaced after
      construction (e.g. with different delays).
    - `breaker`: optional circuit breaker; while it is open, calls fail fast with
      `UnavailableError` without contacting the API.
    - `client`: an `httpx.Client` to use (the caller then owns it); by default one is
      created and closed by `close()`.

    Counters: `calls` is the number of HTTP requests sent (every attempt counts) and
    `failures` the number of those that did not yield valid embeddings.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str | None,
        model: str,
        dimensions: int | None = None,
        batch_size: int = 64,
        timeout_secs: float = 30.0,
        max_retries: int = 3,
        breaker: CircuitBreaker | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not model:
            raise ConfigurationError("embedding model must not be empty")
        if dimensions is not None and dimensions < 1:
            raise ConfigurationError("embedding dimensions must be >= 1")
        if batch_size < 1:
            raise ConfigurationError("embedding batch_size must be >= 1")
        if not timeout_secs > 0:
            raise ConfigurationError("embedding timeout_secs must be > 0")
        if max_retries < 0:
            raise ConfigurationError("embedding max_retries must be >= 0")
        self.model_name = model
        self.url = embeddings_endpoint(api_url)
        self._api_key = (api_key or "").strip()
        self._dimensions = dimensions
        self._batch_size = batch_size
        self._timeout = timeout_secs
        self.retry_policy = RetryPolicy(max_retries=max_retries)
        self.breaker = breaker
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_secs)
        self._lock = threading.Lock()  # counters and the discovered dimension
        self._probe_lock = threading.Lock()  # one dimension probe at a time
        self._discovered: int | None = None
        self.calls = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"OpenAICompatibleEmbedder(model={self.model_name!r}, path={self.url.path!r})"

    @property
    def dimension(self) -> int:
        """The configured `dimensions`, else the length discovered from the API (cached)."""
        if self._dimensions is not None:
            return self._dimensions
        with self._probe_lock:
            dim = self._discovered
            if dim is None:
                self.embed([_PROBE_TEXT])
                dim = self._discovered
        if dim is None:  # pragma: no cover - embed() either sets it or raises
            raise UpstreamError("could not discover the embedding dimension")
        return dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in input order, sent in chunks of `batch_size`."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        items = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(items), self._batch_size):
            vectors.extend(self._embed_batch(items[start : start + self._batch_size]))
        return vectors

    def close(self) -> None:
        """Close the HTTP client if this embedder created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> OpenAICompatibleEmbedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        attempts = 0

        def attempt() -> list[list[float]]:
            nonlocal attempts
            attempts += 1
            return self._request(batch)

        try:
            return self.retry_policy.call(
                attempt,
                breaker=self.breaker,
                is_retryable=_is_retryable,
                is_failure=_is_upstream_failure,
                retry_after=_retry_after_of,
            )
        except CircuitOpenError as exc:
            exc.details.update({"path": self.url.path, "attempts": attempts})
            raise
        except (httpx.HTTPError, _StatusFailure, _MalformedResponse) as exc:
            raise self._map_error(exc, attempts) from exc

    def _request(self, batch: list[str]) -> list[list[float]]:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        with self._lock:
            self.calls += 1
        try:
            response = self._client.post(
                self.url,
                json={"model": self.model_name, "input": batch},
                headers=headers,
                timeout=self._timeout,
            )
            if not response.is_success:
                raise _StatusFailure(
                    response.status_code,
                    _parse_retry_after(response.headers),
                    _upstream_message(response),
                )
            return self._parse(response, len(batch))
        except Exception:
            with self._lock:
                self.failures += 1
            raise

    def _parse(self, response: httpx.Response, expected_count: int) -> list[list[float]]:
        """Lenient about extra fields and item order, strict about count and lengths."""
        try:
            body = response.json()
        except ValueError:
            raise _MalformedResponse("response body is not valid JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise _MalformedResponse("response has no 'data' list")
        if len(data) != expected_count:
            raise _MalformedResponse(f"{len(data)} embeddings returned for {expected_count} inputs")
        indexed: list[tuple[int, list[float]]] = []
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise _MalformedResponse(f"data[{position}] is not an object")
            index = item.get("index", position)
            if not isinstance(index, int) or isinstance(index, bool):
                raise _MalformedResponse(f"data[{position}].index is not an integer")
            indexed.append((index, _as_vector(item.get("embedding"), position)))
        indexed.sort(key=lambda pair: pair[0])
        if [index for index, _ in indexed] != list(range(expected_count)):
            raise _MalformedResponse(f"indexes are not exactly 0..{expected_count - 1}")
        vectors = [vector for _, vector in indexed]
        lengths = {len(vector) for vector in vectors}
        if len(lengths) > 1:
            raise _MalformedResponse(f"vectors of different lengths {sorted(lengths)}")
        length = lengths.pop() if lengths else 0
        with self._lock:
            expected = self._dimensions if self._dimensions is not None else self._discovered
            if expected is not None and length != expected:
                raise _MalformedResponse(f"vectors have {length} dimensions, expected {expected}")
            if expected is None and length:
                self._discovered = length
        return vectors

    def _map_error(
        self, exc: httpx.HTTPError | _StatusFailure | _MalformedResponse, attempts: int
    ) -> HiragError:
        details: dict[str, Any] = {"path": self.url.path, "attempts": attempts}
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeoutError(
                f"embedding API timed out after {tries} (timeout {self._timeout:g}s)",
                details,
            )
        if isinstance(exc, httpx.HTTPError):
            return UnavailableError(
                f"could not reach the embedding API after {tries}: "
                f"{self._redact(type(exc).__name__ + ': ' + str(exc))}",
                details,
            )
        if isinstance(exc, _MalformedResponse):
            return UpstreamError(
                f"malformed embedding API response: {self._redact(str(exc))}", details
            )
        details["status"] = exc.status
        if exc.status in (401, 403):
            # The body is left out: providers echo (part of) the rejected key in it.
            return UpstreamError(
                f"embedding API authentication failed (status {exc.status}); check the API key",
                details,
            )
        upstream = self._redact(exc.upstream_message)
        suffix = f": {upstream}" if upstream else ""
        if exc.status == 429:
            return UpstreamError(
                f"embedding API rate limit still hit after {tries}{suffix}", details
            )
        if exc.status >= 500:
            return UpstreamError(
                f"embedding API failed with status {exc.status} after {tries}{suffix}", details
            )
        return UpstreamError(
            f"embedding API rejected the request with status {exc.status}{suffix}", details
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _as_vector(raw: object, position: int) -> list[float]:
    if not isinstance(raw, list) or not raw:
        raise _MalformedResponse(f"data[{position}].embedding is not a non-empty list")
    vector: list[float] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _MalformedResponse(f"data[{position}].embedding holds a non-number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _MalformedResponse(f"data[{position}].embedding holds a non-finite number")
        vector.append(number)
    return vector
