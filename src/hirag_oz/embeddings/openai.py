"""An Embedder over any OpenAI-compatible `/v1/embeddings` HTTP API.

Works with OpenAI itself and with the many servers that copy its API (vLLM, llama.cpp,
Ollama, LiteLLM, text-embeddings-inference, ...). Transient upstream trouble is retried
with backoff (`RetryPolicy`) and a failing upstream is cut off by an optional
`CircuitBreaker`; every failure surfaces as a `hirag_oz.errors` error. The API key is
never put in an error message, a log line or a repr.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import httpx

from hirag_oz.errors import ConfigurationError, UpstreamError
from hirag_oz.resilience import CircuitBreaker, RetryPolicy
from hirag_oz.upstream import JsonApi, MalformedResponse, endpoint_url

__all__ = ["OpenAICompatibleEmbedder", "embeddings_endpoint"]

_PROBE_TEXT = "dimension probe"


def embeddings_endpoint(api_url: str) -> httpx.URL:
    """The embeddings endpoint for a configured `api_url`.

    Rule: trailing slashes are ignored; a path already ending in `/embeddings` is used as
    is; an empty path (a bare host) gets `/v1/embeddings`; any other path (`.../v1`, a
    proxy prefix) gets `/embeddings` appended. The query string is kept. So
    `http://h:8080` -> `http://h:8080/v1/embeddings`, `https://api.openai.com/v1` ->
    `https://api.openai.com/v1/embeddings`, `http://h/v1/embeddings/` ->
    `http://h/v1/embeddings`.
    """
    return endpoint_url(api_url, "/embeddings", "embedding api_url")


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
        self._api = JsonApi(self.url, api_key, "embedding API", timeout_secs, client)
        self._dimensions = dimensions
        self._batch_size = batch_size
        self.retry_policy = RetryPolicy(max_retries=max_retries)
        self.breaker = breaker
        self._lock = threading.Lock()  # the discovered dimension
        self._probe_lock = threading.Lock()  # one dimension probe at a time
        self._discovered: int | None = None

    @property
    def calls(self) -> int:
        """HTTP requests sent (every attempt counts)."""
        return self._api.calls

    @property
    def failures(self) -> int:
        """Requests that did not yield valid embeddings."""
        return self._api.failures

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
        self._api.close()

    def __enter__(self) -> OpenAICompatibleEmbedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        return self._api.post(
            {"model": self.model_name, "input": batch},
            lambda response: self._parse(response, len(batch)),
            self.retry_policy,
            self.breaker,
        )

    def _parse(self, response: httpx.Response, expected_count: int) -> list[list[float]]:
        """Lenient about extra fields and item order, strict about count and lengths."""
        try:
            body = response.json()
        except ValueError:
            raise MalformedResponse("response body is not valid JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise MalformedResponse("response has no 'data' list")
        if len(data) != expected_count:
            raise MalformedResponse(f"{len(data)} embeddings returned for {expected_count} inputs")
        indexed: list[tuple[int, list[float]]] = []
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise MalformedResponse(f"data[{position}] is not an object")
            index = item.get("index", position)
            if not isinstance(index, int) or isinstance(index, bool):
                raise MalformedResponse(f"data[{position}].index is not an integer")
            indexed.append((index, _as_vector(item.get("embedding"), position)))
        indexed.sort(key=lambda pair: pair[0])
        if [index for index, _ in indexed] != list(range(expected_count)):
            raise MalformedResponse(f"indexes are not exactly 0..{expected_count - 1}")
        vectors = [vector for _, vector in indexed]
        lengths = {len(vector) for vector in vectors}
        if len(lengths) > 1:
            raise MalformedResponse(f"vectors of different lengths {sorted(lengths)}")
        length = lengths.pop() if lengths else 0
        with self._lock:
            expected = self._dimensions if self._dimensions is not None else self._discovered
            if expected is not None and length != expected:
                raise MalformedResponse(f"vectors have {length} dimensions, expected {expected}")
            if expected is None and length:
                self._discovered = length
        return vectors


def _as_vector(raw: object, position: int) -> list[float]:
    if not isinstance(raw, list) or not raw:
        raise MalformedResponse(f"data[{position}].embedding is not a non-empty list")
    vector: list[float] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedResponse(f"data[{position}].embedding holds a non-number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise MalformedResponse(f"data[{position}].embedding holds a non-finite number")
        vector.append(number)
    return vector
