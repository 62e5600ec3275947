"""One settings model: a TOML file, then `HIRAG_<SECTION>__<KEY>` environment overrides.

Precedence, highest first: explicit keyword arguments, environment, the TOML file, defaults.
The file is taken from `--config`, else `HIRAG_CONFIG`, else none. `HIRAG_API_KEYS`
(comma-separated) sets `server.api_keys`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hirag_oz.errors import ConfigurationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    data_dir: Path = Path("./data")
    max_body_size_mb: int = Field(10, ge=1, le=1024)
    max_items_per_tenant: int | None = Field(None, ge=1)
    """Stored items (contexts, facts, regions, session records) a tenant may hold; past it,
    what adds items is refused with 507 INSUFFICIENT_STORAGE. None: no quota."""
    max_import_mb: int = Field(4096, ge=1, le=1_048_576)
    """The largest dump `POST /api/v1/import` takes (stored to disk as it arrives)."""
    api_keys: list[SecretStr] = Field(default_factory=list)
    keys_file: Path | None = None
    """The file of the keys made with `hirag-oz keys create` (hashes only); None:
    `<data_dir>/keys.json`."""
    shutdown_timeout_secs: float = Field(30.0, gt=0, le=3600)
    min_free_disk_mb: int = Field(256, ge=0)
    """Writes are refused (507 INSUFFICIENT_STORAGE) while the data directory's disk has less
    free, so that the embedded store never meets a full disk (it maps its files: a full disk
    would end the process); reads go on. The store does not open with less free either: an
    opening takes up to some 70 MB per collection. 0: no check."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value


class VectorDbSettings(_Section):
    url: str | None = None
    api_key: SecretStr | None = None
    timeout_secs: float = Field(30.0, gt=0, le=300)
    tls_verify: bool = True
    collection_prefix: str = Field("contexts", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    distance: Literal["Cosine", "Dot", "Euclid"] = "Cosine"
    optimize_after_points: int = Field(5000, ge=1)
    # A Qdrant cluster: how new collections are spread over its nodes (none: the server's own
    # defaults, one shard, no replicas).
    shard_number: int | None = Field(None, ge=1, le=1024)
    replication_factor: int | None = Field(None, ge=1, le=64)
    write_consistency_factor: int | None = Field(None, ge=1, le=64)
    search_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Embedded store: threads per collection that search its segments in "
        "parallel. One suits a service answering many requests at once.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if (
            value is not None
            and value != ":memory:"
            and not value.startswith(("http://", "https://"))
        ):
            raise ValueError("must start with http:// or https:// (or be ':memory:')")
        return value or None


class EmbeddingSettings(_Section):
    provider: Literal["local", "openai"] = "local"
    # How the local model runs: ONNX Runtime (same vectors, cheaper, off the GIL) or torch.
    runtime: Literal["onnx", "torch"] = "onnx"
    model_cache_dir: Path | None = Field(
        None, description="Where the ONNX export is kept; default ~/.cache/hirag-oz."
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="ONNX Runtime threads for batches of 16 texts or more (none: one per CPU); "
        "smaller batches, such as search queries, run on one thread.",
    )
    api_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "all-MiniLM-L6-v2"
    dimensions: int | None = Field(None, ge=1, le=8192)
    batch_size: int = Field(64, ge=1, le=2048)
    timeout_secs: float = Field(30.0, gt=0, le=300)
    max_retries: int = Field(3, ge=0, le=10)
    cache_enabled: bool = True
    cache_size: int = Field(10_000, ge=1)
    cache_ttl_secs: float = Field(3600.0, gt=0)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EmbeddingSettings:
        if self.provider == "openai" and not (
            self.api_url and self.api_url.startswith(("http://", "https://"))
        ):
            raise ValueError("embedding.api_url must be an http(s) URL when provider = 'openai'")
        return self


class RankingWeights(_Section):
    # Frequency is off by default: a search counts an access of everything it returns, so
    # with budgets of thousands of tokens the count measures how often a context was in
    # some large result, not how useful it was, and it lifts the same contexts into
    # every later result whatever the query (LoCoMo: 0.613 -> 0.683 of the evidence in
    # the first ten without it; bench/README.md).
    similarity: float = Field(0.6, ge=0, le=1)
    recency: float = Field(0.2, ge=0, le=1)
    level: float = Field(0.2, ge=0, le=1)
    frequency: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> RankingWeights:
        total = self.similarity + self.recency + self.level + self.frequency
        if not math.isclose(total, 1.0, abs_tol=0.01):
            raise ValueError(f"ranking weights must sum to 1.0 (got {total:.3f})")
        return self


