"""The service around the routes: auth, rate limits, body limits, the error envelope,
request ids, health and metrics. Each test runs the real server on a free loopback port."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from hirag_oz import errors
from hirag_oz.api.app import create_app
from hirag_oz.client import Client
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.store.server import ServerStore
from tests.conftest import ServerThread, free_port, wait_for_port

QDRANT_VERSION = importlib.metadata.version("qdrant-client")
KEY = "key-" + uuid.uuid4().hex
OTHER_KEY = "key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}

Serve = Callable[..., ServerThread]


@pytest.fixture
def serve(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[Serve]:
    """Start an app built from settings overrides; all are stopped at the end."""
    running: list[ServerThread] = []

    def start(app_hook: Callable[[FastAPI], None] | None = None, **overrides: Any) -> ServerThread:
        sections: dict[str, Any] = {
            "server": {"data_dir": tmp_path / f"data{len(running)}", "api_keys": [KEY, OTHER_KEY]},
            "hirag": {"maintenance_enabled": False},
            "rate_limit": {"requests_per_minute": 100_000},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        app = create_app(Settings(**sections), model=model)
        if app_hook is not None:
            app_hook(app)
        server = ServerThread(app).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def _envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


def _protected_routes(url: str) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document under /api/, path ids filled in."""
    routes = []
    for template, operations in httpx.get(f"{url}/openapi.json").json()["paths"].items():
        if template.startswith("/api/"):
            path = template.replace("{context_id}", str(uuid.uuid4()))
            path = path.replace("{fact_id}", str(uuid.uuid4()))
            routes.extend((method.upper(), path) for method in operations)
    return routes


def _metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    text = httpx.get(f"{url}/metrics").text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


