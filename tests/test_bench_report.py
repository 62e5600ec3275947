"""bench/report.py at tiny sizes: the report's structure and that its numbers are sane.

Timings are never asserted; the full report is run by hand (`make bench`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import report

TINY = report.ReportConfig(
    embed_calls=10,
    embed_batch_texts=128,
    compare_points=500,
    compare_queries=15,
    ingest_texts=64,
    ingest_rounds=1,
    store_calls=5,
    e2e_queries=5,
    local_queries=5,
    local_budget_s=2.0,
    recall_queries=5,
    sizes=(500,),
    hnsw_max=500,
    local_max_size=400,
    scale_queries=15,
    scale_budget_s=2.0,
    http_clients=(2,),
    http_duration_s=2.0,
    http_warmup_s=0.5,
    http_preload=50,
    token_rounds=1,
    build_items=200,
    builds=3,
    facts_embedded=64,
    facts_total=300,
    facts_queries=8,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, model: OnnxMiniLMEmbedder) -> dict[str, Any]:
    return report.run_report(TINY, tmp_path_factory.mktemp("report"), model=model)


def tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cells (the header row first, the rule row dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") and c for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def test_every_section_ran_and_the_outputs_are_written(
    tiny: dict[str, Any], tmp_path: Path
) -> None:
    assert set(tiny["sections"]) == set(report.SECTIONS)
    for name, meter in tiny["sections"].items():
        assert "error" not in meter, (name, meter)
        assert meter["wall_s"] > 0
    json_path, md_path, markdown = report.write_outputs(tiny, tmp_path, "T")
    assert json_path.name == "report-T.json" and md_path.name == "report-T.md"
    assert json.loads(json_path.read_text())["config"]["compare_points"] == 500
    assert md_path.read_text() == markdown
    for heading in (
        "# hirag-oz performance report",
        "## What is bound by the embedding model",
        "## 1. The embedding model alone",
        "## 2. hirag-oz vs qdrant-client local mode vs numpy",
        "## 3. Retrieval at scale",
        "## 4. HTTP service",
        "## 5. Token counting",
        "## 6. Context build",
        "## 7. Facts store",
    ):
        assert heading in markdown
    found = tables(markdown)
    assert len(found) >= 9
    for table in found:
        assert len(table) >= 2
        assert {len(row) for row in table} == {len(table[0])}, table[0]


def test_the_model_alone(tiny: dict[str, Any]) -> None:
    emb = tiny["embedding"]
    for key in ("query_single", "text_single"):
        assert emb[key]["n"] == TINY.embed_calls
        assert 0 < emb[key]["p50_ms"] <= emb[key]["p95_ms"] <= emb[key]["max_ms"]
    assert emb["query_batch"]["items_per_s"] > 0
    assert emb["text_batch"]["items_per_s"] > 0


def test_side_by_side_is_correct(tiny: dict[str, Any]) -> None:
    cmp = tiny["compare"]
    rates = cmp["ingest"]["texts_per_s"]
    assert set(rates["model"]) == set(report.INGEST_VARIANTS)
    assert set(rates["precomputed"]) == set(report.INGEST_VARIANTS) - {"bare"}
    assert all(v > 0 for by in rates.values() for v in by.values())
    stores = cmp["stores"]
    # numpy is the exact answer; local mode scans every point, so it is exact too
    for case in ("dense", "dense_filtered"):
        assert stores["numpy"][case]["recall_at_k"] == 1.0
        assert stores["local"][case]["recall_at_k"] == 1.0
        assert 0.9 <= stores["edge"][case]["recall_at_k"] <= 1.0
    for kind in report.STORES:
        assert stores[kind]["dense_filtered"]["filter_violations"] == 0
        for case in ("dense", "dense_filtered", "search_e2e", "store_one"):
            assert stores[kind][case]["p50_ms"] > 0
    for kind in ("edge", "local"):
        assert stores[kind]["hybrid_filtered"]["filter_violations"] == 0
        assert stores[kind]["search_e2e"]["mean_contexts_returned"] >= 0
    assert stores["local"]["dense"]["n"] <= TINY.local_queries


def test_scale_rows(tiny: dict[str, Any]) -> None:
    rows = {(r["store"], r["size"]): r for r in tiny["scale"]["rows"]}
    assert set(rows) == {("numpy", 500), ("edge", 500), ("local", 500)}
    assert rows[("local", 500)] == {"store": "local", "size": 500, "skipped": "cap"}
    numpy_row, edge = rows[("numpy", 500)], rows[("edge", 500)]
    assert numpy_row["filtered"]["recall_at_k"] == numpy_row["unfiltered"]["recall_at_k"] == 1.0
    for row in (numpy_row, edge):
        assert row["filtered"]["filter_violations"] == 0
        assert row["filtered"]["p50_ms"] > 0 and row["unfiltered"]["p50_ms"] > 0
        assert row["memory_end"]["peak_mb"] >= row["memory_end"]["rss_mb"] > 0
        assert row["memory_peak"]["rss_mb"] >= row["memory_peak"]["anon_mb"] > 0
    assert 0.0 <= edge["unfiltered"]["recall_at_k"] <= 1.0
    assert edge["disk_mb"] > 0
    assert numpy_row["disk_mb"] is None
    markdown = report.render_markdown(tiny)
    assert "skipped (cap)" in markdown


def test_http_section(tiny: dict[str, Any]) -> None:
    http = tiny["http"]
    (row,) = http["summary"]
    assert row["clients"] == 2
    assert row["all"]["errors"] == 0
    assert row["all"]["req_per_s"] > 0
    assert http["count_check"]["ok"]
    assert http["server"]["stop"]["exit_code"] == 0


def test_token_counts_agree_and_rates_are_positive(tiny: dict[str, Any]) -> None:
    kinds = tiny["tokens"]["kinds"]
    assert set(kinds) == {"sentence", "paragraph", "document"}
    assert kinds["document"]["tokens_per_text"] >= 10_000
    for row in kinds.values():
        for mode in ("single", "batch"):
            assert row[mode]["ours_tokens_per_s"] > 0
            assert row[mode]["direct_tokens_per_s"] > 0
            assert row[mode]["ratio"] > 0


def test_the_bound_statement_is_built_from_the_figures(tiny: dict[str, Any]) -> None:
    bound = tiny["embedding_bound"]
    rows = {r["key"]: r for r in bound["rows"]}
    assert {"search", "store", "ingest", "http_search", "http_store"} <= set(rows)
    for r in rows.values():
        assert 0 < r["model_share"] <= 1
        assert r["rest_ms"] >= 0
    text = bound["text"]
    assert report.ms(rows["search"]["total_ms"]) in text
    assert report.ms(rows["search"]["model_ms"]) in text
    assert f"{rows['search']['model_share']:.0%}" in text
    assert bound["http"]["model_ceiling_req_per_s"] > 0


def test_numpy_index_is_exact() -> None:
    rng = np.random.default_rng(5)
    index = report.NumpyIndex(capacity=10)  # grows past its first capacity
    vectors = rng.standard_normal((300, report.DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    agents, topics = rng.integers(0, 3, 300), rng.integers(0, 2, 300)
    for start in range(0, 300, 100):
        end = start + 100
        index.add(vectors[start:end], agents[start:end], topics[start:end])
    query = vectors[7]
    assert index.search(query, 5) == list(np.argsort(-(vectors @ query))[:5])
    hits = index.search(query, 5, agent=1, topic=0)
    assert all(agents[h] == 1 and topics[h] == 0 for h in hits)
    matching = [i for i in range(300) if agents[i] == 1 and topics[i] == 0]
    expected = sorted(matching, key=lambda i: -float(vectors[i] @ query))[:5]
    assert hits == expected


def test_quick_and_size_flags() -> None:
    cfg = report.config_from_args(
        report.parse_args(["--quick", "--sizes", "1000,2000", "--skip", "http"])
    )
    assert cfg.quick and cfg.sizes == (1000, 2000)
    assert "http" not in cfg.sections
    assert cfg.hnsw_max == report.QUICK["hnsw_max"]
