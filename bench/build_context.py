"""Latency of building a prompt (POST /api/v1/context/build's work, in-process) over a large store.

Run from the repository root:

    python bench/build_context.py [--items 100000] [--builds 300] [--out PATH]

1. Loads `--items` contexts (`store_search.make_texts` sentences over 8 agents, 10 sessions
   each) through `HiRAG.store_many`, with synthetic unit vectors in place of the model's, so
   that 100k items load in minutes; the texts, token counts and BM25 vectors are real.
2. Reopens the store with the real MiniLM model and times `ContextBuilder.build` without an
   LLM: the query's embedding, the search over every level within the retrieved slot, the
   snippet choice, turn folding and the extractive summary of a brief over its slot. Each
   build has a 300-token system prompt, a brief near its 1200-token slot, 12 recent turns of
   about 60 tokens (some fold) and 2 caller snippets, with the default 8k budget.
3. Prints p50/p95/p99/max and how often each overflow path ran, and writes
   bench/results/build_context-<timestamp>.json. Target: p95 <= 60 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from hirag_oz import NewContext
from hirag_oz.config import Settings
from hirag_oz.context import Priority, Snippet, Turn
from hirag_oz.service import Hirag
from store_search import (
    SyntheticVectors,
    console,
    machine_info,
    make_queries,
    make_texts,
    percentiles,
    save_report,
)

TARGET_P95_MS = 60.0
AGENTS = 8
SESSIONS = 10
LOAD_BATCH = 1000


def load(settings: Settings, items: int, seed: int) -> dict[str, Any]:
    parts = Hirag(settings, model=SyntheticVectors(seed))
    rng = random.Random(seed)
    texts = make_texts(items, seed)
    started = time.perf_counter()
    try:
        for start in range(0, items, LOAD_BATCH):
            batch = []
            for text in texts[start : start + LOAD_BATCH]:
                agent = rng.randrange(AGENTS)
                batch.append(
                    NewContext(
                        text,
                        rng.choices(["ShortTerm", "LongTerm"], [0.6, 0.4])[0],
                        agent_id=f"agent-{agent}",
                        session_id=f"agent-{agent}-s{rng.randrange(SESSIONS)}",
                    )
                )
            parts.contexts.store_many(batch)
            done = min(start + LOAD_BATCH, items)
            if done % 20_000 == 0 or done == items:
                console.print(f"  loaded {done:,} in {time.perf_counter() - started:.0f} s")
    finally:
        parts.close()
    elapsed = time.perf_counter() - started
    return {"items": items, "seconds": round(elapsed, 1), "per_s": round(items / elapsed, 1)}


def measure(settings: Settings, builds: int, seed: int) -> dict[str, Any]:
    parts = Hirag(settings)
    rng = random.Random(seed + 1)
    queries = make_queries(builds + 20, seed + 1)
    notes = make_texts(400, seed + 2)
    system = " ".join(notes[:12])  # about 300 tokens
    latencies: list[float] = []
    actions: dict[str, int] = {"summarized": 0, "folded": 0, "dropped_snippets": 0}
    prompt_tokens: list[int] = []
    try:
        for i, query in enumerate(queries):
            agent = f"agent-{rng.randrange(AGENTS)}"
            brief = " ".join(rng.sample(notes, 34))  # about 1,100-1,300 tokens
            turns = [
                Turn("user" if k % 2 == 0 else "assistant", " ".join(rng.sample(notes, 2)))
                for k in range(12)
            ]
            snippets = [
                Snippet(rng.choice(notes), Priority.HIGH, 0.9),
                Snippet(rng.choice(notes), Priority.LOW, 0.2),
            ]
            started = time.perf_counter()
            built = parts.prompts.build(
                query,
                system_prompt=system,
                agent_id=agent,
                running_brief=brief,
                recent_turns=turns,
                snippets=snippets,
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
            if i < 20:
                continue  # warm-up: caches, first-touch page faults
            latencies.append(elapsed_ms)
            prompt_tokens.append(built.allocation.prompt_tokens)
            actions["summarized"] += built.actions.summarized
            actions["folded"] += built.actions.folded_turns > 0
            actions["dropped_snippets"] += built.actions.dropped_snippets > 0
    finally:
        parts.close()
    return {
        "builds": len(latencies),
        "latency": percentiles(latencies),
        "prompt_tokens_mean": round(statistics.fmean(prompt_tokens), 1),
        "prompt_tokens_max": max(prompt_tokens),
        "builds_with": actions,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--builds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "bench": "build_context",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "target_p95_ms": TARGET_P95_MS,
    }
    with tempfile.TemporaryDirectory(prefix="hirag-build-") as tmp:
        settings = Settings(server={"data_dir": Path(tmp)}, hirag={"maintenance_enabled": False})
        console.print(f"loading {args.items:,} contexts (synthetic vectors) ...")
        report["load"] = load(settings, args.items, args.seed)
        console.print(f"timing {args.builds} builds with the real model ...")
        report["build"] = measure(settings, args.builds, args.seed)
    b = report["build"]
    lat = b["latency"]
    table = Table(title=f"ContextBuilder.build over {args.items:,} contexts (ms)")
    for column in ("builds", "p50", "p95", "p99", "max", "prompt tokens (mean/max)", "target"):
        table.add_column(column, justify="right")
    verdict = "PASS" if lat["p95_ms"] <= TARGET_P95_MS else "FAIL"
    table.add_row(
        str(b["builds"]),
        f"{lat['p50_ms']:.1f}",
        f"{lat['p95_ms']:.1f}",
        f"{lat['p99_ms']:.1f}",
        f"{lat['max_ms']:.1f}",
        f"{b['prompt_tokens_mean']:.0f} / {b['prompt_tokens_max']}",
        f"p95 <= {TARGET_P95_MS:g}: {verdict}",
    )
    console.print(table)
    console.print(f"builds that summarized / folded / dropped snippets: {b['builds_with']}")
    save_report("build_context", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
