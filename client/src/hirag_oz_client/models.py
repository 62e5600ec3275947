"""The wire models: every operation's request and response, as JSON travels on every surface.

A request model holds all of an operation's inputs, path and query parameters included;
the HTTP routes, MCP tools, CLI commands and client methods are generated from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

_LEVEL_DOC = "Immediate | ShortTerm | LongTerm (aliases L1, L2, L3, snake_case)"
_AGENT_DOC = "Tenant/agent scope; an agent only ever sees its own items. Default 'default'."
_SESSION_DOC = "Conversation/session scope (optional)."
_USER_DOC = "End-user scope (optional)."


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreContextRequest(_Request):
    text: str = Field(..., description="The text to remember.", examples=["User prefers dark mode"])
    level: str = Field("ShortTerm", description=_LEVEL_DOC)
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    session_id: str | None = Field(None, description=_SESSION_DOC)
    user_id: str | None = Field(None, description=_USER_DOC)
    metadata: dict[str, Any] | None = Field(
        None, description="Native JSON, filterable as metadata.<key>."
    )
    timestamp: datetime | float | None = Field(
        None, description="When the event happened (ISO 8601 or epoch seconds); default now."
    )


class StoreContextResponse(BaseModel):
    id: str
    token_count: int
    level: str


class StoreContextsRequest(_Request):
    items: list[StoreContextRequest] = Field(
        ...,
        min_length=1,
        max_length=1000,
        description="1-1000 contexts, each as store_context takes it; all are stored or none.",
    )


class StoreContextsResponse(BaseModel):
    ids: list[str]
    token_counts: list[int]


class SearchContextsRequest(_Request):
    query: str = Field(
        ...,
        description="What to look for, in natural language.",
        examples=["What does the user prefer?"],
    )
    max_tokens: int = Field(
        ..., ge=1, description="Token budget for all the returned contexts together."
    )
    levels: list[str] | None = Field(
        None, description=f"Levels to search ({_LEVEL_DOC}); default all."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    session_id: str | None = Field(None, description=_SESSION_DOC)
    user_id: str | None = Field(None, description=_USER_DOC)
    filters: dict[str, Any] | None = Field(
        None,
        description='Qdrant-shaped: {"must"|"should"|"must_not": [{"key": "metadata.topic", '
        '"match": v} | {"key": k, "range": {"gte", "lte", "gt", "lt"}}]}',
    )
    as_of: datetime | float | None = Field(None, description="Recency reference time; default now.")


class ContextOut(BaseModel):
    id: str
    text: str
    level: str
    relevance_score: float | None
    similarity: float | None
    token_count: int
    timestamp: str
    stored_at: str
    agent_id: str
    session_id: str | None
    user_id: str | None
    access_count: int
    metadata: dict[str, Any]


class SearchMetadata(BaseModel):
    level_distribution: dict[str, int]
    avg_relevance: float
    total_searched: int
    skipped_malformed: int


class SearchContextsResponse(BaseModel):
    contexts: list[ContextOut]
    total_tokens: int
    retrieval_time_ms: float
    metadata: SearchMetadata


class GetContextRequest(_Request):
    context_id: str = Field(..., description="The context's id.")
    agent_id: str | None = Field(None, description="Only this agent's context (404 otherwise).")


class UpdateContextRequest(_Request):
    context_id: str = Field(..., description="The context's id.")
    agent_id: str | None = Field(None, description="Only this agent's context (404 otherwise).")
    text: str | None = Field(None, description="New text (embedded again).")
    metadata: dict[str, Any] | None = Field(None, description="Merged; a null value removes a key.")
    level: str | None = Field(None, description=f"Move to this level ({_LEVEL_DOC}).")
    timestamp: datetime | float | None = Field(
        None, description="When the event happened (ISO 8601 or epoch seconds)."
    )


class DeleteContextRequest(_Request):
    context_id: str = Field(
        ...,
        description="The context's id.",
        # `id`: the body of the original service's POST /api/v1/contexts/delete.
        validation_alias=AliasChoices("context_id", "id"),
    )
    agent_id: str | None = Field(None, description="Only this agent's context (404 otherwise).")


class ClearContextsRequest(_Request):
    """A bare string is read as the level (the original service's body)."""

    level: str = Field(..., description=f"The level to empty ({_LEVEL_DOC}).")
    agent_id: str | None = Field(None, description="Clear only this agent's items; default all.")

    @model_validator(mode="before")
    @classmethod
    def _bare_level(cls, data: Any) -> Any:
        return {"level": data} if isinstance(data, str) else data


class DeletedResponse(BaseModel):
    id: str
    deleted: bool


class ClearedResponse(BaseModel):
    level: str
    cleared: int


class TurnIn(_Request):
    role: Literal["system", "user", "assistant", "tool"] = "user"
    content: str


class SnippetIn(_Request):
    text: str
    priority: Literal["Low", "Medium", "High", "Critical"] = "Medium"
    score: float | None = Field(
        None, ge=0, le=1, description="Order within a priority; default 1.0 (before retrieved)."
    )


class BudgetIn(_Request):
    """Slots for this request only; the others keep their configured values."""

    system_tokens: int | None = Field(None, ge=0)
    running_brief: int | None = Field(None, ge=0)
    recent_turns: int | None = Field(None, ge=0)
    retrieved_context: int | None = Field(None, ge=0)
    completion: int | None = Field(None, ge=0)
    max_total: int | None = Field(None, ge=1)


class BuildContextRequest(_Request):
    query: str = Field(..., description="What the next model call is about; drives retrieval.")
    system_prompt: str = Field(..., description="Sent first and unchanged.")
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    session_id: str | None = Field(None, description=_SESSION_DOC)
    user_id: str | None = Field(None, description=_USER_DOC)
    running_brief: str = Field("", description="The conversation's rolling summary so far.")
    recent_turns: list[TurnIn | str] = Field(
        default_factory=list, description="Oldest first; a string is a user turn."
    )
    levels: list[str] | None = Field(None, description=f"Levels to retrieve from ({_LEVEL_DOC}).")
    filters: dict[str, Any] | None = Field(None, description="As in /contexts/search.")
    snippets: list[SnippetIn] = Field(
        default_factory=list, description="Merged with the retrieved contexts."
    )
    budget: BudgetIn | None = Field(
        None, description="Token slots for this call only; the others keep the configured ones."
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "query": "When do we ship?",
                    "system_prompt": "You are the release assistant.",
                    "agent_id": "release-bot",
                    "running_brief": "Release 2.4 is in its final week.",
                    "recent_turns": [
                        {"role": "user", "content": "Did the load test pass?"},
                        {"role": "assistant", "content": "Yes, on Thursday."},
                        "So when do we ship?",
                    ],
                    "snippets": [{"text": "Freeze starts Wednesday.", "priority": "High"}],
                }
            ]
        },
    )


