"""`Hirag`: the service as one object, and `open()`, the library's entry point.

    import hirag_oz

    with hirag_oz.open("./data") as hirag:
        hirag.store_context(text="User prefers dark mode", level="LongTerm")
        prompt = hirag.build_context(query="Which theme?", system_prompt="You help.")

Every catalogued operation is a method with the fields of its request model, returning its
response model: the same methods as `hirag_oz.Client`, run in-process. The capabilities
are attributes too (`contexts`, `prompts`, `facts`, `documents`), each built on first use
from the settings and closed by `close()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from hirag_oz.config import Settings, load_settings
from hirag_oz.errors import InsufficientStorageError, NotFoundError
from hirag_oz.factory import (
    build_model,
    build_ocr_engine,
    build_store,
    build_summarizer,
)
from hirag_oz.kernel.disk import DiskGuard
from hirag_oz.kernel.scope import (
    ADDING,
    AUDITED,
    DEFAULT_TENANT,
    TENANT_NAME,
    TRUSTED,
    Caller,
    audit_call,
    authorize,
    check_tenant,
)
from hirag_oz.resilience import CircuitBreaker
from hirag_oz.store.format import DataFormat
from hirag_oz.store.gate import GatedStore, WriteGate
from hirag_oz_client._client import Operations
from hirag_oz_client.catalogue import Operation

if TYPE_CHECKING:
    from hirag_oz.context.service import ContextBuilder
    from hirag_oz.embeddings.base import Embedder
    from hirag_oz.embeddings.batching import CoalescingEmbedder
    from hirag_oz.embeddings.cache import CachedEmbedder
    from hirag_oz.facts.store import FactStore
    from hirag_oz.kernel.clock import Clock
    from hirag_oz.memory.manager import HiRAG
    from hirag_oz.observability.health import HealthChecker
    from hirag_oz.observability.metrics import Metrics
    from hirag_oz.observability.tracing import Tracing
    from hirag_oz.sessions import Sessions
    from hirag_oz.store.base import VectorStore
    from hirag_oz.tokens import TokenCounterInfo
    from hirag_oz.vision.service import VisionService

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


class Hirag(Operations):
    """Every capability of the service over one data directory (or Qdrant server).

    `model`, `store`, `tokens` and `clock` replace the configured ones (tests share one
    loaded model). With `metrics`, every operation is counted and timed in it; with
    `tracing` on, the model, the store, the summarizers and OCR are wrapped in spans.
    `serving` resumes index jobs that an earlier process left unfinished (otherwise they
    are the next server's) and runs the memory's background maintenance. `local_files`:
    the caller is on this machine (library, CLI, MCP), so without `[vision] allowed_paths`
    any of its files can be indexed; an HTTP server reads only inside allowed_paths.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model: Embedder | None = None,
        store: VectorStore | None = None,
        tokens: TokenCounterInfo | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        serving: bool = False,
        local_files: bool = True,
    ) -> None:
        self.settings = settings
        self.local_files = local_files
        self.metrics = metrics
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.serving = serving
        self.breakers: list[CircuitBreaker] = []
        self._given_model = model
        self._given_store = store
        self._given_tokens = tokens
        self._clock = clock
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}
        self._closed = False
        self._format: DataFormat | None = None  # read when the store opens
        # What the embedded store and the documents check before they write; health reports it.
        self.disk = DiskGuard(Path(settings.server.data_dir), settings.server.min_free_disk_mb)
        self.tenant_name = DEFAULT_TENANT
        self._parent: Hirag | None = None  # the service whose store a tenant's view shares
        self._tenants: dict[str, Hirag] = {}
        # Every write to the store and the files beside it; a backup closes it for its copy.
        self.gate = WriteGate()

    # -------------------------------------------------------------------- building parts
    def _part(self, name: str, build: Callable[[], T]) -> T:
        found = self._built.get(name)
        if found is not None:
            return found  # type: ignore[no-any-return]
        with self._lock:
            if name not in self._built:
                if self._closed:
                    raise RuntimeError("this Hirag is closed")
                self._built[name] = build()
            return self._built[name]  # type: ignore[no-any-return]

    def built(self, name: str) -> bool:
        """Whether the part `name` (contexts, facts, documents, ...) has been built."""
        return name in self._built

    @property
    def tokens(self) -> TokenCounterInfo:
        """The token counter (tiktoken cl100k_base, or the word estimate if it failed)."""
        if self._parent is not None:
            return self._parent.tokens

        def build() -> TokenCounterInfo:
            from hirag_oz.tokens import load_token_counter

            cfg = self.settings.token_estimator
            return self._given_tokens or load_token_counter(cfg.kind, cfg.tokens_per_word)

        return self._part("tokens", build)

    @property
    def store(self) -> VectorStore:
        """The vector store every capability keeps its collections in."""
        parent = self._parent
        if parent is not None:

            def borrow() -> VectorStore:
                store = parent.store
                self._format = DataFormat(store, self.settings.vector_db.collection_prefix)
                return store

            return self._part("borrowed_store", borrow)

        def build() -> VectorStore:
            store: VectorStore = self._given_store or build_store(self.settings, self.disk)
            # A store with a breaker (a Qdrant server) shows it like the other remote
            # dependencies.
            breaker = getattr(store, "breaker", None)
            if isinstance(breaker, CircuitBreaker):
                self.breakers.append(breaker)
            store = GatedStore(store, self.gate)
            if self.tracing is not None:
                store = self.tracing.store(store)
            # Data written by a newer version is refused before any part opens.
            self._format = DataFormat(store, self.settings.vector_db.collection_prefix)
            return store

        return self._part("store", build)

    @property
    def data_format(self) -> DataFormat | None:
        """The stored data's format record (once the store is open)."""
        self.store  # noqa: B018
        return self._format

    @property
    def model(self) -> CoalescingEmbedder:
        """The embedding model under the cache: a call to it reaches the model."""
        if self._parent is not None:
            return self._parent.model

        def build() -> CoalescingEmbedder:
            from hirag_oz.embeddings.batching import CoalescingEmbedder

            base = self._given_model or build_model(self.settings, self.breakers)
            if self.metrics is not None:
                from hirag_oz.observability.metrics import MeteredEmbedder

                base = MeteredEmbedder(base, self.metrics)
            if self.tracing is not None:
                remote = self._given_model is None and self.settings.embedding.provider == "openai"
                base = self.tracing.embedder(base, remote=remote)
            # Concurrent requests each embed one query; one model call for all of them
            # costs much less per text than one call each.
            return CoalescingEmbedder(base, max_batch=self.settings.embedding.batch_size)

        return self._part("model", build)

    @property
    def cache(self) -> CachedEmbedder | None:
        """The embedding cache, when `[embedding] cache_enabled`."""
        if self._parent is not None:
            return self._parent.cache

        def build() -> CachedEmbedder | bool:
            from hirag_oz.embeddings.cache import CachedEmbedder

            cfg = self.settings.embedding
            if not cfg.cache_enabled:
                return False  # built, and none: None would mean "not built yet"
            return CachedEmbedder(self.model, cfg.cache_size, cfg.cache_ttl_secs)

        found = self._part("cache", build)
        return None if isinstance(found, bool) else found

    @property
    def embedder(self) -> Embedder:
        """What the capabilities embed with: the cache over the model, or the model."""
        return self.cache or self.model

    # ---------------------------------------------------------------------- capabilities
    @property
    def contexts(self) -> HiRAG:
        """The three memory levels: store, search, get, update, delete, maintenance."""

        def build() -> HiRAG:
            from hirag_oz.memory.manager import HiRAG

            memory = HiRAG(
                self.store,
                self.embedder,
                self.tokens.counter,
                self.settings.hirag,
                collection_prefix=self.settings.vector_db.collection_prefix,
                distance=self.settings.vector_db.distance,
                clock=self._clock,
                data_format=self._format,
                owns_backend=self._parent is None,
            )
            if self.serving and self.settings.hirag.maintenance_enabled:
                memory.start_maintenance()
            return memory

        return self._part("contexts", build)

    @property
    def prompts(self) -> ContextBuilder:
        """The prompt builder: the next model call's messages within the token budget."""

        def build() -> ContextBuilder:
            from hirag_oz.context.service import ContextBuilder

            counter = self.tokens.counter
            summarizer = build_summarizer(self.settings, counter, self.breakers)
            if summarizer is not None and self.metrics is not None:
                from hirag_oz.observability.metrics import MeteredSummarizer

                summarizer = MeteredSummarizer(summarizer, self.metrics)
            if summarizer is not None and self.tracing is not None:
                summarizer = self.tracing.summarizer(summarizer, remote=True)
            builder = ContextBuilder(self.contexts, counter, self.settings.token_budget, summarizer)
            if self.tracing is not None:
                # The extractive summarizer: the fallback, and the only one without an LLM.
                fallback = self.tracing.summarizer(builder.fallback)
                if builder.summarizer is builder.fallback:
                    builder.summarizer = fallback
                builder.fallback = fallback
            return builder

        return self._part("prompts", build)

    @property
    def facts(self) -> FactStore:
        """Provenance-tracked subject-predicate-object facts, valid over time."""

        def build() -> FactStore:
            from hirag_oz.facts.store import FactStore

            return FactStore(
                self.store,
                self.embedder,
                self.settings.facts,
                collection_prefix=self.settings.vector_db.collection_prefix,
                distance=self.settings.vector_db.distance,
                clock=self._clock,
            )

        return self._part("facts", build)

    @property
    def documents(self) -> VisionService:
        """Documents indexed into OCR regions: index jobs, region search, decode."""

        def build() -> VisionService:
            from hirag_oz.vision.service import VisionService

            engine = build_ocr_engine(self.settings, self.breakers)
            if engine is not None and self.tracing is not None:
                engine = self.tracing.ocr(engine, remote=engine.name == "deepseek")
            settings = self.settings.vision
            if self.local_files and not settings.allowed_paths:
                settings = settings.model_copy(update={"allowed_paths": [Path("/")]})
            vision = VisionService(
                settings,
                Path(self.settings.server.data_dir),
                self.store,
                self.embedder,
                self.tokens.counter,
                engine,
                collection_prefix=self.settings.vector_db.collection_prefix,
                distance=self.settings.vector_db.distance,
                observer=self.metrics,
                start=self.serving,
                disk=self.disk,
                gate=self.gate,
            )
            if self.metrics is not None:
                self.metrics.watch_cache("vision_decode", vision.cache)
                self.metrics.watch_jobs(vision.queue.pending)
            return vision

        return self._part("documents", build)

    @property
    def sessions(self) -> Sessions:
        """Conversation sessions: messages in, the next prompt out."""

        def build() -> Sessions:
            from hirag_oz.sessions import SessionRecords, Sessions

            builder = self.prompts
            # The configured model summarizer, if any, rewrites folded briefs in the background.
            refiner = None if builder.summarizer is builder.fallback else builder.summarizer

            records = SessionRecords(
                self.store,
                self.embedder.dimension,
                collection_prefix=self.settings.vector_db.collection_prefix,
                distance=self.settings.vector_db.distance,
            )
            sessions = Sessions(
                self.contexts,
                records,
                self.prompts,
                self.facts,
                facts_in_prompt=self.settings.sessions.facts_in_prompt,
                summaries=self.settings.sessions.summaries,
                summary_tokens=self.settings.sessions.summary_tokens,
                summary_sessions=self.settings.sessions.summary_sessions,
                messages_per_summary=self.settings.sessions.messages_per_summary,
                summaries_retrieved=self.settings.sessions.summaries_retrieved,
                refiner=refiner,
                clock=self._clock,
            )
            idle = self.settings.sessions.idle_secs
            if self.serving and self.settings.hirag.maintenance_enabled and idle is not None:
                sessions.start_maintenance(self.settings.hirag.maintenance_interval_secs, idle)
            return sessions

        return self._part("sessions", build)

    @property
    def health_checker(self) -> HealthChecker:
        """Probes of the store, the model, the token counter, OCR and the breakers."""

        def build() -> HealthChecker:
            from hirag_oz.observability.probes import build_health

            return build_health(self)

        return self._part("health", build)

    def open_all(self) -> None:
        """Build every capability now (a server does, so its first requests do not wait),
        and every known tenant's: their background maintenance and unfinished index jobs
        run from the start, as the default tenant's do."""
        for name in ("contexts", "prompts", "facts", "documents", "sessions", "health_checker"):
            if self._parent is None or name != "health_checker":
                getattr(self, name)
        if self._parent is None:
            for name in self.known_tenants():
                self.tenant(name).open_all()

    def known_tenants(self) -> list[str]:
        """The tenants with a folder under `<data_dir>/tenants` (made with their view)."""
        folder = Path(self.settings.server.data_dir) / "tenants"
        if not folder.is_dir():
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if p.is_dir() and TENANT_NAME.match(p.name) and p.name != DEFAULT_TENANT
        )

    # --------------------------------------------------------------------------- tenants
    def tenant(self, name: str) -> Hirag:
        """The service as tenant `name` has it: collections of its own
        (`<prefix>-t-<name>_*`), files of its own (`<data_dir>/tenants/<name>`), and this
        service's store, model and write gate. The default tenant is this service itself,
        so data stored before tenants existed is the default tenant's."""
        if self._parent is not None:  # a view: itself, or another tenant's from its service
            return self if name in (DEFAULT_TENANT, self.tenant_name) else self._parent.tenant(name)
        if name == DEFAULT_TENANT:
            return self
        found = self._tenants.get(name)
        if found is not None:
            return found
        check_tenant(name)
        with self._lock:
            if self._closed:
                raise RuntimeError("this Hirag is closed")
            if name not in self._tenants:
                self._tenants[name] = self._tenant_view(name)
            return self._tenants[name]

    def _tenant_view(self, name: str) -> Hirag:
        db, server = self.settings.vector_db, self.settings.server
        prefix = f"{db.collection_prefix}-t-{name}"
        settings = self.settings.model_copy(
            update={
                "vector_db": db.model_copy(update={"collection_prefix": prefix}),
                "server": server.model_copy(
                    update={"data_dir": Path(server.data_dir) / "tenants" / name}
                ),
            }
        )
        view = Hirag(
            settings, clock=self._clock, serving=self.serving, local_files=self.local_files
        )
        Path(settings.server.data_dir).mkdir(parents=True, exist_ok=True)
        view._parent, view.tenant_name = self, name
        view.gate, view.disk, view.breakers = self.gate, self.disk, self.breakers
        return view

    # ------------------------------------------------------------------------ operations
    def call(self, op: Operation[Any, Any, R], request: BaseModel, caller: Caller = TRUSTED) -> R:
        """Run the operation `op` with `request` (a model of `op.request`) as `caller`."""
        from hirag_oz.handlers import HANDLERS

        handler = HANDLERS.get(op.name)
        if handler is None:
            raise NotFoundError(f"unknown operation {op.name!r}", {"operation": op.name})
        request = authorize(caller, op, request)
        target = self.tenant(caller.tenant)
        if op.name in ADDING:
            target.check_quota()
        if self.metrics is None:
            result: R = handler(target, request)  # type: ignore[assignment]
        else:
            with self.metrics.operation(op.name):
                result = handler(target, request)  # type: ignore[assignment]
        if op.name in AUDITED:
            audit_call(caller, op, request)
        return result

    def check_quota(self) -> None:
        """Refuse what adds items once this tenant holds `[server] max_items_per_tenant`."""
        quota = self.settings.server.max_items_per_tenant
        if quota is None:
            return
        held = self.items()
        if held >= quota:
            raise InsufficientStorageError(
                f"the tenant holds {held} items, its quota (server.max_items_per_tenant): "
                "delete some, or raise the quota",
                {"tenant": self.tenant_name, "items": held, "quota": quota},
            )

    def items(self) -> int:
        """Contexts, facts, regions and session records this tenant holds."""
        from hirag_oz.archive.dump import KINDS, collection
        from hirag_oz.archive.export import open_service

        open_service(self)
        prefix = self.settings.vector_db.collection_prefix
        return sum(self.store.count(collection(prefix, kind)) for kind in KINDS)

    # --------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Close what was built, users of the store before the store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            built = self._built
            views = list(self._tenants.values())
        for view in views:
            view.close()
        if "health" in built:
            built["health"].close()
        if "sessions" in built:
            built["sessions"].shutdown()
        if "documents" in built:
            built["documents"].close()
        if "prompts" in built:
            built["prompts"].close()
        try:
            if "contexts" in built:
                built["contexts"].close()  # flushes access counts, closes the store
            elif "store" in built:
                built["store"].close()
        finally:
            if "model" in built:
                built["model"].close()

    def __enter__(self) -> Hirag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(
    data_dir: str | Path | None = None,
    *,
    config: str | Path | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> Hirag:
    """The service over `data_dir` (embedded Qdrant, local model), or over `settings`, or
    the settings of the `config` file and environment with `overrides` by section:
    `hirag_oz.open("./data", hirag={"l1_size": 50})`."""
    if settings is None:
        if data_dir is not None:
            overrides["server"] = {**overrides.get("server", {}), "data_dir": Path(data_dir)}
        settings = load_settings(config, **overrides)
    elif data_dir is not None or config is not None or overrides:
        raise TypeError("give settings, or data_dir/config/overrides, not both")
    return Hirag(settings)
