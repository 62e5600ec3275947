"""The typed clients against the real server: every route, and the envelope as typed errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hirag_oz import errors
from hirag_oz.api.app import create_app
from hirag_oz.client import AsyncClient, Client
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz_client.models import StoreContextRequest
from tests.conftest import ServerThread

KEY = "client-key"


@pytest.fixture
def server(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(  # type: ignore[arg-type]
        server={"data_dir": tmp_path, "api_keys": [KEY], "max_body_size_mb": 1},
        hirag={"maintenance_enabled": False},
        rate_limit={"requests_per_minute": 40, "burst": 100},
    )
    with ServerThread(create_app(settings, model=model)) as running:
        yield running


def test_sync_client_covers_every_route(server: ServerThread) -> None:
    with Client(server.url, api_key=KEY) as hirag:
        one = hirag.store_context(
            text="The billing service is owned by the payments team",
            level="LongTerm",
            agent_id="a1",
            metadata={"topic": "ownership"},
        )
        assert one.level == "LongTerm" and one.token_count > 0
        many = hirag.store_contexts(
            items=[
                StoreContextRequest(text="Deploys happen on Tuesdays", agent_id="a1"),
                StoreContextRequest(text="Standup is at nine", level="Immediate", agent_id="a1"),
            ]
        )
        assert len(many.ids) == 2
        found = hirag.search_contexts(
            query="who owns billing?",
            max_tokens=200,
            agent_id="a1",
            filters={"must": [{"key": "metadata.topic", "match": "ownership"}]},
        )
        assert [c.id for c in found.contexts] == [one.id]
        got = hirag.get_context(context_id=one.id, agent_id="a1")
        assert got.metadata == {"topic": "ownership"} and got.access_count == 1
        changed = hirag.update_context(
            context_id=one.id, metadata={"team": "payments"}, agent_id="a1"
        )
        assert changed.metadata == {"topic": "ownership", "team": "payments"}
        assert hirag.delete_context(context_id=one.id, agent_id="a1").deleted
        with pytest.raises(errors.NotFoundError) as missing:
            hirag.get_context(context_id=one.id)
        assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"
        cleared = hirag.clear_contexts(level="ShortTerm", agent_id="a1")
        assert cleared.level == "ShortTerm" and cleared.cleared == 1
        assert hirag.live() == {"status": "alive"}
        assert hirag.ready() == {"status": "ready"}
        assert hirag.health().status == "healthy"
        assert "hirag_http_requests_total" in hirag.metrics()


def test_errors_arrive_as_typed_exceptions(server: ServerThread) -> None:
    with Client(server.url, api_key="wrong") as stranger, pytest.raises(errors.AuthenticationError):
        stranger.search_contexts(query="anything", max_tokens=10)
    with Client(server.url, api_key=KEY) as hirag:
        with pytest.raises(errors.ValidationError) as invalid:
            hirag.search_contexts(query="   ", max_tokens=10)
        assert invalid.value.status == 422
        with pytest.raises(errors.PayloadTooLargeError) as too_big:
            hirag.store_context(text="x" * (1024 * 1024 + 1))
        assert too_big.value.details["max_bytes"] == 1024 * 1024
        with pytest.raises(errors.RateLimitedError) as limited:  # 40 a minute
            for _ in range(45):
                hirag.search_contexts(query="ping", max_tokens=10)
        assert 1 <= limited.value.retry_after <= 60
        assert limited.value.details["limit"] == 40


def test_async_client_covers_every_route(server: ServerThread) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, api_key=KEY) as hirag:
            stored = await asyncio.gather(
                *(
                    hirag.store_context(text=f"note {i} about the roadmap", agent_id="a2")
                    for i in range(5)
                )
            )
            assert len({s.id for s in stored}) == 5
            batch = await hirag.store_contexts(
                items=[StoreContextRequest(text="one more", agent_id="a2")]
            )
            found = await hirag.search_contexts(query="roadmap", max_tokens=500, agent_id="a2")
            assert {c.id for c in found.contexts} >= {s.id for s in stored}
            first = stored[0].id
            assert (
                await hirag.get_context(context_id=first, agent_id="a2")
            ).text == "note 0 about the roadmap"
            moved = await hirag.update_context(context_id=first, level="LongTerm", agent_id="a2")
            assert moved.level == "LongTerm"
            assert (await hirag.delete_context(context_id=batch.ids[0])).deleted
            with pytest.raises(errors.NotFoundError):
                await hirag.get_context(context_id=str(uuid.uuid4()))
            assert (await hirag.clear_contexts(level="ShortTerm", agent_id="a2")).cleared == 4
            assert (await hirag.live())["status"] == "alive"
            assert (await hirag.ready())["status"] == "ready"
            assert (await hirag.health()).status == "healthy"
            assert "hirag_operations_total" in await hirag.metrics()

    asyncio.run(scenario())
