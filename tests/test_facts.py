"""The facts store on the embedded Qdrant with the real embedding model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hirag_oz.config import FactsSettings
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.errors import NotFoundError, ValidationError
from hirag_oz.facts import Anchor, FactQuery, FactStore, NewFact, fact_hash
from hirag_oz.store.edge import EdgeStore
from tests.conftest import FakeClock

MakeFacts = Callable[..., FactStore]


@pytest.fixture
def make_facts(tmp_path: Path, embedder: CachedEmbedder, clock: FakeClock) -> Iterator[MakeFacts]:
    stores: list[EdgeStore] = []

    def make(data: Path | None = None, **settings: object) -> FactStore:
        backend = EdgeStore((data or tmp_path) / "qdrant")
        stores.append(backend)
        return FactStore(backend, embedder, FactsSettings(**settings), clock=clock)  # type: ignore[arg-type]

    yield make
    for backend in stores:
        backend.close()


def _fact(subject: str = "billing", obj: str = "payments team", **kw: object) -> NewFact:
    return NewFact(subject, kw.pop("predicate", "owned_by"), obj, kw.pop("confidence", 0.9), **kw)  # type: ignore[arg-type]


def test_everything_inserted_comes_back(make_facts: MakeFacts) -> None:
    facts = make_facts()
    anchor = Anchor(doc_id="d1", page=3, region_id="r7", vt_ref="vt:9", path_line="a.py:12")
    new = NewFact(
        " billing ",
        "owned_by",
        "payments team",
        0.95,
        agent_id="a1",
        datatype="team",
        source_doc="org-chart.pdf",
        source_anchor=anchor,
        observed_at=1_700_000_000.0,
        valid_from=1_690_000_000.0,
        valid_to=1_800_000_000.0,
    )
    done = facts.insert(new)
    got = facts.get(done.fact_id, agent_id="a1")
    assert (got.subject, got.predicate, got.object) == ("billing", "owned_by", "payments team")
    assert got.confidence == 0.95 and got.datatype == "team" and got.source_doc == "org-chart.pdf"
    assert got.source_anchor == anchor and got.agent_id == "a1"
    assert (got.observed_at, got.valid_from, got.valid_to) == (1.7e9, 1.69e9, 1.8e9)
    assert got.hash == done.hash == fact_hash("billing", "owned_by", "payments team", anchor)
    canonical = '["billing","owned_by","payments team",["d1",3,"r7","vt:9","a.py:12"]]'
    assert done.hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert json.loads(canonical)[3][1] == 3


def test_the_hash_has_no_separator_ambiguity() -> None:
    assert fact_hash("a|b", "c", "d", Anchor()) != fact_hash("a", "b|c", "d", Anchor())
    assert fact_hash("a", "b", "c", Anchor(doc_id="x")) != fact_hash("a", "b", "c", Anchor())


def test_inserts_are_idempotent_per_agent(make_facts: MakeFacts) -> None:
    facts = make_facts()
    first, again = facts.insert(_fact()), facts.insert(_fact(confidence=0.99))
    assert first.fact_id == again.fact_id and not first.duplicate and again.duplicate
    assert facts.get(first.fact_id).confidence == 0.9  # the first one stays
    other = facts.insert(_fact(agent_id="b"))
    assert not other.duplicate and other.fact_id != first.fact_id
    batch = facts.insert_many([_fact(obj="x"), _fact(obj="x")])
    assert [b.duplicate for b in batch] == [False, True]
    assert facts.count() == 3


def test_forty_racing_inserts_store_one(make_facts: MakeFacts) -> None:
    facts = make_facts()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: facts.insert(_fact(obj="race")), range(40)))
    assert len({r.fact_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert facts.count() == 1


def test_bad_facts_are_rejected(make_facts: MakeFacts) -> None:
    facts = make_facts()
    with pytest.raises(ValidationError) as low:
        facts.insert(_fact(confidence=0.5))
    assert low.value.details["threshold"] == 0.8
    for blank in ("", "   "):
        with pytest.raises(ValidationError):
            facts.insert(_fact(subject=blank))
    with pytest.raises(ValidationError):
        facts.insert(_fact(obj="x" * 2001))
    with pytest.raises(ValidationError):
        facts.insert(_fact(valid_from=10.0, valid_to=5.0))
    assert facts.count() == 0


def test_filters_total_and_stable_pages(make_facts: MakeFacts, clock: FakeClock) -> None:
    facts = make_facts()
    # One batch: every fact has the same observed_at, so the id decides the order.
    facts.insert_many(
        [
            _fact(f"service-{i}", "team" if i % 2 else "ops", source_doc=f"doc-{i % 3}")
            for i in range(25)
        ]
    )
    clock.advance(10)
    facts.insert(_fact("service-x", "ops", confidence=0.85))
    everything = facts.query(FactQuery(limit=100)).facts
    pages = [facts.query(FactQuery(limit=7, offset=o)) for o in range(0, 28, 7)]
    assert all(p.total == 26 for p in pages)
    assert [f.id for p in pages for f in p.facts] == [f.id for f in everything]
    assert [f.id for f in everything[:-1]] == sorted(f.id for f in everything[:-1])
    assert everything[-1].subject == "service-x"  # observed later
    ops = facts.query(FactQuery(object="ops", min_confidence=0.88))
    assert ops.total == 13 and all(f.object == "ops" for f in ops.facts)
    assert facts.query(FactQuery(source_doc="doc-1", predicate="owned_by")).total == 8
    with pytest.raises(ValidationError):
        facts.query(FactQuery(limit=101))


def test_text_queries_rank_by_meaning(make_facts: MakeFacts) -> None:
    facts = make_facts()
    facts.insert(_fact("billing", obj="payments team"))
    facts.insert(_fact("kitchen", predicate="has", obj="a coffee machine"))
    page = facts.query(FactQuery(text="who owns invoicing and payments?"))
    assert page.facts[0].subject == "billing" and page.total == 2
    assert page.scores is not None and page.scores[0] > page.scores[1]
    assert facts.query(FactQuery(text="coffee", subject="billing")).facts[0].subject == "billing"


def test_a_functional_predicate_closes_the_old_truth(make_facts: MakeFacts) -> None:
    facts = make_facts(functional_predicates=["lives_in"])
    old = facts.insert(_fact("ana", predicate="lives_in", obj="Lisbon", valid_from=100.0))
    new = facts.insert(_fact("ana", predicate="lives_in", obj="Porto", valid_from=200.0))
    assert new.closed == (old.fact_id,)
    assert facts.get(old.fact_id).valid_to == 200.0 and facts.get(new.fact_id).valid_to is None
    assert [f.object for f in facts.query(FactQuery(subject="ana", valid_at=150.0)).facts] == [
        "Lisbon"
    ]
    assert [f.object for f in facts.query(FactQuery(subject="ana", valid_at=250.0)).facts] == [
        "Porto"
    ]
    assert facts.query(FactQuery(subject="ana")).total == 2  # nothing deleted
    # Not functional: two current truths; `exclusive` asks for the closing per insert.
    facts.insert(_fact("ana", predicate="likes", obj="tea", valid_from=100.0))
    facts.insert(_fact("ana", predicate="likes", obj="coffee", valid_from=200.0))
    assert facts.query(FactQuery(predicate="likes", valid_at=250.0)).total == 2
    facts.insert(_fact("ana", predicate="likes", obj="juice", valid_from=300.0, exclusive=True))
    assert [f.object for f in facts.query(FactQuery(predicate="likes", valid_at=350.0)).facts] == [
        "juice"
    ]


def test_get_delete_and_restart(make_facts: MakeFacts, tmp_path: Path) -> None:
    facts = make_facts(tmp_path / "d")
    kept, gone = facts.insert(_fact(obj="kept")), facts.insert(_fact(obj="gone"))
    facts.delete(gone.fact_id)
    with pytest.raises(NotFoundError):
        facts.get(gone.fact_id)
    with pytest.raises(NotFoundError):
        facts.delete(gone.fact_id)
    with pytest.raises(NotFoundError):
        facts.get(kept.fact_id, agent_id="someone-else")
    facts.backend.close()
    reopened = make_facts(tmp_path / "d")
    assert reopened.get(kept.fact_id).object == "kept" and reopened.count() == 1


def test_pages_over_distinct_real_times_miss_nothing(make_facts: MakeFacts) -> None:
    # Float range bounds of the store miss about one value in ten at its own bound; times
    # are compared as integer microseconds.
    facts = make_facts()
    base = 1_764_000_000.123456
    facts.insert_many([_fact(f"t{i}", observed_at=base + i * 0.001337) for i in range(30)])
    pages = [facts.query(FactQuery(limit=4, offset=o)).facts for o in range(0, 32, 4)]
    assert [f.subject for page in pages for f in page] == [f"t{i}" for i in range(30)]


def test_the_server_adapter_holds_facts_the_same_way(
    embedder: CachedEmbedder, clock: FakeClock
) -> None:
    from hirag_oz.store.server import ServerStore

    backend = ServerStore.connect(":memory:")
    try:
        facts = FactStore(
            backend, embedder, FactsSettings(functional_predicates=["lives_in"]), clock=clock
        )
        first, again = facts.insert(_fact()), facts.insert(_fact())
        assert first.fact_id == again.fact_id and again.duplicate and not first.duplicate
        facts.insert(_fact("ana", predicate="lives_in", obj="Lisbon", valid_from=100.0))
        facts.insert(_fact("ana", predicate="lives_in", obj="Porto", valid_from=200.0))
        then = facts.query(FactQuery(subject="ana", valid_at=150.0)).facts
        assert [f.object for f in then] == ["Lisbon"]
        facts.insert_many([_fact(f"s{i}", observed_at=1_764_000_000.0) for i in range(9)])
        pages = [facts.query(FactQuery(limit=4, offset=o)).facts for o in (0, 4, 8, 12)]
        ids = [f.id for page in pages for f in page]
        assert len(ids) == len(set(ids)) == facts.count() == 12
    finally:
        backend.close()
