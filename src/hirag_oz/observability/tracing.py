"""Optional OpenTelemetry tracing, turned on by `[telemetry] otlp_endpoint`.

Off (the default) it costs nothing: no middleware is added, nothing is wrapped, and the
OpenTelemetry SDK is never imported (this module imports it only when tracing is turned on).

On, the service gets a tracer provider of its own, not the global one, so several apps (and
tests) coexist in one process. It exports over OTLP/HTTP in batches and samples new traces
at `sample_ratio`, following the caller's decision for a request that continues a trace. Spans:

- `<METHOD> <route template>` (SERVER) per HTTP request, continuing an incoming W3C
  `traceparent`/`tracestate`, and current while the request is served, so the spans below,
  made in the threadpool threads Starlette copies the context to, are its children;
- `embedding.embed` per call reaching the embedding model (a batch that the coalescing
  embedder merged from concurrent requests belongs to the trace of the request that ran it);
- `store.<operation>` per vector store call;
- `summarizer.summarize` per summarizer call (the configured one and the extractive fallback);
- `ocr.lines` (a page at indexing) and `ocr.read` (a region at decode).

A wrapped call that raises records the exception on its span, sets the span's status to
error, and re-raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hirag_oz.errors import ConfigurationError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanKind, Tracer
    from opentelemetry.util.types import AttributeValue
    from PIL import Image
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from hirag_oz.config import TelemetrySettings
    from hirag_oz.context.builder import Summarizer
    from hirag_oz.embeddings.base import Embedder
    from hirag_oz.store.base import (
        CollectionSpec,
        Filter,
        OrderedScroll,
        PointRecord,
        ScoredHit,
        SparseVec,
        StoredPoint,
        VectorStore,
    )
    from hirag_oz.vision.models import Fidelity, OcrLine, OcrText
    from hirag_oz.vision.ocr import OcrEngine

INSTALL_HINT = "pip install 'hirag-oz[otel]'"
_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


class Tracing:
    """The tracer of one app, or nothing when tracing is off.

    On when `settings.otlp_endpoint` is set (spans go there over OTLP/HTTP, in batches) or
    when `exporter` is given (spans go to it as each ends: tests pass the SDK's
    `InMemorySpanExporter`).
    """

    def __init__(self, settings: TelemetrySettings, exporter: SpanExporter | None = None) -> None:
        self.settings = settings
        self.enabled = exporter is not None or settings.otlp_endpoint is not None
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if self.enabled:
            self._provider = _provider(settings, exporter)
            self._tracer = self._provider.get_tracer("hirag_oz", _version())

    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            raise RuntimeError("tracing is off")
        return self._tracer

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Export the spans ended so far; False if that did not finish in time."""
        return self._provider.force_flush(timeout_millis) if self._provider is not None else True

    def shutdown(self) -> None:
        """Export what is left and stop; later spans are dropped. Safe to call twice."""
        provider, self._provider = self._provider, None
        if provider is not None:
            provider.shutdown()

    # ---------------------------------------------------------------------- wrappers
    def embedder(self, inner: Embedder, *, remote: bool = False) -> TracedEmbedder:
        return TracedEmbedder(inner, self.tracer, _kind(remote))

    def store(self, inner: VectorStore) -> TracedStore:
        return TracedStore(inner, self.tracer)

    def summarizer(self, inner: Summarizer, *, remote: bool = False) -> TracedSummarizer:
        return TracedSummarizer(inner, self.tracer, _kind(remote))

    def ocr(self, inner: OcrEngine, *, remote: bool = False) -> TracedOcrEngine:
        return TracedOcrEngine(inner, self.tracer, _kind(remote))


def _version() -> str:
    from hirag_oz import __version__

    return __version__


def _provider(settings: TelemetrySettings, exporter: SpanExporter | None) -> TracerProvider:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise ConfigurationError(
            f"telemetry.otlp_endpoint is set but OpenTelemetry is not installed ({INSTALL_HINT})"
        ) from None
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigurationError(
                "telemetry.otlp_endpoint is set but the OTLP/HTTP exporter is not installed "
                f"({INSTALL_HINT})"
            ) from None
        headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=headers)
        )
    resource = Resource.create(
        {"service.name": settings.service_name, "service.version": _version()}
    )
    sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
    # Shut down by the app's lifespan; an atexit hook would keep every app's provider alive.
    provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider


def _kind(remote: bool) -> SpanKind:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT if remote else SpanKind.INTERNAL


