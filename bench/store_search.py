"""Ingest rate and store search latency of hirag-oz, Qdrant Edge vs qdrant-client local mode.

Run from the repository root:

    python bench/store_search.py [--sizes 10000,100000] [--ingest-texts 2000] [--queries 200]

Prints one table per measurement and writes every number, with machine info, to a JSON file
(default: bench/results/store_search.json). See bench/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from hirag_oz.config import HiragSettings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.embeddings.local import LocalMiniLMEmbedder
from hirag_oz.memory.levels import Level
from hirag_oz.memory.manager import HiRAG, collection_indexes
from hirag_oz.memory.models import NewContext
from hirag_oz.store.base import (
    CollectionSpec,
    Condition,
    Filter,
    PointRecord,
    SparseVec,
    VectorStore,
)
from hirag_oz.store.edge import EdgeStore
from hirag_oz.store.server import ServerStore
from hirag_oz.store.sparse import Bm25Encoder
from hirag_oz.tokens import TokenCounter, count_many, load_token_counter

DIM = 384
INGEST_BATCH = 128
LOAD_BATCH = 1000
SEARCH_LIMIT = 200
N_AGENTS = 50
N_TOPICS = 20
# HiRAG writes contexts to "<prefix>_<level>"; the bench fills the ShortTerm one so the
# end-to-end HiRAG.search at the first size runs over the very same collection.
COLLECTION = f"contexts_{Level.SHORT_TERM.suffix}"
# What the manager indexes (_CORE_INDEXES) plus `metadata.topic`, as a deployment with
# `hirag.metadata_indexes = {topic = "keyword"}` would have it.
METADATA_INDEXES: dict[str, Any] = {"topic": "keyword"}
INGEST_TARGET = 0.8
FILTERED_P95_TARGET_MS = 5.0
FILTERED_TARGET_SIZE = 100_000

# qdrant-client warns once a local-mode collection passes 20,000 points; that is the point here.
warnings.filterwarnings("ignore", message="Local mode is not recommended")

# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)

# ----------------------------------------------------------------------------- synthetic text

_SUBJECTS = [
    "The deployment team",
    "Our on-call engineer",
    "The product manager",
    "A new customer",
    "The billing service",
    "The data pipeline",
    "Maria from support",
    "The security auditor",
    "The mobile client",
    "The nightly batch job",
    "An external partner",
    "The search cluster",
    "The finance department",
    "A junior developer",
    "The load balancer",
    "The research group",
    "The marketing lead",
    "Our largest tenant",
    "The backup system",
    "The design reviewer",
]
_VERBS = [
    "reported",
    "migrated",
    "rejected",
    "approved",
    "rewrote",
    "benchmarked",
    "scheduled",
    "postponed",
    "documented",
    "escalated",
    "deprecated",
    "optimized",
    "audited",
    "restored",
    "reconfigured",
    "monitored",
    "refactored",
    "summarized",
    "validated",
    "archived",
]
_ADJECTIVES = [
    "quarterly",
    "legacy",
    "encrypted",
    "flaky",
    "critical",
    "experimental",
    "regional",
    "overdue",
    "redundant",
    "slow",
    "shared",
    "temporary",
    "primary",
    "cached",
    "noisy",
    "unstable",
    "upgraded",
    "missing",
    "duplicate",
    "internal",
]
_OBJECTS = [
    "invoice export",
    "authentication flow",
    "database schema",
    "release notes",
    "incident report",
    "payment gateway",
    "onboarding checklist",
    "cache layer",
    "search index",
    "pricing page",
    "API contract",
    "retention policy",
    "usage dashboard",
    "email template",
    "storage bucket",
    "feature flag",
    "rate limiter",
    "audit log",
    "data warehouse",
    "support macro",
]
_PLACES = [
    "in Frankfurt",
    "for the Tokyo office",
    "on the staging cluster",
    "before the holiday freeze",
    "during the weekly sync",
    "after the outage",
    "for the enterprise plan",
    "in the EU region",
    "on Tuesday morning",
    "ahead of the audit",
    "for the beta users",
    "in the shared workspace",
]
_REASONS = [
    "because latency doubled",
    "since the contract changed",
    "so that costs stay predictable",
    "after customers complained twice",
    "to unblock the next sprint",
    "because tests kept failing",
    "while the vendor investigates",
    "so the dashboards match finance",
    "to meet the SLA again",
    "because memory usage kept growing",
    "after a long design discussion",
    "to simplify on-call",
]
_FOLLOWUPS = [
    "and asked for a review by {day}",
    "and expects about {n} tickets next week",
    "and measured {n} percent fewer errors",
    "and will report back in {n} days",
    "and flagged {n} open questions",
    "and estimated {n} hours of remaining work",
    "and linked ticket {ticket}",
    "and noted that {n} users are affected",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the end of the month"]
_STOP = {"the", "a", "an", "and", "for", "in", "on", "of", "to", "from", "our"}


def make_texts(n: int, seed: int) -> list[str]:
    """`n` different English sentences of about 15-30 words, the same for the same seed."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        followup = rng.choice(_FOLLOWUPS).format(
            day=rng.choice(_DAYS), n=rng.randint(2, 900), ticket=f"OPS-{rng.randint(100, 9999)}"
        )
        text = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} the {rng.choice(_ADJECTIVES)} "
            f"{rng.choice(_OBJECTS)} {rng.choice(_PLACES)} {rng.choice(_REASONS)}, {followup}"
        )
        if rng.random() < 0.5:
            text += f", while the {rng.choice(_ADJECTIVES)} {rng.choice(_OBJECTS)} waits"
        texts.append(f"{text} (note {i}).")
    return texts


