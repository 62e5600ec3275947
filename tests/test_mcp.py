"""`hirag-oz mcp` driven as an MCP client drives it: the SDK's client spawns the command over
stdio (or connects over streamable HTTP), lists the tools and calls them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp import Client, ClientSession
from mcp.client.session import IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from tests.conftest import free_port, wait_for_port
from tests.vision_samples import text_pdf

pytestmark = pytest.mark.anyio

# One tool per catalogued operation, with the request model's required fields.
TOOLS = {
    "store_context": {"text"},
    "store_contexts": {"items"},
    "search_contexts": {"query", "max_tokens"},
    "get_context": {"context_id"},
    "update_context": {"context_id"},
    "delete_context": {"context_id"},
    "clear_contexts": {"level"},
    "build_context": {"query", "system_prompt"},
    "add_fact": {"subject", "predicate", "object", "confidence"},
    "query_facts": set(),
    "get_fact": {"fact_id"},
    "delete_fact": {"fact_id"},
    "index_document": {"doc_url"},
    "get_job": {"job_id"},
    "search_regions": {"query"},
    "decode_regions": {"region_ids"},
    "append_messages": {"session_id", "messages"},
    "session_context": {"session_id", "system_prompt"},
    "get_session": {"session_id"},
    "list_sessions": set(),
    "list_messages": {"session_id"},
    "update_brief": {"session_id", "brief"},
    "close_session": {"session_id"},
    "delete_session": {"session_id"},
    "health": set(),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _command(data_dir: Path, *extra: str) -> list[str]:
    return ["-m", "hirag_oz.cli", "mcp", "--data-dir", str(data_dir), *extra]


def _env(**extra: str) -> dict[str, str]:
    # The run's ONNX export (XDG_CACHE_HOME, set by conftest) is shared with the servers.
    return {**os.environ, "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false", **extra}


@asynccontextmanager
async def stdio_session(
    data_dir: Path, errlog: IO[str], **env: str
) -> AsyncIterator[ClientSession]:
    """A session with `hirag-oz mcp` on stdio; fails if anything but protocol reached stdout."""
    problems: list[Exception] = []

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            problems.append(message)

    params = StdioServerParameters(command=sys.executable, args=_command(data_dir), env=_env(**env))
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        with anyio.fail_after(60):  # the model loads before the server answers
            await session.initialize()
        yield session
    assert problems == [], f"not protocol on stdout: {problems}"


def ok(result: CallToolResult) -> dict[str, Any]:
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    assert not result.is_error, text
    assert isinstance(result.structured_content, dict)
    assert json.loads(text) == result.structured_content
    return result.structured_content


def error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error
    envelope = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert set(envelope) == {"code", "message", "details"}
    # No structured content on an error: strict clients check it against the output schema.
    assert result.structured_content is None
    return envelope  # type: ignore[no-any-return]


async def test_stdio_memory_context_and_facts(tmp_path: Path) -> None:
    with (tmp_path / "server.log").open("w") as log:
        async with stdio_session(tmp_path / "data", log) as mcp:
            await _check_tools(mcp)
            await _check_memory_and_build(mcp)
            await _check_facts_and_errors(mcp)
    # Logs went to stderr, as JSON lines.
    lines = (tmp_path / "server.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(entry.get("event", "").startswith("tool add_fact refused") for entry in logged)


async def _check_tools(mcp: ClientSession) -> None:
    listed = (await mcp.list_tools()).tools
    assert {t.name for t in listed} == set(TOOLS)
    undescribed = []  # every one listed when it fails, not only the first
    for t in listed:
        if not (t.description and len(t.description) > 40):
            undescribed.append(f"{t.name}: {t.description!r}")
        schema = t.input_schema
        assert schema["type"] == "object"
        assert set(schema.get("required", [])) == TOOLS[t.name], t.name
        for name, prop in schema["properties"].items():
            if not prop.get("description"):
                undescribed.append(f"{t.name}.{name} has no description")
        assert t.output_schema is not None
    assert not undescribed, "\n".join(undescribed)
    store = next(t for t in listed if t.name == "store_context")
    assert store.input_schema["properties"]["level"]["default"] == "ShortTerm"
    assert store.annotations is not None and store.annotations.read_only_hint is False


async def _check_memory_and_build(mcp: ClientSession) -> None:
    stored = ok(
        await mcp.call_tool(
            "store_context",
            {
                "text": "The user prefers dark mode in every editor",
                "level": "LongTerm",
                "agent_id": "agent-7",
                "metadata": {"topic": "prefs"},
            },
        )
    )
    assert stored["level"] == "LongTerm" and stored["token_count"] > 0
    ok(await mcp.call_tool("store_context", {"text": "Deploys happen on Tuesdays"}))

    found = ok(
        await mcp.call_tool(
            "search_contexts",
            {"query": "Which theme does the user like?", "max_tokens": 200, "agent_id": "agent-7"},
        )
    )
    first = found["contexts"][0]
    assert first["id"] == stored["id"] and first["level"] == "LongTerm"
    assert first["text"] == "The user prefers dark mode in every editor"
    assert 0 < first["relevance_score"] <= 1
    assert found["total_tokens"] <= 200
    other = ok(
        await mcp.call_tool(
            "search_contexts", {"query": "editor theme", "max_tokens": 1000, "agent_id": "x"}
        )
    )
    assert other["contexts"] == []  # agents never see each other's items

    built = ok(
        await mcp.call_tool(
            "build_context",
            {
                "query": "Which theme should the editor use?",
                "system_prompt": "You are a helpful assistant.",
                "running_brief": "Setting up a new laptop.",
                "recent_turns": [
                    {"role": "user", "content": "I just unboxed it."},
                    {"role": "assistant", "content": "Great, let's configure it."},
                    "Which theme do I like?",
                ],
                "budget": {
                    "system_tokens": 200,
                    "running_brief": 300,
                    "recent_turns": 300,
                    "retrieved_context": 300,
                    "completion": 500,
                    "max_total": 2000,
                },
                "agent_id": "agent-7",
            },
        )
    )
    messages = built["messages"]
    assert messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert messages[-1] == {"role": "user", "content": "Which theme do I like?"}
    assert any("dark mode" in m["content"] for m in messages)
    allocation = built["allocation"]
    assert allocation["max_total"] == 2000
    assert 0 < allocation["prompt_tokens"] <= allocation["max_total"] - allocation["completion"]
    assert set(built["actions"]) >= {"summarized", "folded_turns", "dropped_snippets"}

    bad_budget = error(
        await mcp.call_tool(
            "build_context", {"query": "q", "system_prompt": "s", "budget": {"max_total": 10}}
        )
    )
    assert bad_budget["code"] == "VALIDATION_ERROR"


async def _check_facts_and_errors(mcp: ClientSession) -> None:
    fact = {
        "subject": "billing",
        "predicate": "owned_by",
        "object": "payments team",
        "confidence": 0.9,
        "source_doc": "org.pdf",
        "source_anchor": {"doc_id": "org", "page": 2},
    }
    added = ok(await mcp.call_tool("add_fact", fact))
    assert added["duplicate"] is False and added["closed"] == []
    again = ok(await mcp.call_tool("add_fact", fact))
    assert again["fact_id"] == added["fact_id"] and again["duplicate"] is True
    page = ok(await mcp.call_tool("query_facts", {"predicate": "owned_by", "min_confidence": 0.85}))
    assert page["total"] == 1
    assert page["facts"][0]["id"] == added["fact_id"]
    assert page["facts"][0]["source_anchor"]["page"] == 2
    ranked = ok(await mcp.call_tool("query_facts", {"text": "who owns invoicing?"}))
    assert ranked["facts"][0]["object"] == "payments team" and ranked["facts"][0]["score"]

    # A rule of the library: below [facts] confidence_threshold.
    low = error(await mcp.call_tool("add_fact", {**fact, "confidence": 0.1}))
    assert low["code"] == "VALIDATION_ERROR" and low["details"]["threshold"] == 0.8
    # An unknown level.
    level = error(await mcp.call_tool("store_context", {"text": "x", "level": "Forever"}))
    assert level["code"] == "VALIDATION_ERROR" and level["details"]["field"] == "level"
    # Arguments that break the input schema: each field named, as the API's 422.
    schema = error(await mcp.call_tool("add_fact", {"subject": "a", "confidence": 2}))
    assert schema["code"] == "VALIDATION_ERROR"
    fields = {e["field"] for e in schema["details"]["errors"]}
    assert fields == {"predicate", "object", "confidence"}
    unknown = error(await mcp.call_tool("no_such_tool", {}))
    assert unknown["code"] == "NOT_FOUND"

    # The server keeps working.
    still = ok(await mcp.call_tool("query_facts", {"subject": "billing"}))
    assert still["total"] == 1


async def test_stdio_documents(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    report = docs / "report.pdf"
    report.write_bytes(text_pdf([["The Porto depot budget grew by nine percent this year."]]))
    outside = tmp_path / "secret.pdf"
    outside.write_bytes(text_pdf([["A secret outside the allowed folder."]]))
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    allowed = json.dumps([str(docs)])
    with (tmp_path / "server.log").open("w") as log:
        async with stdio_session(
            tmp_path / "data", log, HIRAG_VISION__ALLOWED_PATHS=allowed
        ) as mcp:
            job = ok(
                await mcp.call_tool(
                    "index_document",
                    {"doc_url": str(report), "metadata": {"k": 1}, "wait": True},
                    progress_callback=on_progress,
                )
            )
            assert job["status"] == "succeeded" and job["regions"] == 1
            assert job["progress"] == {"pages_done": 1, "pages_total": 1}
            assert progress and progress[-1] == (1, 1)
            again = ok(
                await mcp.call_tool("index_document", {"doc_url": str(report), "wait": True})
            )
            assert again["reused"] is True

            refused = error(
                await mcp.call_tool("index_document", {"doc_url": str(outside), "wait": True})
            )
            assert refused["code"] == "FORBIDDEN"
            relative = error(
                await mcp.call_tool("index_document", {"doc_url": "report.pdf", "wait": True})
            )
            assert relative["code"] == "VALIDATION_ERROR"

            found = ok(
                await mcp.call_tool(
                    "search_regions",
                    {"query": "depot budget", "top_k": 3, "filters": {"type": ["text"]}},
                )
            )
            region = found["regions"][0]
            assert region["doc_id"] == job["doc_id"] and region["page"] == 1
            assert "budget" in region["why_relevant"]
            decoded = ok(
                await mcp.call_tool(
                    "decode_regions", {"region_ids": [region["region_id"]], "fidelity": "1x"}
                )
            )
            result = decoded["results"][0]
            assert result["text"] == "The Porto depot budget grew by nine percent this year."
            assert result["confidence"] == 1.0 and result["fidelity"] == "1x"
            bad = error(
                await mcp.call_tool(
                    "decode_regions", {"region_ids": [region["region_id"]], "fidelity": "3x"}
                )
            )
            assert bad["code"] == "VALIDATION_ERROR"


def _http_server(data_dir: Path, port: int, log: IO[str], **env: str) -> subprocess.Popen[bytes]:
    """`hirag-oz mcp --transport http` on `port`, its logs to `log`."""
    return subprocess.Popen(
        [sys.executable, *_command(data_dir, "--transport", "http", "--port", str(port))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=_env(**env),
    )


async def test_streamable_http(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "server.log").open("w") as log:
        server = _http_server(tmp_path / "data", port, log)
        try:
            await anyio.to_thread.run_sync(wait_for_port, port, 60.0)
            async with Client(f"http://127.0.0.1:{port}/mcp") as mcp:
                listed = await mcp.list_tools()
                assert {t.name for t in listed.tools} == set(TOOLS)
                stored = ok(
                    await mcp.call_tool("store_context", {"text": "The release ships on Friday"})
                )
                found = ok(
                    await mcp.call_tool(
                        "search_contexts", {"query": "When do we ship?", "max_tokens": 1000}
                    )
                )
                assert found["contexts"][0]["id"] == stored["id"]
                low = error(
                    await mcp.call_tool(
                        "add_fact",
                        {"subject": "a", "predicate": "b", "object": "c", "confidence": 0.1},
                    )
                )
                assert low["code"] == "VALIDATION_ERROR"
        finally:
            server.send_signal(signal.SIGTERM)
            out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, (tmp_path / "server.log").read_text()
    assert out == b""  # logs go to stderr only


def test_http_refuses_non_loopback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hirag_oz.cli import cli

    result = CliRunner().invoke(
        cli, ["mcp", "--transport", "http", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "no authentication" in str(result.exception)


async def test_streamable_http_with_keys(tmp_path: Path) -> None:
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    from hirag_oz.keys import KeyStore

    keys = KeyStore(tmp_path / "data" / "keys.json")
    _, reader = keys.create("read", name="reader")
    _, bot = keys.create("write", ["bot"], name="bot")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"

    def connect(key: str) -> Client:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        return Client(streamable_http_client(url, http_client=http))

    with (tmp_path / "server.log").open("w") as log:
        server = _http_server(tmp_path / "data", port, log, HIRAG_API_KEYS="mcp-admin-key")
        try:
            await anyio.to_thread.run_sync(wait_for_port, port, 60.0)
            # No key, or a wrong one: the endpoint answers 401 in the envelope.
            import httpx

            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = httpx.post(url, json={}, headers=headers)
                assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
            async with connect(bot) as mcp:
                # The bot's key is limited to agent "bot": what it stores is the bot's.
                stored = ok(await mcp.call_tool("store_context", {"text": "The bot's note"}))
                other = error(
                    await mcp.call_tool("store_context", {"text": "x", "agent_id": "someone"})
                )
                assert other["code"] == "FORBIDDEN"
                cleared = error(await mcp.call_tool("clear_contexts", {"level": "ShortTerm"}))
                assert cleared["code"] == "FORBIDDEN"
            async with connect(reader) as mcp:
                got = ok(await mcp.call_tool("get_context", {"context_id": stored["id"]}))
                assert got["agent_id"] == "bot"
                write = error(await mcp.call_tool("store_context", {"text": "not allowed"}))
                assert write["code"] == "FORBIDDEN"
            async with connect("mcp-admin-key") as mcp:
                listed = await mcp.list_tools()
                assert {t.name for t in listed.tools} == set(TOOLS)
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)
    assert server.returncode == 0, (tmp_path / "server.log").read_text()
