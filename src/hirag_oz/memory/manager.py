"""HiRAG: the three-level context store, retrieval under a token budget, expiry."""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from hirag_oz.config import HiragSettings
from hirag_oz.embeddings.base import Embedder, submit
from hirag_oz.errors import (
    ConfigurationError,
    InsufficientStorageError,
    NotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)
from hirag_oz.kernel.clock import Clock, SystemClock
from hirag_oz.kernel.fusion import fuse_hybrid
from hirag_oz.kernel.ids import DEFAULT_AGENT, check_agent_id, check_scope_id, is_uuid
from hirag_oz.kernel.periodic import Periodic
from hirag_oz.kernel.sparse_setup import open_hybrid_collections
from hirag_oz.kernel.validation import check_metadata, check_text, check_timestamp
from hirag_oz.memory.access import AccessCounts
from hirag_oz.memory.budget import Candidate, select_within_budget
from hirag_oz.memory.cues import Period, named_speakers, periods
from hirag_oz.memory.levels import Level
from hirag_oz.memory.models import (
    Context,
    MaintenanceReport,
    NewContext,
    SearchResult,
    StoredRef,
    to_datetime,
)
from hirag_oz.memory.ranking import Weights, composite
from hirag_oz.store.base import (
    Condition,
    Distance,
    FieldType,
    Filter,
    OrderedScroll,
    PointRecord,
    Range,
    SparseVec,
    StoredPoint,
    VectorStore,
)
from hirag_oz.store.format import SEQ_IN_MICROSECONDS, DataFormat
from hirag_oz.store.sparse import Bm25Encoder
from hirag_oz.tokens import TokenCounter, count_many

logger = logging.getLogger(__name__)

# A point on its way to another level carries the target level under this key from just
# before its copy is written there until it is deleted here; opening the store finishes or
# undoes the moves a crash interrupted (`HiRAG._finish_moves`).
_MOVING = "moving_to"
_CORE_INDEXES: dict[str, FieldType] = {
    "agent_id": "tenant",
    "session_id": "keyword",
    "user_id": "keyword",
    "level": "keyword",
    "timestamp": "float",
    "stored_at": "float",
    "seq": "integer",
    _MOVING: "keyword",
}
_BATCH = 256
# Integers above this are not all exact as floats.
_EXACT_FLOAT_INT = 2**53


def collection_indexes(metadata_indexes: Mapping[str, FieldType]) -> dict[str, FieldType]:
    """Payload indexes of every level's collection: the core fields plus `metadata.<key>`."""
    indexes = dict(_CORE_INDEXES)
    for key, kind in metadata_indexes.items():
        indexes[f"metadata.{key}"] = kind
    return indexes


MAX_BATCH_ITEMS = 1000