class MessageOut(BaseModel):
    role: str
    content: str


class SnippetOut(BaseModel):
    id: str | None
    text: str
    token_count: int
    priority: str
    score: float
    level: str | None
    source: str = Field(..., description="retrieved | caller")
    truncated: bool


class AllocationOut(BaseModel):
    system_tokens: int
    running_brief: int
    recent_turns: int
    retrieved_context: int
    completion: int
    prompt_tokens: int = Field(..., description="All messages, chat format included.")
    max_total: int
    remaining: int
    system_overflow: int = Field(
        ..., description="Tokens of the system prompt beyond its slot, taken from the others."
    )


class ActionsOut(BaseModel):
    summarized: bool
    summarizer: str | None = Field(..., description="llm | extractive | null")
    folded_turns: int
    dropped_turns: int
    dropped_snippets: int
    truncated_snippets: int
    brief_truncated: bool


class BuildContextResponse(BaseModel):
    messages: list[MessageOut] = Field(..., description="OpenAI chat format, ready to send.")
    system_prompt: str
    running_brief: str
    recent_turns: list[MessageOut]
    snippets: list[SnippetOut]
    allocation: AllocationOut
    actions: ActionsOut


class AnchorIn(_Request):
    doc_id: str | None = None
    page: int | None = Field(None, ge=0)
    region_id: str | None = None
    vt_ref: str | None = None
    path_line: str | None = None


