"""Retrieval quality on long conversations (LoCoMo format): does the evidence come back?

Run from the repository root:

    python bench/conversation_recall.py DATA_DIR [--max-tokens 3750] [--runs 2] [--out PATH]

DATA_DIR holds LoCoMo-format JSON files (e.g. ../shared/data/locomo-dev). For each file the
bench stores every turn as one LongTerm context through the library API, the way a session
stores a message: text "<speaker>: <text>" (plus " [shares <blip_caption>]" when the turn
shares an image), agent_id = the file name, session_id = the session key, timestamp = the
session's date and time, metadata = {"name": <speaker>, "dia_id": <turn id>}. It then searches
every question of categories 1-4 with `max_tokens` and that agent_id, and reports, averaged
over the questions, the share of each question's evidence turns returned: within the budget,
in the first 5 and in the first 10.

Side by side, in one run over the same stored turns:
- hirag-oz with its defaults;
- hirag-oz with each of its retrieval levers switched off in turn (the ablation);
- three simple retrievers over the same turns (BM25 alone, MiniLM dense alone, and their
  reciprocal rank fusion with k=60), filling the same budget in rank order;
- leave-one-conversation-out: for each setting a lever has, each value of a small grid is
  measured on every conversation; each conversation is then reported with the value that did
  best on the other conversations, so no figure comes from a value chosen on its own data;
- the spread of the defaults' figures over `--runs` runs, each into a fresh store.

Every figure is written, with machine info, to bench/results/conversation_recall-<timestamp>.json.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi
from rich.table import Table

from hirag_oz import NewContext
from hirag_oz.config import HiragSettings, Settings
from hirag_oz.memory.manager import HiRAG
from hirag_oz.service import Hirag
from hirag_oz.tokens import TokenCounter
from store_search import console, machine_info, percentiles, save_report

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
RRF_K = 60
TOP = (5, 10)
METRICS = ("top5", "top10", "budget")
BASELINES = ("bm25", "dense", "rrf")
# Each retrieval lever of hirag-oz, and the settings that switch it off.
LEVERS: dict[str, dict[str, Any]] = {
    "neighbouring turns": {"neighbour_hits": 0},
    "named speaker": {"speaker_boost": 0.0},
    "named period": {"period_boost": 0.0},
    "lexical (BM25) fusion": {"hybrid_alpha": 1.0},
}
# The settings whose value is a constant, and the grid each is chosen from, leave-one-out.
GRIDS: dict[str, tuple[float | int, ...]] = {
    "hybrid_alpha": (0.5, 0.6, 0.7, 0.8),
    "neighbour_hits": (3, 5, 10, 20),
    "neighbour_weight": (0.7, 0.85, 0.95),
    "speaker_boost": (0.05, 0.1, 0.2),
    "period_boost": (0.05, 0.1, 0.2),
}


# ------------------------------------------------------------------------------------ data


@dataclass
class Turn:
    dia_id: str
    session: str
    timestamp: float
    speaker: str
    text: str


@dataclass
class Question:
    text: str
    category: int
    evidence: set[str]


@dataclass
class Conversation:
    name: str
    turns: list[Turn]
    questions: list[Question]


def parse_session_time(value: str) -> float:
    """LoCoMo's "1:56 pm on 8 May, 2023" as epoch seconds (UTC)."""
    parsed = datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y")
    return parsed.replace(tzinfo=UTC).timestamp()


def turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return text


def evidence_ids(raw: Sequence[str]) -> set[str]:
    """Evidence entries as turn ids; a few entries hold several ids separated by ';'."""
    ids: set[str] = set()
    for entry in raw:
        ids.update(part.strip() for part in str(entry).split(";") if part.strip())
    return ids


