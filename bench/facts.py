"""Facts store: insert rate against the bare embedding rate, and filtered query latency.

Run from the repository root:

    python bench/facts.py [--facts 100000] [--embedded 10000] [--queries 500] [--out PATH]

1. **Insert rate.** `--embedded` synthetic facts (subject "service-N", predicates and objects
   from small vocabularies, a source document and page) go through `FactStore.insert_many` in
   batches of 256 with the real MiniLM model. Before each batch, the model alone embeds the
   batch's sentences; the ratio of the two rates is reported (target >= 0.8).
2. **Query latency at `--facts`.** The rest of the facts are loaded with synthetic unit vectors
   (the filters do not read vectors), then `--queries` filtered queries run in-process:
   subject; predicate + min_confidence; source_doc + predicate; valid_at + subject. The bench
   prints p50/p95/p99 per kind and overall (target: p95 <= 10 ms) and writes
   bench/results/facts-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from hirag_oz.config import Settings
from hirag_oz.facts import Anchor, FactQuery, FactStore, NewFact
from hirag_oz.facts.models import sentence
from hirag_oz.service import Hirag
from hirag_oz.store.edge import EdgeStore
from store_search import SyntheticVectors, console, machine_info, percentiles, save_report

TARGET_RATIO = 0.8
TARGET_P95_MS = 10.0
BATCH = 256
PREDICATES = ["owned_by", "runs_on", "depends_on", "located_in", "version", "maintained_by"]
OBJECTS = [f"{kind}-{i}" for kind in ("team", "host", "service", "region") for i in range(50)]


def make_facts(start: int, count: int, seed: int) -> list[NewFact]:
    rng = random.Random(seed + start)
    return [
        NewFact(
            f"service-{i}",
            rng.choice(PREDICATES),
            rng.choice(OBJECTS),
            round(rng.uniform(0.8, 1.0), 3),
            source_doc=f"doc-{i % 500}",
            source_anchor=Anchor(doc_id=f"doc-{i % 500}", page=i % 40),
            valid_from=1_700_000_000.0 + i,
        )
        for i in range(start, start + count)
    ]


def insert_rate(settings: Settings, count: int, seed: int) -> dict[str, Any]:
    """Batch by batch, the model alone on the batch's sentences, then the insert of the batch,
    so that both see the same machine state (caches, other load)."""
    parts = Hirag(settings)
    facts = make_facts(0, count, seed)
    insert_s = bare_s = 0.0
    try:
        for start in range(0, count, BATCH):
            batch = facts[start : start + BATCH]
            texts = [sentence(f.subject, f.predicate, f.object) for f in batch]
            began = time.perf_counter()
            parts.model.embed(texts)
            bare_s += time.perf_counter() - began
            began = time.perf_counter()
            parts.facts.insert_many(batch)
            insert_s += time.perf_counter() - began
    finally:
        parts.close()
    return {
        "facts": count,
        "insert_per_s": round(count / insert_s, 1),
        "bare_embedding_per_s": round(count / bare_s, 1),
        "ratio": round(bare_s / insert_s, 3),
    }


def load_rest(settings: Settings, start: int, total: int, seed: int) -> float:
    store = EdgeStore(Path(settings.server.data_dir) / "qdrant")
    facts = FactStore(store, SyntheticVectors(seed), settings.facts)
    began = time.perf_counter()
    try:
        for first in range(start, total, 1000):
            facts.insert_many(make_facts(first, min(1000, total - first), seed))
    finally:
        store.close()
    return time.perf_counter() - began


def query_latency(settings: Settings, total: int, queries: int, seed: int) -> dict[str, Any]:
    parts = Hirag(settings)
    rng = random.Random(seed + 99)
    kinds = {
        "subject": lambda: FactQuery(subject=f"service-{rng.randrange(total)}"),
        "predicate+min_confidence": lambda: FactQuery(
            predicate=rng.choice(PREDICATES), min_confidence=0.95, limit=20
        ),
        "source_doc+predicate": lambda: FactQuery(
            source_doc=f"doc-{rng.randrange(500)}", predicate=rng.choice(PREDICATES)
        ),
        "valid_at+subject": lambda: FactQuery(
            subject=f"service-{rng.randrange(total)}",
            valid_at=1_700_000_000.0 + rng.randrange(total),
        ),
    }
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for _ in range(20):  # warm-up
            parts.facts.query(kinds["subject"]())
        for i in range(queries):
            kind = list(kinds)[i % len(kinds)]
            q = kinds[kind]()
            started = time.perf_counter()
            page = parts.facts.query(q)
            timings[kind].append((time.perf_counter() - started) * 1000)
            assert page.total >= len(page.facts)
    finally:
        parts.close()
    every = [t for values in timings.values() for t in values]
    return {
        "by_kind": {kind: percentiles(values) for kind, values in timings.items()},
        "overall": percentiles(every),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--embedded", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "bench": "facts",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "targets": {"insert_ratio": TARGET_RATIO, "query_p95_ms": TARGET_P95_MS},
    }
    with tempfile.TemporaryDirectory(prefix="hirag-facts-") as tmp:
        settings = Settings(server={"data_dir": Path(tmp)}, hirag={"maintenance_enabled": False})
        console.print(f"inserting {args.embedded:,} facts with the real model ...")
        report["insert"] = insert_rate(settings, args.embedded, args.seed)
        console.print(f"loading facts up to {args.facts:,} (synthetic vectors) ...")
        report["load_rest_s"] = round(load_rest(settings, args.embedded, args.facts, args.seed), 1)
        console.print(f"timing {args.queries} filtered queries ...")
        report["query"] = query_latency(settings, args.facts, args.queries, args.seed)
    ins, q = report["insert"], report["query"]
    table = Table(title=f"Facts store, {args.facts:,} facts")
    for column in ("measure", "value", "target"):
        table.add_column(column)
    ratio_ok = "PASS" if ins["ratio"] >= TARGET_RATIO else "FAIL"
    table.add_row(
        f"insert rate ({args.embedded:,}, batches of {BATCH})",
        f"{ins['insert_per_s']}/s vs bare embedding {ins['bare_embedding_per_s']}/s "
        f"= {ins['ratio']}x",
        f">= {TARGET_RATIO}x: {ratio_ok}",
    )
    for kind, p in q["by_kind"].items():
        table.add_row(f"query: {kind}", f"p50 {p['p50_ms']:.2f} / p95 {p['p95_ms']:.2f} ms", "")
    overall = q["overall"]
    p95_ok = "PASS" if overall["p95_ms"] <= TARGET_P95_MS else "FAIL"
    table.add_row(
        "query: all filtered",
        f"p50 {overall['p50_ms']:.2f} / p95 {overall['p95_ms']:.2f} / p99 {overall['p99_ms']:.2f} ms",
        f"p95 <= {TARGET_P95_MS:g} ms: {p95_ok}",
    )
    console.print(table)
    save_report("facts", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