# --------------------------------------------------------------------------- HTTP
class TracingMiddleware:
    """A SERVER span per HTTP request, named `<METHOD> <route template>` once routing has
    found the route, continuing the trace of an incoming `traceparent`. Status 5xx or an
    exception marks it as an error. Outermost, so it covers the other middlewares."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.app = app
        self._tracer = tracing.tracer
        self._propagator = TraceContextTextMapPropagator()
        self._empty = Context
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            if key in (b"traceparent", b"tracestate"):
                name, text = key.decode(), bytes(value).decode("latin-1")
                # Several tracestate headers make one list; a repeated traceparent is invalid.
                carrier[name] = f"{carrier[name]},{text}" if name in carrier else text
        # From an empty context: a request never continues whatever this task held before.
        parent = self._propagator.extract(carrier, context=self._empty())
        raw_method = str(scope["method"])
        method = raw_method if raw_method in _METHODS else "_OTHER"
        span_method = "HTTP" if method == "_OTHER" else method
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": str(scope["path"]),
            "url.scheme": str(scope.get("scheme", "http")),
        }
        if method == "_OTHER":
            attributes["http.request.method_original"] = raw_method
        if scope.get("http_version"):
            attributes["network.protocol.version"] = str(scope["http_version"])
        status: int | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self._tracer.start_as_current_span(
            span_method,
            context=parent,
            kind=self._server,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            failure: Exception | None = None
            try:
                await self.app(scope, receive, send_observed)
            except Exception as exc:
                failure = exc
                raise
            finally:
                # The error handler outside the middlewares answers an unhandled exception
                # with a 500.
                if failure is not None and status is None:
                    status = 500
                self._finish(span, scope, span_method, status, failure)

    def _finish(
        self,
        span: Span,
        scope: Scope,
        span_method: str,
        status: int | None,
        failure: Exception | None,
    ) -> None:
        template = getattr(scope.get("route"), "path", None)
        if template:
            span.update_name(f"{span_method} {template}")
            span.set_attribute("http.route", str(template))
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        request_id = (scope.get("state") or {}).get("request_id")
        if request_id:
            span.set_attribute("hirag.request_id", str(request_id))
        if failure is not None:
            span.record_exception(failure)
            span.set_attribute("error.type", type(failure).__qualname__)
            span.set_status(self._error)
        elif status is not None and status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(self._error)


# ------------------------------------------------------------------------ wrappers
class TracedEmbedder:
    """`embedding.embed` around every call that reaches the wrapped embedding model."""

    def __init__(self, inner: Embedder, tracer: Tracer, kind: SpanKind) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self._tracer = tracer
        self._kind = kind

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        attributes: dict[str, AttributeValue] = {
            "embedding.model": self.model_name,
            "embedding.texts": len(texts),
        }
        with self._tracer.start_as_current_span(
            "embedding.embed", kind=self._kind, attributes=attributes
        ):
            return self.inner.embed(texts)


class TracedStore:
    """The VectorStore protocol by delegation, with a `store.<operation>` span (CLIENT, as
    database calls are, embedded or not) around each data operation. `ensure_collection`,
    `ping` (the health probe) and `close` are passed on without one."""

    def __init__(self, inner: VectorStore, tracer: Tracer) -> None:
        from opentelemetry.trace import SpanKind

        self.inner = inner
        self.name = inner.name
        self.parallel_queries = inner.parallel_queries
        self._tracer = tracer
        self._kind = SpanKind.CLIENT

    def _span(
        self, operation: str, collection: str, **extra: AttributeValue
    ) -> AbstractContextManager[Span]:
        attributes: dict[str, AttributeValue] = {
            "db.system.name": "qdrant",
            "db.operation.name": operation,
            "db.collection.name": collection,
            "hirag.store": self.name,
            **extra,
        }
        return self._tracer.start_as_current_span(
            f"store.{operation}", kind=self._kind, attributes=attributes
        )

    def ensure_collection(self, spec: CollectionSpec) -> None:
        self.inner.ensure_collection(spec)

    def upsert(
        self, collection: str, points: Sequence[PointRecord], insert_only: bool = False
    ) -> None:
        with self._span("upsert", collection, **{"db.operation.batch.size": len(points)}):
            self.inner.upsert(collection, points, insert_only)

    def retrieve(
        self, collection: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        with self._span("retrieve", collection, **{"db.operation.batch.size": len(ids)}) as span:
            found = self.inner.retrieve(collection, ids, with_vectors)
            span.set_attribute("db.response.returned_rows", len(found))
            return found

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        with self._span("delete", collection, **{"db.operation.batch.size": len(ids)}):
            self.inner.delete(collection, ids)

    def delete_by_filter(self, collection: str, flt: Filter) -> None:
        with self._span("delete_by_filter", collection):
            self.inner.delete_by_filter(collection, flt)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        with self._span("set_payload", collection, **{"db.operation.batch.size": len(ids)}):
            self.inner.set_payload(collection, ids, payload)

    def hybrid_search(
        self,
        collection: str,
        dense: list[float],
        sparse: SparseVec,
        limit: int,
        flt: Filter | None,
        payload_keys: Sequence[str] | None = None,
    ) -> tuple[list[ScoredHit], list[ScoredHit]]:
        with self._span("hybrid_search", collection, **{"db.query.limit": limit}) as span:
            dense_hits, sparse_hits = self.inner.hybrid_search(
                collection, dense, sparse, limit, flt, payload_keys
            )
            span.set_attribute("hirag.hits.dense", len(dense_hits))
            span.set_attribute("hirag.hits.sparse", len(sparse_hits))
            return dense_hits, sparse_hits

    def scroll(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        order_by: str | None = None,
        with_vectors: bool = False,
        descending: bool = False,
    ) -> list[StoredPoint]:
        with self._span("scroll", collection, **{"db.query.limit": limit}) as span:
            found = self.inner.scroll(collection, flt, limit, order_by, with_vectors, descending)
            span.set_attribute("db.response.returned_rows", len(found))
            return found

    def scroll_many(
        self, collection: str, scrolls: Sequence[OrderedScroll]
    ) -> list[list[StoredPoint]]:
        with self._span(
            "scroll_many", collection, **{"db.operation.batch.size": len(scrolls)}
        ) as span:
            found = self.inner.scroll_many(collection, scrolls)
            span.set_attribute("db.response.returned_rows", sum(len(f) for f in found))
            return found

    def page(
        self,
        collection: str,
        flt: Filter | None,
        offset: str | None,
        limit: int,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], str | None]:
        with self._span("page", collection, **{"db.query.limit": limit}) as span:
            found, after = self.inner.page(collection, flt, offset, limit, with_vectors)
            span.set_attribute("db.response.returned_rows", len(found))
            return found, after

    def count(self, collection: str, flt: Filter | None = None) -> int:
        with self._span("count", collection) as span:
            total = self.inner.count(collection, flt)
            span.set_attribute("hirag.count", total)
            return total

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


class TracedSummarizer:
    """`summarizer.summarize` around every call to the wrapped summarizer."""

    def __init__(self, inner: Summarizer, tracer: Tracer, kind: SpanKind) -> None:
        self.inner = inner
        self.name = inner.name
        self._tracer = tracer
        self._kind = kind

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str:
        attributes: Mapping[str, AttributeValue] = {
            "summarizer.name": self.name,
            "summarizer.texts": len(texts),
            "summarizer.target_tokens": target_tokens,
        }
        with self._tracer.start_as_current_span(
            "summarizer.summarize", kind=self._kind, attributes=attributes
        ):
            return self.inner.summarize(texts, target_tokens, query)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class TracedOcrEngine:
    """`ocr.lines` and `ocr.read` around every call to the wrapped OCR engine."""

    def __init__(self, inner: OcrEngine, tracer: Tracer, kind: SpanKind) -> None:
        self.inner = inner
        self.name = inner.name
        # Shown by the health check.
        self.version: object = getattr(inner, "version", None)
        self._tracer = tracer
        self._kind = kind

    def _attributes(self, image: Image.Image) -> dict[str, AttributeValue]:
        return {"ocr.engine": self.name, "image.width": image.width, "image.height": image.height}

    def lines(self, image: Image.Image) -> list[OcrLine]:
        with self._tracer.start_as_current_span(
            "ocr.lines", kind=self._kind, attributes=self._attributes(image)
        ) as span:
            found = self.inner.lines(image)
            span.set_attribute("ocr.lines", len(found))
            return found

    def read(self, image: Image.Image, fidelity: Fidelity) -> OcrText:
        attributes = {**self._attributes(image), "ocr.fidelity": fidelity}
        with self._tracer.start_as_current_span(
            "ocr.read", kind=self._kind, attributes=attributes
        ) as span:
            text = self.inner.read(image, fidelity)
            span.set_attribute("ocr.confidence", text.confidence)
            return text

    def close(self) -> None:
        self.inner.close()