def load_conversation(path: Path) -> Conversation:
    data = json.loads(path.read_text())
    source = data.get("conversation", data)  # the full LoCoMo file nests the sessions
    turns: list[Turn] = []
    sessions = sorted(
        (key for key in source if re.fullmatch(r"session_\d+", key)),
        key=lambda key: int(key.split("_")[1]),
    )
    for key in sessions:
        timestamp = parse_session_time(source[f"{key}_date_time"])
        for turn in source[key]:
            turns.append(
                Turn(turn["dia_id"], key, timestamp, str(turn["speaker"]), turn_text(turn))
            )
    questions = [
        Question(q["question"], int(q["category"]), evidence_ids(q.get("evidence", [])))
        for q in data["qa"]
        if int(q["category"]) in CATEGORIES
    ]
    return Conversation(path.stem, turns, questions)


# ------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Shares:
    """One question's share of evidence turns found in the first 5, first 10, and budget."""

    conversation: str
    category: int
    top5: float
    top10: float
    budget: float


def shares_of(conv: str, question: Question, returned: Sequence[str]) -> Shares | None:
    """None for a question without evidence: it is left out of every mean."""
    wanted = question.evidence
    if not wanted:
        return None
    found = [len(wanted & set(returned[:k])) / len(wanted) for k in TOP]
    budget = len(wanted & set(returned)) / len(wanted)
    return Shares(conv, question.category, found[0], found[1], budget)


def summarize(rows: Sequence[Shares]) -> dict[str, dict[str, float | int]]:
    """Means over questions (the unit of the LoCoMo reference figures), per category and
    overall, with the number of questions."""
    out: dict[str, dict[str, float | int]] = {}
    groups = [(CATEGORIES[c], {c}) for c in CATEGORIES] + [("overall", set(CATEGORIES))]
    for name, cats in groups:
        picked = [r for r in rows if r.category in cats]
        row: dict[str, float | int] = {"questions": len(picked)}
        for metric in METRICS:
            values = [getattr(r, metric) for r in picked]
            row[metric] = round(statistics.fmean(values), 4) if values else 0.0
        out[name] = row
    return out


def fill_budget(order: Sequence[int], tokens: Sequence[int], max_tokens: int) -> list[int]:
    """Turns in rank order that fit `max_tokens`, skipping any that does not fit."""
    chosen, used = [], 0
    for i in order:
        if used + tokens[i] <= max_tokens:
            chosen.append(i)
            used += tokens[i]
    return chosen


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rrf(*rankings: Sequence[int]) -> list[int]:
    scores: dict[int, float] = defaultdict(float)
    for ranking in rankings:
        for rank, i in enumerate(ranking):
            scores[i] += 1.0 / (RRF_K + rank + 1)
    return sorted(scores, key=lambda i: (-scores[i], i))


def baselines(
    conv: Conversation,
    turn_vectors: list[list[float]],
    embed: Callable[[list[str]], list[list[float]]],
    counter: TokenCounter,
    max_tokens: int,
) -> dict[str, list[Shares]]:
    texts = [t.text for t in conv.turns]
    ids = [t.dia_id for t in conv.turns]
    tokens = counter.count_many(texts)
    bm25 = BM25Okapi([words(t) for t in texts])
    vectors = np.array(turn_vectors, dtype=np.float32)
    queries = np.array(embed([q.text for q in conv.questions]), dtype=np.float32)
    out: dict[str, list[Shares]] = {name: [] for name in BASELINES}
    for q, qv in zip(conv.questions, queries, strict=True):
        lexical = list(np.argsort(-bm25.get_scores(words(q.text)), kind="stable"))
        dense = list(np.argsort(-(vectors @ qv), kind="stable"))
        for name, order in (("bm25", lexical), ("dense", dense), ("rrf", rrf(lexical, dense))):
            got = shares_of(conv.name, q, [ids[i] for i in fill_budget(order, tokens, max_tokens)])
            if got is not None:
                out[name].append(got)
    return out


