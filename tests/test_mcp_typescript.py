"""`hirag-oz mcp` driven by the official TypeScript SDK client (@modelcontextprotocol/sdk, pinned
in tests/mcp_ts/package-lock.json), a strict client: its Client.callTool checks every
structuredContent it receives against the tool's outputSchema, error results included.

One server process serves every call: tools/list, each tool with valid arguments, then calls
that fail in the library (and one unknown tool). A failed call must come back as an error
RESULT the client accepts (isError true, the {"code", "message", "details"} envelope as text),
never as an SDK error of the client. Skipped without node/npm or the npm registry.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.typescript_mcp import ensure_sdk, run_plan, sdk_version
from tests.vision_samples import text_pdf

pytestmark = pytest.mark.timeout(900)

# The tools of the current server: one per catalogued operation (hirag_oz_client.catalogue).
TOOLS = {
    "store_context",
    "store_contexts",
    "search_contexts",
    "get_context",
    "update_context",
    "delete_context",
    "clear_contexts",
    "build_context",
    "add_fact",
    "query_facts",
    "get_fact",
    "delete_fact",
    "index_document",
    "get_job",
    "search_regions",
    "decode_regions",
    "append_messages",
    "session_context",
    "get_session",
    "list_sessions",
    "list_messages",
    "update_brief",
    "close_session",
    "delete_session",
    "health",
}

PDF_TEXT = "The Porto depot budget grew by nine percent this year."
FACT = {
    "subject": "billing",
    "predicate": "owned_by",
    "object": "payments team",
    "confidence": 0.9,
    "source_doc": "org.pdf",
    "source_anchor": {"doc_id": "org", "page": 2},
}


@dataclass(frozen=True)
class Call:
    label: str
    tool: str
    arguments: dict[str, Any]
    code: str | None = None
    """The error code expected; None for a call that must succeed."""


def _valid_calls(docs: Path) -> list[Call]:
    """Every tool with valid arguments; they come first in the plan, in this order. An id a
    call needs is the one an earlier call returned: client.mjs resolves each $ref against
    the results so far."""
    calls: list[Call] = []

    def ref(label: str, path: str) -> dict[str, str]:
        index = next(i for i, c in enumerate(calls) if c.label == label)
        return {"$ref": f"{index}.structuredContent.{path}"}

    calls += [
        Call(
            "store_context",
            "store_context",
            {
                "text": "The user prefers dark mode in every editor",
                "level": "LongTerm",
                "metadata": {"topic": "prefs"},
            },
        ),
        Call(
            "store_context_session",
            "store_context",
            {"text": "Deploys happen on Tuesdays", "session_id": "s1"},
        ),
        Call(
            "store_contexts",
            "store_contexts",
            {
                "items": [
                    {"text": "Standup is at nine", "level": "Immediate"},
                    {"text": "The staging database lives on host db-stage-2"},
                ]
            },
        ),
        Call(
            "search_contexts",
            "search_contexts",
            {"query": "Which theme does the user like?", "max_tokens": 200},
        ),
    ]
    calls += [
        Call("get_context", "get_context", {"context_id": ref("store_context", "id")}),
        Call(
            "update_context",
            "update_context",
            {"context_id": ref("store_context", "id"), "metadata": {"team": "design"}},
        ),
        Call(
            "build_context",
            "build_context",
            {
                "query": "Which theme should the editor use?",
                "system_prompt": "You are a helpful assistant.",
                "running_brief": "Setting up a new laptop.",
                "recent_turns": [
                    {"role": "user", "content": "I just unboxed it."},
                    "Which theme do I like?",
                ],
            },
        ),
        Call("add_fact", "add_fact", FACT),
        Call(
            "query_facts", "query_facts", {"predicate": "owned_by", "text": "who owns invoicing?"}
        ),
    ]
    calls += [
        Call("get_fact", "get_fact", {"fact_id": ref("add_fact", "fact_id")}),
        Call(
            "add_fact_to_delete",
            "add_fact",
            {"subject": "lunch", "predicate": "served_at", "object": "noon", "confidence": 0.9},
        ),
    ]
    calls += [
        Call("delete_fact", "delete_fact", {"fact_id": ref("add_fact_to_delete", "fact_id")}),
        Call(
            "index_document",
            "index_document",
            {"doc_url": str(docs / "report.pdf"), "wait": True},
        ),
    ]
    calls += [
        Call("get_job", "get_job", {"job_id": ref("index_document", "job_id")}),
        Call("search_regions", "search_regions", {"query": "depot budget", "top_k": 3}),
    ]
    calls += [
        Call(
            "decode_regions",
            "decode_regions",
            {"region_ids": [ref("search_regions", "regions.0.region_id")], "fidelity": "1x"},
        ),
        Call("health", "health", {}),
        Call("delete_context", "delete_context", {"context_id": ref("store_contexts", "ids.0")}),
        Call("clear_contexts", "clear_contexts", {"level": "ShortTerm"}),
        Call(
            "append_messages",
            "append_messages",
            {
                "session_id": "chat-1",
                "messages": [
                    {"role": "user", "content": "Which theme do I like?", "message_id": "m1"},
                    {"role": "assistant", "content": "Dark mode, everywhere."},
                ],
            },
        ),
        Call(
            "session_context",
            "session_context",
            {"session_id": "chat-1", "system_prompt": "You are a helpful assistant."},
        ),
        Call("get_session", "get_session", {"session_id": "chat-1"}),
        Call("list_sessions", "list_sessions", {}),
        Call("list_messages", "list_messages", {"session_id": "chat-1", "limit": 10}),
        Call("update_brief", "update_brief", {"session_id": "chat-1", "brief": "Theme talk."}),
        Call("close_session", "close_session", {"session_id": "chat-1"}),
        Call("delete_session", "delete_session", {"session_id": "chat-1"}),
    ]
    return calls


def _error_calls(docs: Path) -> list[Call]:
    return [
        Call(
            "search_contexts_empty_query",
            "search_contexts",
            {"query": "", "max_tokens": 200},
            "VALIDATION_ERROR",
        ),
        Call(
            "store_context_unknown_level",
            "store_context",
            {"text": "x", "level": "Forever"},
            "VALIDATION_ERROR",
        ),
        Call(
            "add_fact_low_confidence", "add_fact", {**FACT, "confidence": 0.1}, "VALIDATION_ERROR"
        ),
        Call(
            "build_context_budget_too_small",
            "build_context",
            {"query": "q", "system_prompt": "s", "budget": {"max_total": 10}},
            "VALIDATION_ERROR",
        ),
        # Breaks the input schema (limit >= 1): the server's own VALIDATION_ERROR envelope.
        Call("query_facts_bad_limit", "query_facts", {"limit": 0}, "VALIDATION_ERROR"),
        Call(
            "index_document_relative_path",
            "index_document",
            {"doc_url": "report.pdf", "wait": True},
            "VALIDATION_ERROR",
        ),
        Call(
            "index_document_missing_file",
            "index_document",
            {"doc_url": str(docs / "missing.pdf"), "wait": True},
            "NOT_FOUND",
        ),
        Call("search_regions_empty_query", "search_regions", {"query": ""}, "VALIDATION_ERROR"),
        Call(
            "decode_regions_unknown_region",
            "decode_regions",
            {"region_ids": ["no-such-region"]},
            "NOT_FOUND",
        ),
        Call(
            "get_fact_unknown_id",
            "get_fact",
            {"fact_id": "3f1c2b9e-0d4a-4c55-9a7e-5b1d2c3e4f50"},
            "NOT_FOUND",
        ),
        Call(
            "delete_fact_unknown_id",
            "delete_fact",
            {"fact_id": "3f1c2b9e-0d4a-4c55-9a7e-5b1d2c3e4f50"},
            "NOT_FOUND",
        ),
        Call("get_session_unknown", "get_session", {"session_id": "nobody"}, "NOT_FOUND"),
        Call(
            "append_messages_bad_role",
            "append_messages",
            {"session_id": "chat-2", "messages": [{"role": "robot", "content": "hi"}]},
            "VALIDATION_ERROR",
        ),
        # No outputSchema to check against: the control case.
        Call("unknown_tool", "no_such_tool", {}, "NOT_FOUND"),
    ]


# The parametrized tests below need the labels at collection time; paths do not matter there.
VALID_LABELS = [c.label for c in _valid_calls(Path("/"))]
ERROR_LABELS = [c.label for c in _error_calls(Path("/"))]


@dataclass
class Run:
    calls: list[Call]
    report: dict[str, Any]
    seconds: float

    def result(self, label: str) -> dict[str, Any]:
        index = next(i for i, c in enumerate(self.calls) if c.label == label)
        return self.report["results"][index]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def sdk_dir() -> Path:
    """The installed SDK; skips (once) without node/npm or the registry."""
    return ensure_sdk()


@pytest.fixture(scope="module")
def run(sdk_dir: Path, tmp_path_factory: pytest.TempPathFactory, model: object) -> Run:
    """One `hirag-oz mcp` process on stdio, driven through every call by the TypeScript client.
    `sdk_dir` comes first, so a skip costs nothing; `model` makes sure the run's ONNX export
    exists (XDG_CACHE_HOME, set by conftest) before the server starts, which only loads it."""
    tmp = tmp_path_factory.mktemp("mcp-ts")
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "report.pdf").write_bytes(text_pdf([[PDF_TEXT]]))

    calls = [
        *_valid_calls(docs),
        *_error_calls(docs),
        Call("query_facts_after_errors", "query_facts", {"subject": "billing"}),
    ]
    plan_calls = [{"tool": c.tool, "arguments": c.arguments} for c in calls]
    plan = {
        "command": sys.executable,
        "args": ["-m", "hirag_oz.cli", "mcp", "--data-dir", str(tmp / "data")],
        "env": {**os.environ, "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false"},
        "request_timeout_ms": 120_000,
        "calls": plan_calls,
    }
    started = time.monotonic()
    with (tmp / "server.log").open("w") as log:
        report = run_plan(plan, timeout=300, stderr=log)
    seconds = time.monotonic() - started
    print(f"TypeScript MCP client run: {seconds:.1f}s for {len(calls)} calls")
    assert len(report["results"]) == len(calls), report
    return Run(calls, report, seconds)


def _text(result: dict[str, Any]) -> str:
    content = result["content"] or []
    assert content and content[0]["type"] == "text", result
    return str(content[0]["text"])


def test_sdk_is_the_pinned_version(sdk_dir: Path) -> None:
    pinned = json.loads((Path(__file__).parent / "mcp_ts" / "package.json").read_text())
    assert sdk_version(sdk_dir) == pinned["dependencies"]["@modelcontextprotocol/sdk"]


def test_lists_the_tools(run: Run) -> None:
    assert run.report["server"]["name"] == "hirag-oz"
    listed = {t["name"]: t for t in run.report["tools"]}
    assert set(listed) == TOOLS
    for name, t in listed.items():
        assert t["inputSchema"]["type"] == "object", name
        assert t["outputSchema"] is not None and t["outputSchema"]["type"] == "object", name
    # Every listed tool is called with valid arguments below.
    assert {c.tool for c in run.calls if c.code is None} == set(listed)


@pytest.mark.parametrize("label", [*VALID_LABELS, "query_facts_after_errors"])
def test_valid_call_succeeds(run: Run, label: str) -> None:
    result = run.result(label)
    assert result.get("plan_error") is None, result
    assert result["sdk_error"] is None, (
        f"{label}: the TypeScript client rejected the result: {result}"
    )
    assert result["isError"] is False and result["ok"] is True, result
    structured = result["structuredContent"]
    assert isinstance(structured, dict), result
    assert json.loads(_text(result)) == structured


def test_valid_calls_return_what_was_stored(run: Run) -> None:
    stored = run.result("store_context")["structuredContent"]
    found = run.result("search_contexts")["structuredContent"]
    assert found["contexts"][0]["id"] == stored["id"]
    built = run.result("build_context")["structuredContent"]
    assert built["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert any("dark mode" in m["content"] for m in built["messages"])
    facts = run.result("query_facts")["structuredContent"]
    assert facts["facts"][0]["id"] == run.result("add_fact")["structuredContent"]["fact_id"]
    job = run.result("index_document")["structuredContent"]
    assert job["status"] == "succeeded" and job["regions"] >= 1
    regions = run.result("search_regions")["structuredContent"]["regions"]
    assert regions and regions[0]["doc_id"] == job["doc_id"]
    decoded = run.result("decode_regions")["structuredContent"]["results"]
    assert decoded[0]["text"] == PDF_TEXT
    assert run.result("query_facts_after_errors")["structuredContent"]["total"] == 1
    # The operations by id, on what the calls above stored.
    assert len(run.result("store_contexts")["structuredContent"]["ids"]) == 2
    got = run.result("get_context")["structuredContent"]
    assert got["id"] == stored["id"] and got["text"] == "The user prefers dark mode in every editor"
    updated = run.result("update_context")["structuredContent"]
    assert updated["metadata"] == {"topic": "prefs", "team": "design"}
    fact = run.result("get_fact")["structuredContent"]
    assert fact["id"] == run.result("add_fact")["structuredContent"]["fact_id"]
    assert fact["source_anchor"]["page"] == 2
    assert run.result("delete_fact")["structuredContent"]["deleted"] is True
    assert run.result("get_job")["structuredContent"] == job
    assert run.result("health")["structuredContent"]["status"] == "healthy"
    assert run.result("delete_context")["structuredContent"]["deleted"] is True
    # Deploys happen on Tuesdays, and the second item of store_contexts.
    assert run.result("clear_contexts")["structuredContent"]["cleared"] == 2
    appended = run.result("append_messages")["structuredContent"]
    assert [m["role"] for m in appended["messages"]] == ["user", "assistant"]
    prompt = run.result("session_context")["structuredContent"]
    assert [t["content"] for t in prompt["recent_turns"]] == [
        "Which theme do I like?",
        "Dark mode, everywhere.",
    ]
    assert run.result("list_sessions")["structuredContent"]["total"] == 1
    assert run.result("close_session")["structuredContent"]["state"] == "closed"
    assert run.result("delete_session")["structuredContent"]["messages_deleted"] == 3


@pytest.mark.parametrize("label", ERROR_LABELS)
def test_domain_error_is_an_error_result(run: Run, label: str) -> None:
    call = next(c for c in run.calls if c.label == label)
    result = run.result(label)
    assert result["sdk_error"] is None, (
        f"{call.tool} error result rejected by the TypeScript SDK client: "
        f"{result['sdk_error']['message']} (the server sent isError={result['isError']}, "
        f"structuredContent={json.dumps(result['structuredContent'])})"
    )
    assert result["isError"] is True, result
    envelope = json.loads(_text(result))
    assert set(envelope) == {"code", "message", "details"}, envelope
    assert envelope["code"] == call.code, envelope
    assert isinstance(envelope["message"], str) and envelope["message"]
    assert isinstance(envelope["details"], dict)
