"""hirag-oz as an MCP server: memory, prompt building, facts and documents as MCP tools.

`build_mcp_server(components)` registers one tool per operation over the library (the same
calls and the same JSON shapes as the HTTP API). `hirag-oz mcp` runs it over stdio (an MCP
client starts it on the user's machine) or over the SDK's streamable HTTP transport.

Errors: a `HiragError` becomes a tool result with `isError: true` whose text is the error
envelope `{"code", "message", "details"}` (also in `structuredContent`); arguments that do
not match a tool's input schema are a `VALIDATION_ERROR` envelope listing each field, as a
422 of the HTTP API; an unexpected failure is an `INTERNAL_ERROR` envelope and is logged.
The server keeps serving after any of them.

Library calls block (the store, the model, OCR); each runs in a worker thread so the event
loop keeps reading and answering messages.
"""

import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import pydantic
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field

from hirag_oz.api.facts import fact_out
from hirag_oz.api.schemas import (
    AnchorIn,
    BudgetIn,
    BuildResponse,
    FactInserted,
    FactQueryResponse,
    JobOut,
    SearchResponse,
    SnippetIn,
    StoreContextResponse,
    TurnIn,
    VisionDecodeResponse,
    VisionSearchResponse,
)
from hirag_oz.api.vision import decoded_out, job_out
from hirag_oz.config import Settings
from hirag_oz.context import Priority, Snippet, Turn
from hirag_oz.errors import (
    ConfigurationError,
    HiragError,
    InternalError,
    NotFoundError,
    ValidationError,
)
from hirag_oz.factory import Components, build_components
from hirag_oz.facts import Anchor, FactQuery, NewFact
from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.memory.models import NewContext
from hirag_oz.store.filters import parse_filter
from hirag_oz.vision import sources
from hirag_oz.vision.service import RegionFilters

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

INSTRUCTIONS = """\
hirag-oz is a context and memory service for this agent. Store what is worth remembering
(store_context) in three levels: Immediate (working memory of a session), ShortTerm, LongTerm.
Before answering, retrieve what is relevant (search_contexts) or ask for a whole prompt that
fits a token budget (build_context: system prompt, running brief, retrieved context, recent
turns). Record subject-predicate-object facts with their provenance (add_fact, query_facts).
Index local PDFs and images (index_document), find the regions that answer a question
(search_regions) and read them (decode_regions). Everything is scoped by agent_id (default
"default"). A failed call returns isError with {"code", "message", "details"}."""

_LEVELS = "Immediate | ShortTerm | LongTerm (aliases L1, L2, L3, snake_case)"
_FILTERS = (
    'Qdrant-shaped metadata filter: {"must"|"should"|"must_not": [{"key": "metadata.topic", '
    '"match": value} | {"key": k, "range": {"gte", "lte", "gt", "lt"}}]}'
)
_TIME = "ISO 8601 or epoch seconds"

AgentId = Annotated[
    str | None,
    Field(
        description="Tenant/agent scope; an agent only ever sees its own items. Default 'default'."
    ),
]
SessionId = Annotated[str | None, Field(description="Conversation/session scope (optional).")]

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


class _HiragMCPServer(MCPServer[Any]):
    """An MCPServer whose failed tool calls answer with hirag-oz's error envelope."""

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context[Any, Any] | None = None,
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, HiragError):
                error = cause
                if error.status >= 500:
                    logger.warning("tool %s failed: %s %s", name, error.code, error.message)
                else:
                    logger.info("tool %s refused: %s", name, error.code)
            elif isinstance(cause, pydantic.ValidationError) and not isinstance(
                exc, UnexpectedToolError
            ):
                error = schema_error(cause)
                logger.info("tool %s: arguments do not match its schema", name)
            elif name not in {tool.name for tool in await self.list_tools()}:
                error = NotFoundError(f"unknown tool {name!r}", {"tool": name})
            elif isinstance(exc, UnexpectedToolError):
                logger.error("tool %s raised an unexpected error", name, exc_info=cause or exc)
                error = InternalError("unexpected server error", {"tool": name})
            else:
                raise
            return error_result(error)