class HiRAG:
    """Stores contexts in three levels and retrieves the most relevant ones within a budget.

    Build one with `hirag_oz.open_memory(...)` (embedded defaults) or pass the components.
    All methods are thread-safe.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        counter: TokenCounter,
        settings: HiragSettings | None = None,
        *,
        collection_prefix: str = "contexts",
        distance: Distance = "Cosine",
        clock: Clock | None = None,
        sparse: Bm25Encoder | None = None,
        data_format: DataFormat | None = None,
        owns_backend: bool = True,
    ) -> None:
        self.backend = store
        self.embedder = embedder
        self.counter = counter
        self.settings = settings or HiragSettings()
        self.clock = clock or SystemClock()
        self.owns_backend = owns_backend  # a tenant's memory shares the service's store
        self.distance: Distance = distance
        w = self.settings.weights
        self.weights = Weights(w.similarity, w.recency, w.level, w.frequency)
        a = self.settings.allocation
        self.allocation = {
            Level.IMMEDIATE: a.immediate,
            Level.SHORT_TERM: a.short_term,
            Level.LONG_TERM: a.long_term,
        }
        self.collections = {lvl: f"{collection_prefix}_{lvl.suffix}" for lvl in Level}
        self.sparse = open_hybrid_collections(
            store,
            self.collections.values(),
            embedder.dimension,
            distance,
            collection_indexes(self.settings.metadata_indexes),
            sparse,
        )
        self._seq_lock = threading.Lock()
        data_format = data_format or DataFormat(store, collection_prefix)
        data_format.migrate(SEQ_IN_MICROSECONDS, self._rescale_seq)
        # Past every seq stored, so that order holds across a restart whose clock went back.
        self._last_seq = self._newest_seq()
        self._finish_moves()
        # Every write of a point that exists (update, move, delete, access counts) holds
        # its lock, and reads the point inside it.
        self.access = AccessCounts(store, self.settings.access_flush_secs)
        self._search_slots = threading.BoundedSemaphore(store.parallel_queries)
        self._maintenance_lock = threading.Lock()
        self._maintenance = Periodic("hirag-maintenance", "maintenance run", self._maintain)

    # ----------------------------------------------------------------------------- store
    def store(
        self,
        text: str,
        level: Level | str = Level.SHORT_TERM,
        *,
        agent_id: str = DEFAULT_AGENT,
        session_id: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp: Any = None,
    ) -> StoredRef:
        """Store one context; returns its id and token count once it is durable."""
        item = NewContext(text, level, agent_id, session_id, user_id, metadata or {}, timestamp)
        return self.store_many([item])[0]

    def store_many(
        self, items: Sequence[NewContext], *, vectors: Sequence[list[float]] | None = None
    ) -> list[StoredRef]:
        """Store several contexts with one embedding batch and one write per level.

        `vectors`: the items' embeddings from `submit_items(items)`."""
        if not items:
            return []
        now = self.clock.now()
        checked = self._check_items(items)
        texts = [c[0] for c in checked]
        vectors = self._embed(texts) if vectors is None else self._checked(vectors, len(texts))
        tokens = count_many(self.counter, texts)
        by_level: dict[Level, list[PointRecord]] = {}
        refs: list[StoredRef] = []
        l1_scopes: set[tuple[str, str | None]] = set()
        for (text, level, agent, session, user, metadata, ts), vector, count in zip(
            checked, vectors, tokens, strict=True
        ):
            point_id = str(uuid.uuid4())
            payload = {
                "text": text,
                "level": level.value,
                "agent_id": agent,
                "session_id": session,
                "user_id": user,
                "timestamp": ts if ts is not None else now,
                "stored_at": now,
                "seq": self._next_seq(),
                "token_count": count,
                "access_count": 0,
                "metadata": metadata,
            }
            by_level.setdefault(level, []).append(
                PointRecord(point_id, vector, self.sparse.document(text), payload)
            )
            refs.append(StoredRef(point_id, count, level))
            if level is Level.IMMEDIATE:
                l1_scopes.add((agent, session))
        written: list[tuple[str, list[str]]] = []
        try:
            for level, points in by_level.items():
                self.backend.upsert(self.collections[level], points)
                written.append((self.collections[level], [p.id for p in points]))
        except Exception:
            self._take_back(written)
            raise
        for agent, session in l1_scopes:
            try:
                self._bound_l1(agent, session)
            except (UpstreamError, UpstreamTimeoutError) as exc:
                # The batch is durable, so it is not reported as failed; the next store in
                # this session bounds Immediate again.
                logger.warning("could not keep Immediate within l1_size: %s", exc.message)
        return refs

    def _take_back(self, written: list[tuple[str, list[str]]]) -> None:
        """Deletes the levels of a batch already written when the write of a later level
        failed, so that a failed batch leaves nothing visible. If the store refuses the
        delete too (down, or its breaker open by then), those points stay, and are logged."""
        for collection, ids in written:
            try:
                self.backend.delete(collection, ids)
            except Exception as exc:
                logger.error(
                    "a failed batch left %d point(s) in %s (%s): %s", len(ids), collection, exc, ids
                )

    def submit_items(self, items: Sequence[NewContext]) -> Future[list[list[float]]]:
        """The embeddings `store_many(items)` computes, as a future: the items are checked
        now (a bad one raises here), the model runs on the embedder's own thread.

        For a caller that keeps the model apart from the rest of a store and then passes
        the vectors to `store_many(items, vectors=...)`: the HTTP service awaits them on its
        event loop, where it runs the store calls."""
        return submit(self.embedder, [c[0] for c in self._check_items(items)])

    def submit_query(self, query: str) -> Future[list[list[float]]]:
        """The embedding `search(query, ...)` computes, as a future (see `submit_items`);
        its one vector goes to `search(..., query_vector=...)`."""
        return submit(self.embedder, [check_text(query, "query", self.settings.max_text_chars)])

    def _check_items(
        self, items: Sequence[NewContext]
    ) -> list[tuple[str, Level, str, str | None, str | None, dict[str, Any], float | None]]:
        if len(items) > MAX_BATCH_ITEMS:
            raise ValidationError(
                f"a batch holds at most {MAX_BATCH_ITEMS} items (got {len(items)})",
                {"field": "items", "max_items": MAX_BATCH_ITEMS},
            )
        return [self._check_new(item, f"items[{i}]") for i, item in enumerate(items)]

    def _check_new(
        self, item: NewContext, where: str
    ) -> tuple[str, Level, str, str | None, str | None, dict[str, Any], float | None]:
        text = check_text(item.text, f"{where}.text", self.settings.max_text_chars)
        level = Level.parse(item.level)
        agent = check_agent_id(item.agent_id)
        session = check_scope_id(item.session_id, "session_id")
        user = check_scope_id(item.user_id, "user_id")
        metadata = check_metadata(item.metadata)
        ts = check_timestamp(item.timestamp)
        return text, level, agent, session, user, metadata, ts

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._checked(self.embedder.embed(texts), len(texts))

    def _checked(self, vectors: Sequence[list[float]], count: int) -> list[list[float]]:
        if len(vectors) != count:
            raise ConfigurationError(f"embedder returned {len(vectors)} vectors for {count} texts")
        for vector in vectors:
            if len(vector) != self.embedder.dimension:
                raise ConfigurationError(
                    f"embedder returned a {len(vector)}-d vector, expected {self.embedder.dimension}"
                )
        return list(vectors)

    def _next_seq(self) -> int:
        # Strictly increasing across calls and restarts: the order L1 demotes in and the
        # order of a session's turns. In microseconds, so that it stays exact as a float:
        # the stores compare range bounds as floats.
        with self._seq_lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
            return self._last_seq

    def observe_seq(self, seq: int) -> None:
        """Points with `seq` were written from elsewhere (an import): later ones follow them."""
        with self._seq_lock:
            self._last_seq = max(self._last_seq, seq)

    def _newest_seq(self) -> int:
        newest = 0
        for collection in self.collections.values():
            top = self.backend.scroll(collection, None, 1, order_by="seq", descending=True)
            if top and isinstance(top[0].payload.get("seq"), int):
                newest = max(newest, top[0].payload["seq"])
        return newest

    def _rescale_seq(self) -> None:
        """Points written when `seq` was in nanoseconds get it in microseconds, once."""
        legacy = Filter(must=(Condition("seq", range=Range(gte=float(_EXACT_FLOAT_INT))),))
        for collection in self.collections.values():
            rescaled = 0
            while points := self.backend.scroll(collection, legacy, _BATCH):
                for p in points:
                    seq = int(p.payload["seq"]) // 1000
                    self.backend.set_payload(collection, [p.id], {"seq": seq})
                rescaled += len(points)
            if rescaled:
                logger.info("rescaled seq of %d point(s) in %s", rescaled, collection)

    def _finish_moves(self) -> None:
        """Finish or undo the moves between levels that a crash interrupted (see `_relocate`):
        a point whose copy reached its target level is deleted where it was, one whose copy
        did not stays where it was. Either way every item is in exactly one level."""
        marked = Filter(must=(Condition(_MOVING, any_of=tuple(lvl.value for lvl in Level)),))
        for source in Level:
            collection = self.collections[source]
            finished = undone = 0
            while points := self.backend.scroll(collection, marked, _BATCH):
                by_target: dict[Level, list[str]] = {}
                for p in points:
                    by_target.setdefault(Level.parse(p.payload[_MOVING]), []).append(p.id)
                for target, ids in by_target.items():
                    arrived = (
                        set()
                        if target is source
                        else {p.id for p in self.backend.retrieve(self.collections[target], ids)}
                    )
                    self.backend.delete(collection, [i for i in ids if i in arrived])
                    stayed = [i for i in ids if i not in arrived]
                    self.backend.set_payload(collection, stayed, {_MOVING: None})
                    finished += len(arrived)
                    undone += len(stayed)
            if finished or undone:
                logger.warning(
                    "%s: finished %d and undid %d move(s) interrupted by a crash",
                    collection,
                    finished,
                    undone,
                )

    def _bound_l1(self, agent: str, session: str | None) -> None:
        """Move the oldest Immediate items of a session past `l1_size` down to ShortTerm."""
        scope = _scope_filter(agent, session, None, exact_session=True)
        collection = self.collections[Level.IMMEDIATE]
        with self.access.settling() as settle:
            excess = self.backend.count(collection, scope) - self.settings.l1_size
            if excess <= 0:
                return
            oldest = self.backend.scroll(
                collection, scope, excess, order_by="seq", with_vectors=True
            )
            self._move(oldest, Level.SHORT_TERM, Level.IMMEDIATE, settle)

    def _move(
        self,
        points: Sequence[StoredPoint],
        target: Level,
        source: Level,
        settle: Callable[[StoredPoint], dict[str, Any]],
    ) -> int:
        """Move points read inside `self.access.settling()` (which gave `settle`)."""
        now = self.clock.now()
        records = []
        for p in points:
            if p.dense is None or p.sparse is None:
                logger.warning("point %s has no vectors; left in %s", p.id, source.value)
                continue
            payload = {**settle(p), "level": target.value, "stored_at": now}
            payload.pop(_MOVING, None)
            records.append(PointRecord(p.id, p.dense, p.sparse, payload))
        self._relocate(records, source, target)
        return len(records)

    def _relocate(self, records: Sequence[PointRecord], source: Level, target: Level) -> None:
        """Write `records` to `target` and delete them from `source`, so that a crash at any
        point leaves each in exactly one level once the store is opened again.

        The copies keep their ids. The originals are marked with the target first: a crash
        after the copies were written and before the originals were deleted leaves marked
        originals whose copies exist, which `_finish_moves` deletes; a crash before leaves
        marked originals without copies, which it unmarks. A reader meanwhile may see both
        copies of one id; it keeps the first it meets."""
        if not records:
            return
        ids = [r.id for r in records]
        origin = self.collections[source]
        self.backend.set_payload(origin, ids, {_MOVING: target.value})
        self.backend.upsert(self.collections[target], records)
        self.backend.delete(origin, ids)

    # ---------------------------------------------------------------------------- search
    def search(
        self,
        query: str,
        max_tokens: int,
        *,
        levels: Iterable[Level | str] | None = None,
        agent_id: str = DEFAULT_AGENT,
        session_id: str | None = None,
        user_id: str | None = None,
        filters: Filter | None = None,
        as_of: Any = None,
        query_vector: list[float] | None = None,
    ) -> SearchResult:
        """The most relevant contexts whose token counts sum to at most `max_tokens`.

        `query_vector`: the query's embedding from `submit_query(query)`."""
        started = time.perf_counter()
        query = check_text(query, "query", self.settings.max_text_chars)
        if (
            isinstance(max_tokens, bool)
            or not isinstance(max_tokens, int)
            or not (1 <= max_tokens <= self.settings.max_query_tokens)
        ):
            raise ValidationError(
                f"max_tokens must be an integer from 1 to {self.settings.max_query_tokens}",
                {"field": "max_tokens"},
            )
        wanted = _parse_levels(levels)
        agent = check_agent_id(agent_id)
        scope = _scope_filter(
            agent, check_scope_id(session_id, "session_id"), check_scope_id(user_id, "user_id")
        )
        reference = check_timestamp(as_of, "as_of")
        now = reference if reference is not None else self.clock.now()
        if query_vector is None:
            query_vector = self._embed([query])[0]
        else:
            query_vector = self._checked([query_vector], 1)[0]
        query_sparse = self.sparse.query(query)
        # Searches hold the GIL from here on when the store does: run them `parallel_queries`
        # at a time, as threads interleaving on the GIL cost more CPU for the same work.
        with self._search_slots:
            contexts, searched, malformed = self._retrieve(
                query, query_vector, query_sparse, scope & filters, wanted, max_tokens, now
            )
        # Written outside the search slot, so a flush never holds up the searches queued there.
        self.access.flush_if_due()
        distribution: dict[str, int] = {}
        for context in contexts:
            distribution[context.level.value] = distribution.get(context.level.value, 0) + 1
        total_tokens = sum(c.token_count for c in contexts)
        return SearchResult(
            contexts=contexts,
            total_tokens=total_tokens,
            retrieval_time_ms=round((time.perf_counter() - started) * 1000, 3),
            level_distribution=distribution,
            avg_relevance=(
                round(sum(c.relevance_score or 0.0 for c in contexts) / len(contexts), 6)
                if contexts
                else 0.0
            ),
            total_searched=searched,
            skipped_malformed=malformed,
        )

    def _retrieve(
        self,
        query: str,
        query_vector: list[float],
        query_sparse: SparseVec,
        flt: Filter,
        wanted: list[Level],
        max_tokens: int,
        now: float,
    ) -> tuple[list[Context], int, int]:
        """The chosen contexts, how many candidates were ranked, how many were malformed.

        Starts with `candidate_limit` candidates per level and query; when they leave the
        budget less than nearly full while some list was cut at the limit, asks again for
        twice as many, up to `candidates_per_level`.
        """
        ceiling = self.settings.candidates_per_level
        limit = candidate_limit(max_tokens, ceiling)
        allocation = {lvl: self.allocation[lvl] for lvl in wanted}
        named_periods = periods(query) if self.settings.period_boost > 0 else []
        while True:
            found, malformed, cut = self._candidates(
                query_vector, query_sparse, flt, wanted, now, limit
            )
            self._add_neighbours(found, flt)
            self._favour_cues(found, query, named_periods)
            chosen = select_within_budget(
                list(found.values()),
                max_tokens,
                allocation,
                self.settings.min_contexts_per_level,
                self.settings.relevance_threshold,
            )
            filled = sum(c.tokens for c in chosen) >= max_tokens * _FILLED
            if filled or not cut or limit >= ceiling:
                break
            limit = min(ceiling, limit * 2)
        # Only the chosen few are read whole (text, metadata); the candidates were ranked on
        # the few payload keys that scoring needs, which keeps a search cheap.
        current = self._count_access(chosen)
        contexts = []
        for c in chosen:
            whole = current.get(c.key)
            if whole is None:
                continue  # deleted since it was found
            if not _well_formed(whole.payload):
                malformed += 1
                continue
            context = _context(whole, c.level)
            context.relevance_score = round(c.score, 6)
            context.similarity = round(c.similarity, 6)
            contexts.append(context)
        if malformed:
            logger.warning("skipped %d malformed point(s) during search", malformed)
        return contexts, len(found), malformed

    def _candidates(
        self,
        query_vector: list[float],
        query_sparse: SparseVec,
        flt: Filter,
        wanted: list[Level],
        now: float,
        limit: int,
    ) -> tuple[dict[str, Candidate], int, bool]:
        """Scored candidates by id, how many were malformed, and whether a list was cut."""
        found: dict[str, Candidate] = {}
        malformed = 0
        cut = False
        pending = self.access.pending
        for level in wanted:
            dense_hits, sparse_hits = self.backend.hybrid_search(
                self.collections[level],
                query_vector,
                query_sparse,
                limit,
                flt,
                payload_keys=_RANKING_KEYS,
            )
            cut = cut or len(dense_hits) >= limit or len(sparse_hits) >= limit
            fused = fuse_hybrid(dense_hits, sparse_hits, self.settings.hybrid_alpha, self.distance)
            for hit, similarity in fused:
                if hit.id in found:
                    continue
                payload = hit.payload
                if not _rankable(payload):
                    malformed += 1
                    continue
                score = composite(
                    similarity,
                    now - payload["timestamp"],
                    level,
                    payload.get("access_count", 0) + pending(hit.id),
                    self.weights,
                )
                found[hit.id] = _candidate(hit.id, level, score, similarity, payload)
        return found, malformed, cut

    def _add_neighbours(self, found: dict[str, Candidate], flt: Filter) -> None:
        """Adds the turns stored just before and just after each of the best candidates in
        their session, with `neighbour_weight` times their hit's score and similarity (or
        their own, when they are candidates too and score higher).

        Why: a turn that matches the query is often a question whose answer is the next
        turn ("How was the opening night?" / "Great, we sold out"), or a reply whose
        subject is in the turn before. Such a turn shares few words with the query; it is
        relevant through its neighbour, so the relevance threshold sees it that way too.
        A neighbour that is not a candidate ranked below the candidate lists' cut on both
        similarities, so its own score would be lower still.
        """
        count = self.settings.neighbour_hits
        if count <= 0 or not found:
            return
        weight = self.settings.neighbour_weight
        best = heapq.nlargest(count, found.values(), key=lambda c: (c.score, -c.order))
        placed = {hit.key: (hit.session, hit.order) for hit in best if hit.session is not None}
        # Both neighbours of every hit of a level in one call.
        for level in {hit.level for hit in best}:
            hits = [hit for hit in best if hit.level is level and hit.key in placed]
            scrolls = [
                OrderedScroll(
                    flt
                    & Filter(
                        must=(
                            Condition("session_id", match=placed[hit.key][0]),
                            Condition("seq", range=bound),
                        )
                    ),
                    "seq",
                    descending,
                )
                for hit in hits
                for descending, bound in (
                    (True, Range(lt=placed[hit.key][1])),
                    (False, Range(gt=placed[hit.key][1])),
                )
            ]
            found_near = self.backend.scroll_many(self.collections[level], scrolls)
            for i, near in enumerate(found_near):
                hit = hits[i // 2]
                for p in near:
                    own = found.get(p.id)
                    if own is not None:
                        found[p.id] = own._replace(
                            score=max(own.score, weight * hit.score),
                            similarity=max(own.similarity, weight * hit.similarity),
                        )
                    elif _rankable(p.payload):
                        found[p.id] = _candidate(
                            p.id, hit.level, weight * hit.score, weight * hit.similarity, p.payload
                        )

    def _favour_cues(
        self, found: dict[str, Candidate], query: str, named_periods: Sequence[Period]
    ) -> None:
        """Raises the score of the candidates said by a speaker the query names (when it
        does not name every speaker among them), by `speaker_boost`, and of those said
        within a period the query names, by `period_boost`. Every score of such a search is
        then divided by one plus the boosts it applied, so that scores stay within 0-1 (a
        caller's snippet of score 1 still ranks first in a prompt)."""
        named: set[str] = set()
        if self.settings.speaker_boost > 0:
            speakers = {c.speaker for c in found.values() if c.speaker is not None}
            named = named_speakers(query, speakers)
            if named == speakers:
                named = set()
        speaker_bonus = self.settings.speaker_boost if named else 0.0
        period_bonus = self.settings.period_boost if named_periods else 0.0
        if not speaker_bonus and not period_bonus:
            return
        scale = 1.0 + speaker_bonus + period_bonus
        for key, c in found.items():
            score = c.score
            if c.speaker in named:
                score += speaker_bonus
            if c.timestamp is not None and any(p.contains_told(c.timestamp) for p in named_periods):
                score += period_bonus
            found[key] = c._replace(score=score / scale)

    def _count_access(self, chosen: Sequence[Candidate]) -> dict[str, StoredPoint]:
        """Count one access of each returned point; returns them as stored now, by id."""
        if not chosen:
            return {}
        by_collection: dict[str, list[str]] = {}
        for c in chosen:
            by_collection.setdefault(self.collections[c.level], []).append(c.key)
        return self.access.record(by_collection)

    # ------------------------------------------------------------------ get/update/delete
    def get(self, context_id: str, *, agent_id: str | None = None) -> Context:
        found = self._find(context_id, agent_id, with_vectors=False, counted=True)
        if found is None:
            raise NotFoundError(f"context {context_id} not found", {"id": context_id})
        point, level = found
        return _context(point, level)

    def update(
        self,
        context_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        level: Level | str | None = None,
        timestamp: Any = None,
        agent_id: str | None = None,
    ) -> Context:
        """Change text (re-embedded), merge metadata (a null value removes a key), move level."""
        _check_id(context_id)
        new_text = None
        if text is not None:
            checked = check_text(text, "text", self.settings.max_text_chars)
            new_text = (checked, self._embed([checked])[0], self.sparse.document(checked))
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError("metadata must be an object", {"field": "metadata"})
        new_ts = check_timestamp(timestamp)
        # Read and rewritten with counting held off, so no access counted meanwhile is lost.
        with self.access.settling() as settle:
            found = self._find(context_id, agent_id, with_vectors=True)
            if found is None:
                raise NotFoundError(f"context {context_id} not found", {"id": context_id})
            point, old_level = found
            payload = settle(point)
            dense, sparse = point.dense, point.sparse
            if new_text is not None:
                payload["text"], dense, sparse = new_text
                payload["token_count"] = self.counter.count(new_text[0])
            if metadata is not None:
                merged = {**payload.get("metadata", {}), **metadata}
                payload["metadata"] = check_metadata(
                    {k: v for k, v in merged.items() if v is not None}
                )
            if new_ts is not None:
                payload["timestamp"] = new_ts
            new_level = Level.parse(level) if level is not None else old_level
            if dense is None or sparse is None:
                raise ConfigurationError(f"context {context_id} has no stored vectors")
            payload["level"] = new_level.value
            payload["stored_at"] = self.clock.now()
            payload.pop(_MOVING, None)
            record = PointRecord(point.id, dense, sparse, payload)
            if new_level is old_level:
                self.backend.upsert(self.collections[new_level], [record])
            else:
                self._relocate([record], old_level, new_level)
        if new_level is Level.IMMEDIATE and old_level is not Level.IMMEDIATE:
            self._bound_l1(payload["agent_id"], payload.get("session_id"))
        return _context(StoredPoint(point.id, payload), new_level)

    def delete(self, context_id: str, *, agent_id: str | None = None) -> None:
        # Under the lock of updates and moves: one that read the item before the delete
        # cannot write it back after.
        with self.access.settling() as settle:
            found = self._find(context_id, agent_id, with_vectors=False)
            if found is None:
                raise NotFoundError(f"context {context_id} not found", {"id": context_id})
            settle(found[0])  # its pending accesses go with it
            for collection in self.collections.values():
                self.backend.delete(collection, [context_id])

    def clear_level(self, level: Level | str, *, agent_id: str | None = None) -> int:
        """Delete every item of a level (only `agent_id`'s when given); returns how many."""
        lvl = Level.parse(level)
        collection = self.collections[lvl]
        if agent_id is not None:
            agent = check_scope_id(agent_id, "agent_id", required=True)
            assert agent is not None
            flt = Filter(must=(Condition("agent_id", match=agent),))
        else:
            flt = Filter(must=(Condition("level", match=lvl.value),))
        with self.access.settling():
            removed = self.backend.count(collection, flt)
            self.backend.delete_by_filter(collection, flt)
        return removed

    def delete_where(self, flt: Filter) -> int:
        """Delete the items of every level that match `flt`; returns how many."""
        removed = 0
        with self.access.settling():
            for collection in self.collections.values():
                removed += self.backend.count(collection, flt)
                self.backend.delete_by_filter(collection, flt)
        return removed

    def move_where(self, flt: Filter, target: Level) -> int:
        """Move the items of the other levels that match `flt` to `target`, oldest first,
        crash-safe as every move between levels; returns how many moved."""
        moved = 0
        for source in Level:
            if source is target:
                continue
            collection = self.collections[source]
            while True:
                with self.access.settling() as settle:
                    points = self.backend.scroll(
                        collection, flt, _BATCH, order_by="seq", with_vectors=True
                    )
                    if not points:
                        break
                    done = self._move(points, target, source, settle)
                moved += done
                if done < len(points):  # points without vectors stay: do not loop on them
                    break
        return moved

    def _find(
        self, context_id: str, agent_id: str | None, with_vectors: bool, counted: bool = False
    ) -> tuple[StoredPoint, Level] | None:
        """The point and its level; `counted` adds the access counts not yet written.
        Uncounted, the caller holds `self.access.settling()`."""
        _check_id(context_id)
        names = [self.collections[level] for level in Level]
        if counted:
            found = self.access.read(names, [context_id], with_vectors)
        else:
            found = [self.backend.retrieve(name, [context_id], with_vectors) for name in names]
        for level, points in zip(Level, found, strict=True):
            for p in points:
                if not _well_formed(p.payload):
                    continue
                if agent_id is not None and p.payload.get("agent_id") != agent_id:
                    return None
                return p, level
        return None

    # ------------------------------------------------------------------------ statistics
    def count(self, level: Level | str | None = None, *, agent_id: str | None = None) -> int:
        flt = Filter(must=(Condition("agent_id", match=agent_id),)) if agent_id else None
        levels = [Level.parse(level)] if level is not None else list(Level)
        return sum(self.backend.count(self.collections[lvl], flt) for lvl in levels)

    def stats(self) -> dict[str, Any]:
        return {
            "store": self.backend.name,
            "embedding_model": self.embedder.model_name,
            "dimension": self.embedder.dimension,
            "token_counter": self.counter.name,
            "levels": {lvl.value: self.backend.count(self.collections[lvl]) for lvl in Level},
        }

    # ----------------------------------------------------------------------- maintenance
    def run_maintenance(self, now: float | None = None) -> MaintenanceReport:
        """Consolidate or expire ShortTerm items older than l2_ttl; expire LongTerm past l3_ttl.

        Age counts from `stored_at` (when the item entered its level), not from the event
        timestamp, so imported history is not expired on arrival.
        """
        now = self.clock.now() if now is None else now
        consolidated = expired_l2 = expired_l3 = 0
        with self._maintenance_lock:
            l2 = self.collections[Level.SHORT_TERM]
            old = Filter(
                must=(Condition("stored_at", range=Range(lt=now - self.settings.l2_ttl_secs)),)
            )
            while True:
                # One batch at a time under the lock: searches count accesses in between.
                with self.access.settling() as settle:
                    batch = self.backend.scroll(l2, old, _BATCH, with_vectors=True)
                    if not batch:
                        break
                    if self.settings.l2_expiry == "expire":
                        for p in batch:
                            settle(p)
                        self.backend.delete(l2, [p.id for p in batch])
                        expired_l2 += len(batch)
                        continue
                    moved = self._move(batch, Level.LONG_TERM, Level.SHORT_TERM, settle)
                consolidated += moved
                if moved < len(batch):
                    break  # points without vectors cannot move; do not spin on them
            if self.settings.l3_ttl_secs is not None:
                l3 = self.collections[Level.LONG_TERM]
                stale = Filter(
                    must=(Condition("stored_at", range=Range(lt=now - self.settings.l3_ttl_secs)),)
                )
                with self.access.settling():
                    expired_l3 = self.backend.count(l3, stale)
                    if expired_l3:
                        self.backend.delete_by_filter(l3, stale)
        if consolidated or expired_l2 or expired_l3:
            logger.info(
                "maintenance: consolidated=%d expired_l2=%d expired_l3=%d",
                consolidated,
                expired_l2,
                expired_l3,
            )
        return MaintenanceReport(consolidated, expired_l2, expired_l3)

    def start_maintenance(self) -> None:
        """Run `run_maintenance` every `maintenance_interval_secs` on a daemon thread."""
        self._maintenance.start(self.settings.maintenance_interval_secs)

    def _maintain(self) -> None:
        self.access.flush()
        self.run_maintenance()

    def stop_maintenance(self) -> None:
        self._maintenance.stop()

    def close(self) -> None:
        self.stop_maintenance()
        try:
            self.access.flush()
        except InsufficientStorageError as exc:  # the counts are lost; the data is not
            logger.warning("access counts not written at close: %s", exc.message)
        finally:
            if self.owns_backend:
                self.backend.close()

    def __enter__(self) -> HiRAG:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_levels(levels: Iterable[Level | str] | None) -> list[Level]:
    if levels is None:
        return list(Level)
    if isinstance(levels, str):
        levels = [levels]
    parsed: list[Level] = []
    for value in levels:
        level = Level.parse(value)
        if level not in parsed:
            parsed.append(level)
    return parsed or list(Level)


def _scope_filter(
    agent: str, session: str | None, user: str | None, exact_session: bool = False
) -> Filter:
    conditions: list[Condition] = [Condition("agent_id", match=agent)]
    if session is not None:
        conditions.append(Condition("session_id", match=session))
    if user is not None:
        conditions.append(Condition("user_id", match=user))
    if exact_session and session is None:
        # L1 of "no session" must not count other sessions' items.
        conditions.append(Condition("session_id", is_null=True))
    return Filter(must=tuple(conditions))


# Who said a context is its `metadata.name`, as a session stores each message's name.
_RANKING_KEYS = (
    "timestamp",
    "token_count",
    "access_count",
    "seq",
    "session_id",
    "metadata.name",
)
# Candidates per level and query: enough to fill the budget with items of this many tokens
# (a turn of conversation), and never fewer than the floor. Larger pools did not find more
# evidence on long conversations and ranked worse (bench/README.md, conversation_recall);
# a search whose candidates leave the budget short asks again for more.
_TOKENS_PER_CANDIDATE = 40
_MIN_CANDIDATES = 40
# Share of the budget under which a search that was cut at its limit asks for more.
_FILLED = 0.9


def candidate_limit(max_tokens: int, ceiling: int) -> int:
    """How many candidates to fetch per level and query for a budget of `max_tokens`."""
    wanted = max(_MIN_CANDIDATES, math.ceil(max_tokens / _TOKENS_PER_CANDIDATE))
    return min(ceiling, wanted)


def _candidate(
    key: str, level: Level, score: float, similarity: float, payload: dict[str, Any]
) -> Candidate:
    seq, metadata, session = payload.get("seq"), payload.get("metadata"), payload.get("session_id")
    speaker = metadata.get("name") if isinstance(metadata, dict) else None
    placed = isinstance(seq, int) and isinstance(session, str)
    return Candidate(
        key,
        level,
        score,
        similarity,
        payload["token_count"],
        seq if isinstance(seq, int) else 0,
        speaker.strip() if isinstance(speaker, str) and speaker.strip() else None,
        float(payload["timestamp"]),
        session if placed else None,
    )


def _rankable(payload: dict[str, Any]) -> bool:
    return (
        isinstance(payload.get("timestamp"), int | float)
        and isinstance(payload.get("token_count"), int)
        and isinstance(payload.get("access_count", 0), int)
    )


def _well_formed(payload: dict[str, Any]) -> bool:
    try:
        return (
            isinstance(payload.get("text"), str)
            and isinstance(payload.get("agent_id"), str)
            and Level.parse(payload.get("level", "")) is not None
            and isinstance(payload.get("timestamp"), int | float)
            and isinstance(payload.get("token_count"), int)
            and isinstance(payload.get("metadata", {}), dict)
        )
    except ValidationError:
        return False


def _context(point: StoredPoint, level: Level) -> Context:
    p = point.payload
    return Context(
        id=point.id,
        text=p["text"],
        level=level,
        token_count=int(p["token_count"]),
        timestamp=to_datetime(float(p["timestamp"])),
        agent_id=p["agent_id"],
        session_id=p.get("session_id"),
        user_id=p.get("user_id"),
        metadata=p.get("metadata") or {},
        access_count=int(p.get("access_count") or 0),
        stored_at=to_datetime(float(p.get("stored_at", p["timestamp"]))),
    )


def _check_id(context_id: str) -> None:
    if not is_uuid(context_id):
        raise ValidationError("id must be a UUID", {"field": "id", "value": str(context_id)[:64]})