def ask(
    memory: HiRAG,
    conv: Conversation,
    max_tokens: int,
    latencies: list[float] | None = None,
) -> list[Shares]:
    rows = []
    for q in conv.questions:
        started = time.perf_counter()
        result = memory.search(q.text, max_tokens, agent_id=conv.name)
        if latencies is not None:
            latencies.append((time.perf_counter() - started) * 1000)
        got = shares_of(conv.name, q, [c.metadata["dia_id"] for c in result.contexts])
        if got is not None:
            rows.append(got)
    return rows


def with_settings(memory: HiRAG, base: HiragSettings, changes: dict[str, Any]) -> None:
    """The memory's retrieval settings for the next searches: the defaults, changed."""
    memory.settings = base.model_copy(update=changes)


def as_contexts(conv: Conversation, agent: str, session_prefix: str = "") -> list[NewContext]:
    return [
        NewContext(
            t.text,
            "LongTerm",
            agent_id=agent,
            session_id=session_prefix + t.session,
            timestamp=t.timestamp,
            metadata={"name": t.speaker, "dia_id": t.dia_id},
        )
        for t in conv.turns
    ]


def store_turns(parts: Hirag, conv: Conversation) -> tuple[dict[str, Any], list[list[float]]]:
    """Stores the conversation's turns; returns the ingest figures and the turns' vectors."""
    texts = [t.text for t in conv.turns]
    started = time.perf_counter()
    vectors = parts.model.embed(texts)  # the model alone, without the cache
    bare_s = time.perf_counter() - started
    items = as_contexts(conv, conv.name)
    started = time.perf_counter()
    parts.contexts.store_many(items)
    ingest_s = time.perf_counter() - started
    row = {
        "conversation": conv.name,
        "turns": len(items),
        "ingest_per_s": round(len(items) / ingest_s, 1),
        "bare_embedding_per_s": round(len(items) / bare_s, 1),
        "ratio": round(bare_s / ingest_s, 3),
    }
    return row, vectors


def latency_at_scale(
    parts: Hirag,
    conversations: Sequence[Conversation],
    vectors: dict[str, list[list[float]]],
    items: int,
    max_tokens: int,
) -> dict[str, Any]:
    """Search latency over `items` contexts of one agent: the first conversation's agent is
    filled with copies of every conversation's turns (their stored vectors, in sessions of
    their own) until it holds `items`; then each of its questions is asked with the defaults
    and with every lever off, one after the other, so both see the same machine state. Each
    search's time includes embedding its query."""
    memory = parts.contexts
    target = conversations[0]
    held = memory.count(agent_id=target.name)
    copy = 0
    while held < items:
        for conv in conversations:
            batch = as_contexts(conv, target.name, f"copy{copy}-{conv.name}-")[: items - held]
            memory.store_many(batch, vectors=vectors[conv.name][: len(batch)])
            held += len(batch)
        copy += 1
    defaults = memory.settings
    all_off: dict[str, Any] = {k: v for off in LEVERS.values() for k, v in off.items()}
    timings: dict[str, list[float]] = {"defaults": [], "levers off": []}
    variants: list[tuple[str, dict[str, Any]]] = [("defaults", {}), ("levers off", all_off)]
    for i, q in enumerate(target.questions):
        # Each in turn goes first; each embeds the query with the model (not the cache).
        for name, changes in variants[i % 2 :] + variants[: i % 2]:
            with_settings(memory, defaults, changes)
            started = time.perf_counter()
            vector = parts.model.embed([q.text])[0]
            memory.search(q.text, max_tokens, agent_id=target.name, query_vector=vector)
            timings[name].append((time.perf_counter() - started) * 1000)
    with_settings(memory, defaults, {})
    out: dict[str, Any] = {"items": held, "agent": target.name}
    out.update({name: percentiles(ms) for name, ms in timings.items()})
    out["p95_ratio"] = round(out["defaults"]["p95_ms"] / out["levers off"]["p95_ms"], 3)
    return out


