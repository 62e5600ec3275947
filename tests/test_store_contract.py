"""One contract, two adapters: Qdrant Edge (embedded) and qdrant-client (server API, in memory)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hirag_oz.errors import ConfigurationError
from hirag_oz.store.base import (
    CollectionSpec,
    Condition,
    Filter,
    OrderedScroll,
    PointRecord,
    Range,
    SparseVec,
    VectorStore,
    scan,
)
from hirag_oz.store.edge import EdgeStore
from hirag_oz.store.server import ServerStore
from hirag_oz.store.sparse import Bm25Encoder

INDEXES = {"agent_id": "tenant", "seq": "integer", "metadata.topic": "keyword"}
BM25 = Bm25Encoder()


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    adapter: VectorStore
    adapter = (
        EdgeStore(tmp_path / "edge") if request.param == "edge" else ServerStore.connect(":memory:")
    )
    yield adapter
    adapter.close()


def _point(vector: list[float], text: str, **payload: object) -> PointRecord:
    return PointRecord(str(uuid.uuid4()), vector, BM25.document(text), {"text": text, **payload})


def _fill(store: VectorStore, distance: str = "Cosine") -> list[PointRecord]:
    store.ensure_collection(CollectionSpec("c", 3, distance, INDEXES))  # type: ignore[arg-type]
    points = [
        _point(
            [1, 0, 0],
            "red apples in the basket",
            seq=1,
            agent_id="a",
            metadata={"topic": "fruit", "n": 1, "ratio": 0.5, "fresh": True, "tags": ["x", "y"]},
        ),
        _point(
            [0.9, 0.1, 0],
            "green apples and pears",
            seq=2,
            agent_id="a",
            metadata={"topic": "fruit", "n": 2, "ratio": 1.5, "fresh": False},
        ),
        _point(
            [0, 1, 0],
            "a blue car on the road",
            seq=3,
            agent_id="b",
            metadata={"topic": "cars", "n": 3, "ratio": 2.5, "fresh": True},
            session_id=None,
        ),
        _point(
            [0, 0, 1],
            "quantum physics lecture notes",
            seq=4,
            agent_id="b",
            metadata={"topic": "science", "n": 4},
            session_id="s1",
        ),
    ]
    store.upsert("c", points)
    return points


def _ids(store: VectorStore, flt: Filter) -> set[str]:
    return {p.payload["text"] for p in store.scroll("c", flt, 100)}


def test_round_trip_keeps_native_metadata(store: VectorStore) -> None:
    points = _fill(store)
    got = store.retrieve("c", [points[0].id], with_vectors=True)[0]
    assert got.payload["metadata"] == {
        "topic": "fruit",
        "n": 1,
        "ratio": 0.5,
        "fresh": True,
        "tags": ["x", "y"],
    }
    assert got.dense == pytest.approx([1, 0, 0])
    assert got.sparse is not None and got.sparse.indices
    assert store.retrieve("c", [str(uuid.uuid4())]) == []


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            Condition("metadata.topic", match="fruit"),
            {"red apples in the basket", "green apples and pears"},
        ),
        (Condition("metadata.n", match=3), {"a blue car on the road"}),
        (Condition("metadata.ratio", match=1.5), {"green apples and pears"}),
        (
            Condition("metadata.fresh", match=True),
            {"red apples in the basket", "a blue car on the road"},
        ),
        (Condition("metadata.fresh", match=False), {"green apples and pears"}),
        (Condition("metadata.tags", match="y"), {"red apples in the basket"}),
        (
            Condition("metadata.n", any_of=(1, 4)),
            {"red apples in the basket", "quantum physics lecture notes"},
        ),
        (
            Condition("metadata.ratio", range=Range(gt=0.5, lte=2.5)),
            {"green apples and pears", "a blue car on the road"},
        ),
        # is_null matches an explicit null, not a missing key (the manager always writes the key)
        (Condition("session_id", is_null=True), {"a blue car on the road"}),
    ],
)
def test_filters_match_native_values(
    store: VectorStore, condition: Condition, expected: set[str]
) -> None:
    _fill(store)
    assert _ids(store, Filter(must=(condition,))) == expected


def test_should_must_not_and_nesting(store: VectorStore) -> None:
    _fill(store)
    flt = Filter(
        should=(
            Condition("metadata.topic", match="cars"),
            Condition("metadata.topic", match="science"),
        ),
        must_not=(Filter(must=(Condition("metadata.n", match=4),)),),
    )
    assert _ids(store, flt) == {"a blue car on the road"}
    assert store.count("c", Filter(must=(Condition("agent_id", match="a"),))) == 2


def test_hybrid_search_returns_dense_and_lexical_hits(store: VectorStore) -> None:
    _fill(store)
    dense, lexical = store.hybrid_search("c", [1, 0, 0], BM25.query("blue car"), 10, None)
    assert dense[0].payload["text"] == "red apples in the basket"
    assert dense[0].score == pytest.approx(1.0, abs=1e-4)
    assert lexical[0].payload["text"] == "a blue car on the road"
    assert lexical[0].dense_score == pytest.approx(0.0, abs=1e-4)
    # A lexical hit outside the dense top-k still gets its dense score for the query.
    query = [0.8, 0.6, 0.0]
    dense, lexical = store.hybrid_search("c", query, BM25.query("blue car"), 1, None)
    assert [h.payload["text"] for h in dense] == ["green apples and pears"]
    assert lexical[0].payload["text"] == "a blue car on the road"
    assert lexical[0].dense_score == pytest.approx(0.6, abs=1e-4)
    filtered, _ = store.hybrid_search(
        "c", [1, 0, 0], SparseVec([], []), 10, Filter(must=(Condition("agent_id", match="b"),))
    )
    assert {h.payload["agent_id"] for h in filtered} == {"b"}


def test_euclid_returns_distance_lowest_first(store: VectorStore) -> None:
    _fill(store, distance="Euclid")
    dense, _ = store.hybrid_search("c", [1, 0, 0], SparseVec([], []), 10, None)
    assert dense[0].payload["text"] == "red apples in the basket"
    assert dense[0].score == pytest.approx(0.0, abs=1e-4)
    assert dense[0].score < dense[1].score  # a distance: lower is nearer


def test_scroll_order_delete_and_payload(store: VectorStore) -> None:
    points = _fill(store)
    ordered = store.scroll("c", None, 2, order_by="seq")
    assert [p.payload["seq"] for p in ordered] == [1, 2]
    latest = store.scroll("c", None, 2, order_by="seq", descending=True)
    assert [p.payload["seq"] for p in latest] == [4, 3]
    store.set_payload("c", [points[0].id, str(uuid.uuid4())], {"access_count": 7})
    assert store.retrieve("c", [points[0].id])[0].payload["access_count"] == 7  # unknown id skipped
    assert store.retrieve("c", [points[0].id])[0].payload["metadata"]["fresh"] is True
    store.delete("c", [points[0].id])
    store.delete_by_filter("c", Filter(must=(Condition("agent_id", match="b"),)))
    assert store.count("c") == 1


def test_scroll_many_answers_each_scroll_like_scroll_does(store: VectorStore) -> None:
    _fill(store)
    fruit = Filter(must=(Condition("agent_id", match="a"),))
    scrolls = [
        OrderedScroll(Filter(must=(Condition("seq", range=Range(lt=3)),)), "seq", descending=True),
        OrderedScroll(Filter(must=(Condition("seq", range=Range(gt=2)),)), "seq"),
        OrderedScroll(fruit, "seq", descending=True, limit=5),
        OrderedScroll(Filter(must=(Condition("seq", range=Range(gt=99)),)), "seq"),
        OrderedScroll(None, "seq", limit=2),
    ]

    batched = store.scroll_many("c", scrolls)

    one_by_one = [
        store.scroll("c", s.filter, s.limit, order_by=s.order_by, descending=s.descending)
        for s in scrolls
    ]
    assert [[p.id for p in found] for found in batched] == [
        [p.id for p in found] for found in one_by_one
    ]
    assert [[p.payload["seq"] for p in found] for found in batched] == [
        [2],
        [3],
        [2, 1],
        [],
        [1, 2],
    ]
    assert batched[0][0].payload == one_by_one[0][0].payload
    assert store.scroll_many("c", []) == []


def test_dimension_mismatch_is_a_clear_error(store: VectorStore) -> None:
    _fill(store)
    with pytest.raises(ConfigurationError, match="3-d"):
        store.ensure_collection(CollectionSpec("c", 5, "Cosine", INDEXES))


def test_edge_reopens_with_its_data(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "edge")
    points = _fill(first)
    first.close()
    second = EdgeStore(tmp_path / "edge")
    second.ensure_collection(CollectionSpec("c", 3, "Cosine", INDEXES))
    assert second.count("c") == len(points)
    second.close()
    third = EdgeStore(tmp_path / "edge")
    with pytest.raises(
        ConfigurationError, match="holds 3-d Cosine vectors but the embedder gives 384-d"
    ):
        third.ensure_collection(CollectionSpec("c", 384, "Cosine", INDEXES))
    third.close()


def test_insert_only_keeps_what_is_there(store: VectorStore) -> None:
    points = _fill(store)
    first = points[0]
    again = PointRecord(first.id, first.dense, first.sparse, {**first.payload, "text": "changed"})
    store.upsert("c", [again], insert_only=True)
    assert store.retrieve("c", [first.id])[0].payload["text"] == "red apples in the basket"
    fresh = _point([0, 1, 1], "a new point", seq=9, agent_id="a")
    store.upsert("c", [fresh], insert_only=True)
    assert store.retrieve("c", [fresh.id])[0].payload["text"] == "a new point"
    store.upsert("c", [again])
    assert store.retrieve("c", [first.id])[0].payload["text"] == "changed"


def test_pages_go_through_every_point_once_in_id_order(store: VectorStore) -> None:
    points = _fill(store)
    more = [_point([0.5, 0.5, 0], f"filler {i}", seq=10 + i, agent_id="a") for i in range(9)]
    store.upsert("c", more)
    pages = list(scan(store, "c", None, batch=4, with_vectors=True))
    seen = [p.id for page in pages for p in page]
    assert [len(page) for page in pages] == [4, 4, 4, 1]
    assert seen == sorted(p.id for p in [*points, *more])
    assert all(p.dense is not None and p.sparse is not None for page in pages for p in page)
    only_b = Filter(must=(Condition("agent_id", match="b"),))
    assert [p.payload["text"] for page in scan(store, "c", only_b, 1) for p in page] == sorted(
        ["a blue car on the road", "quantum physics lecture notes"],
        key=lambda text: next(p.id for p in points if p.payload["text"] == text),
    )
    first, after = store.page("c", None, None, 12)
    assert len(first) == 12 and after is not None
    last, end = store.page("c", None, after, 12)
    assert [p.id for p in last] == seen[12:] and end is None