class LevelAllocation(_Section):
    immediate: float = Field(0.3, ge=0, le=1)
    short_term: float = Field(0.4, ge=0, le=1)
    long_term: float = Field(0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> LevelAllocation:
        total = self.immediate + self.short_term + self.long_term
        if not math.isclose(total, 1.0, abs_tol=0.01):
            raise ValueError(f"level allocations must sum to 1.0 (got {total:.3f})")
        return self


class HiragSettings(_Section):
    l1_size: int = Field(20, ge=1, le=10_000)
    l2_ttl_secs: float = Field(86_400.0, gt=0)
    l3_ttl_secs: float | None = Field(None, gt=0)
    l2_expiry: Literal["consolidate", "expire"] = "consolidate"
    maintenance_enabled: bool = True
    maintenance_interval_secs: float = Field(60.0, gt=0)
    max_text_chars: int = Field(32_768, ge=1)
    max_query_tokens: int = Field(100_000, ge=1)
    relevance_threshold: float = Field(0.05, ge=0, le=1)
    min_contexts_per_level: int = Field(1, ge=0, le=100)
    candidates_per_level: int = Field(200, ge=1, le=2000)
    access_flush_secs: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="Access counts are written at most this often (0: on every search).",
    )
    hybrid_alpha: float = Field(0.7, ge=0, le=1)
    neighbour_hits: int = Field(
        10,
        ge=0,
        le=50,
        description="The best candidates whose neighbouring turns (stored just before and "
        "after, same session) join the candidates (0: none).",
    )
    neighbour_weight: float = Field(
        0.85,
        ge=0,
        le=1,
        description="A neighbouring turn scores at least this times its hit's score.",
    )
    speaker_boost: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Added to the score of a context said by a speaker the query names "
        "(its metadata.name), when the query does not name every speaker (0: off).",
    )
    period_boost: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Added to the score of a context whose timestamp falls in a calendar "
        "date, month or year the query names, or one such span after it (0: off).",
    )
    weights: RankingWeights = Field(default_factory=RankingWeights)
    allocation: LevelAllocation = Field(default_factory=LevelAllocation)
    metadata_indexes: dict[str, Literal["keyword", "integer", "float", "bool"]] = Field(
        default_factory=dict
    )


class TokenBudgetSettings(_Section):
    system_tokens: int = Field(700, ge=0)
    running_brief: int = Field(1200, ge=0)
    recent_turns: int = Field(450, ge=0)
    retrieved_context: int = Field(3750, ge=0)
    completion: int = Field(1000, ge=0)
    max_total: int = Field(8000, ge=1)

    @model_validator(mode="after")
    def _slots_fit(self) -> TokenBudgetSettings:
        total = (
            self.system_tokens
            + self.running_brief
            + self.recent_turns
            + self.retrieved_context
            + self.completion
        )
        if total > self.max_total:
            raise ValueError(f"slots sum to {total}, more than max_total {self.max_total}")
        return self


class CircuitBreakerSettings(_Section):
    """The circuit breakers of the remote dependencies (embedding, summarizer, vision_ocr,
    vector_store): each opens after `failure_threshold` consecutive failures, rejects calls
    for `reset_timeout_secs`, then lets one probe call through at a time and closes after
    `success_threshold` successful probes."""

    failure_threshold: int = Field(5, ge=1, le=1000)
    success_threshold: int = Field(2, ge=1, le=100)
    reset_timeout_secs: float = Field(30.0, ge=0, le=3600)


class TokenEstimatorSettings(_Section):
    kind: Literal["tiktoken", "words"] = "tiktoken"
    tokens_per_word: float = Field(1.3, gt=0)


class SummarizerSettings(_Section):
    endpoint: str | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    timeout_secs: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    temperature: float = Field(0.2, ge=0, le=2)


class RateLimitSettings(_Section):
    enabled: bool = True
    requests_per_minute: int = Field(600, ge=1)
    burst: int = Field(100, ge=0)
    storage_uri: str = "memory://"
    trusted_proxies: list[str] = Field(default_factory=list)


class DeepSeekSettings(_Section):
    """A DeepSeek-OCR model served behind an OpenAI-compatible chat endpoint."""

    enabled: bool = True
    endpoint: str | None = None
    api_key: SecretStr | None = None
    model: str = "deepseek-ai/DeepSeek-OCR"
    timeout_secs: float = Field(60.0, gt=0, le=600)
    max_retries: int = Field(2, ge=0, le=10)
    max_concurrency: int = Field(4, ge=1, le=256)


