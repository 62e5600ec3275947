"""OpenAICompatibleEmbedder against a real local HTTP server that can be told to misbehave."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from hirag_oz.embeddings.base import Embedder
from hirag_oz.embeddings.openai import OpenAICompatibleEmbedder, embeddings_endpoint
from hirag_oz.errors import (
    ConfigurationError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    wire,
)
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError
from tests.fake_http import JsonHandler, serving

SECRET = "sk-test-SECRET-0123456789"
DIM = 4


def vector_for(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)) % 997), 1.0, -0.5]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAPI:
    """Behaviour per request: pops `script` first, then uses `default`.

    Modes: ok, slow, 500, 429, 400, 401, garbage, wrong_count, wrong_length.
    """

    default: str = "ok"
    script: list[str] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/embeddings"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def next_mode(self, seen: Seen) -> str:
        with self.lock:
            self.requests.append(seen)
            return self.script.pop(0) if self.script else self.default


def _make_handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            # The client may have given up (timeout test).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_json(status, body, headers)

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            mode = api.next_mode(seen)
            texts: list[str] = body.get("input", [])
            if mode == "slow":
                api.stop.wait(2.0)
                mode = "ok"
            if mode in ("ok", "wrong_count", "wrong_length"):
                data = [
                    {"object": "embedding", "index": i, "embedding": vector_for(t)}
                    for i, t in enumerate(texts)
                ]
                data.reverse()  # out of index order: the client must sort
                if mode == "wrong_count":
                    data = data[1:]
                if mode == "wrong_length":
                    data[0]["embedding"] = [*vector_for(texts[-1]), 0.0]  # data is reversed
                self._json(
                    200,
                    {"object": "list", "data": data, "model": body.get("model"), "usage": {}},
                )
            elif mode == "500":
                self._json(500, {"error": {"message": "internal boom"}})
            elif mode == "429":
                self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            elif mode == "400":
                self._json(400, {"error": {"message": f"bad input; your key is {SECRET}"}})
            elif mode == "401":
                self._json(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
            elif mode == "garbage":
                self._send(200, b"<html>this is not json")
            else:  # pragma: no cover
                raise AssertionError(mode)

    return Handler


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    state = FakeAPI()
    with serving(_make_handler(state)) as port:
        state.port = port
        try:
            yield state
        finally:
            state.stop.set()


def make(api: FakeAPI, **kw: Any) -> OpenAICompatibleEmbedder:
    params: dict[str, Any] = {"api_url": api.url, "api_key": SECRET, "model": "test-embed"}
    params.update(kw)
    emb = OpenAICompatibleEmbedder(**params)
    # Short backoff keeps the suite fast; the behaviour under test is the same.
    emb.retry_policy = replace(emb.retry_policy, base_delay_secs=0.01, max_delay_secs=0.05)
    return emb


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_no_secret(exc: BaseException) -> None:
    assert SECRET not in str(exc)
    assert SECRET not in repr(getattr(exc, "details", {}))
    assert SECRET not in repr(exc)


# -- success path ------------------------------------------------------------------------


def test_embeds_in_input_order_and_sends_openai_request(api: FakeAPI) -> None:
    emb: Embedder = make(api, dimensions=DIM)
    # With `dimensions` configured the check needs no request. (On Python 3.11 isinstance()
    # against a runtime_checkable Protocol reads the `dimension` property.)
    assert isinstance(emb, Embedder)
    assert isinstance(emb, OpenAICompatibleEmbedder)
    texts = ["a", "bb", "ccc", "dddd"]
    assert emb.embed(texts) == [vector_for(t) for t in texts]
    assert api.count == 1
    seen = api.requests[0]
    assert seen.path == "/v1/embeddings"
    assert seen.body == {"model": "test-embed", "input": texts}
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert emb.calls == 1
    assert emb.failures == 0
    assert SECRET not in repr(emb)


def test_batches_by_batch_size(api: FakeAPI) -> None:
    emb = make(api, batch_size=2)
    texts = [f"text {i}" for i in range(5)]
    assert emb.embed(texts) == [vector_for(t) for t in texts]
    assert [len(r.body["input"]) for r in api.requests] == [2, 2, 1]
    assert emb.calls == 3


def test_empty_input_makes_no_request(api: FakeAPI) -> None:
    assert make(api).embed([]) == []
    assert api.count == 0


def test_no_authorization_header_without_key(api: FakeAPI) -> None:
    make(api, api_key="").embed(["x"])
    make(api, api_key=None).embed(["y"])
    assert api.count == 2
    assert all("authorization" not in r.headers for r in api.requests)


def test_dimension_configured_needs_no_request(api: FakeAPI) -> None:
    emb = make(api, dimensions=DIM)
    assert emb.dimension == DIM
    assert api.count == 0


def test_dimension_discovered_once_with_a_probe(api: FakeAPI) -> None:
    emb = make(api)
    assert emb.dimension == DIM
    assert emb.dimension == DIM
    assert api.count == 1


def test_dimension_discovered_from_a_previous_embed(api: FakeAPI) -> None:
    emb = make(api)
    emb.embed(["hello"])
    assert emb.dimension == DIM
    assert api.count == 1


def test_endpoint_rule() -> None:
    assert str(embeddings_endpoint("http://h:8080")) == "http://h:8080/v1/embeddings"
    assert str(embeddings_endpoint("http://h:8080/")) == "http://h:8080/v1/embeddings"
    assert str(embeddings_endpoint("https://api.x.com/v1")) == "https://api.x.com/v1/embeddings"
    assert str(embeddings_endpoint("https://api.x.com/v1/")) == "https://api.x.com/v1/embeddings"
    assert str(embeddings_endpoint("http://h/v1/embeddings")) == "http://h/v1/embeddings"
    assert str(embeddings_endpoint("http://h/proxy/openai")) == "http://h/proxy/openai/embeddings"
    assert str(embeddings_endpoint("http://h/v1?api-version=2")) == (
        "http://h/v1/embeddings?api-version=2"
    )
    with pytest.raises(ConfigurationError):
        embeddings_endpoint("ftp://h/v1")
    with pytest.raises(ConfigurationError):
        embeddings_endpoint("not a url")


def test_base_url_is_completed(api: FakeAPI) -> None:
    emb = make(api, api_url=f"http://127.0.0.1:{api.port}/v1")
    emb.embed(["x"])
    assert api.requests[0].path == "/v1/embeddings"


def test_injected_client_is_used_and_not_closed(api: FakeAPI) -> None:
    with httpx.Client() as client:
        emb = make(api, client=client)
        emb.embed(["x"])
        emb.close()
        assert not client.is_closed


# -- retries ---------------------------------------------------------------------------------


def test_500_then_success_is_retried(api: FakeAPI) -> None:
    api.script = ["500"]
    emb = make(api)
    assert emb.embed(["a", "b"]) == [vector_for("a"), vector_for("b")]
    assert api.count == 2
    assert emb.calls == 2
    assert emb.failures == 1


def test_429_honours_retry_after(api: FakeAPI) -> None:
    api.script = ["429"]
    emb = make(api)
    sleeps: list[float] = []
    emb.retry_policy = replace(emb.retry_policy, base_delay_secs=30.0, sleep=sleeps.append)
    assert emb.embed(["a"]) == [vector_for("a")]
    assert api.count == 2
    assert sleeps == [0.0]  # Retry-After: 0, not a 15-30 s backoff


def test_500_every_time_gives_upstream_error_after_all_attempts(api: FakeAPI) -> None:
    api.default = "500"
    emb = make(api, max_retries=2)
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a"])
    assert api.count == 3
    assert not isinstance(info.value, UnavailableError)
    assert wire(info.value).status == 502
    assert info.value.details == {"path": "/v1/embeddings", "attempts": 3, "status": 500}
    assert "500" in info.value.message
    assert "internal boom" in info.value.message
    assert emb.failures == 3


def test_429_every_time_gives_upstream_error(api: FakeAPI) -> None:
    api.default = "429"
    emb = make(api, max_retries=1)
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a"])
    assert api.count == 2
    assert info.value.details["status"] == 429


def test_timeout_is_retried_then_upstream_timeout_error(api: FakeAPI) -> None:
    api.default = "slow"
    emb = make(api, timeout_secs=0.2, max_retries=1)
    with pytest.raises(UpstreamTimeoutError) as info:
        emb.embed(["a"])
    assert api.count == 2
    assert wire(info.value).status == 504
    assert info.value.code == "TIMEOUT"
    assert info.value.details == {"path": "/v1/embeddings", "attempts": 2}


def test_slow_once_then_success(api: FakeAPI) -> None:
    api.script = ["slow"]
    emb = make(api, timeout_secs=0.2, max_retries=1)
    assert emb.embed(["a"]) == [vector_for("a")]
    assert api.count == 2


def test_refused_connection(api: FakeAPI) -> None:
    emb = OpenAICompatibleEmbedder(
        f"http://127.0.0.1:{free_port()}/v1/embeddings", SECRET, "m", max_retries=2
    )
    emb.retry_policy = replace(emb.retry_policy, base_delay_secs=0.01)
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a"])
    assert isinstance(info.value, UnavailableError)
    assert info.value.details == {"path": "/v1/embeddings", "attempts": 3}
    assert emb.calls == 3
    assert emb.failures == 3
    assert_no_secret(info.value)


# -- no retries ------------------------------------------------------------------------------


def test_400_is_not_retried(api: FakeAPI) -> None:
    api.default = "400"
    emb = make(api)
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a"])
    assert api.count == 1
    assert info.value.details == {"path": "/v1/embeddings", "attempts": 1, "status": 400}
    assert "bad input" in info.value.message
    assert_no_secret(info.value)


def test_401_reports_authentication_failure_without_the_key(api: FakeAPI) -> None:
    api.default = "401"
    emb = make(api)
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a"])
    assert api.count == 1
    assert "authentication failed" in info.value.message
    assert info.value.details["status"] == 401
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("garbage", "not valid JSON"),
        ("wrong_count", "1 embeddings returned for 2 inputs"),
        ("wrong_length", "different lengths"),
    ],
)
def test_malformed_responses(api: FakeAPI, mode: str, fragment: str) -> None:
    api.default = mode
    emb = make(api)
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a", "b"])
    assert api.count == 1
    assert fragment in info.value.message
    assert info.value.details == {"path": "/v1/embeddings", "attempts": 1}
    assert not isinstance(info.value, UnavailableError)


def test_length_must_match_configured_dimensions(api: FakeAPI) -> None:
    emb = make(api, dimensions=8)
    with pytest.raises(UpstreamError, match="4 dimensions, expected 8"):
        emb.embed(["a"])


def test_length_must_match_discovered_dimension(api: FakeAPI) -> None:
    emb = make(api)
    assert emb.dimension == DIM
    api.default = "wrong_length"  # one text: its only vector comes back one too long
    with pytest.raises(UpstreamError, match="5 dimensions, expected 4"):
        emb.embed(["a"])


def test_secret_never_logged(api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for mode in ("500", "400", "401", "429"):
        api.default = mode
        with pytest.raises(UpstreamError):
            make(api, max_retries=1).embed(["a"])
    assert caplog.records  # the retries were logged
    assert SECRET not in caplog.text


# -- circuit breaker -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_rejects_without_contacting_server_and_recovers(api: FakeAPI) -> None:
    clock = FakeClock()
    states: list[str] = []
    breaker = CircuitBreaker(
        "embedding",
        failure_threshold=2,
        success_threshold=1,
        reset_timeout_secs=30.0,
        clock=clock,
        on_state_change=lambda name, state: states.append(state),
    )
    emb = make(api, max_retries=0, breaker=breaker)
    api.default = "500"
    for _ in range(2):
        with pytest.raises(UpstreamError):
            emb.embed(["a"])
    assert breaker.state == "open"
    assert api.count == 2

    with pytest.raises(UnavailableError) as info:
        emb.embed(["a"])
    assert isinstance(info.value, CircuitOpenError)
    assert wire(info.value).status == 503
    assert "circuit breaker 'embedding' is open" in info.value.message
    assert api.count == 2  # rejected without contacting the server

    clock.now += 31
    api.default = "ok"
    assert emb.embed(["a"]) == [vector_for("a")]  # the half-open probe
    assert breaker.state == "closed"
    assert api.count == 3
    assert states == ["open", "half_open", "closed"]


def test_failed_probe_reopens_the_breaker(api: FakeAPI) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("embedding", failure_threshold=1, reset_timeout_secs=10.0, clock=clock)
    emb = make(api, max_retries=0, breaker=breaker)
    api.default = "garbage"  # malformed answers count as upstream failures
    with pytest.raises(UpstreamError):
        emb.embed(["a"])
    assert breaker.state == "open"
    clock.now += 10
    with pytest.raises(UpstreamError) as info:
        emb.embed(["a"])  # the probe, which fails
    assert not isinstance(info.value, CircuitOpenError)
    assert breaker.state == "open"
    assert api.count == 2
    with pytest.raises(CircuitOpenError):
        emb.embed(["a"])
    assert api.count == 2


def test_retries_stop_when_the_breaker_opens(api: FakeAPI) -> None:
    breaker = CircuitBreaker("embedding", failure_threshold=2, clock=FakeClock())
    emb = make(api, max_retries=5, breaker=breaker)
    api.default = "500"
    with pytest.raises(CircuitOpenError) as info:
        emb.embed(["a"])
    assert api.count == 2
    assert info.value.details["attempts"] == 2  # requests sent; the third was rejected


def test_client_errors_do_not_open_the_breaker(api: FakeAPI) -> None:
    breaker = CircuitBreaker("embedding", failure_threshold=1, clock=FakeClock())
    emb = make(api, breaker=breaker)
    for mode in ("400", "401"):
        api.default = mode
        with pytest.raises(UpstreamError):
            emb.embed(["a"])
    assert breaker.state == "closed"
    assert breaker.stats()["total_failures"] == 0
