"""Faults of every remote dependency, each through one real misbehaving HTTP server on
loopback: the OpenAI-compatible embeddings API, the LLM summarizer, the DeepSeek-OCR backend
and a Qdrant server (through qdrant-client).

Every (dependency x fault) cell checks the same things: a clear typed error naming the
dependency (or the documented fallback), within a bound that only guards against hangs,
the breaker opening after repeated failures and failing fast without sending anything,
and a healthy server closing it again through the half-open probe. Then each dependency
once more through the real HTTP service, with what a failed request leaves behind.

Cells also covered elsewhere, one fault at a time: tests/test_openai_embedder.py (500, 429,
timeout, refused, malformed, breaker), tests/test_llm_summarizer.py (500, 429, slow,
garbage, fallback), tests/test_vision_deepseek.py and tests/test_vision_api.py (500, slow,
garbage, breaker through the service), tests/test_service.py (a stopped Qdrant in /health).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from hirag_oz.api.app import create_app
from hirag_oz.config import TokenBudgetSettings
from hirag_oz.context import ExtractiveSummarizer, Turn, build_context
from hirag_oz.context.llm import OpenAICompatibleSummarizer
from hirag_oz.embeddings.openai import OpenAICompatibleEmbedder
from hirag_oz.errors import (
    HiragError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    wire,
)
from hirag_oz.resilience import CLOSED, OPEN, CircuitBreaker, CircuitOpenError, RetryPolicy
from hirag_oz.store.base import CollectionSpec, PointRecord, SparseVec
from hirag_oz.store.server import ServerStore
from hirag_oz.tokens import TokenCounter
from hirag_oz.vision.deepseek import DeepSeekOcrEngine
from tests.conftest import ServerThread, keyed_settings
from tests.fake_ocr import GROUNDING, READ_TEXT
from tests.fake_qdrant import QdrantRest
from tests.vision_samples import page_of_paragraphs, png_bytes

# qdrant-client checks the server's version in a thread of its own when it connects; against
# a server that is down by then it can only warn.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")

HEALTHY = "healthy"
REFUSE = "refuse"
HANG = "hang"
SLOW = "slow"
STATUS_500 = "500"
STATUS_429 = "429"
TRUNCATED = "truncated"
INVALID_JSON = "invalid_json"
WRONG = "wrong"
FAULTS = (REFUSE, HANG, SLOW, STATUS_500, STATUS_429, TRUNCATED, INVALID_JSON, WRONG)
TRANSIENT = (REFUSE, HANG, SLOW, STATUS_500, STATUS_429, TRUNCATED)

SLOW_SECS = 3.0
"""A slow answer comes this late: past every timeout used here."""
RESET_SECS = 0.2
"""The breakers' reset timeout: how long an open breaker rejects before the probe."""
SERVICE_RESET_SECS = 1.0
"""The same in the service, where a few requests must see the breaker still open."""
TIMEOUT_SECS = 0.5
"""Per attempt, for the HTTP APIs (Qdrant's client takes whole seconds: 1)."""
DIM = 32
KEY = "fault-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SUMMARY = "Decided: ship Friday. Open: cache warmup."

EXPECTED: dict[str, tuple[type[HiragError], int]] = {
    REFUSE: (UnavailableError, 503),
    HANG: (UpstreamTimeoutError, 504),
    SLOW: (UpstreamTimeoutError, 504),
    STATUS_500: (UpstreamError, 502),
    STATUS_429: (UpstreamError, 502),
    TRUNCATED: (UnavailableError, 503),
    INVALID_JSON: (UpstreamError, 502),
    WRONG: (UpstreamError, 502),
}

# ---------------------------------------------------------------- the misbehaving server

Responder = Callable[[str, str, bytes], tuple[int, bytes]]


