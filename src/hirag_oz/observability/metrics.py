"""One Prometheus registry per app, and the metrics the service records in it.

Every label takes a bounded set of values: route templates (never raw paths), HTTP methods,
status codes, operation names, breaker names. Values that already live in other objects
(cache hit counts, breaker states) are read at scrape time instead of being copied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hirag_oz.context.builder import BuiltContext, Summarizer
from hirag_oz.embeddings.base import Embedder
from hirag_oz.observability.health import SystemHealth

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OCR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (50, 100, 250, 500, 1000, 2000, 3750, 5000, 8000, 16000, 32000, 100000)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
HEALTH_STATES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _HasHitsMisses(Protocol):
    hits: int
    misses: int

    def size(self) -> int: ...


class _HasState(Protocol):
    name: str

    @property
    def state(self) -> str: ...


class _Callback(Collector):
    """A collector whose samples come from a function called at scrape time."""

    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self._produce = produce

    def collect(self) -> Iterable[Metric]:
        return self._produce()


class Metrics:
    """The service's metrics in a registry of their own (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter(
            "hirag_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "hirag_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "hirag_http_requests_in_flight", "HTTP requests being served.", registry=r
        )
        self.operations = Counter(
            "hirag_operations_total",
            "Service operations (store, search, ...) by outcome.",
            ["operation", "outcome"],
            registry=r,
        )
        self.operation_latency = Histogram(
            "hirag_operation_duration_seconds",
            "Service operation latency, without HTTP overhead.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.embedding_calls = Counter(
            "hirag_embedding_calls_total",
            "Calls to the embedding model (after caching and batching) by outcome.",
            ["outcome"],
            registry=r,
        )
        self.embedding_texts = Counter(
            "hirag_embedding_texts_total", "Texts sent to the embedding model.", registry=r
        )
        self.embedding_latency = Histogram(
            "hirag_embedding_duration_seconds",
            "Latency of one call to the embedding model.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_budget_used = Histogram(
            "hirag_token_budget_used_tokens",
            "Tokens of the contexts returned within a budget.",
            ["operation"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.token_budget_limit = Histogram(
            "hirag_token_budget_limit_tokens",
            "Token budgets asked for.",
            ["operation"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.context_slot_tokens = Histogram(
            "hirag_context_slot_tokens",
            "Tokens used per slot of a built prompt (prompt: all messages, chat format included).",
            ["slot"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.context_overflows = Counter(
            "hirag_context_overflows_total",
            "Builds where something did not fit its slot, by what was done.",
            ["action"],
            registry=r,
        )
        self.context_summaries = Counter(
            "hirag_context_summaries_total",
            "Running briefs summarized, by the summarizer that produced them and whether it "
            "stood in for a failed one.",
            ["summarizer", "fallback"],
            registry=r,
        )
        self.summarizer_calls = Counter(
            "hirag_summarizer_calls_total",
            "Calls to a summarizer by summarizer and outcome.",
            ["summarizer", "outcome"],
            registry=r,
        )
        self.summarizer_latency = Histogram(
            "hirag_summarizer_duration_seconds",
            "Latency of one summarizer call (retries included).",
            ["summarizer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.context_dropped_snippets = Counter(
            "hirag_context_dropped_snippets_total",
            "Snippets left out of built prompts for lack of room.",
            registry=r,
        )
        self.fact_inserts = Counter(
            "hirag_fact_inserts_total",
            "Fact inserts by outcome: new, duplicate, rejected.",
            ["outcome"],
            registry=r,
        )
        self.vision_jobs = Counter(
            "hirag_vision_jobs_total",
            "Index jobs finished, by outcome: succeeded, failed, reused (content already indexed).",
            ["outcome"],
            registry=r,
        )
        self.vision_pages = Counter(
            "hirag_vision_pages_total",
            "Document pages indexed, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.vision_page_latency = Histogram(
            "hirag_vision_page_duration_seconds",
            "Time to index one page: render, OCR, layout, embed, store.",
            buckets=OCR_BUCKETS,
            registry=r,
        )
        self.ocr_latency = Histogram(
            "hirag_ocr_duration_seconds",
            "OCR calls by backend and fidelity ('page' for a whole page at indexing).",
            ["backend", "fidelity"],
            buckets=OCR_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "hirag_rate_limit_rejections_total", "Requests rejected with 429.", registry=r
        )
        self.auth_failures = Counter(
            "hirag_auth_failures_total",
            "Requests rejected with 401, by reason.",
            ["reason"],
            registry=r,
        )

    # ------------------------------------------------------------------------- recording
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_latency.labels(route, method).observe(seconds)

    @contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """Count and time one operation; an exception counts as an error and propagates."""
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.operations.labels(name, "error").inc()
            raise
        finally:
            self.operation_latency.labels(name).observe(time.perf_counter() - started)
        self.operations.labels(name, "ok").inc()

    def observe_build(self, built: BuiltContext, primary_summarizer: str) -> None:
        """Slot usage and overflow handling of one built prompt. A summary by another
        summarizer than the primary one is a fallback."""
        a, actions = built.allocation, built.actions
        for slot, used in (
            ("system", a.system_tokens),
            ("running_brief", a.running_brief),
            ("recent_turns", a.recent_turns),
            ("retrieved_context", a.retrieved_context),
            ("prompt", a.prompt_tokens),
        ):
            self.context_slot_tokens.labels(slot).observe(used)
        for action, count in (
            ("folded_turns", actions.folded_turns),
            ("dropped_turns", actions.dropped_turns),
            ("summarized", int(actions.summarized)),
            ("brief_truncated", int(actions.brief_truncated)),
            ("dropped_snippets", actions.dropped_snippets),
            ("truncated_snippets", actions.truncated_snippets),
            ("system_overflow", int(a.system_overflow > 0)),
        ):
            if count:
                self.context_overflows.labels(action).inc()
        if actions.summarizer is not None:
            fallback = "true" if actions.summarizer != primary_summarizer else "false"
            self.context_summaries.labels(actions.summarizer, fallback).inc()
        self.context_dropped_snippets.inc(actions.dropped_snippets)

    def observe_budget(self, operation: str, used: int, limit: int) -> None:
        self.token_budget_used.labels(operation).observe(used)
        self.token_budget_limit.labels(operation).observe(limit)

    def job_finished(self, outcome: str) -> None:
        self.vision_jobs.labels(outcome).inc()

    def page_done(self, outcome: str, seconds: float) -> None:
        self.vision_pages.labels(outcome).inc()
        self.vision_page_latency.observe(seconds)

    def ocr(self, backend: str, fidelity: str, seconds: float) -> None:
        self.ocr_latency.labels(backend, fidelity).observe(seconds)

    # ------------------------------------------------------------ values read at scrape
    def watch_jobs(self, pending: Callable[[], int]) -> None:
        def produce() -> Iterator[Metric]:
            gauge = GaugeMetricFamily("hirag_vision_jobs_pending", "Index jobs waiting or running.")
            gauge.add_metric([], pending())
            yield gauge

        self.registry.register(_Callback(produce))

    def watch_cache(self, name: str, cache: _HasHitsMisses) -> None:
        def produce() -> Iterator[Metric]:
            prefix = f"hirag_{name}_cache"
            hits = CounterMetricFamily(f"{prefix}_hits", f"{name} cache hits.")
            hits.add_metric([], cache.hits)
            misses = CounterMetricFamily(f"{prefix}_misses", f"{name} cache misses.")
            misses.add_metric([], cache.misses)
            size = GaugeMetricFamily(f"{prefix}_entries", f"Entries in the {name} cache.")
            size.add_metric([], cache.size())
            yield from (hits, misses, size)

        self.registry.register(_Callback(produce))

    def watch_health(self, check: Callable[[], SystemHealth]) -> None:
        """Readiness and each component's status, from the health checker (its short cache
        keeps scrapes from probing the model and store every time)."""

        def produce() -> Iterator[Metric]:
            health = check()
            ready = GaugeMetricFamily(
                "hirag_ready", "1 when every required component can serve (as /health/ready)."
            )
            ready.add_metric([], 1 if health.ready else 0)
            status = GaugeMetricFamily(
                "hirag_health_component_status",
                "Component status: 0 healthy, 1 degraded, 2 unhealthy.",
                labels=["component"],
            )
            for component in health.components:
                status.add_metric([component.name], HEALTH_STATES[component.status])
            yield from (ready, status)

        self.registry.register(_Callback(produce))

    def watch_disk(self, free: Callable[[], int | None], min_free: int) -> None:
        def produce() -> Iterator[Metric]:
            available = free()
            if available is not None:
                gauge = GaugeMetricFamily(
                    "hirag_data_disk_free_bytes", "Free space on the data directory's disk."
                )
                gauge.add_metric([], available)
                yield gauge
            floor = GaugeMetricFamily(
                "hirag_data_disk_min_free_bytes",
                "Writes are refused while the free space is under this (server.min_free_disk_mb).",
            )
            floor.add_metric([], min_free)
            yield floor

        self.registry.register(_Callback(produce))

    def watch_breakers(self, breakers: Sequence[_HasState]) -> None:
        def produce() -> Iterator[Metric]:
            gauge = GaugeMetricFamily(
                "hirag_circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                labels=["breaker"],
            )
            for breaker in breakers:
                gauge.add_metric([breaker.name], BREAKER_STATES[breaker.state])
            yield gauge

        self.registry.register(_Callback(produce))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredEmbedder:
    """Counts and times every call that reaches the wrapped embedding model."""

    def __init__(self, inner: Embedder, metrics: Metrics) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self._metrics = metrics

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        m = self._metrics
        started = time.perf_counter()
        try:
            vectors = self.inner.embed(texts)
        except Exception:
            m.embedding_calls.labels("error").inc()
            raise
        finally:
            m.embedding_latency.observe(time.perf_counter() - started)
        m.embedding_calls.labels("ok").inc()
        m.embedding_texts.inc(len(texts))
        return vectors


class MeteredSummarizer:
    """Counts and times every call to the wrapped summarizer."""

    def __init__(self, inner: Summarizer, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._metrics = metrics

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str:
        m = self._metrics
        started = time.perf_counter()
        try:
            summary = self.inner.summarize(texts, target_tokens, query)
        except Exception:
            m.summarizer_calls.labels(self.name, "error").inc()
            raise
        finally:
            m.summarizer_latency.labels(self.name).observe(time.perf_counter() - started)
        m.summarizer_calls.labels(self.name, "ok").inc()
        return summary

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