class AddFactRequest(_Request):
    subject: str = Field(..., description="What the fact is about.", examples=["billing service"])
    predicate: str = Field(..., description="The relation, e.g. owned_by.", examples=["owned_by"])
    object: str = Field(
        ..., description="The value or the other entity.", examples=["payments team"]
    )
    confidence: float = Field(
        ..., ge=0, le=1, description="0-1; below [facts] confidence_threshold it is refused."
    )
    datatype: str | None = Field(None, description="Type of the object (optional).")
    source_doc: str | None = Field(None, description="The document the fact comes from.")
    source_anchor: AnchorIn | None = Field(
        None, description="Where in the source: doc_id, page, region_id, vt_ref, path_line."
    )
    observed_at: datetime | float | None = Field(
        None, description="When it was observed (ISO 8601 or epoch seconds); default now."
    )
    valid_from: datetime | float | None = Field(
        None, description="Start of validity (ISO 8601 or epoch seconds); default observed_at."
    )
    valid_to: datetime | float | None = Field(
        None, description="End of validity (ISO 8601 or epoch seconds); default open."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    exclusive: bool = Field(
        False,
        description="End the validity of this subject's current facts with this predicate and "
        "another object (as for a configured functional predicate).",
    )


class AddFactResponse(BaseModel):
    fact_id: str
    hash: str
    duplicate: bool
    closed: list[str] = Field(..., description="Facts whose validity this insert ended.")


class QueryFactsRequest(_Request):
    """Every given filter must match. The original service's body, `{"query": {...}}`, is
    read as the same request."""

    subject: str | None = Field(None, description="Exact subject.")
    predicate: str | None = Field(None, description="Exact predicate.")
    object: str | None = Field(None, description="Exact object.")
    source_doc: str | None = Field(None, description="Exact source document.")
    min_confidence: float | None = Field(
        None, ge=0, le=1, description="Only facts at least this confident."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    valid_at: datetime | float | None = Field(None, description="What was true then.")
    text: str | None = Field(None, description="Rank by meaning; combines with the filters.")
    limit: int = Field(20, ge=1, description="Page size.")
    offset: int = Field(0, ge=0, description="Facts to skip.")

    @model_validator(mode="before")
    @classmethod
    def _wrapped(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.keys() == {"query"} and isinstance(data["query"], dict):
            return data["query"]
        return data


class GetFactRequest(_Request):
    fact_id: str = Field(..., description="The fact's id (a UUID).")
    agent_id: str | None = Field(None, description="Only this agent's fact (404 otherwise).")


class DeleteFactRequest(_Request):
    fact_id: str = Field(..., description="The fact's id (a UUID).")
    agent_id: str | None = Field(None, description="Only this agent's fact (404 otherwise).")


class AnchorOut(BaseModel):
    doc_id: str | None
    page: int | None
    region_id: str | None
    vt_ref: str | None
    path_line: str | None


class FactOut(BaseModel):
    id: str
    hash: str
    subject: str
    predicate: str
    object: str
    confidence: float
    agent_id: str
    datatype: str | None
    source_doc: str | None
    source_anchor: AnchorOut
    observed_at: str
    valid_from: str | None
    valid_to: str | None
    score: float | None = Field(None, description="Similarity to `text`, when given.")


class QueryFactsResponse(BaseModel):
    facts: list[FactOut]
    total: int = Field(..., description="All facts that match, not only this page.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


_FIDELITY_DOC = (
    "1x exact (text layer, else full-resolution OCR); 5x, 10x, 20x: the region image "
    "resampled to 1/5, 1/10, 1/20 of its pixel area before OCR"
)


class IndexDocumentRequest(_Request):
    doc_url: str = Field(
        ...,
        description="file:// inside vision.allowed_paths, or http(s)://. Or send the document "
        "as a multipart upload (field `file`) instead of JSON.",
        examples=["file:///srv/docs/invoice.pdf"],
    )
    metadata: dict[str, Any] | None = Field(None, description="Kept on every region.")
    force_reindex: bool = Field(False, description="Index again content already indexed.")
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    wait: bool = Field(
        False,
        description="Answer when indexing is done (the job succeeded or failed), not when it "
        "is queued.",
    )


class GetJobRequest(_Request):
    job_id: str = Field(..., description="The job id returned by index_document.")
    agent_id: str | None = Field(None, description="Only this agent's job (404 otherwise).")


class JobProgress(BaseModel):
    pages_done: int
    pages_total: int | None


class JobOut(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    doc_id: str | None = None
    source: str
    progress: JobProgress
    regions: int
    reused: bool = Field(..., description="The same content was indexed before: nothing redone.")
    page_errors: list[dict[str, Any]] = Field(
        default_factory=list, description="Pages that failed, each with an error envelope."
    )
    error: ErrorBody | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class RegionFilters(_Request):
    doc_id: str | None = None
    page: int | None = Field(None, ge=1)
    type: list[Literal["text", "table", "figure", "code"]] | None = None
    metadata: dict[str, str | int | float | bool] | None = Field(
        None, description="Exact matches on the metadata given at indexing."
    )


class SearchRegionsRequest(_Request):
    query: str = Field(
        ...,
        description="What to find in the indexed documents.",
        examples=["total amount due"],
    )
    top_k: int = Field(12, ge=1, le=50, description="How many regions at most.")
    filters: RegionFilters | None = Field(
        None, description="Only regions of this doc_id, page, types or metadata."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)


class BBoxOut(BaseModel):
    x: int
    y: int
    w: int
    h: int


class RegionOut(BaseModel):
    region_id: str
    doc_id: str
    page: int = Field(..., description="1-based.")
    bbox: BBoxOut = Field(..., description="In rendered page pixels, origin top-left.")
    page_width: int
    page_height: int
    type: Literal["text", "table", "figure", "code"]
    token_estimate: int = Field(..., description="cl100k tokens of the region's text.")
    has_vt: bool = Field(..., description="The page image is stored.")
    score: float
    why_relevant: str


class SearchRegionsResponse(BaseModel):
    regions: list[RegionOut]


class DecodeRegionsRequest(_Request):
    region_ids: list[str] = Field(
        ..., min_length=1, description="Region ids from search_regions, in the order wanted."
    )
    fidelity: Literal["1x", "5x", "10x", "20x"] | None = Field(
        None, description=_FIDELITY_DOC + "; default vision.default_fidelity."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)


class DecodedOut(BaseModel):
    region_id: str
    text: str
    fidelity: str
    confidence: float
    tokens: int
    backend: str


class DecodeRegionsResponse(BaseModel):
    results: list[DecodedOut]


class HealthRequest(_Request):
    pass


class ComponentHealthOut(BaseModel):
    name: str
    status: Literal["healthy", "degraded", "unhealthy"]
    message: str | None
    response_time_ms: float
    required: bool


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    uptime_secs: float
    checked_at: float
    components: list[ComponentHealthOut]
    store: dict[str, Any] | None = Field(
        None, description="Items per level and the models in use; null while not ready."
    )


# ---- sessions ----------------------------------------------------------------------------

_SESSION_PATH_DOC = "The session's id (1-128 letters, digits and _ . : @ -); created on first use."


class MessageIn(_Request):
    role: Literal["user", "assistant", "system", "tool"] = Field(..., description="Who spoke.")
    content: str = Field(..., description="What was said.")
    name: str | None = Field(None, description="The speaker's name (optional).")
    timestamp: datetime | float | None = Field(
        None, description="When it was said (ISO 8601 or epoch seconds); default now."
    )
    metadata: dict[str, Any] | None = Field(None, description="Native JSON kept with it.")
    message_id: str | None = Field(
        None,
        description="The client's id for the message: an append retried with the same id "
        "stores nothing again.",
    )


class AppendMessagesRequest(_Request):
    session_id: str = Field(..., description=_SESSION_PATH_DOC)
    messages: list[MessageIn] = Field(
        ..., min_length=1, max_length=100, description="1-100 messages, oldest first."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    user_id: str | None = Field(None, description="The session's user (set on first use).")


class SessionMessageOut(BaseModel):
    id: str
    session_id: str
    seq: int = Field(..., description="Order within the session.")
    role: str
    content: str
    name: str | None
    message_id: str | None
    timestamp: str
    level: str = Field(..., description="Immediate while recent, then ShortTerm, LongTerm.")
    token_count: int
    metadata: dict[str, Any]
    duplicate: bool = Field(False, description="Stored by an earlier append (same message_id).")


class SessionOut(BaseModel):
    session_id: str
    agent_id: str
    user_id: str | None
    state: Literal["active", "closed"]
    brief: str = Field(..., description="The running brief: what was folded out of the window.")
    message_count: int
    token_total: int
    first_at: str | None
    last_at: str | None
    folds: int
    summary_id: str | None = Field(..., description="The session summary in LongTerm, if closed.")
    levels: dict[str, int] = Field(..., description="The session's messages on each level.")


class AppendMessagesResponse(BaseModel):
    messages: list[SessionMessageOut]
    folded: int = Field(..., description="Messages folded into the brief by this append.")
    session: SessionOut


class SessionContextRequest(_Request):
    session_id: str = Field(..., description="The session's id.")
    system_prompt: str = Field(..., description="Sent first and unchanged.")
    query: str | None = Field(
        None, description="What to retrieve for; default the session's last user message."
    )
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    levels: list[str] | None = Field(None, description=f"Levels to retrieve from ({_LEVEL_DOC}).")
    filters: dict[str, Any] | None = Field(None, description="As in search_contexts.")
    snippets: list[SnippetIn] = Field(
        default_factory=list, description="Text of your own, merged with what is retrieved."
    )
    budget: BudgetIn | None = Field(
        None, description="Token slots for this call only; the others keep the configured ones."
    )


class GetSessionRequest(_Request):
    session_id: str = Field(..., description="The session's id.")
    agent_id: str | None = Field(None, description="Only this agent's session (404 otherwise).")


class ListSessionsRequest(_Request):
    agent_id: str | None = Field(None, description=_AGENT_DOC)
    user_id: str | None = Field(None, description="Only this user's sessions.")
    state: Literal["active", "closed"] | None = Field(None, description="Only sessions in it.")
    limit: int = Field(50, ge=1, le=500, description="Page size.")
    offset: int = Field(0, ge=0, description="Sessions to skip.")


class ListSessionsResponse(BaseModel):
    sessions: list[SessionOut] = Field(..., description="Most recently active first.")
    total: int


class ListMessagesRequest(_Request):
    session_id: str = Field(..., description="The session's id.")
    agent_id: str | None = Field(None, description="Only this agent's session (404 otherwise).")
    after: int = Field(0, ge=0, description="Messages after this seq (0: from the first).")
    limit: int = Field(50, ge=1, le=500, description="Page size.")


class ListMessagesResponse(BaseModel):
    messages: list[SessionMessageOut] = Field(..., description="Oldest first.")
    next_after: int | None = Field(..., description="`after` of the next page; null at the end.")


class UpdateBriefRequest(_Request):
    session_id: str = Field(..., description="The session's id.")
    agent_id: str | None = Field(None, description="Only this agent's session (404 otherwise).")
    brief: str = Field(..., description="The session's new running brief.")


class CloseSessionRequest(_Request):
    session_id: str = Field(..., description="The session's id.")
    agent_id: str | None = Field(None, description="Only this agent's session (404 otherwise).")


class DeleteSessionRequest(_Request):
    session_id: str = Field(..., description="The session's id.")
    agent_id: str | None = Field(None, description="Only this agent's session (404 otherwise).")


class DeletedSessionResponse(BaseModel):
    id: str
    deleted: bool
    messages_deleted: int = Field(..., description="Messages and summary removed with it.")
