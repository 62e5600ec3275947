"""Optional OpenTelemetry tracing: spans through the real server into the SDK's in-memory
exporter, the caller's `traceparent` continued, errors recorded, nothing at all when off."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hirag_oz.api.app import create_app
from hirag_oz.config import Settings, TelemetrySettings, load_settings
from hirag_oz.context import ExtractiveSummarizer
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.errors import ConfigurationError
from hirag_oz.observability.metrics import MeteredEmbedder
from hirag_oz.observability.tracing import (
    TracedEmbedder,
    TracedOcrEngine,
    TracedStore,
    TracedSummarizer,
    Tracing,
    TracingMiddleware,
)
from hirag_oz.store.edge import EdgeStore
from hirag_oz.store.gate import GatedStore
from hirag_oz.tokens import TokenCounter
from hirag_oz.vision import VisionService
from hirag_oz.vision.ocr import TesseractEngine, tesseract_available
from tests.conftest import ServerThread, keyed_settings
from tests.test_llm_summarizer import FakeChat
from tests.test_llm_summarizer import chat as chat  # the fixture
from tests.vision_samples import page_of_paragraphs, scanned_pdf

KEY = "trace-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE_ID, sampled: bool = True) -> str:
    return f"00-{trace_id}-{PARENT_ID}-{'01' if sampled else '00'}"


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def root_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan:
    """The topmost span of `spans` that `span` descends from (itself if its parent is not
    among them)."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
    return span


