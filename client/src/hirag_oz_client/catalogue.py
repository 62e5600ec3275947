"""The operation catalogue: every operation of the service, declared once.

An `Operation` names the operation, its request and response models, its HTTP route, the
errors it may raise and its one-line doc. The library object, the HTTP routes, the MCP
tools, the CLI commands and both clients are generated from these declarations, under the
same name everywhere (`store_context` is `hirag.store_context(...)`, the MCP tool
`store_context`, the command `hirag-oz store-context`, `client.store_context(...)`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, cast

from pydantic import BaseModel

from hirag_oz_client import errors as e
from hirag_oz_client import models as m

P = ParamSpec("P")
Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

_PATH_PARAM = re.compile(r"{(\w+)}")

_INPUT: tuple[type[e.HiragError], ...] = (e.ValidationError,)
_SCOPED: tuple[type[e.HiragError], ...] = (e.ValidationError, e.NotFoundError)
_EMBEDS: tuple[type[e.HiragError], ...] = (e.UpstreamError,)


@dataclass(frozen=True)
class Operation(Generic[P, Q, R]):
    """One operation of the service. `request` is the request model's class; its fields
    are every input (path and query parameters included)."""

    name: str
    group: str
    doc: str
    method: str
    path: str
    request: type[Q]
    response: type[R]
    status: int = 200
    """The HTTP status of a success; 200 instead when the response says `duplicate`: what
    the call would create was there already."""
    errors: tuple[type[e.HiragError], ...] = ()
    query: tuple[str, ...] = ()
    """Fields sent as query parameters (besides those of the path); for GET and DELETE,
    every field not in the path."""
    aliases: tuple[tuple[str, str], ...] = ()
    """More (method, path) routes to the same operation, every field in the JSON body."""
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    arguments: tuple[str, ...] = ()
    """Fields the CLI takes as positional arguments."""

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))

    @property
    def query_fields(self) -> tuple[str, ...]:
        if self.method in ("GET", "DELETE"):
            return tuple(f for f in self.request.model_fields if f not in self.path_fields)
        return self.query

    @property
    def body_fields(self) -> tuple[str, ...]:
        if self.method in ("GET", "DELETE"):
            return ()
        taken = {*self.path_fields, *self.query_fields}
        return tuple(f for f in self.request.model_fields if f not in taken)

    def url_path(self, request: BaseModel) -> str:
        """The path with the request's path parameters filled in."""
        values = request.model_dump(include=set(self.path_fields))
        return _PATH_PARAM.sub(lambda found: _quote(str(values[found.group(1)])), self.path)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def declare(
    name: str,
    group: str,
    doc: str,
    method: str,
    path: str,
    request: Callable[P, Q],
    response: type[R],
    **options: Any,
) -> Operation[P, Q, R]:
    """An operation whose generated methods take the request model's fields (P)."""
    model = cast("type[Q]", request)
    op: Operation[P, Q, R] = Operation(name, group, doc, method, path, model, response, **options)
    return op