def leave_one_out(
    grid_rows: dict[str, dict[Any, list[Shares]]], names: Sequence[str], default: HiragSettings
) -> dict[str, Any]:
    """For each setting, each conversation reported with the grid value that did best on the
    others (within budget, then top 10, then the value nearest the default)."""
    out: dict[str, Any] = {}
    for setting, by_value in grid_rows.items():
        current = getattr(default, setting)
        held: list[Shares] = []
        chosen: dict[str, Any] = {}
        for name in names:
            best = max(by_value, key=lambda v, n=name: _merit(by_value[v], n, abs(v - current)))
            chosen[name] = best
            held += [r for r in by_value[best] if r.conversation == name]
        out[setting] = {
            "default": current,
            "chosen": chosen,
            "held_out": summarize(held),
            "by_value": {str(v): summarize(rows) for v, rows in by_value.items()},
        }
    return out


def _merit(rows: Sequence[Shares], left_out: str, off_default: float) -> tuple[float, ...]:
    row = summarize([r for r in rows if r.conversation != left_out])["overall"]
    return (float(row["budget"]), float(row["top10"]), -off_default)


def spread(runs: Sequence[dict[str, dict[str, float | int]]]) -> dict[str, dict[str, float]]:
    """Overall figures over runs: the mean, and the largest minus the smallest."""
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        values = [float(r["overall"][metric]) for r in runs]
        out[metric] = {
            "mean": round(statistics.fmean(values), 4),
            "range": round(max(values) - min(values), 4),
        }
    return out


# ------------------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> dict[str, Any]:
    files = sorted(Path(args.data_dir).glob("*.json"))
    if not files:
        raise SystemExit(f"no *.json files in {args.data_dir}")
    conversations = [load_conversation(f) for f in files]
    names = [c.name for c in conversations]
    results: dict[str, list[Shares]] = defaultdict(list)
    grid_rows: dict[str, dict[Any, list[Shares]]] = {s: defaultdict(list) for s in GRIDS}
    per_run: list[dict[str, dict[str, float | int]]] = []
    latencies: list[float] = []
    ingest: list[dict[str, Any]] = []
    at_scale: dict[str, Any] = {}
    vectors: dict[str, list[list[float]]] = {}
    defaults = HiragSettings()
    for run_index in range(args.runs):
        first = run_index == 0
        with tempfile.TemporaryDirectory(prefix="hirag-recall-") as tmp:
            parts = Hirag(Settings(server={"data_dir": Path(tmp)}))
            memory, counter = parts.contexts, parts.tokens.counter
            defaults = memory.settings  # the defaults, with any from the environment
            this_run: list[Shares] = []
            try:
                for conv in conversations:
                    row, vectors[conv.name] = store_turns(parts, conv)
                    if first:
                        ingest.append(row)
                    with_settings(memory, defaults, {})
                    got = ask(memory, conv, args.max_tokens, latencies if first else None)
                    this_run += got
                    if not first:
                        continue
                    results["hirag-oz"] += got
                    for lever, off in LEVERS.items():
                        with_settings(memory, defaults, off)
                        results[f"without {lever}"] += ask(memory, conv, args.max_tokens)
                    for setting, values in GRIDS.items():
                        for value in values:
                            with_settings(memory, defaults, {setting: value})
                            grid_rows[setting][value] += ask(memory, conv, args.max_tokens)
                    for name, rows in baselines(
                        conv, vectors[conv.name], parts.model.embed, counter, args.max_tokens
                    ).items():
                        results[name] += rows
                    console.print(
                        f"{conv.name}: {len(conv.turns)} turns, {len(conv.questions)} questions"
                    )
                if first and args.scale:
                    at_scale = latency_at_scale(
                        parts, conversations, vectors, args.scale, args.max_tokens
                    )
            finally:
                parts.close()
            per_run.append(summarize(this_run))
    retrievers = ["hirag-oz", *(f"without {lever}" for lever in LEVERS), *BASELINES]
    return {
        "bench": "conversation_recall",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "data_dir": str(args.data_dir),
        "conversations": names,
        "max_tokens": args.max_tokens,
        "results": {name: summarize(results[name]) for name in retrievers},
        "per_conversation": {
            name: {
                conv: summarize([r for r in results[name] if r.conversation == conv])["overall"]
                for conv in names
            }
            for name in retrievers
        },
        "leave_one_out": leave_one_out(grid_rows, names, defaults) if len(names) > 1 else {},
        "runs": args.runs,
        "spread": spread(per_run),
        "search_latency": percentiles(latencies),
        "search_latency_at_scale": at_scale,
        "ingest": ingest,
    }