def under(server: ReadableSpan, spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans called `name` whose parent chain leads to `server`."""
    return [s for s in named(spans, name) if root_of(s, spans) is server]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


# ----------------------------------------------------------------------------- HTTP
def test_requests_continue_the_callers_trace_down_to_the_model_and_the_store(
    model: OnnxMiniLMEmbedder, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    app = create_app(keyed_settings(tmp_path, KEY), model=model, span_exporter=exporter)
    assert TracingMiddleware in [m.cls for m in app.user_middleware]
    with ServerThread(app) as server:
        with_parent = {**HEADERS, "traceparent": traceparent(), "tracestate": "vendor=1"}
        stored = httpx.post(
            server.url + "/api/v1/contexts",
            json={"text": "The payments service moved to region seven.", "level": "LongTerm"},
            headers=with_parent,
        )
        found = httpx.post(
            server.url + "/api/v1/contexts/search",
            json={"query": "where do payments run?", "max_tokens": 500},
            headers=with_parent,
        )
        fresh = httpx.post(
            server.url + "/api/v1/contexts/search",
            json={"query": "a new trace", "max_tokens": 100},
            headers=HEADERS,
        )
        unsampled_id = "0af7651916cd43dd8448eb211c80319c"
        httpx.post(
            server.url + "/api/v1/contexts/search",
            json={"query": "not sampled by the caller", "max_tokens": 100},
            headers={**HEADERS, "traceparent": traceparent(unsampled_id, sampled=False)},
        )
        refused = httpx.post(server.url + "/api/v1/contexts/search", json={})
        parts = app.state.hirag
        assert isinstance(parts.store, TracedStore) and isinstance(parts.store.inner, GatedStore)
        assert isinstance(parts.store.inner.inner, EdgeStore)
        assert isinstance(parts.model.inner, TracedEmbedder)
        assert isinstance(parts.model.inner.inner, MeteredEmbedder)
        assert isinstance(parts.prompts.summarizer, TracedSummarizer)
        assert parts.prompts.summarizer is parts.prompts.fallback
        if parts.documents.engine is not None:
            assert isinstance(parts.documents.engine, TracedOcrEngine)
    assert (stored.status_code, found.status_code, fresh.status_code) == (201, 200, 200)
    assert found.json()["contexts"] and refused.status_code == 401
    spans = exporter.get_finished_spans()  # all exported: the app shut its provider down

    searches = [
        s
        for s in named(spans, "POST /api/v1/contexts/search")
        if trace_of(s) == TRACE_ID and s.kind == SpanKind.SERVER
    ]
    assert len(searches) == 1
    search = searches[0]
    assert search.parent is not None and search.parent.is_remote
    assert format(search.parent.span_id, "016x") == PARENT_ID
    assert search.context is not None and search.context.trace_state.get("vendor") == "1"
    attributes = dict(search.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/api/v1/contexts/search"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/api/v1/contexts/search"
    assert attributes["hirag.request_id"] == found.headers["x-request-id"]
    assert search.status.status_code == StatusCode.UNSET
    # Made in threadpool threads, and still children of the request's span.
    [embed] = under(search, spans, "embedding.embed")
    assert embed.kind == SpanKind.INTERNAL and trace_of(embed) == TRACE_ID
    assert dict(embed.attributes or {}) == {
        "embedding.model": model.model_name,
        "embedding.texts": 1,
    }
    searched = under(search, spans, "store.hybrid_search")
    assert searched and all(s.kind == SpanKind.CLIENT for s in searched)
    first = dict(searched[0].attributes or {})
    assert first["db.system.name"] == "qdrant" and first["hirag.store"] == "qdrant-edge"
    assert str(first["db.collection.name"]).startswith("contexts")
    assert sum(int(dict(s.attributes or {})["hirag.hits.dense"]) for s in searched) >= 1

    [store] = [s for s in named(spans, "POST /api/v1/contexts") if trace_of(s) == TRACE_ID]
    assert dict(store.attributes or {})["http.response.status_code"] == 201
    assert under(store, spans, "embedding.embed") and under(store, spans, "store.upsert")
    upsert = under(store, spans, "store.upsert")[0]
    assert dict(upsert.attributes or {})["db.operation.batch.size"] == 1

    # Without a traceparent: a trace of its own; with an unsampled one: nothing recorded.
    [own] = [s for s in named(spans, "POST /api/v1/contexts/search") if trace_of(s) != TRACE_ID]
    assert own.parent is None and under(own, spans, "store.hybrid_search")
    assert dict(own.attributes or {})["hirag.request_id"] == fresh.headers["x-request-id"]
    assert not [s for s in spans if trace_of(s) == unsampled_id]
    # Refused before routing: no route template to name the span by.
    [denied] = [s for s in named(spans, "POST") if s.kind == SpanKind.SERVER]
    assert dict(denied.attributes or {})["http.response.status_code"] == 401
    assert "http.route" not in dict(denied.attributes or {})
    assert denied.status.status_code == StatusCode.UNSET


class _BrokenModel:
    model_name = "broken"
    dimension = 384

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise RuntimeError("model exploded")


def test_a_failing_call_marks_its_span_and_the_request_span(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    settings = keyed_settings(tmp_path, KEY, embedding={"cache_enabled": False})
    app = create_app(settings, model=_BrokenModel(), span_exporter=exporter)  # type: ignore[arg-type]
    with ServerThread(app) as server:
        answer = httpx.post(
            server.url + "/api/v1/contexts/search",
            json={"query": "anything", "max_tokens": 100},
            headers={**HEADERS, "traceparent": traceparent()},
        )
    assert answer.status_code == 500
    spans = exporter.get_finished_spans()
    [request] = named(spans, "POST /api/v1/contexts/search")
    assert request.status.status_code == StatusCode.ERROR
    assert dict(request.attributes or {})["http.response.status_code"] == 500
    assert dict(request.attributes or {})["error.type"] == "RuntimeError"
    assert [e.name for e in request.events] == ["exception"]
    [embed] = under(request, spans, "embedding.embed")
    assert embed.status.status_code == StatusCode.ERROR
    assert embed.status.description == "RuntimeError: model exploded"
    [event] = [e for e in embed.events if e.name == "exception"]
    assert dict(event.attributes or {})["exception.type"] == "RuntimeError"
    assert dict(event.attributes or {})["exception.message"] == "model exploded"


def test_a_wrapped_store_call_that_raises_records_it_and_reraises(
    exporter: InMemorySpanExporter,
) -> None:
    class FailingStore:
        name = "failing"
        parallel_queries = 1

        def count(self, collection: str, flt: object = None) -> int:
            raise ConnectionError("store went away")

    tracing = Tracing(TelemetrySettings(), exporter)
    store = tracing.store(FailingStore())  # type: ignore[arg-type]
    assert (store.name, store.parallel_queries) == ("failing", 1)
    with pytest.raises(ConnectionError, match="store went away"):
        store.count("contexts_long_term")
    [span] = exporter.get_finished_spans()
    assert span.name == "store.count" and span.kind == SpanKind.CLIENT
    assert dict(span.attributes or {})["db.collection.name"] == "contexts_long_term"
    assert span.status.status_code == StatusCode.ERROR
    [event] = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "ConnectionError"
    tracing.shutdown()


# ----------------------------------------------------------------------- summarizer
def test_summarizer_spans_for_the_llm_and_its_fallback(
    model: OnnxMiniLMEmbedder, tmp_path: Path, chat: FakeChat, exporter: InMemorySpanExporter
) -> None:
    chat.default = "500"
    settings = keyed_settings(
        tmp_path, KEY, summarizer={"endpoint": chat.url, "max_retries": 0, "timeout_secs": 5}
    )
    body = {
        "query": "release",
        "system_prompt": "sys",
        "recent_turns": [f"Point {i}: the release needs item {i} done first." for i in range(40)],
        "budget": {"recent_turns": 40, "running_brief": 60},
    }
    app = create_app(settings, model=model, span_exporter=exporter)
    with ServerThread(app) as server:
        parts = app.state.hirag
        assert isinstance(parts.prompts.summarizer, TracedSummarizer)
        assert parts.prompts.summarizer.name == "llm"
        assert isinstance(parts.prompts.fallback, TracedSummarizer)
        assert isinstance(parts.prompts.fallback.inner, ExtractiveSummarizer)
        failed = httpx.post(server.url + "/api/v1/context/build", json=body, headers=HEADERS)
        chat.default = "ok"
        worked = httpx.post(server.url + "/api/v1/context/build", json=body, headers=HEADERS)
    assert failed.json()["actions"]["summarizer"] == "extractive"
    assert worked.json()["actions"]["summarizer"] == "llm"
    spans = exporter.get_finished_spans()
    first, second = sorted(
        named(spans, "POST /api/v1/context/build"), key=lambda s: s.start_time or 0
    )
    llm, fallback = sorted(
        under(first, spans, "summarizer.summarize"), key=lambda s: s.start_time or 0
    )
    assert dict(llm.attributes or {})["summarizer.name"] == "llm" and llm.kind == SpanKind.CLIENT
    assert llm.status.status_code == StatusCode.ERROR
    assert [e.name for e in llm.events] == ["exception"]
    assert dict(fallback.attributes or {})["summarizer.name"] == "extractive"
    assert fallback.kind == SpanKind.INTERNAL
    assert fallback.status.status_code == StatusCode.UNSET
    assert dict(fallback.attributes or {})["summarizer.target_tokens"] == 60
    [ok] = under(second, spans, "summarizer.summarize")
    assert dict(ok.attributes or {})["summarizer.name"] == "llm"
    assert ok.status.status_code == StatusCode.UNSET


# ------------------------------------------------------------------------------ OCR
@pytest.mark.skipif(not tesseract_available(), reason="tesseract is not installed")
def test_ocr_spans_at_indexing_and_decode(
    tmp_path: Path,
    embedder: CachedEmbedder,
    counter: TokenCounter,
    exporter: InMemorySpanExporter,
) -> None:
    from hirag_oz.config import VisionSettings

    tracing = Tracing(TelemetrySettings(), exporter)
    store = tracing.store(EdgeStore(tmp_path / "qdrant"))
    engine = tracing.ocr(TesseractEngine())
    assert engine.name == "tesseract" and engine.version == engine.inner.version  # type: ignore[attr-defined]
    service = VisionService(VisionSettings(), tmp_path, store, embedder, counter, engine)
    page = page_of_paragraphs([["Invoice 4471 total amount due", "is 1,284.50 EUR in June."]])
    try:
        # A queued job runs in the context of whoever queued it: its spans join that trace.
        with tracing.tracer.start_as_current_span("submit") as submit:
            job = service.submit_upload(scanned_pdf([page.image]), "scan.pdf")
        deadline = time.monotonic() + 120
        while not service.job(job.job_id).finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.job(job.job_id).status == "succeeded"
        hit = service.search("amount due on the invoice", 1)[0]
        with tracing.tracer.start_as_current_span("decode") as decode:
            [result] = service.decode([hit.region.region_id], "5x")
        assert result.backend == "tesseract" and "4471" in result.text
    finally:
        service.close()
        store.close()
        tracing.shutdown()
    spans = exporter.get_finished_spans()
    [lines] = named(spans, "ocr.lines")
    assert submit.context is not None and lines.context is not None
    assert lines.context.trace_id == submit.context.trace_id
    assert dict(lines.attributes or {})["ocr.engine"] == "tesseract"
    assert int(dict(lines.attributes or {})["ocr.lines"]) >= 2
    # The PDF stores the page in points; rendered back at 200 dpi it may gain a pixel.
    assert abs(int(dict(lines.attributes or {})["image.width"]) - page.image.width) <= 1
    assert named(spans, "store.upsert")[0].context.trace_id == submit.context.trace_id  # type: ignore[union-attr]
    [read] = named(spans, "ocr.read")
    assert read.parent is not None and decode.context is not None
    assert read.parent.span_id == decode.context.span_id
    attributes = dict(read.attributes or {})
    assert attributes["ocr.fidelity"] == "5x" and attributes["ocr.engine"] == "tesseract"
    assert 0 < float(attributes["ocr.confidence"]) <= 1
    assert read.kind == SpanKind.INTERNAL


# ---------------------------------------------------------------------------- off
def test_off_by_default_nothing_is_added_or_wrapped(
    model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    app = create_app(keyed_settings(tmp_path, KEY), model=model)
    assert app.state.tracing.enabled is False
    assert TracingMiddleware not in [m.cls for m in app.user_middleware]
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/health/live").status_code == 200
        parts = app.state.hirag
        # The write gate is always there (backups close it); no tracing wrapper is.
        assert type(parts.store) is GatedStore and type(parts.store.inner) is EdgeStore
        assert type(parts.model.inner) is MeteredEmbedder and parts.model.inner.inner is model
        assert type(parts.prompts.summarizer) is ExtractiveSummarizer
        assert parts.prompts.summarizer is parts.prompts.fallback
        if parts.documents.engine is not None:
            assert not isinstance(parts.documents.engine, TracedOcrEngine)


def test_building_the_app_without_telemetry_loads_no_opentelemetry_sdk() -> None:
    # FastAPI itself imports the OpenTelemetry API (its own, dormant, instrumentation);
    # building our app must add nothing to that, and above all not load the SDK.
    script = (
        "import sys, fastapi\n"
        "before = {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "from hirag_oz.api.app import create_app\n"
        "from hirag_oz.config import Settings\n"
        "create_app(Settings())\n"
        "after = {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "print(sorted(after - before), 'opentelemetry.sdk' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] False"


# --------------------------------------------------------------------------- setup
def test_sampling_keeps_the_ratio_of_new_traces_and_follows_callers(
    exporter: InMemorySpanExporter,
) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    tracing = Tracing(TelemetrySettings(sample_ratio=0.0), exporter)
    with tracing.tracer.start_as_current_span("new") as span:
        assert not span.is_recording()
    caller = SpanContext(
        int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True, trace_flags=TraceFlags(1)
    )
    parent = set_span_in_context(NonRecordingSpan(caller))
    with tracing.tracer.start_as_current_span("continued", context=parent) as span:
        assert span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["continued"]
    resource = exporter.get_finished_spans()[0].resource.attributes
    assert resource["service.name"] == "hirag-oz" and resource["service.version"]
    tracing.shutdown()
    tracing.shutdown()  # twice is fine


class _Collector:
    """An OTLP/HTTP traces endpoint on loopback that keeps what it receives."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.requests.append((self.path, headers, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[_Collector]:
    running = _Collector()
    yield running
    running.close()


def test_spans_go_to_the_configured_otlp_endpoint_with_its_headers(
    collector: _Collector,
) -> None:
    settings = TelemetrySettings(
        otlp_endpoint=collector.url,
        service_name="memory-east",
        headers={"x-collector-key": "s3cret"},  # type: ignore[dict-item]
    )
    tracing = Tracing(settings)
    embedder = tracing.embedder(_BrokenModel(), remote=True)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        embedder.embed(["a", "b"])
    tracing.shutdown()  # flushes the batch
    [(path, headers, body)] = collector.requests
    assert path == "/v1/traces" and headers["x-collector-key"] == "s3cret"
    assert headers["content-type"] == "application/x-protobuf"
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "memory-east"
    [scope_spans] = resource_spans.scope_spans
    [span] = scope_spans.spans
    assert span.name == "embedding.embed" and span.kind == span.SPAN_KIND_CLIENT
    assert span.status.code == span.status.STATUS_CODE_ERROR


def test_an_endpoint_without_the_packages_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("opentelemetry.sdk.resources", "opentelemetry.sdk.trace"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigurationError, match=r"pip install 'hirag-oz\[otel\]'"):
        create_app(Settings(telemetry={"otlp_endpoint": "http://collector:4318/v1/traces"}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "endpoint", ["ftp://collector:4318", "collector:4318/v1/traces", "http://", "localhost"]
)
def test_the_endpoint_must_be_an_http_url(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HIRAG_CONFIG", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(f'[telemetry]\notlp_endpoint = "{endpoint}"\n')
    with pytest.raises(ConfigurationError, match=r"telemetry\.otlp_endpoint"):
        load_settings(path)


def test_telemetry_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIRAG_CONFIG", raising=False)
    defaults = load_settings().telemetry
    assert defaults.otlp_endpoint is None and defaults.sample_ratio == 1.0
    assert Tracing(defaults).enabled is False
    path = tmp_path / "c.toml"
    path.write_text(
        "[telemetry]\n"
        'otlp_endpoint = "https://collector.example:4318/v1/traces"\n'
        "sample_ratio = 0.25\n"
        'headers = { authorization = "Bearer t0ken" }\n'
    )
    loaded = load_settings(path)
    assert loaded.telemetry.otlp_endpoint == "https://collector.example:4318/v1/traces"
    assert loaded.telemetry.sample_ratio == 0.25
    assert loaded.telemetry.headers["authorization"].get_secret_value() == "Bearer t0ken"
    assert "t0ken" not in repr(loaded) and "t0ken" not in str(loaded.model_dump())
    monkeypatch.setenv("HIRAG_TELEMETRY__OTLP_ENDPOINT", "http://localhost:4318/v1/traces")
    assert load_settings().telemetry.otlp_endpoint == "http://localhost:4318/v1/traces"
    monkeypatch.setenv("HIRAG_TELEMETRY__OTLP_ENDPOINT", "")
    assert load_settings().telemetry.otlp_endpoint is None
    with pytest.raises(ConfigurationError, match=r"telemetry\.sample_ratio"):
        load_settings(telemetry={"sample_ratio": 1.5})