class FaultyServer:
    """One HTTP server on 127.0.0.1 that answers like `healthy` (method, path, body) or
    misbehaves as `mode` says, and records the (method, path) of each request in `seen`:

    - refuse: the port is closed (connections refused); any other mode listens again on it;
    - hang: reads the request and never answers (until the mode changes);
    - slow: answers like healthy, `SLOW_SECS` late;
    - 500 / 429: an error body (`error_body`), the 429 with `Retry-After: 1`;
    - truncated: the healthy answer's first half, then the connection closes;
    - invalid_json: 200 with an HTML page;
    - wrong: the healthy answer passed through `wrong` (valid JSON of the wrong shape).

    The modes that return (part of) the healthy answer run `healthy` first, so a write is
    applied although its answer is lost, as when a proxy or the network loses it. `only`
    limits the fault to matching (method, path).
    """

    def __init__(self, healthy: Responder, wrong: Callable[[bytes], bytes], error_body: bytes):
        self.healthy = healthy
        self.wrong = wrong
        self.error_body = error_body
        self.mode = HEALTHY
        self.only: Callable[[str, str], bool] | None = None
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._release.set()
        self._listener: _Listener | None = None
        self._port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def requests(self) -> int:
        return len(self.seen)

    def set(self, mode: str, only: Callable[[str, str], bool] | None = None) -> None:
        self.only = only
        self.mode = mode
        if mode in (HANG, SLOW):
            self._release.clear()
        else:
            self._release.set()  # hanging and slow requests end now
        if mode == REFUSE:
            self._close_listener()
        elif self._listener is None:
            self._listen()

    def close(self) -> None:
        self._release.set()
        self._close_listener()

    def _listen(self) -> None:
        listener = _Listener(("127.0.0.1", self._port), _FaultyHandler)
        listener.owner = self
        self._port = int(listener.server_address[1])
        threading.Thread(target=listener.serve_forever, args=(0.05,), daemon=True).start()
        self._listener = listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown()
            listener.server_close()

    def mode_for(self, method: str, path: str) -> str:
        with self._lock:
            self.seen.append((method, path))
        only = self.only
        return self.mode if only is None or only(method, path) else HEALTHY

    def wait(self, secs: float) -> None:
        self._release.wait(secs)


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultyServer


class _FaultyHandler(BaseHTTPRequestHandler):
    server: _Listener

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        mode = fake.mode_for(method, self.path)
        if mode == HANG:
            fake.wait(120.0)
            self.close_connection = True
            return
        if mode == SLOW:
            fake.wait(SLOW_SECS)
        if mode == STATUS_500:
            self._send(500, fake.error_body)
            return
        if mode == STATUS_429:
            self._send(429, fake.error_body, {"Retry-After": "1"})
            return
        status, payload = fake.healthy(method, self.path, body)
        if mode == TRUNCATED:
            self._send(status, payload[: len(payload) // 2], declared=len(payload))
            self.close_connection = True
        elif mode == INVALID_JSON:
            self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
        elif mode == WRONG:
            self._send(status, fake.wrong(payload))
        else:
            self._send(status, payload)

    def _send(
        self,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
        declared: int | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload) if declared is None else declared))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out) before a slow answer came


# ------------------------------------------------------------------ healthy answers


def vector(text: str) -> list[float]:
    """A bag of hashed words: texts that share words are near each other."""
    values = [0.0] * DIM
    for word in re.findall(r"\w+", text.lower()):
        values[zlib.crc32(word.encode()) % DIM] += 1.0
    if not any(values):
        values[0] = 1.0
    return values


def embeddings_api(method: str, path: str, body: bytes) -> tuple[int, bytes]:
    if method != "POST" or urlsplit(path).path != "/v1/embeddings":
        return 404, b'{"error": {"message": "no such route"}}'
    request = json.loads(body)
    data = [
        {"object": "embedding", "index": i, "embedding": vector(text)}
        for i, text in enumerate(request["input"])
    ]
    return 200, json.dumps({"object": "list", "data": data, "model": request["model"]}).encode()


def one_dimension_short(payload: bytes) -> bytes:
    body = json.loads(payload)
    for item in body["data"]:
        item["embedding"] = item["embedding"][:-1]
    return json.dumps(body).encode()