# --------------------------------------------------------------------------------- auth
def test_every_protected_route_needs_a_valid_key(serve: Serve) -> None:
    server = serve()
    routes = _protected_routes(server.url)
    # contexts (8), context/build (1), facts (4), vision (4), sessions (8), the data
    # routes: export, import, backups (create, list), and keys (create, list, revoke)
    assert len(routes) == 32
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            r = httpx.request(method, server.url + path, headers=headers, json={})
            _envelope(r, 401, "UNAUTHORIZED")
            assert r.headers["www-authenticate"].startswith("Bearer")
    # Public endpoints need no key.
    for path in ("/", "/health/live", "/health/ready", "/health", "/metrics", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(server.url + "/docs").status_code == 200
    # Both configured keys work; the scheme is case-insensitive.
    for header in (f"Bearer {KEY}", f"bearer {OTHER_KEY}"):
        r = httpx.post(
            server.url + "/api/v1/contexts",
            headers={"Authorization": header},
            json={"text": "hello"},
        )
        assert r.status_code == 201, r.text
    failures = _metrics(server.url)["hirag_auth_failures_total"]
    assert failures[(("reason", "invalid"),)] == len(routes)
    assert failures[(("reason", "missing"),)] == 2 * len(routes)


def test_bad_keys_do_not_spend_a_clients_quota(serve: Serve) -> None:
    server = serve(rate_limit={"requests_per_minute": 3, "burst": 10})
    for _ in range(10):
        r = httpx.get(server.url + f"/api/v1/contexts/{uuid.uuid4()}", headers={})
        assert r.status_code == 401
    statuses = [
        httpx.get(server.url + f"/api/v1/contexts/{uuid.uuid4()}", headers=AUTH).status_code
        for _ in range(4)
    ]
    assert statuses == [404, 404, 404, 429]


# --------------------------------------------------------------------------- rate limit
def test_rate_limit_answers_429_with_retry_after_and_headers(serve: Serve) -> None:
    server = serve(rate_limit={"requests_per_minute": 3, "burst": 10})
    url = server.url + "/api/v1/contexts/search"
    body = {"query": "anything", "max_tokens": 100}
    remaining = []
    for _ in range(3):
        r = httpx.post(url, headers=AUTH, json=body)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "3"
        assert 0 < int(r.headers["x-ratelimit-reset"]) <= 60
        remaining.append(int(r.headers["x-ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    r = httpx.post(url, headers=AUTH, json=body)
    error = _envelope(r, 429, "RATE_LIMIT")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert error["details"]["limit"] == 3
    # The limit is per key: the other key still has its quota.
    other = httpx.post(url, headers={"Authorization": f"Bearer {OTHER_KEY}"}, json=body)
    assert other.status_code == 200
    # Public endpoints are not limited.
    assert httpx.get(server.url + "/health/live").status_code == 200
    assert _metrics(server.url)["hirag_rate_limit_rejections_total"][()] == 1


def test_burst_caps_requests_within_one_second(serve: Serve) -> None:
    server = serve(rate_limit={"requests_per_minute": 60, "burst": 2})
    url = server.url + f"/api/v1/contexts/{uuid.uuid4()}"
    with httpx.Client(headers=AUTH) as http:
        statuses = [http.get(url).status_code for _ in range(5)]
    # 60 per minute is 1 per second, plus a burst of 2.
    assert statuses[:3] == [404, 404, 404]
    assert 429 in statuses[3:]


def test_without_auth_clients_are_told_apart_by_address(serve: Serve) -> None:
    plain = serve(server={"api_keys": []}, rate_limit={"requests_per_minute": 2, "burst": 10})
    url = plain.url + f"/api/v1/contexts/{uuid.uuid4()}"
    spoofed = [
        httpx.get(url, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(3)
    ]
    assert spoofed == [404, 404, 429], "X-Forwarded-For from an untrusted peer must be ignored"

    proxied = serve(
        server={"api_keys": []},
        rate_limit={"requests_per_minute": 2, "burst": 10, "trusted_proxies": ["127.0.0.0/8"]},
    )
    url = proxied.url + f"/api/v1/contexts/{uuid.uuid4()}"
    per_client = [
        httpx.get(url, headers={"X-Forwarded-For": f"203.0.113.7, 10.0.0.{i}"}).status_code
        for i in range(3)
    ]
    assert per_client == [404, 404, 404], "each forwarded client has its own quota"
    same = [
        httpx.get(url, headers={"X-Forwarded-For": "198.51.100.1"}).status_code for _ in range(3)
    ]
    assert same == [404, 404, 429]


# ------------------------------------------------------------------- limits and errors
def test_oversize_bodies_get_413_and_store_nothing(serve: Serve) -> None:
    server = serve(server={"max_body_size_mb": 1})
    url = server.url + "/api/v1/contexts/batch"
    big = {"items": [{"text": "x" * 1000} for _ in range(1100)]}  # ~1.1 MB of JSON
    r = httpx.post(url, headers=AUTH, json=big)
    body = _envelope(r, 413, "PAYLOAD_TOO_LARGE")
    assert body["details"]["max_bytes"] == 1024 * 1024

    payload = json.dumps(big).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    r = httpx.post(url, headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    _envelope(r, 413, "PAYLOAD_TOO_LARGE")
    stats = httpx.get(server.url + "/health").json()["store"]["levels"]
    assert sum(stats.values()) == 0


def test_wrong_content_type_malformed_json_schema_errors_unknown_ids(serve: Serve) -> None:
    server = serve()
    url = server.url + "/api/v1/contexts"
    r = httpx.post(url, headers={**AUTH, "Content-Type": "text/plain"}, content=b'{"text":"a"}')
    assert _envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")["details"]["content_type"] == "text/plain"
    r = httpx.post(url, headers=AUTH, content=b'{"text":"a"}')  # a body without a type
    _envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    r = httpx.post(url, headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope")
    _envelope(r, 400, "VALIDATION_ERROR")
    r = httpx.post(url, headers=AUTH, json={"text": 5, "level": "Nowhere", "extra": 1})
    fields = {e["field"] for e in _envelope(r, 422, "VALIDATION_ERROR")["details"]["errors"]}
    assert {"text", "extra"} <= fields
    r = httpx.get(f"{url}/{uuid.uuid4()}", headers=AUTH)
    _envelope(r, 404, "NOT_FOUND")
    r = httpx.put(f"{url}/{uuid.uuid4()}", headers=AUTH, json={})
    _envelope(r, 405, "METHOD_NOT_ALLOWED")
    r = httpx.get(server.url + "/no/such/path")
    _envelope(r, 404, "NOT_FOUND")


def test_unexpected_errors_are_500_with_a_request_id_and_no_trace(serve: Serve) -> None:
    def add_failing_route(app: FastAPI) -> None:
        @app.get("/api/v1/explode")
        def explode() -> None:
            raise RuntimeError("secret internals /etc/passwd")

    server = serve(app_hook=add_failing_route)
    r = httpx.get(server.url + "/api/v1/explode", headers=AUTH)
    body = _envelope(r, 500, "INTERNAL_ERROR")
    assert body["details"]["request_id"] == r.headers["x-request-id"]
    assert "secret" not in r.text and "Traceback" not in r.text
    # A caller's request id is kept when it is sane, replaced when it is not.
    r = httpx.get(server.url + "/health/live", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.get(server.url + "/health/live", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk"
    samples = _metrics(server.url)["hirag_http_requests_total"]
    assert samples[(("method", "GET"), ("route", "/api/v1/explode"), ("status", "500"))] == 1


# ------------------------------------------------------------------------------ metrics
def test_metrics_parse_and_count_what_happened(serve: Serve) -> None:
    server = serve()
    with Client(server.url, api_key=KEY) as client:
        stored = client.store_context(text="The deploy window is Tuesday at noon", level="LongTerm")
        client.get_context(context_id=stored.id)
        client.get_context(context_id=stored.id)
        client.search_contexts(query="When is the deploy window?", max_tokens=300)
        client.search_contexts(query="When is the deploy window?", max_tokens=300)
        with pytest.raises(errors.NotFoundError):
            client.get_context(context_id=str(uuid.uuid4()))
    httpx.get(server.url + "/nowhere/" + uuid.uuid4().hex)
    m = _metrics(server.url)

    requests = m["hirag_http_requests_total"]
    route = "/api/v1/contexts/{context_id}"
    assert requests[(("method", "GET"), ("route", route), ("status", "200"))] == 2
    assert requests[(("method", "GET"), ("route", route), ("status", "404"))] == 1
    assert requests[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    routes = {dict(labels)["route"] for labels in requests}
    assert not any(stored.id in r for r in routes), "no raw ids in labels"
    latency = m["hirag_http_request_duration_seconds_count"]
    assert latency[(("method", "POST"), ("route", "/api/v1/contexts/search"))] == 2

    ops = m["hirag_operations_total"]
    assert ops[(("operation", "search_contexts"), ("outcome", "ok"))] == 2
    assert ops[(("operation", "get_context"), ("outcome", "error"))] == 1
    assert m["hirag_operation_duration_seconds_count"][(("operation", "store_context"),)] == 1
    # One store and one distinct query reached the model; the repeated query was a cache hit.
    assert m["hirag_embedding_calls_total"][(("outcome", "ok"),)] >= 2
    assert m["hirag_embedding_cache_hits_total"][()] >= 1
    assert m["hirag_embedding_cache_misses_total"][()] >= 2
    budget = m["hirag_token_budget_used_tokens_bucket"]
    assert budget[(("le", "250.0"), ("operation", "search"))] == 2
    assert m["hirag_token_budget_limit_tokens_sum"][(("operation", "search"),)] == 600
    assert "process_cpu_seconds_total" in m
    text = httpx.get(server.url + "/metrics")
    assert text.headers["content-type"].startswith("text/plain")


# ------------------------------------------------------------------------------- health
def test_health_reports_each_component(serve: Serve) -> None:
    server = serve()
    with Client(server.url) as client:
        assert client.live() == {"status": "alive"}
        assert client.ready() == {"status": "ready"}
        health = client.health()
    assert health.status == "healthy"
    names = [c.name for c in health.components]
    assert names == ["vector_store", "data_disk", "embedder", "token_counter", "ocr_engine"]
    for component in health.components:
        assert component.status == "healthy"
        assert component.response_time_ms >= 0
    assert health.store is not None and health.store["dimension"] == 384


class _FakeQdrant:
    """A real HTTP server on loopback answering the Qdrant REST calls the service makes at
    start-up (over empty collections), then stopped to play a Qdrant server that went down."""

    def __init__(self) -> None:
        collections: set[str] = set()
        created: dict[str, dict[str, Any]] = {}

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, result: Any) -> None:
                body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == [""]:
                    body = json.dumps({"title": "qdrant", "version": QDRANT_VERSION}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif parts == ["collections"]:
                    self._reply({"collections": [{"name": n} for n in sorted(collections)]})
                elif len(parts) == 3 and parts[2] == "exists":
                    self._reply({"exists": parts[1] in collections})
                else:
                    self.send_error(404)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 2:
                    collections.add(parts[1])
                    created[parts[1]] = json.loads(body or b"{}")
                    self._reply(True)
                else:
                    self._reply({"operation_id": 1, "status": "completed"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 4 and parts[2:] == ["points", "scroll"]:
                    self._reply({"points": [], "next_page_offset": None})  # empty collections
                elif len(parts) == 4 and parts[2:] == ["points", "count"]:
                    self._reply({"count": 0})
                elif len(parts) == 3 and parts[2] == "points":  # retrieve by id
                    self._reply([])
                else:
                    self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.collections = collections
        self.created = created
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()


def test_a_down_qdrant_server_reads_unhealthy(model: OnnxMiniLMEmbedder, tmp_path: Path) -> None:
    qdrant = _FakeQdrant()
    store = ServerStore.connect(qdrant.url, timeout=2, shard_number=3, replication_factor=2)
    settings = Settings(  # type: ignore[arg-type]
        server={"data_dir": tmp_path}, hirag={"maintenance_enabled": False}
    )
    try:
        with ServerThread(create_app(settings, model=model, store=store)) as server:
            assert {"contexts_immediate", "contexts_longterm"} <= qdrant.collections
            # Collections are spread over a cluster as configured.
            created = qdrant.created["contexts_longterm"]
            assert (created["shard_number"], created["replication_factor"]) == (3, 2)
            assert "write_consistency_factor" not in created
            assert httpx.get(server.url + "/health/ready").status_code == 200
            health = httpx.get(server.url + "/health").json()
            assert health["components"][0] == {
                **health["components"][0],
                "name": "vector_store",
                "status": "healthy",
            }
            qdrant.stop()
            time.sleep(2.1)  # past the health cache
            r = httpx.get(server.url + "/health")
            body = _envelope(r, 503, "UPSTREAM_ERROR")
            assert body["details"]["status"] == "unhealthy"
            store_health = body["details"]["components"][0]
            assert store_health["name"] == "vector_store"
            assert store_health["status"] == "unhealthy"
            assert "qdrant" in store_health["message"]
            embedder = body["details"]["components"][1]
            assert embedder["status"] == "healthy"
            r = httpx.get(server.url + "/health/ready")
            assert _envelope(r, 503, "UPSTREAM_ERROR")["details"]["status"] == "not_ready"
            assert httpx.get(server.url + "/health/live").status_code == 200
    finally:
        qdrant.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, for limits shared by several processes."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make test installs it when run as root)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=20)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_instances_share_one_limit_through_redis(serve: Serve, redis_url: str) -> None:
    shared = {"requests_per_minute": 4, "burst": 10, "storage_uri": redis_url}
    first, second = serve(rate_limit=shared), serve(rate_limit=shared)
    path = f"/api/v1/contexts/{uuid.uuid4()}"
    statuses = [
        httpx.get(server.url + path, headers=AUTH).status_code
        for server in (first, second, first, second, first, second)
    ]
    assert statuses == [404, 404, 404, 404, 429, 429]
    # With memory storage each instance counts alone.
    alone = {"requests_per_minute": 4, "burst": 10}
    third, fourth = serve(rate_limit=alone), serve(rate_limit=alone)
    statuses = [
        httpx.get(server.url + path, headers=AUTH).status_code
        for server in (third, fourth, third, fourth, third, fourth)
    ]
    assert statuses == [404] * 6
