"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_LEVEL_DOC = "Immediate | ShortTerm | LongTerm (aliases L1, L2, L3, snake_case)"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreContextRequest(_Request):
    text: str = Field(..., description="The text to remember.", examples=["User prefers dark mode"])
    level: str = Field("ShortTerm", description=_LEVEL_DOC)
    agent_id: str | None = Field(None, description="Tenant/agent scope; default 'default'.")
    session_id: str | None = None
    user_id: str | None = None
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


class BatchStoreRequest(_Request):
    items: list[StoreContextRequest] = Field(..., min_length=1, max_length=1000)


class BatchStoreResponse(BaseModel):
    ids: list[str]
    token_counts: list[int]


class SearchRequest(_Request):
    query: str = Field(..., examples=["What does the user prefer?"])
    max_tokens: int = Field(..., ge=1, description="Token budget for the returned contexts.")
    levels: list[str] | None = Field(
        None, description=f"Levels to search ({_LEVEL_DOC}); default all."
    )
    agent_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
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


class SearchResponse(BaseModel):
    contexts: list[ContextOut]
    total_tokens: int
    retrieval_time_ms: float
    metadata: SearchMetadata


class PatchContextRequest(_Request):
    text: str | None = None
    metadata: dict[str, Any] | None = Field(None, description="Merged; a null value removes a key.")
    level: str | None = Field(None, description=f"Move to this level ({_LEVEL_DOC}).")
    timestamp: datetime | float | None = None


class DeleteRequest(_Request):
    id: str


class ClearRequest(_Request):
    level: str
    agent_id: str | None = Field(None, description="Clear only this agent's items; default all.")


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


class BuildRequest(_Request):
    query: str = Field(..., description="What the next model call is about; drives retrieval.")
    system_prompt: str = Field(..., description="Sent first and unchanged.")
    agent_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    running_brief: str = Field("", description="The conversation's rolling summary so far.")
    recent_turns: list[TurnIn | str] = Field(
        default_factory=list, description="Oldest first; a string is a user turn."
    )
    levels: list[str] | None = Field(None, description=f"Levels to retrieve from ({_LEVEL_DOC}).")
    filters: dict[str, Any] | None = Field(None, description="As in /contexts/search.")
    snippets: list[SnippetIn] = Field(
        default_factory=list, description="Merged with the retrieved contexts."
    )
    budget: BudgetIn | None = None

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


class BuildResponse(BaseModel):
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


class FactIn(_Request):
    subject: str = Field(..., examples=["billing service"])
    predicate: str = Field(..., examples=["owned_by"])
    object: str = Field(..., examples=["payments team"])
    confidence: float = Field(
        ..., ge=0, le=1, description="Below [facts] confidence_threshold: 422."
    )
    datatype: str | None = None
    source_doc: str | None = None
    source_anchor: AnchorIn | None = None
    observed_at: datetime | float | None = Field(None, description="Default now.")
    valid_from: datetime | float | None = Field(None, description="Default observed_at.")
    valid_to: datetime | float | None = None
    agent_id: str | None = None
    exclusive: bool = Field(
        False,
        description="End the validity of this subject's current facts with this predicate and "
        "another object (as for a configured functional predicate).",
    )


class FactInserted(BaseModel):
    fact_id: str
    hash: str
    duplicate: bool
    closed: list[str] = Field(..., description="Facts whose validity this insert ended.")


class FactQueryIn(_Request):
    subject: str | None = None
    predicate: str | None = None
    object: str | None = None
    source_doc: str | None = None
    min_confidence: float | None = Field(None, ge=0, le=1)
    agent_id: str | None = None
    valid_at: datetime | float | None = Field(None, description="What was true then.")
    text: str | None = Field(None, description="Rank by meaning; combines with the filters.")
    limit: int = Field(20, ge=1)
    offset: int = Field(0, ge=0)


class FactQueryRequest(_Request):
    query: FactQueryIn


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


class FactQueryResponse(BaseModel):
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


class VisionIndexRequest(_Request):
    doc_url: str = Field(
        ...,
        description="file:// inside vision.allowed_paths, or http(s)://. Or send the document "
        "as a multipart upload (field `file`) instead of JSON.",
        examples=["file:///srv/docs/invoice.pdf"],
    )
    metadata: dict[str, Any] | None = Field(None, description="Kept on every region.")
    force_reindex: bool = Field(False, description="Index again content already indexed.")
    agent_id: str | None = None


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


class VisionFilters(_Request):
    doc_id: str | None = None
    page: int | None = Field(None, ge=1)
    type: list[Literal["text", "table", "figure", "code"]] | None = None
    metadata: dict[str, str | int | float | bool] | None = Field(
        None, description="Exact matches on the metadata given at indexing."
    )


class VisionSearchRequest(_Request):
    query: str = Field(..., examples=["total amount due"])
    top_k: int = Field(12, ge=1, le=50)
    filters: VisionFilters | None = None
    agent_id: str | None = None


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


class VisionSearchResponse(BaseModel):
    regions: list[RegionOut]


class VisionDecodeRequest(_Request):
    region_ids: list[str] = Field(..., min_length=1)
    fidelity: Literal["1x", "5x", "10x", "20x"] | None = Field(
        None, description=_FIDELITY_DOC + "; default vision.default_fidelity."
    )
    agent_id: str | None = None


class DecodedOut(BaseModel):
    region_id: str
    text: str
    fidelity: str
    confidence: float
    tokens: int
    backend: str


class VisionDecodeResponse(BaseModel):
    results: list[DecodedOut]


def _error_example(
    code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "content": {
            "application/json": {
                "example": {"code": code, "message": message, "details": details or {}}
            }
        },
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_example("VALIDATION_ERROR", "request body is not valid JSON"),
    401: _error_example("UNAUTHORIZED", "the API key is not valid"),
    404: _error_example("NOT_FOUND", "no context with id 3f1c..."),
    413: _error_example(
        "PAYLOAD_TOO_LARGE", "request body is larger than 10485760 bytes", {"max_bytes": 10485760}
    ),
    415: _error_example("UNSUPPORTED_MEDIA_TYPE", "expected 'Content-Type: application/json'"),
    422: _error_example(
        "VALIDATION_ERROR",
        "request does not match the schema",
        {"errors": [{"field": "max_tokens", "message": "Field required", "type": "missing"}]},
    ),
    429: _error_example(
        "RATE_LIMIT",
        "rate limit exceeded; retry after 12 s",
        {"limit": 600, "remaining": 0, "retry_after_seconds": 12},
    ),
    500: _error_example("INTERNAL_ERROR", "unexpected server error", {"request_id": "9b2e..."}),
}