def chat_api(method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """A summarizing model, or DeepSeek-OCR when the message holds an image."""
    if method != "POST" or urlsplit(path).path != "/v1/chat/completions":
        return 404, b'{"error": {"message": "no such route"}}'
    content = json.loads(body)["messages"][0]["content"]
    if isinstance(content, list):
        prompt = next(part["text"] for part in content if part["type"] == "text")
        text = GROUNDING if "<|grounding|>" in prompt else READ_TEXT
    else:
        text = SUMMARY
    choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    return 200, json.dumps({"choices": [choice]}).encode()


def no_message_object(_: bytes) -> bytes:
    return b'{"choices": [{"index": 0, "message": "not an object"}]}'


def qdrant_wrong_shape(_: bytes) -> bytes:
    return b'{"result": "unexpected", "status": "ok", "time": 0.0}'


OPENAI_ERROR = b'{"error": {"message": "injected fault"}}'
QDRANT_ERROR = b'{"status": {"error": "injected fault"}, "time": 0.0}'


def embeddings_server() -> FaultyServer:
    return FaultyServer(embeddings_api, one_dimension_short, OPENAI_ERROR)


def chat_server() -> FaultyServer:
    return FaultyServer(chat_api, no_message_object, OPENAI_ERROR)


def qdrant_server() -> tuple[FaultyServer, QdrantRest]:
    rest = QdrantRest()
    return FaultyServer(rest, qdrant_wrong_shape, QDRANT_ERROR), rest


# ------------------------------------------------------------- the dependencies' adapters


class Subject(Protocol):
    """One remote dependency's adapter, seen the same way for every fault."""

    what: str
    """How its errors name the dependency."""
    timeout: float
    attempts: int

    def call(self) -> Any: ...

    def check(self, result: Any) -> None: ...

    def close(self) -> None: ...


def _retries(attempts: int) -> RetryPolicy:
    return RetryPolicy(max_retries=attempts - 1, base_delay_secs=0.05, max_delay_secs=2.0)


class EmbeddingSubject:
    what = "embedding API"
    timeout = TIMEOUT_SECS
    attempts = 2

    def __init__(self, server: FaultyServer, breaker: CircuitBreaker, _: TokenCounter) -> None:
        self.client = OpenAICompatibleEmbedder(
            server.url,
            KEY,
            "fake-embed",
            dimensions=DIM,
            timeout_secs=self.timeout,
            breaker=breaker,
        )
        self.client.retry_policy = _retries(self.attempts)

    def call(self) -> list[list[float]]:
        return self.client.embed(["alpha beta", "gamma"])

    def check(self, result: Any) -> None:
        assert result == [vector("alpha beta"), vector("gamma")]

    def close(self) -> None:
        self.client.close()


class SummarizerSubject:
    what = "summarizer endpoint"
    timeout = TIMEOUT_SECS
    attempts = 2

    def __init__(
        self, server: FaultyServer, breaker: CircuitBreaker, counter: TokenCounter
    ) -> None:
        self.counter = counter
        self.client = OpenAICompatibleSummarizer(
            server.url,
            KEY,
            "brief-model",
            counter,
            timeout_secs=self.timeout,
            breaker=breaker,
            retry_policy=_retries(self.attempts),
        )

    def call(self) -> str:
        return self.client.summarize(["We decided to ship on Friday.", "Cache warmup is open."], 40)

    def check(self, result: Any) -> None:
        assert result == SUMMARY

    def fallback(self) -> None:
        """The documented fallback: the context builder's extractive summarizer."""
        turns = [
            Turn("user", f"Point {i}: the release needs item {i} done first.") for i in range(30)
        ]
        built = build_context(
            counter=self.counter,
            summarizer=self.client,
            fallback=ExtractiveSummarizer(self.counter),
            budget=TokenBudgetSettings(running_brief=60, recent_turns=30),
            system_prompt="sys",
            query="release",
            turns=turns,
        )
        assert built.actions.summarized and built.actions.summarizer == "extractive"
        assert "Point" in built.running_brief
        assert 0 < self.counter.count(built.running_brief) <= 60

    def close(self) -> None:
        self.client.close()


class DeepSeekSubject:
    what = "DeepSeek OCR endpoint"
    timeout = TIMEOUT_SECS
    attempts = 2

    def __init__(self, server: FaultyServer, breaker: CircuitBreaker, _: TokenCounter) -> None:
        self.client = DeepSeekOcrEngine(
            server.url,
            KEY,
            timeout_secs=self.timeout,
            breaker=breaker,
            retry_policy=_retries(self.attempts),
        )
        self.image = Image.new("RGB", (240, 60), "white")

    def call(self) -> Any:
        return self.client.read(self.image, "10x")

    def check(self, result: Any) -> None:
        assert result.text == READ_TEXT

    def close(self) -> None:
        self.client.close()


class QdrantSubject:
    """Writes through ServerStore; `sent` are the ids of the points it tried to write."""

    what = "qdrant"
    timeout = 1.0
    attempts = 1

    def __init__(self, server: FaultyServer, breaker: CircuitBreaker, _: TokenCounter) -> None:
        self.client = ServerStore.connect(server.url, timeout=self.timeout, breaker=breaker)
        self.collection = f"faults_{uuid.uuid4().hex[:8]}"
        self.client.ensure_collection(CollectionSpec(self.collection, DIM, "Cosine", {}))
        self.sent: list[str] = []

    def call(self) -> str:
        point_id = str(uuid.uuid4())
        self.sent.append(point_id)
        text = f"point {len(self.sent)}"
        sparse = SparseVec([1], [1.0])
        self.client.upsert(self.collection, [PointRecord(point_id, vector(text), sparse, {})])
        return point_id

    def check(self, result: Any) -> None:
        assert [p.id for p in self.client.retrieve(self.collection, [result])] == [result]

    def visible(self, ids: list[str]) -> set[str]:
        return {p.id for p in self.client.retrieve(self.collection, ids)}

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Dependency:
    name: str
    """Its breaker's name in the service."""
    subject: Callable[[FaultyServer, CircuitBreaker, TokenCounter], Subject]
    server: Callable[[], FaultyServer]


DEPENDENCIES = [
    Dependency("embedding", EmbeddingSubject, embeddings_server),
    Dependency("summarizer", SummarizerSubject, chat_server),
    Dependency("vision_ocr", DeepSeekSubject, chat_server),
    Dependency("vector_store", QdrantSubject, lambda: qdrant_server()[0]),
]

MATRIX: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def matrix_table() -> Iterator[None]:
    """Prints the matrix (dependency x fault: outcome, seconds) when the module is done."""
    yield
    if MATRIX:
        print("\n" + "dependency".ljust(14) + "".join(f.ljust(14) for f in FAULTS))
        for dep in DEPENDENCIES:
            cells = [MATRIX.get((dep.name, f), "-").ljust(14) for f in FAULTS]
            print(dep.name.ljust(14) + "".join(cells))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FaultyServer]]:
    made = {dep.name: dep.server() for dep in DEPENDENCIES}
    yield made
    for server in made.values():
        server.close()