def schema_error(exc: pydantic.ValidationError) -> ValidationError:
    """Arguments that break a tool's input schema, field by field (as the API's 422)."""
    fields = [
        {
            "field": ".".join(str(part) for part in e.get("loc", ())),
            "message": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]
    return ValidationError("arguments do not match the tool's input schema", {"errors": fields})


def error_result(error: HiragError) -> CallToolResult:
    envelope = error.to_dict()
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(envelope, ensure_ascii=False))],
        structured_content=envelope,
        is_error=True,
    )


async def _run(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """A blocking library call, in a worker thread."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def build_mcp_server(components: Components, *, name: str = "hirag-oz") -> MCPServer[Any]:
    """An MCP server exposing `components` as tools. It does not own them: the caller
    closes them after the server stops."""
    memory, builder, facts, vision = (
        components.memory,
        components.context,
        components.facts,
        components.vision,
    )
    vision_settings = components.settings.vision
    try:
        server_version = package_version("hirag-oz")
    except PackageNotFoundError:
        server_version = ""
    server = _HiragMCPServer(name, instructions=INSTRUCTIONS, version=server_version)

    def tool(annotations: ToolAnnotations) -> Callable[[_F], _F]:
        """Register a tool; its docstring, on one line, is its description."""

        def register(fn: _F) -> _F:
            description = " ".join((fn.__doc__ or "").split())
            server.add_tool(fn, description=description, annotations=annotations)
            return fn

        return register

    # ---- memory ----------------------------------------------------------------------------

    @tool(_WRITES)
    async def store_context(
        text: Annotated[str, Field(description="The text to remember.")],
        level: Annotated[str, Field(description=f"Memory level: {_LEVELS}.")] = "ShortTerm",
        agent_id: AgentId = None,
        session_id: SessionId = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description="Native JSON kept with the item, filterable as metadata.<key>."),
        ] = None,
    ) -> StoreContextResponse:
        """Store one piece of context (a fact learned, a decision, a turn of the conversation)
        in the agent's memory. Returns its id, its size in tokens and its level once it is
        durable."""
        item = NewContext(
            text=text,
            level=level,
            agent_id=agent_id or DEFAULT_AGENT,
            session_id=session_id,
            metadata=metadata or {},
        )
        ref = (await _run(memory.store_many, [item]))[0]
        return StoreContextResponse(id=ref.id, token_count=ref.token_count, level=ref.level.value)

    @tool(_READ_ONLY)
    async def search_contexts(
        query: Annotated[str, Field(description="What to look for, in natural language.")],
        max_tokens: Annotated[
            int, Field(ge=1, description="Token budget for all the returned contexts together.")
        ] = 1000,
        levels: Annotated[
            list[str] | None, Field(description=f"Levels to search ({_LEVELS}); default all.")
        ] = None,
        agent_id: AgentId = None,
        session_id: SessionId = None,
        filters: Annotated[dict[str, Any] | None, Field(description=_FILTERS)] = None,
    ) -> SearchResponse:
        """The stored contexts most relevant to `query` whose token counts fit `max_tokens`,
        best first. Each has its id, text, level and relevance_score (0-1)."""
        result = await _run(
            memory.search,
            query,
            max_tokens,
            levels=levels,
            agent_id=agent_id or DEFAULT_AGENT,
            session_id=session_id,
            filters=parse_filter(filters),
        )
        return SearchResponse.model_validate(result.to_dict())

    @tool(_READ_ONLY)
    async def build_context(
        query: Annotated[
            str, Field(description="What the next model call is about; drives retrieval.")
        ],
        system_prompt: Annotated[str, Field(description="Sent first and unchanged.")],
        running_brief: Annotated[
            str, Field(description="The conversation's rolling summary so far.")
        ] = "",
        recent_turns: Annotated[
            list[TurnIn | str] | None,
            Field(description="The latest turns, oldest first; a plain string is a user turn."),
        ] = None,
        snippets: Annotated[
            list[SnippetIn] | None,
            Field(description="Text of your own to include, merged with the retrieved contexts."),
        ] = None,
        levels: Annotated[
            list[str] | None, Field(description=f"Levels to retrieve from ({_LEVELS}).")
        ] = None,
        budget: Annotated[
            BudgetIn | None,
            Field(description="Token slots for this call only; the others keep the configured."),
        ] = None,
        agent_id: AgentId = None,
        session_id: SessionId = None,
    ) -> BuildResponse:
        """The messages to send to the model now (OpenAI chat format), within the token budget:
        the system prompt unchanged, the running brief, the most relevant stored contexts and
        the recent turns; older turns are folded into the brief and an oversized brief is
        summarized. `allocation` says how the budget was spent, `actions` what was folded,
        summarized, dropped or cut."""
        built = await _run(
            builder.build,
            query,
            system_prompt=system_prompt,
            agent_id=agent_id,
            session_id=session_id,
            running_brief=running_brief,
            recent_turns=[
                t if isinstance(t, str) else Turn(t.role, t.content) for t in recent_turns or ()
            ],
            levels=levels,
            snippets=[
                Snippet(s.text, Priority.parse(s.priority), 1.0 if s.score is None else s.score)
                for s in snippets or ()
            ],
            budget=budget.model_dump(exclude_none=True) if budget else None,
        )
        return BuildResponse.model_validate(
            {
                "messages": built.messages,
                "system_prompt": built.system_prompt,
                "running_brief": built.running_brief,
                "recent_turns": [
                    {"role": t.role, "content": t.content} for t in built.recent_turns
                ],
                "snippets": [{**asdict(s), "priority": s.priority.label} for s in built.snippets],
                "allocation": asdict(built.allocation),
                "actions": asdict(built.actions),
            }
        )

    # ---- facts -----------------------------------------------------------------------------

    @tool(_WRITES.model_copy(update={"idempotent_hint": True}))
    async def add_fact(
        subject: Annotated[str, Field(description="What the fact is about.")],
        predicate: Annotated[str, Field(description="The relation, e.g. owned_by.")],
        object: Annotated[str, Field(description="The value or the other entity.")],
        confidence: Annotated[
            float,
            Field(ge=0, le=1, description="0-1; below [facts] confidence_threshold is refused."),
        ],
        datatype: Annotated[str | None, Field(description="Type of the object (optional).")] = None,
        source_doc: Annotated[
            str | None, Field(description="The document the fact comes from.")
        ] = None,
        source_anchor: Annotated[
            AnchorIn | None, Field(description="Where in the source (doc_id, page, region...).")
        ] = None,
        observed_at: Annotated[
            datetime | float | None, Field(description=f"{_TIME}; default now.")
        ] = None,
        valid_from: Annotated[
            datetime | float | None, Field(description=f"{_TIME}; default observed_at.")
        ] = None,
        valid_to: Annotated[datetime | float | None, Field(description=_TIME)] = None,
        agent_id: AgentId = None,
        exclusive: Annotated[
            bool,
            Field(
                description="End the validity of this subject's current facts with this "
                "predicate and another object (one object at a time)."
            ),
        ] = False,
    ) -> FactInserted:
        """Store a subject-predicate-object fact with its provenance, once: the same fact
        again returns the same fact_id with duplicate true. `closed` lists the facts whose
        validity this one ended."""
        new = NewFact(
            subject,
            predicate,
            object,
            confidence,
            agent_id=agent_id or DEFAULT_AGENT,
            datatype=datatype,
            source_doc=source_doc,
            source_anchor=Anchor(**source_anchor.model_dump()) if source_anchor else Anchor(),
            observed_at=observed_at,
            valid_from=valid_from,
            valid_to=valid_to,
            exclusive=exclusive,
        )
        done = await _run(facts.insert, new)
        return FactInserted(
            fact_id=done.fact_id, hash=done.hash, duplicate=done.duplicate, closed=list(done.closed)
        )

    @tool(_READ_ONLY)
    async def query_facts(
        subject: Annotated[str | None, Field(description="Exact subject.")] = None,
        predicate: Annotated[str | None, Field(description="Exact predicate.")] = None,
        object: Annotated[str | None, Field(description="Exact object.")] = None,
        source_doc: Annotated[str | None, Field(description="Exact source document.")] = None,
        min_confidence: Annotated[
            float | None, Field(ge=0, le=1, description="Only facts at least this confident.")
        ] = None,
        valid_at: Annotated[
            datetime | float | None, Field(description=f"What was true then ({_TIME}).")
        ] = None,
        text: Annotated[
            str | None, Field(description="Rank by meaning; combines with the filters.")
        ] = None,
        limit: Annotated[int, Field(ge=1, description="Page size.")] = 20,
        offset: Annotated[int, Field(ge=0, description="Facts to skip.")] = 0,
        agent_id: AgentId = None,
    ) -> FactQueryResponse:
        """The agent's facts matching every given filter, with `total` (all matches, not only
        this page); with `text`, ranked by meaning."""
        page = await _run(
            facts.query,
            FactQuery(
                subject=subject,
                predicate=predicate,
                object=object,
                source_doc=source_doc,
                min_confidence=min_confidence,
                agent_id=agent_id or DEFAULT_AGENT,
                valid_at=valid_at,
                text=text,
                limit=limit,
                offset=offset,
            ),
        )
        scores: list[float | None] = (
            list(page.scores) if page.scores is not None else [None] * len(page.facts)
        )
        return FactQueryResponse.model_validate(
            {
                "facts": [fact_out(f, s) for f, s in zip(page.facts, scores, strict=True)],
                "total": page.total,
            }
        )

    # ---- documents -------------------------------------------------------------------------

    def read_local(path: str) -> tuple[bytes, str]:
        given = Path(path).expanduser()
        if not given.is_absolute():
            raise ValidationError("path must be absolute", {"field": "path", "path": path})
        # The caller's own machine: without allowed paths, any file of it.
        roots = vision_settings.allowed_paths or [Path(given.anchor)]
        data = sources.read_file(str(given), roots, vision.max_bytes)
        return data, given.resolve().name

    @tool(_WRITES)
    async def index_document(
        path: Annotated[
            str,
            Field(
                description="Absolute path of a PDF, PNG, JPEG or TIFF on the machine running "
                "this server; inside vision.allowed_paths when that is set."
            ),
        ],
        ctx: Context[Any, Any],
        metadata: Annotated[
            dict[str, Any] | None, Field(description="JSON kept on every region.")
        ] = None,
        force_reindex: Annotated[
            bool, Field(description="Index again content already indexed.")
        ] = False,
        agent_id: AgentId = None,
    ) -> JobOut:
        """Index a local document now: pages are read (text layer, else OCR) into regions that
        search_regions finds and decode_regions reads. This MCP server runs on the user's
        machine, so the path is the user's own file. Answers when indexing is done, with the
        job (status, pages, regions; reused true when the same content was indexed already);
        progress is reported per page."""
        data, name = await _run(read_local, path)

        def progress(job: Any) -> None:
            # Best effort: progress never stops the indexing.
            with contextlib.suppress(Exception):
                anyio.from_thread.run(ctx.report_progress, job.pages_done, job.pages_total)

        job = await _run(
            vision.index_bytes,
            data,
            name,
            agent_id=agent_id,
            metadata=metadata,
            force_reindex=force_reindex,
            progress=progress,
        )
        if job.status == "failed" and job.error is not None:
            failure = HiragError(
                job.error["message"], {**job.error["details"], "job_id": job.job_id}
            )
            failure.code = job.error["code"]
            raise failure
        return JobOut.model_validate(job_out(job))

    @tool(_READ_ONLY)
    async def search_regions(
        query: Annotated[str, Field(description="What to find in the indexed documents.")],
        top_k: Annotated[int, Field(ge=1, le=50, description="How many regions at most.")] = 12,
        doc_id: Annotated[str | None, Field(description="Only this document.")] = None,
        type: Annotated[
            list[Literal["text", "table", "figure", "code"]] | None,
            Field(description="Only regions of these types."),
        ] = None,
        page: Annotated[int | None, Field(ge=1, description="Only this page (1-based).")] = None,
        agent_id: AgentId = None,
    ) -> VisionSearchResponse:
        """Regions of indexed documents ranked by hybrid (dense + BM25) similarity to `query`;
        each has region_id, doc_id, page, bbox, type, token_estimate, score and why_relevant.
        Read their text with decode_regions."""
        hits = await _run(
            vision.search,
            query,
            top_k,
            agent_id=agent_id,
            filters=RegionFilters(doc_id=doc_id, page=page, types=tuple(type or ())),
        )
        return VisionSearchResponse.model_validate(
            {
                "regions": [
                    {**h.region.to_dict(), "score": h.score, "why_relevant": h.why_relevant}
                    for h in hits
                ]
            }
        )

    @tool(_READ_ONLY)
    async def decode_regions(
        region_ids: Annotated[
            list[str], Field(min_length=1, description="Ids from search_regions, in order.")
        ],
        fidelity: Annotated[
            Literal["1x", "5x", "10x", "20x"] | None,
            Field(
                description="1x is exact (text layer, else full-resolution OCR); 5x, 10x, 20x "
                "OCR the region at 1/5, 1/10, 1/20 of its pixels: fewer tokens, less precise. "
                "Default vision.default_fidelity."
            ),
        ] = None,
        agent_id: AgentId = None,
    ) -> VisionDecodeResponse:
        """The text of each region at the chosen fidelity, in the order asked, with its
        confidence (1.0 for a text layer) and token count."""
        results = await _run(vision.decode, region_ids, fidelity, agent_id=agent_id)
        return VisionDecodeResponse.model_validate(decoded_out(results))

    return server


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout (by Python or by native code) goes to stderr meanwhile:
    on stdio, stdout is the protocol."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def serve_mcp(
    settings: Settings,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Run the MCP server until its client goes away (stdio: stdin closes) or SIGTERM/SIGINT;
    then close the components. Logs go to stderr; nothing else is written to stdout."""
    from hirag_oz.observability.logging import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    with stdout_to_stderr():
        # Index jobs left unfinished by a server are the HTTP service's to resume.
        parts = build_components(settings, start_jobs=False)
    interrupted = False
    try:
        if settings.hirag.maintenance_enabled:
            # Level moves, expiry and access-count writes, as in the HTTP service.
            parts.memory.start_maintenance()
        with stdout_to_stderr():
            server = build_mcp_server(parts)
        if transport == "stdio":
            interrupted = _serve_stdio(server)
        else:
            with stdout_to_stderr():
                _serve_http(server, host, port)
    finally:
        parts.close()
    if interrupted:
        # The SDK reads stdin in a worker thread, blocked in read() until stdin closes; it
        # would keep the process alive after a signal. Everything is closed: leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _serve_stdio(server: MCPServer[Any]) -> bool:
    """Serve until stdin closes (False) or SIGTERM/SIGINT (True)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        # While it serves, the SDK points fd 1 at stderr and writes the protocol to a
        # private copy of the real stdout, so stray output cannot corrupt a message.
        anyio.run(server.run_stdio_async)
    except KeyboardInterrupt:
        logger.info("mcp server interrupted")
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return False


def _serve_http(server: MCPServer[Any], host: str, port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(host=host)
    web = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    )

    def stop(signum: int, _frame: object) -> None:
        web.should_exit = True

    # uvicorn re-raises the signal after its graceful shutdown, which would kill the process
    # before the components are closed; handling it here lets the shutdown finish.
    web.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("mcp server on http://%s:%d/mcp", host, port)
    web.run()
    if not web.started:
        raise ConfigurationError(f"the MCP server could not listen on {host}:{port}")
