"""The HTTP contract, against the real server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hirag_oz.api.app import create_app
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from tests.conftest import ServerThread


@pytest.fixture
def client(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(server={"data_dir": tmp_path}, hirag={"maintenance_enabled": False})  # type: ignore[arg-type]
    with (
        ServerThread(create_app(settings, model=model)) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        yield c


def _envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    return body  # type: ignore[no-any-return]


def test_store_search_get_patch_delete(client: httpx.Client) -> None:
    r = client.post(
        "/api/v1/contexts",
        json={
            "text": "User prefers dark mode",
            "level": "LongTerm",
            "metadata": {"topic": "prefs", "n": 1},
        },
    )
    assert r.status_code == 201
    created = r.json()
    assert created["token_count"] == 4 and created["level"] == "LongTerm"
    r = client.post(
        "/api/v1/contexts/batch",
        json={
            "items": [
                {"text": "Deploys happen on Tuesdays", "level": "L2", "session_id": "s1"},
                {"text": "The CI pipeline takes twelve minutes", "level": "short_term"},
            ]
        },
    )
    assert r.status_code == 201 and len(r.json()["ids"]) == 2

    r = client.post(
        "/api/v1/contexts/search",
        json={
            "query": "what theme does the user like",
            "max_tokens": 50,
            "filters": {"must": [{"key": "metadata.topic", "match": "prefs"}]},
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert [c["id"] for c in body["contexts"]] == [created["id"]]
    assert body["total_tokens"] == 4
    assert body["metadata"]["level_distribution"] == {"LongTerm": 1}
    assert set(body["contexts"][0]) >= {
        "id",
        "text",
        "level",
        "relevance_score",
        "token_count",
        "timestamp",
        "agent_id",
        "session_id",
        "metadata",
    }

    r = client.patch(
        f"/api/v1/contexts/{created['id']}", json={"metadata": {"n": 2}, "level": "Immediate"}
    )
    assert (
        r.status_code == 200
        and r.json()["level"] == "Immediate"
        and r.json()["metadata"] == {"topic": "prefs", "n": 2}
    )
    assert client.get(f"/api/v1/contexts/{created['id']}").json()["metadata"]["n"] == 2

    assert client.delete(f"/api/v1/contexts/{created['id']}").status_code == 200
    _envelope(client.get(f"/api/v1/contexts/{created['id']}"), 404, "NOT_FOUND")
    _envelope(client.post("/api/v1/contexts/delete", json={"id": created["id"]}), 404, "NOT_FOUND")


def test_clear_accepts_object_or_bare_string(client: httpx.Client) -> None:
    client.post(
        "/api/v1/contexts/batch",
        json={"items": [{"text": f"note {i}", "level": "ShortTerm"} for i in range(3)]},
    )
    r = client.post("/api/v1/contexts/clear", json="ShortTerm")
    assert r.status_code == 200 and r.json() == {"level": "ShortTerm", "cleared": 3}
    client.post("/api/v1/contexts", json={"text": "x", "level": "L1", "agent_id": "a"})
    r = client.post("/api/v1/contexts/clear", json={"level": "L1", "agent_id": "a"})
    assert r.json() == {"level": "Immediate", "cleared": 1}
    _envelope(client.post("/api/v1/contexts/clear", json="L7"), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        (
            "post",
            "/api/v1/contexts",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("post", "/api/v1/contexts", {"json": {"text": 5}}, 422),
        ("post", "/api/v1/contexts", {"json": {"text": "x", "extra": 1}}, 422),
        ("post", "/api/v1/contexts", {"json": {"text": "x", "level": "L9"}}, 422),
        ("post", "/api/v1/contexts", {"json": {"text": "a\u0000b"}}, 422),
        (
            "post",
            "/api/v1/contexts",
            {"json": {"text": "x", "metadata": {"k": {"a": {"b": {"c": {"d": {"e": 1}}}}}}}},
            422,
        ),
        ("post", "/api/v1/contexts/batch", {"json": {"items": []}}, 422),
        ("post", "/api/v1/contexts/search", {"json": {"query": "x", "max_tokens": 0}}, 422),
        ("post", "/api/v1/contexts/search", {"json": {"query": "x", "max_tokens": 10**9}}, 422),
        (
            "post",
            "/api/v1/contexts/search",
            {
                "json": {
                    "query": "x",
                    "max_tokens": 10,
                    "filters": {"must": [{"key": "text", "match": "x"}]},
                }
            },
            422,
        ),
        (
            "post",
            "/api/v1/contexts/search",
            {
                "json": {
                    "query": "x",
                    "max_tokens": 10,
                    "filters": {"must": [{"key": "metadata.a", "range": {"gte": "high"}}]},
                }
            },
            422,
        ),
        (
            "post",
            "/api/v1/contexts/search",
            {"json": {"query": "x", "max_tokens": 10, "levels": ["nope"]}},
            422,
        ),
        ("get", "/api/v1/contexts/not-a-uuid", {}, 422),
        ("get", "/api/v1/contexts/2f1b6d4e-8f0a-4c1e-9a7b-0d2a8c3e5f61", {}, 404),
        (
            "patch",
            "/api/v1/contexts/2f1b6d4e-8f0a-4c1e-9a7b-0d2a8c3e5f61",
            {"json": {"text": "y"}},
            404,
        ),
        ("get", "/api/v1/nothing-here", {}, 404),
    ],
)
def test_bad_input_gets_the_envelope_and_stores_nothing(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    client.post("/api/v1/contexts", json={"text": "already stored", "level": "LongTerm"})
    r = getattr(client, method)(path, **kwargs)
    body = _envelope(r, status, "NOT_FOUND" if status == 404 else "VALIDATION_ERROR")
    assert body["message"]
    found = client.post(
        "/api/v1/contexts/search", json={"query": "already stored", "max_tokens": 100}
    ).json()
    assert [c["text"] for c in found["contexts"]] == ["already stored"]


def test_schema_errors_list_the_fields(client: httpx.Client) -> None:
    body = _envelope(
        client.post("/api/v1/contexts/search", json={"max_tokens": "many"}), 422, "VALIDATION_ERROR"
    )
    fields = {e["field"] for e in body["details"]["errors"]}  # type: ignore[index]
    assert {"query", "max_tokens"} <= fields


def test_a_bad_query_parameter_is_a_422_naming_it(client: httpx.Client) -> None:
    client.post(
        "/api/v1/sessions/s1/messages", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    r = client.get("/api/v1/sessions/s1/messages", params={"limit": -5, "after": -1})
    body = _envelope(r, 422, "VALIDATION_ERROR")
    fields = {e["field"] for e in body["details"]["errors"]}  # type: ignore[index]
    assert fields == {"query.limit", "query.after"}
    assert client.get("/api/v1/sessions/s1/messages", params={"limit": 1}).status_code == 200


def test_a_body_whose_fields_all_have_defaults_may_be_left_out(client: httpx.Client) -> None:
    client.post(
        "/api/v1/sessions/s1/messages", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    r = client.post("/api/v1/sessions/s1/close")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "closed"
    assert client.post("/api/v1/facts/query").json()["facts"] == []
    # A body with a required field still has to be there.
    _envelope(client.post("/api/v1/sessions/s1/messages"), 422, "VALIDATION_ERROR")


def test_openapi_and_health(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/contexts/search" in spec["paths"]
    health = client.get("/health").json()
    assert health["status"] == "healthy"
    assert health["store"]["token_counter"] == "tiktoken:cl100k_base"
    assert health["store"]["dimension"] == 384