def print_report(report: dict[str, Any]) -> None:
    results = report["results"]
    retrievers = list(results)
    table = Table(
        title=f"Share of evidence turns returned (max_tokens {report['max_tokens']}; "
        f"conversations {', '.join(report['conversations'])})"
    )
    for col in ("category", "questions", "retriever", "top 5", "top 10", "budget"):
        table.add_column(col, justify="left" if col in ("category", "retriever") else "right")
    for index, category in enumerate([*CATEGORIES.values(), "overall"]):
        if index:
            table.add_section()
        for name in retrievers:
            row = results[name][category]
            first = name == retrievers[0]
            table.add_row(
                category if first else "",
                str(row["questions"]) if first else "",
                name,
                f"{row['top5']:.3f}",
                f"{row['top10']:.3f}",
                f"{row['budget']:.3f}",
            )
    console.print(table)

    convs = report["conversations"]
    table = Table(title="Overall by conversation: budget / top 10")
    table.add_column("retriever")
    for conv in convs:
        table.add_column(conv, justify="right")
    for name in retrievers:
        cells = report["per_conversation"][name]
        table.add_row(name, *(f"{cells[c]['budget']:.3f} / {cells[c]['top10']:.3f}" for c in convs))
    console.print(table)

    loo = report["leave_one_out"]
    if loo:
        table = Table(
            title="Leave one conversation out: each conversation measured with the value "
            "chosen on the others (overall)"
        )
        for col in ("setting", "default", "chosen for", "budget", "top 10", "top 5"):
            table.add_column(col, justify="left" if col in ("setting", "chosen for") else "right")
        for setting, row in loo.items():
            held = row["held_out"]["overall"]
            table.add_row(
                setting,
                str(row["default"]),
                ", ".join(f"{c}: {v}" for c, v in row["chosen"].items()),
                f"{held['budget']:.3f}",
                f"{held['top10']:.3f}",
                f"{held['top5']:.3f}",
            )
        console.print(table)

    spread_ = report["spread"]
    console.print(
        f"defaults over {report['runs']} run(s), overall: "
        + ", ".join(
            f"{m} {spread_[m]['mean']:.3f} (range {spread_[m]['range']:.3f})" for m in METRICS
        )
    )
    lat = report["search_latency"]
    console.print(
        f"hirag-oz search latency (defaults): p50 {lat['p50_ms']:.1f} ms, "
        f"p95 {lat['p95_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
    )
    scale = report["search_latency_at_scale"]
    if scale:
        on, off = scale["defaults"], scale["levers off"]
        console.print(
            f"search latency over {scale['items']} contexts of agent {scale['agent']}: defaults "
            f"p50 {on['p50_ms']:.1f} ms, p95 {on['p95_ms']:.1f} ms; every lever off p50 "
            f"{off['p50_ms']:.1f} ms, p95 {off['p95_ms']:.1f} ms (p95 ratio {scale['p95_ratio']})"
        )
    for row in report["ingest"]:
        console.print(
            f"ingest {row['conversation']}: {row['ingest_per_s']} turns/s, bare embedding "
            f"{row['bare_embedding_per_s']} turns/s (ratio {row['ratio']})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("data_dir", type=Path, help="folder of LoCoMo-format JSON files")
    parser.add_argument("--max-tokens", type=int, default=3750)
    parser.add_argument(
        "--runs", type=int, default=2, help="runs into fresh stores, for the spread"
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=10_000,
        help="also time searches over this many contexts of one agent (0: skip)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report)
    save_report("conversation_recall", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