class VisionSettings(_Section):
    engine: Literal["auto", "tesseract", "rapidocr", "deepseek"] = Field(
        "auto",
        description="auto: tesseract when its binary is installed, else rapidocr when its "
        "package is installed.",
    )
    tesseract_lang: str = Field("eng", pattern=r"^[A-Za-z_+]{1,64}$")
    render_dpi: int = Field(200, ge=50, le=600)
    allowed_paths: list[Path] = Field(default_factory=list)
    allow_private_urls: bool = Field(
        False, description="Let doc_url reach loopback and private addresses."
    )
    max_document_mb: int = Field(50, ge=1, le=2048)
    max_pages: int = Field(500, ge=1, le=100_000)
    download_timeout_secs: float = Field(30.0, gt=0, le=600)
    workers: int = Field(1, ge=1, le=64)
    max_pending_jobs: int = Field(100, ge=1, le=100_000)
    max_regions_per_request: int = Field(16, ge=1, le=256)
    default_fidelity: Literal["1x", "5x", "10x", "20x"] = "10x"
    decode_cache_size: int = Field(1000, ge=1)
    decode_cache_ttl_secs: float = Field(600.0, gt=0)
    deepseek: DeepSeekSettings = Field(default_factory=DeepSeekSettings)

    @model_validator(mode="after")
    def _deepseek_needs_endpoint(self) -> VisionSettings:
        if self.engine == "deepseek" and not (
            self.deepseek.endpoint and self.deepseek.endpoint.startswith(("http://", "https://"))
        ):
            raise ValueError(
                "vision.deepseek.endpoint must be an http(s) URL when engine = 'deepseek'"
            )
        return self


class FactsSettings(_Section):
    confidence_threshold: float = Field(0.8, ge=0, le=1)
    max_facts_per_query: int = Field(100, ge=1, le=10_000)
    functional_predicates: list[str] = Field(default_factory=list)


class SessionSettings(_Section):
    facts_in_prompt: int = Field(5, ge=0, le=50)
    """Facts valid now that a session's prompt is offered for its query."""
    summaries: bool = True
    """Store a session summary in LongTerm when a session is consolidated."""
    summary_tokens: int = Field(128, ge=16, le=2000)
    """A session summary's length: short, so that a few of them never crowd the retrieved
    slot."""
    summary_sessions: int = Field(0, ge=0, le=20)
    """A session's prompt follows the summaries of this many other sessions that best match
    its query to their best messages. Off by default: on the development conversations it
    found no more evidence and took six times as long (bench/README.md, session_replay)."""
    summaries_retrieved: bool = False
    """Let session summaries fill a session prompt's retrieved slot like any context (they
    crowded out turns on the development conversations)."""
    messages_per_summary: int = Field(3, ge=1, le=20)
    idle_secs: float | None = Field(3600.0, gt=0)
    """A session without an append for this long is consolidated by the service's background
    maintenance (every `hirag.maintenance_interval_secs`); None: only when closed."""


class BackupSettings(_Section):
    dir: Path | None = None
    """Where backups are written; None: `<server.data_dir>/backups`. A folder on another
    disk survives the loss of the data directory's."""
    keep: int = Field(7, ge=1, le=10_000)
    """How many of the newest backups are kept; older ones are removed after each backup."""


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class TelemetrySettings(_Section):
    """OpenTelemetry tracing, off unless `otlp_endpoint` is set (`pip install 'hirag-oz[otel]'`)."""

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces "
        "(unset: no tracing).",
    )
    service_name: str = Field("hirag-oz", min_length=1, max_length=256)
    sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces kept; a request continuing a caller's trace follows "
        "the caller's sampling decision.",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Headers sent to the collector (e.g. its API key)."
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class Settings(BaseSettings):
    """Every setting of the service, validated at load."""

    model_config = SettingsConfigDict(
        env_prefix="HIRAG_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    vector_db: VectorDbSettings = Field(default_factory=VectorDbSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    hirag: HiragSettings = Field(default_factory=HiragSettings)
    token_budget: TokenBudgetSettings = Field(default_factory=TokenBudgetSettings)
    token_estimator: TokenEstimatorSettings = Field(default_factory=TokenEstimatorSettings)
    summarizer: SummarizerSettings = Field(default_factory=SummarizerSettings)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    facts: FactsSettings = Field(default_factory=FactsSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


# The TOML path travels to `settings_customise_sources` through this holder because
# pydantic-settings builds sources from the class, not from constructor arguments.
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from `config_path` (else `$HIRAG_CONFIG`) and the environment.

    Raises ConfigurationError naming each invalid key and its rule.
    """
    path_text = config_path if config_path is not None else os.environ.get("HIRAG_CONFIG")
    path = Path(path_text) if path_text else None
    if path is not None and not path.is_file():
        raise ConfigurationError(f"config file not found: {path}")
    env_keys = os.environ.get("HIRAG_API_KEYS")
    if env_keys is not None:
        server = dict(overrides.get("server", {}))
        server.setdefault("api_keys", env_keys)
        overrides["server"] = server
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None
    except ValueError as exc:  # malformed TOML or environment JSON
        raise ConfigurationError(f"invalid configuration: {exc}") from None
    finally:
        _CONFIG_FILE["path"] = None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"{key}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