def hang_guard(subject: Subject) -> float:
    """Far more than the attempts' timeouts, backoff and a 1 s Retry-After can take: a
    bound that catches a hang, not a performance target."""
    return subject.timeout * subject.attempts + 6.0


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("dep", DEPENDENCIES, ids=lambda d: d.name)
def test_a_fault_is_a_clear_error_then_the_breaker_opens_and_recovers(
    dep: Dependency, fault: str, servers: dict[str, FaultyServer], counter: TokenCounter
) -> None:
    server = servers[dep.name]
    server.set(HEALTHY)
    breaker = CircuitBreaker(
        dep.name, failure_threshold=2, success_threshold=1, reset_timeout_secs=RESET_SECS
    )
    subject = dep.subject(server, breaker, counter)
    try:
        server.set(fault)
        before = server.requests
        started = time.monotonic()
        with pytest.raises(HiragError) as failed:
            subject.call()
        elapsed = time.monotonic() - started
        assert elapsed < hang_guard(subject)
        # Transient faults are retried (Qdrant's calls never are); a malformed answer is not.
        expected = 0 if fault == REFUSE else subject.attempts if fault in TRANSIENT else 1
        assert _calls_since(server, before) == expected
        error_type, status = EXPECTED[fault]
        assert type(failed.value) is error_type, failed.value
        assert wire(failed.value).status == status
        assert subject.what in failed.value.message
        if isinstance(subject, SummarizerSubject):
            subject.fallback()
        # Failures add up until the breaker opens (one call may make several attempts).
        for _ in range(2):
            if breaker.state == OPEN:
                break
            with pytest.raises(HiragError):
                subject.call()
        assert breaker.stats()["state"] == OPEN
        sent = server.requests
        with pytest.raises(CircuitOpenError) as rejected:
            subject.call()
        assert wire(rejected.value).status == 503 and rejected.value.code == "UPSTREAM_ERROR"
        assert _calls_since(server, sent) == 0, "an open breaker sends nothing"
        # A healthy server closes the breaker through the half-open probe.
        server.set(HEALTHY)
        time.sleep(RESET_SECS)
        subject.check(subject.call())
        assert breaker.stats()["state"] == CLOSED
        if isinstance(subject, QdrantSubject):
            _check_what_qdrant_kept(subject, fault)
        MATRIX[(dep.name, fault)] = f"{wire(failed.value).status} {elapsed:.2f}s"
    finally:
        server.set(HEALTHY)
        subject.close()


