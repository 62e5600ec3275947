"""hirag-oz as an MCP server: every catalogued operation as an MCP tool of the same name.

`build_mcp_server(hirag)` lists one tool per operation, with the request model's JSON
schema as its input schema and the response model's as its output schema, and runs a call
through the same handler as the library and the HTTP API. `hirag-oz mcp` runs it over
stdio (an MCP client starts it on the user's machine) or over the SDK's streamable HTTP
transport.

Errors: a failed call is a tool result with `isError: true` whose one text content is the
error envelope `{"code", "message", "details"}`; it carries no `structuredContent`, which a
strict client would check against the success shape of the output schema. Arguments that
break the input schema are a `VALIDATION_ERROR` listing each field (as the HTTP API's 422);
an unknown tool is `NOT_FOUND`; an unexpected failure is `INTERNAL_ERROR`, logged. The
server keeps serving after any of them.

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
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
import pydantic
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations

from hirag_oz.config import Settings
from hirag_oz.errors import ConfigurationError, HiragError, InternalError, NotFoundError, wire
from hirag_oz.handlers.documents import PROGRESS
from hirag_oz.kernel.scope import Caller, caller_in
from hirag_oz.keys import KeyStore, key_store
from hirag_oz.service import Hirag
from hirag_oz.vision.jobs import Job
from hirag_oz_client._client import schema_error
from hirag_oz_client.catalogue import BY_NAME, OPERATIONS, Operation

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
hirag-oz is a context and memory service for this agent. Store what is worth remembering
(store_context) in three levels: Immediate (working memory of a session), ShortTerm, LongTerm.
Before answering, retrieve what is relevant (search_contexts) or ask for a whole prompt that
fits a token budget (build_context: system prompt, running brief, retrieved context, recent
turns). Record subject-predicate-object facts with their provenance (add_fact, query_facts).
Index local PDFs and images (index_document with wait true and an absolute path), find the
regions that answer a question (search_regions) and read them (decode_regions). Everything
is scoped by agent_id (default "default"). A failed call returns isError with
{"code", "message", "details"}."""


def tool_of(op: Operation[Any, Any, Any]) -> Tool:
    """The MCP tool of an operation: its schemas are the request and response models'."""
    return Tool(
        name=op.name,
        description=op.doc,
        input_schema=op.request.model_json_schema(),
        output_schema=op.response.model_json_schema(mode="serialization"),
        annotations=ToolAnnotations(
            read_only_hint=op.read_only,
            destructive_hint=op.destructive if not op.read_only else None,
            idempotent_hint=op.idempotent if not op.read_only else None,
            open_world_hint=False,
        ),
    )


def error_result(error: HiragError) -> CallToolResult:
    """A failed call: the envelope as text, and no structured content."""
    text = json.dumps(error.to_dict(), ensure_ascii=False, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def ok_result(result: pydantic.BaseModel) -> CallToolResult:
    structured = result.model_dump(mode="json")
    text = json.dumps(structured, ensure_ascii=False)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured
    )


class _HiragMCPServer(MCPServer[Any]):
    """An MCPServer whose tools are the catalogue's operations over one `Hirag`."""

    def __init__(self, hirag: Hirag, **options: Any) -> None:
        super().__init__(**options)
        self.hirag = hirag
        self._tools = [tool_of(op) for op in OPERATIONS]

    async def list_tools(self) -> list[Tool]:
        return list(self._tools)

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context[Any, Any] | None = None,
    ) -> CallToolResult:
        op = BY_NAME.get(name)
        try:
            if op is None:
                raise NotFoundError(f"unknown tool {name!r}", {"tool": name})
            try:
                request = op.request.model_validate(arguments)
            except pydantic.ValidationError as exc:
                raise schema_error(exc) from None
            result = await self._run(op, request, context)
        except HiragError as error:
            if wire(error).status >= 500:
                logger.warning("tool %s failed: %s %s", name, error.code, error.message)
            else:
                logger.info("tool %s refused: %s", name, error.code)
            return error_result(error)
        except Exception:
            logger.error("tool %s raised an unexpected error", name, exc_info=True)
            return error_result(InternalError("unexpected server error", {"tool": name}))
        return ok_result(result)

    async def _run(
        self,
        op: Operation[Any, Any, Any],
        request: pydantic.BaseModel,
        context: Context[Any, Any] | None,
    ) -> pydantic.BaseModel:
        call: Callable[[], pydantic.BaseModel] = functools.partial(
            self.hirag.call, op, request, caller_of(context)
        )
        if context is not None and op.name == "index_document":

            def progress(job: Job) -> None:
                # Best effort: progress never stops the indexing.
                with contextlib.suppress(Exception):
                    anyio.from_thread.run(context.report_progress, job.pages_done, job.pages_total)

            def indexed() -> pydantic.BaseModel:
                token = PROGRESS.set(progress)
                try:
                    return call()
                finally:
                    PROGRESS.reset(token)

            return await anyio.to_thread.run_sync(indexed)
        return await anyio.to_thread.run_sync(call)


def caller_of(context: Context[Any, Any] | None) -> Caller:
    """The caller of an MCP request over HTTP (its key's, put there by the auth middleware);
    on stdio, and over HTTP without keys, the machine's own user."""
    try:
        request = context.request_context.request if context is not None else None
    except ValueError:  # outside a request
        request = None
    return caller_in(getattr(request, "scope", None))


def build_mcp_server(hirag: Hirag, *, name: str = "hirag-oz") -> MCPServer[Any]:
    """An MCP server exposing `hirag`'s operations as tools. It does not own `hirag`: the
    caller closes it after the server stops."""
    try:
        server_version = package_version("hirag-oz")
    except PackageNotFoundError:
        server_version = ""
    return _HiragMCPServer(hirag, name=name, instructions=INSTRUCTIONS, version=server_version)


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
    # Index jobs left unfinished by a server are the HTTP service's to resume.
    # Over HTTP, as on the HTTP service, documents come only from `[vision] allowed_paths`:
    # the caller may be on another machine.
    hirag = Hirag(settings, local_files=transport == "stdio")
    interrupted = False
    try:
        with stdout_to_stderr():
            hirag.open_all()
        if settings.hirag.maintenance_enabled:
            # Level moves, expiry, access-count writes and idle sessions, as in the HTTP
            # service.
            hirag.contexts.start_maintenance()
            idle = settings.sessions.idle_secs
            if idle is not None:
                hirag.sessions.start_maintenance(settings.hirag.maintenance_interval_secs, idle)
        with stdout_to_stderr():
            server = build_mcp_server(hirag)
        if transport == "stdio":
            interrupted = _serve_stdio(server)
        else:
            with stdout_to_stderr():
                _serve_http(server, host, port, key_store(settings))
    finally:
        hirag.close()
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


def _serve_http(server: MCPServer[Any], host: str, port: int, keys: KeyStore) -> None:
    import uvicorn

    from hirag_oz.api.middleware import AuthMiddleware

    # With keys in force, /mcp needs one, and each tool call runs as its key's caller.
    app = AuthMiddleware(server.streamable_http_app(host=host), keys, None, prefix="/mcp")
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