STORE_CONTEXT = declare(
    "store_context",
    "contexts",
    "Store one context (a fact learned, a decision, a turn); answers once it is durable.",
    "POST",
    "/api/v1/contexts",
    m.StoreContextRequest,
    m.StoreContextResponse,
    status=201,
    errors=(*_INPUT, *_EMBEDS, e.InsufficientStorageError),
    arguments=("text",),
)
STORE_CONTEXTS = declare(
    "store_contexts",
    "contexts",
    "Store many contexts with one embedding batch: all of them or none.",
    "POST",
    "/api/v1/contexts/batch",
    m.StoreContextsRequest,
    m.StoreContextsResponse,
    status=201,
    errors=(*_INPUT, *_EMBEDS, e.InsufficientStorageError),
)
SEARCH_CONTEXTS = declare(
    "search_contexts",
    "contexts",
    "The stored contexts most relevant to a query whose tokens fit max_tokens, best first.",
    "POST",
    "/api/v1/contexts/search",
    m.SearchContextsRequest,
    m.SearchContextsResponse,
    errors=(*_INPUT, *_EMBEDS),
    read_only=True,
    arguments=("query",),
)
GET_CONTEXT = declare(
    "get_context",
    "contexts",
    "One stored context by id, with its text, level, scores, scope and metadata.",
    "GET",
    "/api/v1/contexts/{context_id}",
    m.GetContextRequest,
    m.ContextOut,
    errors=_SCOPED,
    read_only=True,
    arguments=("context_id",),
)
UPDATE_CONTEXT = declare(
    "update_context",
    "contexts",
    "Change a context's text (embedded again), merge its metadata, or move it to a level.",
    "PATCH",
    "/api/v1/contexts/{context_id}",
    m.UpdateContextRequest,
    m.ContextOut,
    errors=(*_SCOPED, *_EMBEDS),
    query=("agent_id",),
    idempotent=True,
    arguments=("context_id",),
)
DELETE_CONTEXT = declare(
    "delete_context",
    "contexts",
    "Delete one stored context by id, from whichever level holds it.",
    "DELETE",
    "/api/v1/contexts/{context_id}",
    m.DeleteContextRequest,
    m.DeletedResponse,
    errors=_SCOPED,
    aliases=(("POST", "/api/v1/contexts/delete"),),
    destructive=True,
    idempotent=True,
    arguments=("context_id",),
)
CLEAR_CONTEXTS = declare(
    "clear_contexts",
    "contexts",
    "Delete every context of a level (only one agent's when agent_id is given).",
    "POST",
    "/api/v1/contexts/clear",
    m.ClearContextsRequest,
    m.ClearedResponse,
    errors=_INPUT,
    destructive=True,
    idempotent=True,
    arguments=("level",),
)
BUILD_CONTEXT = declare(
    "build_context",
    "prompts",
    "The messages to send to the model now, within the token budget: system prompt, running "
    "brief, retrieved context and recent turns; older turns folded into the brief.",
    "POST",
    "/api/v1/context/build",
    m.BuildContextRequest,
    m.BuildContextResponse,
    errors=(*_INPUT, *_EMBEDS),
    read_only=True,
    arguments=("query",),
)
ADD_FACT = declare(
    "add_fact",
    "facts",
    "Store a subject-predicate-object fact with its provenance, once: the same fact again "
    "answers the same fact_id with duplicate true.",
    "POST",
    "/api/v1/facts",
    m.AddFactRequest,
    m.AddFactResponse,
    status=201,
    errors=(*_INPUT, *_EMBEDS, e.InsufficientStorageError),
    idempotent=True,
    arguments=("subject", "predicate", "object"),
)
QUERY_FACTS = declare(
    "query_facts",
    "facts",
    "The facts matching every given filter, with the total that match; text ranks by meaning.",
    "POST",
    "/api/v1/facts/query",
    m.QueryFactsRequest,
    m.QueryFactsResponse,
    errors=(*_INPUT, *_EMBEDS),
    read_only=True,
)
GET_FACT = declare(
    "get_fact",
    "facts",
    "One fact by id, with its provenance and its validity over time.",
    "GET",
    "/api/v1/facts/{fact_id}",
    m.GetFactRequest,
    m.FactOut,
    errors=_SCOPED,
    read_only=True,
    arguments=("fact_id",),
)
DELETE_FACT = declare(
    "delete_fact",
    "facts",
    "Delete one fact by id: no query finds it afterwards, whatever its validity.",
    "DELETE",
    "/api/v1/facts/{fact_id}",
    m.DeleteFactRequest,
    m.DeletedResponse,
    errors=_SCOPED,
    destructive=True,
    idempotent=True,
    arguments=("fact_id",),
)
INDEX_DOCUMENT = declare(
    "index_document",
    "documents",
    "Index a PDF or image into regions that search_regions finds and decode_regions reads; "
    "answers with the job, queued (or done with wait).",
    "POST",
    "/api/v1/vision/index",
    m.IndexDocumentRequest,
    m.JobOut,
    status=202,
    errors=(*_INPUT, e.PermissionDeniedError, e.RateLimitedError, *_EMBEDS),
    arguments=("doc_url",),
)
GET_JOB = declare(
    "get_job",
    "documents",
    "An index job's status and progress; a failed job carries an error envelope.",
    "GET",
    "/api/v1/vision/index/jobs/{job_id}",
    m.GetJobRequest,
    m.JobOut,
    errors=(e.NotFoundError,),
    read_only=True,
    arguments=("job_id",),
)
SEARCH_REGIONS = declare(
    "search_regions",
    "documents",
    "Regions of indexed documents ranked by hybrid (dense + BM25) similarity to a query.",
    "POST",
    "/api/v1/vision/search",
    m.SearchRegionsRequest,
    m.SearchRegionsResponse,
    errors=(*_INPUT, *_EMBEDS),
    read_only=True,
    arguments=("query",),
)
DECODE_REGIONS = declare(
    "decode_regions",
    "documents",
    "Each region's text at a fidelity (1x exact; 5x, 10x, 20x fewer tokens, less precise).",
    "POST",
    "/api/v1/vision/decode",
    m.DecodeRegionsRequest,
    m.DecodeRegionsResponse,
    errors=(*_SCOPED, *_EMBEDS),
    read_only=True,
    arguments=("region_ids",),
)
APPEND_MESSAGES = declare(
    "append_messages",
    "sessions",
    "Append messages to a session (created on first use), in order; a message whose "
    "message_id the session has is not stored again. Older messages fold into the brief.",
    "POST",
    "/api/v1/sessions/{session_id}/messages",
    m.AppendMessagesRequest,
    m.AppendMessagesResponse,
    status=201,
    errors=(*_INPUT, e.ConflictError, *_EMBEDS, e.InsufficientStorageError),
    idempotent=True,
    arguments=("session_id",),
)
SESSION_CONTEXT = declare(
    "session_context",
    "sessions",
    "The session's next prompt within the token budget: its brief, its newest messages "
    "verbatim, and memories from elsewhere (other sessions, contexts, facts valid now).",
    "POST",
    "/api/v1/sessions/{session_id}/context",
    m.SessionContextRequest,
    m.BuildContextResponse,
    errors=(*_SCOPED, *_EMBEDS),
    read_only=True,
    arguments=("session_id",),
)
GET_SESSION = declare(
    "get_session",
    "sessions",
    "A session: its brief, state, counts, token total, first and last activity, levels.",
    "GET",
    "/api/v1/sessions/{session_id}",
    m.GetSessionRequest,
    m.SessionOut,
    errors=_SCOPED,
    read_only=True,
    arguments=("session_id",),
)
LIST_SESSIONS = declare(
    "list_sessions",
    "sessions",
    "The sessions of an agent (or of one of its users), most recently active first.",
    "GET",
    "/api/v1/sessions",
    m.ListSessionsRequest,
    m.ListSessionsResponse,
    errors=_INPUT,
    read_only=True,
)
LIST_MESSAGES = declare(
    "list_messages",
    "sessions",
    "A page of a session's messages, oldest first, on whichever level they are now.",
    "GET",
    "/api/v1/sessions/{session_id}/messages",
    m.ListMessagesRequest,
    m.ListMessagesResponse,
    errors=_SCOPED,
    read_only=True,
    arguments=("session_id",),
)
UPDATE_BRIEF = declare(
    "update_brief",
    "sessions",
    "Replace a session's running brief; later folds summarize into the new one.",
    "PUT",
    "/api/v1/sessions/{session_id}/brief",
    m.UpdateBriefRequest,
    m.SessionOut,
    errors=_SCOPED,
    query=("agent_id",),
    idempotent=True,
    arguments=("session_id",),
)
CLOSE_SESSION = declare(
    "close_session",
    "sessions",
    "Consolidate a session: its messages move to LongTerm and its summary is stored there, "
    "linked to it. Appending again reopens it.",
    "POST",
    "/api/v1/sessions/{session_id}/close",
    m.CloseSessionRequest,
    m.SessionOut,
    errors=(*_SCOPED, *_EMBEDS),
    idempotent=True,
    arguments=("session_id",),
)
DELETE_SESSION = declare(
    "delete_session",
    "sessions",
    "Delete a session: its messages on every level, its brief and its summary.",
    "DELETE",
    "/api/v1/sessions/{session_id}",
    m.DeleteSessionRequest,
    m.DeletedSessionResponse,
    errors=_SCOPED,
    destructive=True,
    idempotent=True,
    arguments=("session_id",),
)
HEALTH = declare(
    "health",
    "service",
    "Each component with its status and response time: healthy, degraded or unhealthy.",
    "GET",
    "/health",
    m.HealthRequest,
    m.HealthResponse,
    errors=(e.UpstreamError,),
    read_only=True,
)

OPERATIONS: tuple[Operation[..., Any, Any], ...] = (
    STORE_CONTEXT,
    STORE_CONTEXTS,
    SEARCH_CONTEXTS,
    GET_CONTEXT,
    UPDATE_CONTEXT,
    DELETE_CONTEXT,
    CLEAR_CONTEXTS,
    BUILD_CONTEXT,
    ADD_FACT,
    QUERY_FACTS,
    GET_FACT,
    DELETE_FACT,
    INDEX_DOCUMENT,
    GET_JOB,
    SEARCH_REGIONS,
    DECODE_REGIONS,
    APPEND_MESSAGES,
    SESSION_CONTEXT,
    GET_SESSION,
    LIST_SESSIONS,
    LIST_MESSAGES,
    UPDATE_BRIEF,
    CLOSE_SESSION,
    DELETE_SESSION,
    HEALTH,
)
BY_NAME: dict[str, Operation[..., Any, Any]] = {op.name: op for op in OPERATIONS}
