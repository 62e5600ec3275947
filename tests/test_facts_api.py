"""/api/v1/facts on the real server: status codes, the race over HTTP, queries, metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hirag_oz import errors
from hirag_oz.api.app import create_app
from hirag_oz.client import Client
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz_client import catalogue
from hirag_oz_client.models import AddFactRequest, AnchorIn
from tests.conftest import ServerThread, keyed_settings

KEY = "facts-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def server(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[ServerThread]:
    settings = keyed_settings(tmp_path, KEY, facts={"functional_predicates": ["located_in"]})
    with ServerThread(create_app(settings, model=model)) as running:
        yield running


def test_insert_statuses_and_everything_comes_back(server: ServerThread) -> None:
    body = {
        "subject": "billing",
        "predicate": "owned_by",
        "object": "payments team",
        "confidence": 0.93,
        "datatype": "team",
        "source_doc": "org.pdf",
        "source_anchor": {"doc_id": "org", "page": 2, "region_id": "r1"},
        "observed_at": "2026-01-02T03:04:05+00:00",
        "agent_id": "a1",
    }
    first = httpx.post(server.url + "/api/v1/facts", json=body, headers=HEADERS)
    again = httpx.post(server.url + "/api/v1/facts", json=body, headers=HEADERS)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["fact_id"] == again.json()["fact_id"]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    with Client(server.url, api_key=KEY) as hirag:
        got = hirag.get_fact(fact_id=first.json()["fact_id"], agent_id="a1")
    assert got.subject == "billing" and got.confidence == 0.93 and got.datatype == "team"
    assert got.source_anchor.page == 2 and got.source_anchor.region_id == "r1"
    assert got.observed_at == "2026-01-02T03:04:05+00:00" and got.hash == first.json()["hash"]


def test_forty_racing_http_inserts_store_one(server: ServerThread) -> None:
    fact = AddFactRequest(subject="s", predicate="p", object="raced", confidence=0.9)

    def insert(_: int) -> tuple[str, bool]:
        with Client(server.url, api_key=KEY) as hirag:
            done = hirag.call(catalogue.ADD_FACT, fact)
            return done.fact_id, done.duplicate

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(insert, range(40)))
    assert len({fact_id for fact_id, _ in results}) == 1
    assert sum(not duplicate for _, duplicate in results) == 1
    with Client(server.url, api_key=KEY) as hirag:
        assert hirag.query_facts(object="raced").total == 1
        metrics = hirag.metrics()
    assert 'hirag_fact_inserts_total{outcome="new"} 1.0' in metrics
    assert 'hirag_fact_inserts_total{outcome="duplicate"} 39.0' in metrics


def test_rejections_are_422_and_unknown_ids_404(server: ServerThread) -> None:
    with Client(server.url, api_key=KEY) as hirag:
        with pytest.raises(errors.ValidationError) as low:
            hirag.add_fact(subject="s", predicate="p", object="o", confidence=0.5)
        assert low.value.details["threshold"] == 0.8
        with pytest.raises(errors.ValidationError):
            hirag.add_fact(subject="  ", predicate="p", object="o", confidence=0.9)
        with pytest.raises(errors.ValidationError):
            hirag.query_facts(limit=101)
        with pytest.raises(errors.NotFoundError):
            hirag.get_fact(fact_id=str(uuid.uuid4()))
        with pytest.raises(errors.NotFoundError):
            hirag.delete_fact(fact_id=str(uuid.uuid4()))
        assert 'hirag_fact_inserts_total{outcome="rejected"} 2.0' in hirag.metrics()


def test_queries_pages_text_and_time(server: ServerThread) -> None:
    with Client(server.url, api_key=KEY) as hirag:
        for i in range(12):
            hirag.add_fact(
                subject=f"host-{i}",
                predicate="runs",
                object="nginx" if i % 3 else "postgres database",
                confidence=0.9,
                source_anchor=AnchorIn(doc_id="inventory"),
            )
        pages = [hirag.query_facts(predicate="runs", limit=5, offset=o) for o in (0, 5, 10)]
        assert [p.total for p in pages] == [12, 12, 12]
        ids = [f.id for p in pages for f in p.facts]
        assert len(ids) == len(set(ids)) == 12
        ranked = hirag.query_facts(text="which machine hosts the database?", limit=3)
        assert ranked.facts[0].object == "postgres database" and ranked.facts[0].score is not None
        hirag.add_fact(
            subject="ana", predicate="located_in", object="Lisbon", confidence=0.9, valid_from=100
        )
        moved = hirag.add_fact(
            subject="ana", predicate="located_in", object="Porto", confidence=0.9, valid_from=200
        )
        assert len(moved.closed) == 1
        then = hirag.query_facts(subject="ana", valid_at=150)
        now = hirag.query_facts(subject="ana", valid_at=250)
        assert [f.object for f in then.facts] == ["Lisbon"] and [f.object for f in now.facts] == [
            "Porto"
        ]
        assert hirag.delete_fact(fact_id=moved.fact_id).deleted
        assert hirag.query_facts(subject="ana").total == 1