def _calls_since(server: FaultyServer, start: int) -> int:
    """Requests received since `start`, but for qdrant-client's version check (GET /), which
    it sends from a thread of its own on connecting."""
    return len([r for r in server.seen[start:] if r != ("GET", "/")])


def _check_what_qdrant_kept(subject: QdrantSubject, fault: str) -> None:
    """Refused, hanging, 500 and 429 writes were never applied. A write whose answer was
    lost (cut, garbled, or too late) was applied though the caller got an error: its outcome
    is unknown to the caller, as with any server, and writing the same id again is
    idempotent. A slow write lands whenever the server gets to it, so it is not checked."""
    *failed, rejected, _recovered = subject.sent
    assert subject.visible([rejected]) == set(), "a write the breaker rejected was not sent"
    visible = subject.visible(failed)
    if fault in (REFUSE, HANG, STATUS_500, STATUS_429):
        assert visible == set()
    elif fault in (TRUNCATED, INVALID_JSON, WRONG):
        assert visible == set(failed)


# -------------------------------------------------------------- through the HTTP service

BREAKERS: dict[str, object] = {
    "failure_threshold": 2,
    "success_threshold": 1,
    "reset_timeout_secs": SERVICE_RESET_SECS,
}


def embedding_settings(server: FaultyServer) -> dict[str, object]:
    return {
        "provider": "openai",
        "api_url": server.url,
        "model": "fake-embed",
        "dimensions": DIM,
        "timeout_secs": TIMEOUT_SECS,
        "max_retries": 1,
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    running: list[ServerThread] = []

    def start(**sections: dict[str, object]) -> ServerThread:
        settings = keyed_settings(tmp_path / "data", KEY, circuit_breaker=BREAKERS, **sections)
        server = ServerThread(create_app(settings)).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


@pytest.fixture
def embeddings() -> Iterator[FaultyServer]:
    server = embeddings_server()
    yield server
    server.close()


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code, body
    return body


def breaker_state(http: httpx.Client, name: str) -> float:
    """`hirag_circuit_breaker_state` of one breaker: 0 closed, 1 half-open, 2 open."""
    text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "hirag_circuit_breaker_state":
            for sample in family.samples:
                if sample.labels.get("breaker") == name:
                    return float(sample.value)
    raise AssertionError(f"no breaker {name} in /metrics")


def component(health: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in health["components"] if c["name"] == name)
    return found


def health_after_cache(http: httpx.Client, since: float) -> httpx.Response:
    """/health once its cached probes (2 s) taken at `since` have expired."""
    time.sleep(max(0.0, since + 2.1 - time.monotonic()))
    return http.get("/health")


def timed(send: Callable[[], httpx.Response], guard: float) -> httpx.Response:
    started = time.monotonic()
    response = send()
    assert time.monotonic() - started < guard
    return response


def test_a_failing_embeddings_api_stores_nothing_and_recovers(
    serve: Callable[..., ServerThread], embeddings: FaultyServer
) -> None:
    server = serve(embedding=embedding_settings(embeddings))
    guard = TIMEOUT_SECS * 2 + 6
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
        kept = http.post("/api/v1/contexts", json={"text": "stored before the fault"})
        assert kept.status_code == 201

        embeddings.set(HANG)
        lost = timed(lambda: http.post("/api/v1/contexts", json={"text": "lost in a hang"}), guard)
        assert "embedding API timed out" in envelope(lost, 504, "TIMEOUT")["message"]
        # Two attempts, two failures: the breaker is open and nothing more is sent.
        sent = embeddings.requests
        batch = {"items": [{"text": "lost batch one"}, {"text": "lost batch two"}]}
        rejected = envelope(http.post("/api/v1/contexts/batch", json=batch), 503, "UPSTREAM_ERROR")
        assert rejected["message"] == "circuit breaker 'embedding' is open"
        assert embeddings.requests == sent
        checked = time.monotonic()
        health = envelope(http.get("/health"), 503, "UPSTREAM_ERROR")["details"]
        assert component(health, "embedder")["status"] == "unhealthy"
        assert component(health, "circuit_breaker:embedding")["message"] == "circuit open"
        assert breaker_state(http, "embedding") == 2

        embeddings.set(HEALTHY)
        time.sleep(SERVICE_RESET_SECS)
        assert (
            http.post("/api/v1/contexts", json={"text": "stored after recovery"}).status_code == 201
        )
        assert breaker_state(http, "embedding") == 0

        embeddings.set(WRONG)
        wrong = envelope(
            http.post("/api/v1/contexts", json={"text": "short vectors"}), 502, "UPSTREAM_ERROR"
        )
        assert "vectors have 31 dimensions, expected 32" in wrong["message"]
        embeddings.set(HEALTHY)

        health = health_after_cache(http, checked)
        assert health.status_code == 200, health.text
        assert sum(health.json()["store"]["levels"].values()) == 2, "only the two 201s were stored"
        assert component(health.json(), "circuit_breaker:embedding")["status"] == "healthy"


def test_a_failing_summarizer_falls_back_to_extractive_and_recovers(
    serve: Callable[..., ServerThread], embeddings: FaultyServer
) -> None:
    chat = chat_server()
    try:
        server = serve(
            embedding=embedding_settings(embeddings),
            summarizer={"endpoint": chat.url, "timeout_secs": TIMEOUT_SECS, "max_retries": 1},
        )
        turns = [f"Point {i}: the release needs item {i} done first." for i in range(30)]
        request = {
            "query": "release",
            "system_prompt": "You are the release assistant.",
            "recent_turns": turns,
            "budget": {"running_brief": 60, "recent_turns": 30},
        }
        guard = TIMEOUT_SECS * 2 + 6
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
            chat.set(HANG)
            built = timed(lambda: http.post("/api/v1/context/build", json=request), guard)
            assert built.status_code == 200, built.text
            assert built.json()["actions"]["summarizer"] == "extractive"
            assert "Point" in built.json()["running_brief"]
            # The breaker is open: the next build falls back at once, sending nothing.
            sent = chat.requests
            again = http.post("/api/v1/context/build", json=request)
            assert again.json()["actions"]["summarizer"] == "extractive"
            assert chat.requests == sent
            # An optional dependency with a fallback: the service is degraded, not down.
            health = http.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "degraded"
            assert component(health.json(), "circuit_breaker:summarizer")["status"] == "unhealthy"
            assert breaker_state(http, "summarizer") == 2

            chat.set(HEALTHY)
            time.sleep(SERVICE_RESET_SECS)
            recovered = http.post("/api/v1/context/build", json=request).json()
            assert recovered["actions"]["summarizer"] == "llm"
            assert recovered["running_brief"] == SUMMARY
            assert breaker_state(http, "summarizer") == 0
    finally:
        chat.close()


def test_a_failing_deepseek_backend_fails_decode_clearly_and_recovers(
    serve: Callable[..., ServerThread], embeddings: FaultyServer
) -> None:
    ocr = chat_server()
    try:
        server = serve(
            embedding=embedding_settings(embeddings),
            vision={
                "engine": "deepseek",
                "deepseek": {"endpoint": ocr.url, "timeout_secs": TIMEOUT_SECS, "max_retries": 1},
            },
        )
        png = png_bytes(
            page_of_paragraphs([["Revenue grew by 12%", "in the third quarter."]]).image
        )
        guard = TIMEOUT_SECS * 2 + 6
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
            job = _index(http, png, "scan.png")
            assert job["status"] == "succeeded" and job["regions"] >= 1
            hits = http.post("/api/v1/vision/search", json={"query": "revenue grew"}).json()
            region = hits["regions"][0]["region_id"]

            def decode(fidelity: str) -> httpx.Response:
                body = {"region_ids": [region], "fidelity": fidelity}
                return http.post("/api/v1/vision/decode", json=body)

            ocr.set(REFUSE)
            refused = envelope(timed(lambda: decode("10x"), guard), 503, "UPSTREAM_ERROR")
            assert "could not reach the DeepSeek OCR endpoint" in refused["message"]
            rejected = envelope(decode("5x"), 503, "UPSTREAM_ERROR")
            assert rejected["message"] == "circuit breaker 'vision_ocr' is open"
            health = http.get("/health").json()
            assert component(health, "circuit_breaker:vision_ocr")["status"] == "unhealthy"
            assert breaker_state(http, "vision_ocr") == 2

            ocr.set(HEALTHY)
            time.sleep(SERVICE_RESET_SECS)
            decoded = decode("10x")
            assert decoded.status_code == 200, decoded.text
            assert decoded.json()["results"][0]["text"] == READ_TEXT
            assert breaker_state(http, "vision_ocr") == 0

            # A document indexed while the backend answers garbage fails as a whole: its job
            # says why, and none of it is searchable.
            ocr.set(TRUNCATED)
            other = png_bytes(
                page_of_paragraphs([["Invoice 4471 is overdue", "since June."]]).image
            )
            failed = _index(http, other, "invoice.png")
            assert failed["status"] == "failed" and failed["regions"] == 0, failed
            assert failed["error"]["code"] == "UPSTREAM_ERROR"
            assert "DeepSeek OCR endpoint connection failed" in failed["error"]["message"]
            ocr.set(HEALTHY)
            hits = http.post("/api/v1/vision/search", json={"query": "invoice overdue"}).json()
            assert failed["doc_id"] not in {h["doc_id"] for h in hits["regions"]}
    finally:
        ocr.close()


def _index(http: httpx.Client, png: bytes, name: str) -> dict[str, Any]:
    accepted = http.post("/api/v1/vision/index", files={"file": (name, png, "image/png")})
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(
            f"/api/v1/vision/index/jobs/{accepted.json()['job_id']}"
        ).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("the index job did not finish")


def test_a_hanging_qdrant_server_opens_the_breaker_and_recovers(
    serve: Callable[..., ServerThread], embeddings: FaultyServer
) -> None:
    qdrant, rest = qdrant_server()
    try:
        server = serve(
            embedding=embedding_settings(embeddings),
            vector_db={"url": qdrant.url, "timeout_secs": 1},
        )
        guard = 1.0 + 6
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
            first = http.post("/api/v1/contexts", json={"text": "written before the hang"})
            assert first.status_code == 201

            qdrant.set(HANG)
            for _ in range(2):
                lost = timed(lambda: http.post("/api/v1/contexts", json={"text": "lost"}), guard)
                assert envelope(lost, 504, "TIMEOUT")["message"] == (
                    "qdrant upsert timed out (timeout 1s)"
                )
            sent = qdrant.requests
            rejected = envelope(
                http.post("/api/v1/contexts", json={"text": "rejected"}), 503, "UPSTREAM_ERROR"
            )
            assert rejected["message"].startswith(
                "qdrant upsert not sent: circuit breaker 'vector_store' is open"
            )
            search = {"query": "written", "max_tokens": 500}
            envelope(http.post("/api/v1/contexts/search", json=search), 503, "UPSTREAM_ERROR")
            assert qdrant.requests == sent, "an open breaker sends nothing"
            checked = time.monotonic()
            health = envelope(http.get("/health"), 503, "UPSTREAM_ERROR")["details"]
            assert component(health, "vector_store")["status"] == "unhealthy"
            assert (
                "circuit breaker 'vector_store' is open"
                in component(health, "vector_store")["message"]
            )
            assert component(health, "circuit_breaker:vector_store")["message"] == "circuit open"
            assert breaker_state(http, "vector_store") == 2

            qdrant.set(HEALTHY)
            time.sleep(SERVICE_RESET_SECS)
            second = http.post("/api/v1/contexts", json={"text": "written after recovery"})
            assert second.status_code == 201, second.text
            assert breaker_state(http, "vector_store") == 0
            found = http.post(
                "/api/v1/contexts/search", json={"query": "written", "max_tokens": 500}
            )
            ids = {c["id"] for c in found.json()["contexts"]}
            assert ids == {first.json()["id"], second.json()["id"]}
            assert _points(rest, "contexts_shortterm") == 2, "the hung writes were never applied"
            health_ok = health_after_cache(http, checked)
            assert health_ok.status_code == 200, health_ok.text
            assert (
                component(health_ok.json(), "circuit_breaker:vector_store")["status"] == "healthy"
            )
    finally:
        qdrant.close()


def _points(rest: QdrantRest, collection: str) -> int:
    with rest.lock:
        return int(rest.local.count(collection, exact=True).count)


def test_a_batch_is_not_left_half_written_when_qdrant_fails_midway(
    serve: Callable[..., ServerThread], embeddings: FaultyServer
) -> None:
    qdrant, rest = qdrant_server()
    try:
        server = serve(
            embedding=embedding_settings(embeddings),
            vector_db={"url": qdrant.url, "timeout_secs": 1},
        )
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
            # One write per level: the ShortTerm one succeeds, the LongTerm one fails.
            qdrant.set(STATUS_500, only=lambda m, p: m == "PUT" and "contexts_longterm/points" in p)
            batch = {
                "items": [
                    {"text": "short-term half", "level": "ShortTerm"},
                    {"text": "long-term half", "level": "LongTerm"},
                ]
            }
            failed = envelope(
                http.post("/api/v1/contexts/batch", json=batch), 502, "UPSTREAM_ERROR"
            )
            assert "qdrant upsert failed with HTTP 500" in failed["message"]
            assert _points(rest, "contexts_shortterm") == 0, "the written half was taken back"
            assert _points(rest, "contexts_longterm") == 0

            # Keeping Immediate within l1_size comes after the write: when it fails, the
            # context is stored all the same, and 201 says so.
            qdrant.set(STATUS_500, only=lambda m, p: "contexts_immediate/points/count" in p)
            stored = http.post(
                "/api/v1/contexts", json={"text": "working memory", "level": "Immediate"}
            )
            assert stored.status_code == 201, stored.text
            qdrant.set(HEALTHY)
            got = http.get(f"/api/v1/contexts/{stored.json()['id']}")
            assert got.status_code == 200 and got.json()["text"] == "working memory"
    finally:
        qdrant.close()