def make_queries(n: int, seed: int) -> list[str]:
    """Short search queries over the same vocabulary, e.g. 'flaky payment gateway latency'."""
    rng = random.Random(seed)
    words = [
        w
        for phrase in _ADJECTIVES + _OBJECTS + _REASONS + _VERBS
        for w in phrase.split()
        if w not in _STOP
    ]
    return [
        f"{rng.choice(_ADJECTIVES)} {rng.choice(_OBJECTS)} "
        + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        for _ in range(n)
    ]


# ------------------------------------------------------------------------------- utilities


class SyntheticVectors:
    """Random unit vectors of MiniLM's dimension, for loading large stores without the model
    (the texts, token counts and BM25 vectors stay real)."""

    model_name = "synthetic"
    dimension = 384

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._rng.normal(size=(len(texts), self.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.tolist()  # type: ignore[no-any-return]


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def percentiles(samples_ms: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": len(samples_ms),
        "p50_ms": round(float(p50), 3),
        "p95_ms": round(float(p95), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "max_ms": round(float(arr.max()), 3),
    }


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def pass_fail(ok: bool) -> str:
    return "[green]pass[/green]" if ok else "[red]FAIL[/red]"


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in (
        "hirag-oz",
        "qdrant-edge-py",
        "qdrant-client",
        "numpy",
        "torch",
        "sentence-transformers",
        "tiktoken",
    ):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    torch_threads: int | None = None
    try:
        import torch

        torch_threads = int(torch.get_num_threads())
    except ImportError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpu_model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch_threads,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "python": sys.version.split()[0],
        "packages": versions,
    }


# ------------------------------------------------------------------------------ 1. ingest


def time_bare_embedding(embedder: Embedder, texts: list[str]) -> float:
    started = time.perf_counter()
    for batch in chunks(texts, INGEST_BATCH):
        embedder.embed(batch)
    return len(texts) / (time.perf_counter() - started)


def ingest_items(texts: list[str], seed: int) -> list[NewContext]:
    rng = random.Random(seed)
    return [
        NewContext(
            text,
            Level.SHORT_TERM,
            agent_id=f"agent-{rng.randrange(N_AGENTS):02d}",
            session_id=f"session-{rng.randrange(200)}",
            user_id=f"user-{rng.randrange(100)}",
            metadata={"topic": f"topic-{rng.randrange(N_TOPICS):02d}", "n": rng.randrange(1000)},
        )
        for text in texts
    ]


def time_hirag_ingest(
    store: VectorStore,
    embedder: Embedder,
    counter: TokenCounter,
    items: list[NewContext],
) -> float:
    """store_many in batches of INGEST_BATCH on a fresh HiRAG; texts/s (setup not timed)."""
    memory = HiRAG(store, embedder, counter, HiragSettings(metadata_indexes=METADATA_INDEXES))
    try:
        started = time.perf_counter()
        for batch in chunks(items, INGEST_BATCH):
            memory.store_many(batch)
        rate = len(items) / (time.perf_counter() - started)
        stored = memory.count()
        if stored != len(items):
            raise RuntimeError(f"{store.name}: stored {stored} of {len(items)} items")
        return rate
    finally:
        memory.close()


def bench_ingest(
    embedder: LocalMiniLMEmbedder,
    counter: TokenCounter,
    n_texts: int,
    rounds: int,
    seed: int,
    with_local: bool,
    workdir: Path,
) -> dict[str, Any]:
    texts = make_texts(n_texts, seed)
    items = ingest_items(texts, seed + 1)
    words = [len(t.split()) for t in texts]
    console.print(
        f"[bold]1. ingest[/bold]: {n_texts} texts, {min(words)}-{max(words)} words "
        f"(mean {statistics.mean(words):.1f}), batches of {INGEST_BATCH}, {rounds} rounds"
    )
    # Warm-up: torch's first passes over new batch shapes run at about half speed, so one
    # untimed pass over as many (different) texts comes first.
    time_bare_embedding(embedder, make_texts(n_texts, seed + 99))
    runs: dict[str, list[float]] = {"bare_embedding": [], "hirag_edge": []}
    if with_local:
        runs["hirag_local"] = []
    for r in range(rounds):
        order = ["bare_embedding", "hirag_edge", "hirag_local"]
        if r % 2:  # alternate so drift in machine noise hits every variant alike
            order.reverse()
        for name in order:
            if name not in runs:
                continue
            gc.collect()
            if name == "bare_embedding":
                rate = time_bare_embedding(embedder, texts)
            elif name == "hirag_edge":
                edge = EdgeStore(Path(tempfile.mkdtemp(prefix=f"ingest-{r}-", dir=workdir)))
                rate = time_hirag_ingest(edge, embedder, counter, items)
            else:
                rate = time_hirag_ingest(ServerStore.connect(":memory:"), embedder, counter, items)
            runs[name].append(rate)
            console.print(f"  round {r + 1} {name:<15} {rate:8.1f} texts/s")

    # Where HiRAG's own time goes, besides the embedding (single pass each, for context).
    started = time.perf_counter()
    count_many(counter, texts)
    token_rate = n_texts / (time.perf_counter() - started)
    encoder = Bm25Encoder()
    started = time.perf_counter()
    for t in texts:
        encoder.document(t)
    bm25_rate = n_texts / (time.perf_counter() - started)

    medians = {name: statistics.median(rates) for name, rates in runs.items()}
    bare = medians["bare_embedding"]
    result: dict[str, Any] = {
        "texts": n_texts,
        "batch": INGEST_BATCH,
        "rounds": rounds,
        "words_min": min(words),
        "words_max": max(words),
        "words_mean": round(statistics.mean(words), 2),
        "runs_texts_per_s": {k: [round(v, 2) for v in vs] for k, vs in runs.items()},
        "median_texts_per_s": {k: round(v, 2) for k, v in medians.items()},
        "ratio_vs_bare": {k: round(v / bare, 4) for k, v in medians.items()},
        "components_texts_per_s": {
            "token_count": round(token_rate, 1),
            "bm25_document": round(bm25_rate, 1),
        },
        "target_ratio": INGEST_TARGET,
        "edge_meets_target": medians["hirag_edge"] / bare >= INGEST_TARGET,
    }

    print_ingest_table(result)
    return result


def print_ingest_table(result: dict[str, Any]) -> None:
    medians: dict[str, float] = result["median_texts_per_s"]
    runs: dict[str, list[float]] = result["runs_texts_per_s"]
    bare = medians["bare_embedding"]
    table = Table(
        title=f"Ingest rate ({result['texts']} texts, batches of {result['batch']}, "
        f"median of {result['rounds']} rounds)"
    )
    table.add_column("variant")
    table.add_column("texts/s (median)", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("ratio vs bare", justify="right")
    table.add_column(f"target >= {INGEST_TARGET}", justify="center")
    labels = {
        "bare_embedding": "bare LocalMiniLMEmbedder.embed",
        "hirag_edge": "HiRAG.store_many / EdgeStore",
        "hirag_local": "HiRAG.store_many / ServerStore(:memory:)",
    }
    for name, rate in medians.items():
        ratio = rate / bare
        table.add_row(
            labels[name],
            f"{rate:.1f}",
            " ".join(f"{v:.0f}" for v in runs[name]),
            fmt_ratio(ratio),
            pass_fail(ratio >= INGEST_TARGET) if name == "hirag_edge" else "",
        )
    table.add_section()
    for name, rate in result["components_texts_per_s"].items():
        label = {"token_count": "tiktoken count_many", "bm25_document": "Bm25Encoder.document"}
        table.add_row(f"(component) {label.get(name, name)}", f"{rate:.0f}", "", "", "")
    console.print(table)


# ------------------------------------------------------------------------------ 2. search


@dataclass
class Corpus:
    """Synthetic points like the manager writes, kept columnar so PointRecords are built per batch."""

    ids: list[str]
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    sparse: list[SparseVec]
    payloads: list[dict[str, Any]]
    agents: np.ndarray[Any, np.dtype[np.int64]]
    topics: np.ndarray[Any, np.dtype[np.int64]]

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, size: int) -> Iterator[list[PointRecord]]:
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            dense = self.vectors[start:stop].tolist()
            yield [
                PointRecord(self.ids[i], dense[i - start], self.sparse[i], self.payloads[i])
                for i in range(start, stop)
            ]


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def make_corpus(
    n: int,
    seed: int,
    counter: TokenCounter,
    encoder: Bm25Encoder,
    vectors: np.ndarray[Any, np.dtype[np.float32]] | None = None,
) -> Corpus:
    """`n` points over `make_texts(n, seed)`; `vectors` (one row per text, e.g. the model's)
    replace the random unit vectors."""
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    texts = make_texts(n, seed)
    tokens = count_many(counter, texts)
    agents = rng.integers(0, N_AGENTS, n)
    topics = rng.integers(0, N_TOPICS, n)
    now = time.time()
    seq0 = time.time_ns() // 1000  # microseconds, as the manager writes them
    payloads = []
    for i, text in enumerate(texts):
        agent = int(agents[i])
        ts = now - prng.uniform(0, 30 * 86_400)
        payloads.append(
            {
                "text": text,
                "level": Level.SHORT_TERM.value,
                "agent_id": f"agent-{agent:02d}",
                "session_id": f"session-{agent:02d}-{prng.randrange(20)}",
                "user_id": f"user-{prng.randrange(500)}" if prng.random() < 0.8 else None,
                "timestamp": ts,
                "stored_at": ts + prng.uniform(0, 60),
                "seq": seq0 + i,
                "token_count": tokens[i],
                "access_count": prng.randrange(5),
                "metadata": {"topic": f"topic-{int(topics[i]):02d}", "n": prng.randrange(10_000)},
            }
        )
    return Corpus(
        ids=[str(uuid.UUID(int=prng.getrandbits(128), version=4)) for _ in range(n)],
        vectors=unit_vectors(rng, n) if vectors is None else vectors,
        sparse=[encoder.document(t) for t in texts],
        payloads=payloads,
        agents=agents,
        topics=topics,
    )


@dataclass
class QuerySet:
    dense: list[list[float]]
    sparse: list[SparseVec]
    agents: list[int]
    topics: list[int]

    def filter(self, i: int) -> Filter:
        return Filter(
            must=(
                Condition("agent_id", match=f"agent-{self.agents[i]:02d}"),
                Condition("metadata.topic", match=f"topic-{self.topics[i]:02d}"),
            )
        )


def make_queries_set(n: int, seed: int, encoder: Bm25Encoder) -> QuerySet:
    rng = np.random.default_rng(seed)
    return QuerySet(
        dense=unit_vectors(rng, n).tolist(),
        sparse=[encoder.query(q) for q in make_queries(n, seed)],
        agents=[int(a) for a in rng.integers(0, N_AGENTS, n)],
        topics=[int(t) for t in rng.integers(0, N_TOPICS, n)],
    )


def collection_spec() -> CollectionSpec:
    return CollectionSpec(COLLECTION, DIM, "Cosine", collection_indexes(METADATA_INDEXES))


def load_store(store: VectorStore, corpus: Corpus) -> dict[str, Any]:
    store.ensure_collection(collection_spec())
    gc.collect()
    slowest = 0.0
    started = time.perf_counter()
    for batch in corpus.batches(LOAD_BATCH):
        t0 = time.perf_counter()
        store.upsert(COLLECTION, batch)
        slowest = max(slowest, time.perf_counter() - t0)
    load_s = time.perf_counter() - started
    optimize_s: float | None = None
    info: dict[str, Any] = {}
    if isinstance(store, EdgeStore):
        started = time.perf_counter()
        store.optimize()  # waits for background optimizers, then optimizes blocking
        optimize_s = time.perf_counter() - started
        shard_info = store._shards[COLLECTION].shard.info()  # no public accessor
        info = {
            "segments": shard_info.segments_count,
            "points": shard_info.points_count,
            "indexed_vectors": shard_info.indexed_vectors_count,
        }
    count = store.count(COLLECTION)
    if count != len(corpus):
        raise RuntimeError(f"{store.name}: {count} points after loading {len(corpus)}")
    return {
        "load_s": round(load_s, 3),
        "load_points_per_s": round(len(corpus) / load_s, 1),
        "slowest_upsert_s": round(slowest, 3),
        "optimize_s": None if optimize_s is None else round(optimize_s, 3),
        "total_s": round(load_s + (optimize_s or 0.0), 3),
        "shard": info,
    }


def exact_top(
    corpus: Corpus, query: list[float], mask: np.ndarray[Any, Any] | None, k: int
) -> set[str]:
    scores = corpus.vectors @ np.asarray(query, dtype=np.float32)
    candidates = np.arange(len(corpus)) if mask is None else np.flatnonzero(mask)
    if len(candidates) > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = candidates[part]
    return {corpus.ids[i] for i in candidates}


def measure_search(
    store: VectorStore,
    corpus: Corpus,
    queries: QuerySet,
    filtered: bool,
    max_queries: int,
    budget_s: float | None,
    recall_queries: int,
) -> dict[str, Any]:
    """Latency of store.hybrid_search (dense + BM25 request in one batch), no embedding."""

    def flt(i: int) -> Filter | None:
        return queries.filter(i) if filtered else None

    for i in range(min(3, max_queries)):  # warm-up (caches, lazy loading)
        store.hybrid_search(COLLECTION, queries.dense[i], queries.sparse[i], SEARCH_LIMIT, flt(i))
    latencies: list[float] = []
    dense_hits: list[int] = []
    sparse_hits: list[int] = []
    started = time.perf_counter()
    for i in range(max_queries):
        t0 = time.perf_counter_ns()
        d, s = store.hybrid_search(
            COLLECTION, queries.dense[i], queries.sparse[i], SEARCH_LIMIT, flt(i)
        )
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        dense_hits.append(len(d))
        sparse_hits.append(len(s))
        if budget_s is not None and i >= 4 and time.perf_counter() - started > budget_s:
            break
    result = percentiles(latencies)
    result["mean_dense_hits"] = round(statistics.mean(dense_hits), 1)
    result["mean_sparse_hits"] = round(statistics.mean(sparse_hits), 1)

    # Correctness, outside the timing: dense hits vs exact top-k (numpy), filter respected.
    recalls = []
    violations = 0
    for i in range(min(recall_queries, len(latencies))):
        f = flt(i)
        mask = None
        if filtered:
            mask = (corpus.agents == queries.agents[i]) & (corpus.topics == queries.topics[i])
        d, s = store.hybrid_search(COLLECTION, queries.dense[i], queries.sparse[i], SEARCH_LIMIT, f)
        expected = exact_top(corpus, queries.dense[i], mask, SEARCH_LIMIT)
        got = {h.id for h in d}
        recalls.append(len(got & expected) / len(expected) if expected else 1.0)
        if filtered:
            agent = f"agent-{queries.agents[i]:02d}"
            topic = f"topic-{queries.topics[i]:02d}"
            violations += sum(
                1
                for h in d + s
                if h.payload.get("agent_id") != agent
                or (h.payload.get("metadata") or {}).get("topic") != topic
            )
    result["dense_recall_at_limit"] = round(statistics.mean(recalls), 4) if recalls else None
    result["filter_violations"] = violations
    return result


def bench_search_size(
    size: int,
    args: argparse.Namespace,
    counter: TokenCounter,
    encoder: Bm25Encoder,
    workdir: Path,
    with_local: bool,
    after_edge: Callable[[EdgeStore], dict[str, Any] | None] | None,
) -> dict[str, Any]:
    console.print(f"[bold]2. search[/bold] at {size:,} points: generating corpus ...")
    started = time.perf_counter()
    corpus = make_corpus(size, args.seed + size, counter, encoder)
    queries = make_queries_set(args.queries, args.seed + size + 1, encoder)
    console.print(f"  corpus ready in {time.perf_counter() - started:.1f} s")
    out: dict[str, Any] = {"size": size}

    # 0 (default): a bulk load, no background optimizer runs until the blocking optimize().
    optimize_after = args.optimize_after if args.optimize_after > 0 else size + 1
    edge = EdgeStore(
        Path(tempfile.mkdtemp(prefix=f"edge-{size}-", dir=workdir)),
        optimize_after_points=optimize_after,
    )
    try:
        out["edge_load"] = load_store(edge, corpus)
        out["edge_load"]["optimize_after_points"] = optimize_after
        console.print(f"  edge loaded: {out['edge_load']}")
        for case in ("no_filter", "filtered"):
            out[f"edge_{case}"] = measure_search(
                edge, corpus, queries, case == "filtered", args.queries, None, args.recall_queries
            )
            console.print(f"  edge {case}: {out[f'edge_{case}']}")
        if after_edge is not None:
            extra = after_edge(edge)
            if extra is not None:
                out["hirag_e2e"] = extra
    finally:
        edge.close()

    if with_local:
        local = ServerStore.connect(":memory:")
        try:
            out["local_load"] = load_store(local, corpus)
            console.print(f"  local loaded: {out['local_load']}")
            n_local = min(args.queries, args.local_queries)
            for case in ("no_filter", "filtered"):
                out[f"local_{case}"] = measure_search(
                    local,
                    corpus,
                    queries,
                    case == "filtered",
                    n_local,
                    args.local_budget,
                    min(args.recall_queries, 3),
                )
                console.print(f"  local {case}: {out[f'local_{case}']}")
        finally:
            local.close()
    del corpus
    gc.collect()
    return out


def hirag_e2e(
    edge: EdgeStore,
    embedder: LocalMiniLMEmbedder,
    counter: TokenCounter,
    n_queries: int,
    seed: int,
) -> dict[str, Any]:
    """HiRAG.search over the loaded Edge store: MiniLM query embedding + 3 levels + access count."""
    memory = HiRAG(edge, embedder, counter, HiragSettings(metadata_indexes=METADATA_INDEXES))
    rng = random.Random(seed)
    texts = make_queries(n_queries + 3, seed)
    scopes = [(rng.randrange(N_AGENTS), rng.randrange(N_TOPICS)) for _ in texts]

    def run(i: int) -> int:
        agent, topic = scopes[i]
        result = memory.search(
            texts[i],
            2000,
            agent_id=f"agent-{agent:02d}",
            filters=Filter(must=(Condition("metadata.topic", match=f"topic-{topic:02d}"),)),
        )
        return len(result.contexts)

    for i in range(3):
        run(n_queries + i)
    latencies = []
    returned = []
    for i in range(n_queries):
        t0 = time.perf_counter_ns()
        returned.append(run(i))
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
    # Not closed: closing HiRAG closes the store, which the caller owns.
    result = percentiles(latencies)
    result["mean_contexts_returned"] = round(statistics.mean(returned), 1)
    result["max_tokens"] = 2000
    return result


def print_load_table(results: list[dict[str, Any]]) -> None:
    table = Table(title=f"Store load (upsert in batches of {LOAD_BATCH}; Edge then optimize())")
    for col, justify in [
        ("points", "right"),
        ("store", "left"),
        ("upsert s", "right"),
        ("points/s", "right"),
        ("optimize s", "right"),
        ("total s", "right"),
        ("segments", "right"),
        ("local/edge total", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        edge, local = r["edge_load"], r.get("local_load")
        ratio = local["total_s"] / edge["total_s"] if local else None
        table.add_row(
            f"{r['size']:,}",
            "edge",
            f"{edge['load_s']:.1f}",
            f"{edge['load_points_per_s']:.0f}",
            f"{edge['optimize_s']:.1f}",
            f"{edge['total_s']:.1f}",
            str(edge["shard"].get("segments", "-")),
            fmt_ratio(ratio),
        )
        if local:
            table.add_row(
                "",
                "local",
                f"{local['load_s']:.1f}",
                f"{local['load_points_per_s']:.0f}",
                "-",
                f"{local['total_s']:.1f}",
                "-",
                "",
            )
    console.print(table)


def print_search_table(results: list[dict[str, Any]]) -> None:
    table = Table(
        title=f"Store hybrid_search latency, ms (dense + BM25, limit {SEARCH_LIMIT}, "
        "no query embedding)"
    )
    for col in [
        "points",
        "case",
        "edge n",
        "edge p50",
        "edge p95",
        "edge p99",
        "edge recall",
        "local n",
        "local p50",
        "local p95",
        "local p99",
        "speed-up p50",
        "target",
    ]:
        table.add_column(col, justify="left" if col in ("case", "target") else "right")
    for r in results:
        for case in ("no_filter", "filtered"):
            e = r[f"edge_{case}"]
            loc = r.get(f"local_{case}")
            target = ""
            if case == "filtered" and r["size"] == FILTERED_TARGET_SIZE:
                target = f"p95<={FILTERED_P95_TARGET_MS:g} " + pass_fail(
                    e["p95_ms"] <= FILTERED_P95_TARGET_MS
                )
            table.add_row(
                f"{r['size']:,}",
                "agent+topic" if case == "filtered" else "none",
                str(e["n"]),
                fmt_ms(e["p50_ms"]),
                fmt_ms(e["p95_ms"]),
                fmt_ms(e["p99_ms"]),
                "-" if e["dense_recall_at_limit"] is None else f"{e['dense_recall_at_limit']:.3f}",
                str(loc["n"]) if loc else "skipped",
                fmt_ms(loc["p50_ms"]) if loc else "-",
                fmt_ms(loc["p95_ms"]) if loc else "-",
                fmt_ms(loc["p99_ms"]) if loc else "-",
                fmt_ratio(loc["p50_ms"] / e["p50_ms"]) if loc else "-",
                target,
            )
    console.print(table)
    e2e = [r for r in results if "hirag_e2e" in r]
    if e2e:
        t2 = Table(
            title="End-to-end HiRAG.search on Edge (MiniLM query embedding, 3 levels, "
            "agent+topic scope, max_tokens 2000)"
        )
        for col in ["points", "n", "p50 ms", "p95 ms", "p99 ms", "store share of p50"]:
            t2.add_column(col, justify="right")
        for r in e2e:
            x = r["hirag_e2e"]
            t2.add_row(
                f"{r['size']:,}",
                str(x["n"]),
                fmt_ms(x["p50_ms"]),
                fmt_ms(x["p95_ms"]),
                fmt_ms(x["p99_ms"]),
                f"{r['edge_filtered']['p50_ms'] / x['p50_ms']:.0%}",
            )
        console.print(t2)


# ------------------------------------------------------------------------------------ main


def parse_sizes(value: str) -> list[int]:
    return [int(v.replace("_", "")) for v in value.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[10_000, 100_000],
        help="collection sizes for the search bench (default 10000,100000)",
    )
    parser.add_argument(
        "--ingest-texts",
        type=int,
        default=2000,
        help="texts embedded / stored in the ingest bench (0 skips it)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds of the ingest bench; the median is reported",
    )
    parser.add_argument(
        "--queries", type=int, default=200, help="timed queries per case on the Edge store"
    )
    parser.add_argument(
        "--local-queries",
        type=int,
        default=50,
        help="cap on timed queries per case in qdrant-client local mode",
    )
    parser.add_argument(
        "--local-budget",
        type=float,
        default=30.0,
        help="stop a local-mode case after this many seconds (at least 5 queries)",
    )
    parser.add_argument(
        "--skip-local-at",
        type=parse_sizes,
        default=[],
        help="sizes at which local mode is not measured, e.g. 100000",
    )
    parser.add_argument("--no-local", action="store_true", help="skip qdrant-client local mode")
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=10,
        help="queries checked against exact numpy search (not timed)",
    )
    parser.add_argument(
        "--optimize-after",
        type=int,
        default=0,
        help="EdgeStore optimize_after_points during the load; 0 (default) = none until the "
        "blocking optimize() after it; 5000 = the service default",
    )
    parser.add_argument(
        "--e2e-queries",
        type=int,
        default=100,
        help="timed HiRAG.search calls at the first size (0 skips)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "store_search.json",
    )
    args = parser.parse_args(argv)

    began = time.perf_counter()
    info = machine_info()
    console.print(
        f"[bold]hirag-oz store_search[/bold] on {info['cpu_count']} CPUs, Python {info['python']}, "
        f"qdrant-edge-py {info['packages']['qdrant-edge-py']}, "
        f"qdrant-client {info['packages']['qdrant-client']}"
    )
    report: dict[str, Any] = {
        "bench": "store_search",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {
            "ingest_ratio_vs_bare_embedding": INGEST_TARGET,
            "filtered_search_p95_ms": FILTERED_P95_TARGET_MS,
            "filtered_search_size": FILTERED_TARGET_SIZE,
        },
    }
    counter = load_token_counter().counter
    encoder = Bm25Encoder()
    embedder: LocalMiniLMEmbedder | None = None

    def get_embedder() -> LocalMiniLMEmbedder:
        nonlocal embedder
        if embedder is None:
            embedder = LocalMiniLMEmbedder()
        return embedder

    with tempfile.TemporaryDirectory(prefix="hirag-bench-") as tmp:
        workdir = Path(tmp)
        if args.ingest_texts > 0:
            report["ingest"] = bench_ingest(
                get_embedder(),
                counter,
                args.ingest_texts,
                args.rounds,
                args.seed,
                not args.no_local,
                workdir,
            )
            write_report(args.out, report)

        def e2e(edge: EdgeStore) -> dict[str, Any]:
            return hirag_e2e(edge, get_embedder(), counter, args.e2e_queries, args.seed)

        search_results = []
        for index, size in enumerate(args.sizes):
            search_results.append(
                bench_search_size(
                    size,
                    args,
                    counter,
                    encoder,
                    workdir,
                    not args.no_local and size not in args.skip_local_at,
                    e2e if index == 0 and args.e2e_queries > 0 else None,
                )
            )
            report["search"] = search_results
            write_report(args.out, report)  # partial results survive an interrupted run

    report["elapsed_s"] = round(time.perf_counter() - began, 1)
    console.rule("results")
    if "ingest" in report:
        print_ingest_table(report["ingest"])
    if search_results:
        print_load_table(search_results)
        print_search_table(search_results)
    write_report(args.out, report)
    console.print(f"wrote {args.out} (total {report['elapsed_s']} s)")
    return 0


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def save_report(name: str, report: dict[str, Any], out: Path | None = None) -> Path:
    """Writes `report` to `out`, or to bench/results/<name>-<UTC timestamp>.json, and says where."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out or Path(__file__).parent / "results" / f"{name}-{stamp}.json"
    write_report(path, report)
    console.print(f"wrote {path}", style="dim")
    return path


if __name__ == "__main__":
    sys.exit(main())
