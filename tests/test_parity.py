"""Every catalogued operation through every surface gives the same JSON.

One scenario covers the whole catalogue (the test fails if an operation is missing from it,
or from a surface). It runs four times, each on a fresh data directory: through the library
object (`Hirag`'s methods), the HTTP client against the real server on loopback, an MCP
client session (the official Python SDK's `Client`, connected to our MCP server), and the
CLI with `--json`. Errors are part of the scenario: their envelopes must agree too. Ids that
each run draws anew (context ids, job ids) are numbered in the order they appear, and fields
that hold the time of the run are left out; everything else must be equal.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from mcp import Client as McpClient

from hirag_oz.api.app import create_app
from hirag_oz.cli import cli
from hirag_oz.client import Client
from hirag_oz.commands import _kind
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.errors import HiragError
from hirag_oz.mcp_server import build_mcp_server
from hirag_oz.service import Hirag
from hirag_oz_client import catalogue
from hirag_oz_client.catalogue import BY_NAME, OPERATIONS, Operation
from tests.conftest import ServerThread
from tests.vision_samples import text_pdf

AGENT = "parity"
T0 = "2027-01-15T10:00:00+00:00"
T1 = "2027-01-15T12:00:00+00:00"
UNKNOWN = "00000000-0000-4000-8000-000000000000"

# Fields that hold the moment a run did something, not what it did.
TIMING = {
    "retrieval_time_ms",
    "stored_at",
    "created_at",
    "started_at",
    "finished_at",
    "uptime_secs",
    "checked_at",
    "response_time_ms",
    "first_at",
    "last_at",
    # A message's order in its session: a clock in microseconds, so that it keeps rising
    # across restarts.
    "seq",
    "next_after",
}
_DRAWN = re.compile(
    r"^(?:job_[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12})$"
)

Fields = dict[str, Any]
Results = list[dict[str, Any]]


@dataclass(frozen=True)
class Step:
    op: str
    fields: Callable[[Results], Fields]
    fails: bool = False


def _steps(document: Path) -> list[Step]:
    def fixed(**fields: Any) -> Callable[[Results], Fields]:
        return lambda _: fields

    return [
        Step(
            "store_context",
            fixed(
                text="The billing service is owned by the payments team",
                level="LongTerm",
                agent_id=AGENT,
                metadata={"topic": "ownership"},
                timestamp=T0,
            ),
        ),
        Step(
            "store_contexts",
            fixed(
                items=[
                    {"text": "Deploys happen on Tuesdays", "agent_id": AGENT, "timestamp": T0},
                    {
                        "text": "Standup is at nine",
                        "level": "Immediate",
                        "agent_id": AGENT,
                        "session_id": "s1",
                        "timestamp": T0,
                    },
                ]
            ),
        ),
        Step(
            "search_contexts",
            fixed(query="who owns billing?", max_tokens=200, agent_id=AGENT, as_of=T1),
        ),
        Step("get_context", lambda r: {"context_id": r[0]["id"], "agent_id": AGENT}),
        Step(
            "update_context",
            lambda r: {
                "context_id": r[0]["id"],
                "agent_id": AGENT,
                "metadata": {"team": "payments"},
            },
        ),
        Step(
            "build_context",
            fixed(
                query="When do we deploy?",
                system_prompt="You are the release assistant.",
                agent_id=AGENT,
                running_brief="Release 2.4 is in its final week.",
                recent_turns=["Did the load test pass?", {"role": "assistant", "content": "Yes."}],
                snippets=[{"text": "Freeze starts Wednesday.", "priority": "High"}],
                levels=["ShortTerm", "LongTerm"],
            ),
        ),
        Step(
            "add_fact",
            fixed(
                subject="billing",
                predicate="owned_by",
                object="payments team",
                confidence=0.9,
                agent_id=AGENT,
                source_doc="org.pdf",
                source_anchor={"doc_id": "org.pdf", "page": 2},
                observed_at=T0,
            ),
        ),
        Step("query_facts", fixed(predicate="owned_by", agent_id=AGENT)),
        Step("get_fact", lambda r: {"fact_id": r[6]["fact_id"], "agent_id": AGENT}),
        Step("delete_fact", lambda r: {"fact_id": r[6]["fact_id"], "agent_id": AGENT}),
        Step(
            "index_document",
            fixed(doc_url=str(document), agent_id=AGENT, metadata={"k": 1}, wait=True),
        ),
        Step("get_job", lambda r: {"job_id": r[10]["job_id"]}),
        Step("search_regions", fixed(query="depot budget", agent_id=AGENT, top_k=3)),
        Step(
            "decode_regions",
            lambda r: {
                "region_ids": [r[12]["regions"][0]["region_id"]],
                "fidelity": "1x",
                "agent_id": AGENT,
            },
        ),
        Step("delete_context", lambda r: {"context_id": r[0]["id"], "agent_id": AGENT}),
        Step("clear_contexts", fixed(level="ShortTerm", agent_id=AGENT)),
        Step(
            "append_messages",
            fixed(
                session_id="chat-1",
                agent_id=AGENT,
                user_id="u1",
                messages=[
                    {
                        "role": "user",
                        "content": "I adopted a dog named Biscuit",
                        "name": "Ana",
                        "timestamp": T0,
                        "message_id": "m1",
                    },
                    {
                        "role": "assistant",
                        "content": "Biscuit is a lovely name.",
                        "timestamp": T0,
                        "message_id": "m2",
                    },
                ],
            ),
        ),
        Step(
            "append_messages",
            fixed(
                session_id="chat-1",
                agent_id=AGENT,
                messages=[
                    {"role": "assistant", "content": "again", "message_id": "m2"},
                    {"role": "user", "content": "Who owns billing?", "timestamp": T1},
                ],
            ),
        ),
        Step(
            "session_context",
            fixed(session_id="chat-1", agent_id=AGENT, system_prompt="You are helpful."),
        ),
        Step("get_session", fixed(session_id="chat-1", agent_id=AGENT)),
        Step("list_sessions", fixed(agent_id=AGENT)),
        Step("list_messages", fixed(session_id="chat-1", agent_id=AGENT, limit=2)),
        Step(
            "update_brief",
            fixed(session_id="chat-1", agent_id=AGENT, brief="Ana adopted a dog, Biscuit."),
        ),
        Step("close_session", fixed(session_id="chat-1", agent_id=AGENT)),
        Step("delete_session", fixed(session_id="chat-1", agent_id=AGENT)),
        Step("health", fixed()),
        Step("get_context", fixed(context_id=UNKNOWN), fails=True),
        Step("search_contexts", fixed(query="   ", max_tokens=10), fails=True),
        Step(
            "add_fact",
            fixed(subject="a", predicate="b", object="c", confidence=0.1, agent_id=AGENT),
            fails=True,
        ),
        Step("get_job", fixed(job_id="job_" + "0" * 32), fails=True),
        Step("get_session", fixed(session_id="chat-1", agent_id=AGENT), fails=True),
    ]


# ---- the surfaces: each runs one step and answers its JSON (or the error envelope) -------


Surface = Callable[[Operation[Any, Any, Any], Fields], dict[str, Any]]


def _library(hirag: Hirag) -> Surface:
    def run(op: Operation[Any, Any, Any], fields: Fields) -> dict[str, Any]:
        try:
            result = getattr(hirag, op.name)(**fields)
        except HiragError as error:
            return {"error": error.to_dict()}
        dumped: dict[str, Any] = result.model_dump(mode="json")
        return dumped

    return run


def _http(client: Client) -> Surface:
    def run(op: Operation[Any, Any, Any], fields: Fields) -> dict[str, Any]:
        try:
            result = getattr(client, op.name)(**fields)
        except HiragError as error:
            return {"error": error.to_dict()}
        dumped: dict[str, Any] = result.model_dump(mode="json")
        return dumped

    return run


def _cli_args(op: Operation[Any, Any, Any], fields: Fields) -> list[str]:
    """The command line of `op` with `fields`, built from the request model alone."""
    args = [op.name.replace("_", "-")]
    positional = [name for name in op.arguments if name in fields]
    for name in positional:
        value = fields[name]
        args += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for name, value in fields.items():
        if name in positional:
            continue
        kind, _ = _kind(op.request.model_fields[name].annotation)
        flag = "--" + name.replace("_", "-")
        if kind == "flag":
            args.append(flag if value else f"--no-{flag[2:]}")
        elif kind == "many":
            for item in value:
                args += [flag, str(item)]
        elif kind == "json":
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


def _cli(data_dir: Path) -> Surface:
    runner = CliRunner()

    def run(op: Operation[Any, Any, Any], fields: Fields) -> dict[str, Any]:
        args = [*_cli_args(op, fields), "--data-dir", str(data_dir), "--json"]
        done = runner.invoke(cli, args, env={"HIRAG_HIRAG__MAINTENANCE_ENABLED": "false"})
        if isinstance(done.exception, HiragError):
            return {"error": done.exception.to_dict()}
        assert done.exit_code == 0, f"hirag-oz {shlex.join(args)}: {done.output}"
        body: dict[str, Any] = json.loads(done.stdout)
        return body

    return run


def _mcp_run(hirag: Hirag, steps: list[Step]) -> Results:
    """The scenario through an MCP client session with our server."""
    server = build_mcp_server(hirag)

    async def scenario() -> Results:
        results: Results = []
        async with McpClient(server) as session:
            for step in steps:
                fields = json.loads(json.dumps(step.fields(results)))
                called = await session.call_tool(step.op, fields)
                text = called.content[0].text  # type: ignore[union-attr]
                if called.is_error:
                    assert called.structured_content is None
                    results.append({"error": json.loads(text)})
                else:
                    assert json.loads(text) == called.structured_content
                    results.append(called.structured_content or {})
        return results

    return anyio.run(scenario)


def _run(surface: Surface, steps: list[Step]) -> Results:
    results: Results = []
    for step in steps:
        results.append(surface(BY_NAME[step.op], step.fields(results)))
    return results


# ---- comparing ---------------------------------------------------------------------------


def normalized(results: Results) -> Any:
    """The results with drawn ids numbered by first appearance, timing fields left out and
    floats rounded (recency is measured against the clock where no as_of is given)."""
    numbers: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            # The data disk's free space is the machine's, measured anew at each call.
            left_out = TIMING | ({"message"} if value.get("name") == "data_disk" else set())
            return {k: walk(v) for k, v in value.items() if k not in left_out}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and _DRAWN.match(value):
            return numbers.setdefault(value, f"<id {len(numbers) + 1}>")
        if isinstance(value, float):
            return round(value, 4)
        return value

    return walk(results)


def _settings(data_dir: Path, documents: Path) -> Settings:
    return Settings(  # type: ignore[arg-type]
        server={"data_dir": data_dir},
        hirag={"maintenance_enabled": False},
        rate_limit={"enabled": False},
        vision={"allowed_paths": [documents]},
    )


@pytest.fixture
def document(tmp_path: Path) -> Path:
    folder = tmp_path / "documents"
    folder.mkdir()
    path = folder / "depot.pdf"
    path.write_bytes(text_pdf([["The Porto depot budget grew by nine percent this year."]]))
    return path


@pytest.fixture
def library(model: OnnxMiniLMEmbedder, tmp_path: Path, document: Path) -> Iterator[Hirag]:
    with Hirag(_settings(tmp_path / "library", document.parent), model=model) as hirag:
        yield hirag


def test_the_scenario_covers_the_catalogue(document: Path) -> None:
    covered = {step.op for step in _steps(document) if not step.fails}
    assert covered == {op.name for op in OPERATIONS}


def test_every_surface_answers_every_operation_alike(
    model: OnnxMiniLMEmbedder, tmp_path: Path, document: Path, library: Hirag
) -> None:
    steps = _steps(document)
    by_surface: dict[str, Results] = {"library": _run(_library(library), steps)}

    settings = _settings(tmp_path / "http", document.parent)
    with ServerThread(create_app(settings, model=model)) as server, Client(server.url) as client:
        by_surface["http"] = _run(_http(client), steps)

    with Hirag(_settings(tmp_path / "mcp", document.parent), model=model) as hirag:
        by_surface["mcp"] = _mcp_run(hirag, steps)

    cli_settings = _settings(tmp_path / "cli", document.parent)
    by_surface["cli"] = _run(_cli(cli_settings.server.data_dir), steps)

    expected = by_surface["library"]
    done = {step.op: result for step, result in zip(steps, expected, strict=True) if not step.fails}
    # The scenario did what it says, so that agreeing means something.
    assert expected[2]["contexts"][0]["text"].startswith("The billing service")
    assert (
        done["index_document"]["status"] == "succeeded" and done["index_document"]["regions"] == 1
    )
    assert done["decode_regions"]["results"][0]["text"].startswith("The Porto depot budget")
    assert done["clear_contexts"]["cleared"] == 1
    assert done["health"]["status"] in ("healthy", "degraded")
    appended = [r for step, r in zip(steps, expected, strict=True) if step.op == "append_messages"]
    assert [m["duplicate"] for m in appended[1]["messages"]] == [True, False]
    assert appended[1]["session"]["message_count"] == 3
    assert done["session_context"]["recent_turns"][-1]["content"] == "Who owns billing?"
    assert done["list_messages"]["next_after"] is not None
    assert done["close_session"]["levels"]["LongTerm"] == 3
    assert done["delete_session"]["messages_deleted"] == 4  # three messages and the summary
    assert [r["error"]["code"] for r in expected[-5:]] == [
        "NOT_FOUND",
        "VALIDATION_ERROR",
        "VALIDATION_ERROR",
        "NOT_FOUND",
        "NOT_FOUND",
    ]
    for name, results in by_surface.items():
        for index, (got, want) in enumerate(
            zip(normalized(results), normalized(expected), strict=True)
        ):
            assert got == want, f"{name}, step {index} ({steps[index].op})"


def test_cli_json_is_the_http_body(
    model: OnnxMiniLMEmbedder, tmp_path: Path, document: Path
) -> None:
    """`--json` prints the response model's JSON, which is what the server sends."""
    op = catalogue.SEARCH_CONTEXTS
    fields = {"query": "anything", "max_tokens": 50}
    done = CliRunner().invoke(
        cli, [*_cli_args(op, fields), "--data-dir", str(tmp_path / "d"), "--json"]
    )
    assert done.exit_code == 0, done.output
    body = json.loads(done.stdout)
    assert op.response.model_validate(body).model_dump(mode="json") == body
