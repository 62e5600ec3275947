"""Retrieval quality on long conversations (LoCoMo format): does the evidence come back?

Run from the repository root:

    python bench/conversation_recall.py DATA_DIR [--max-tokens 3750] [--out PATH]

DATA_DIR holds LoCoMo-format JSON files (e.g. ../shared/data/locomo-dev). For each file the
bench stores every turn as one LongTerm context through the library API: text
"<speaker>: <text>" (plus " [shares <blip_caption>]" when the turn shares an image),
agent_id = the file name, session_id = the session key, timestamp = the session's date and
time, metadata.dia_id = the turn's id. It then searches every question of categories 1-4 with
`max_tokens` and that agent_id, and reports, averaged over the questions, the share of each
question's evidence turns returned: within the budget, in the first 5 and in the first 10.

The same run ranks the same turns with three simple retrievers (BM25 alone, MiniLM dense
alone, and their reciprocal rank fusion with k=60), filling the same token budget in rank
order, so the ratios are visible. Every figure is written, with machine info, to
bench/results/conversation_recall-<timestamp>.json. See bench/README.md.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi
from rich.table import Table

from hirag_oz import NewContext
from hirag_oz.config import Settings
from hirag_oz.service import Hirag
from hirag_oz.tokens import TokenCounter
from store_search import console, machine_info, percentiles, write_report

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
RRF_K = 60
TOP = (5, 10)
RETRIEVERS = ("hirag-oz", "bm25", "dense", "rrf")


# ------------------------------------------------------------------------------------ data


@dataclass
class Turn:
    dia_id: str
    session: str
    timestamp: float
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
            turns.append(Turn(turn["dia_id"], key, timestamp, turn_text(turn)))
    questions = [
        Question(q["question"], int(q["category"]), evidence_ids(q.get("evidence", [])))
        for q in data["qa"]
        if int(q["category"]) in CATEGORIES
    ]
    return Conversation(path.stem, turns, questions)


# ------------------------------------------------------------------------------- measuring


@dataclass
class Tally:
    """Per question, the share of its evidence turns found; averaged per category.

    The mean over questions (not over evidence turns) is what the reference figures of the
    LoCoMo development set use. Questions without evidence are left out.
    """

    shares_by: dict[str, dict[int, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, question: Question, returned: Sequence[str]) -> None:
        wanted = question.evidence
        if not wanted:
            return
        cat = question.category
        self.shares_by["budget"][cat].append(len(wanted & set(returned)) / len(wanted))
        for k in TOP:
            found = len(wanted & set(returned[:k]))
            self.shares_by[f"top{k}"][cat].append(found / len(wanted))

    def shares(self) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {}
        groups = [(CATEGORIES[c], [c]) for c in CATEGORIES] + [("overall", list(CATEGORIES))]
        for name, cats in groups:
            row: dict[str, float | int] = {
                "questions": sum(len(self.shares_by["budget"][c]) for c in cats)
            }
            for metric in ("top5", "top10", "budget"):
                values = [v for c in cats for v in self.shares_by[metric][c]]
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
    return sorted(scores, key=lambda i: -scores[i])


def baselines(
    conv: Conversation,
    turn_vectors: list[list[float]],
    embed: Callable[[list[str]], list[list[float]]],
    counter: TokenCounter,
    max_tokens: int,
    tallies: dict[str, Tally],
) -> None:
    texts = [t.text for t in conv.turns]
    ids = [t.dia_id for t in conv.turns]
    tokens = counter.count_many(texts)
    bm25 = BM25Okapi([words(t) for t in texts])
    vectors = np.array(turn_vectors, dtype=np.float32)
    queries = np.array(embed([q.text for q in conv.questions]), dtype=np.float32)
    for q, qv in zip(conv.questions, queries, strict=True):
        lexical = list(np.argsort(-bm25.get_scores(words(q.text)), kind="stable"))
        dense = list(np.argsort(-(vectors @ qv), kind="stable"))
        for name, order in (("bm25", lexical), ("dense", dense), ("rrf", rrf(lexical, dense))):
            tallies[name].add(q, [ids[i] for i in fill_budget(order, tokens, max_tokens)])


# ------------------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> dict[str, Any]:
    files = sorted(Path(args.data_dir).glob("*.json"))
    if not files:
        raise SystemExit(f"no *.json files in {args.data_dir}")
    conversations = [load_conversation(f) for f in files]
    tallies = {name: Tally() for name in RETRIEVERS}
    latencies: list[float] = []
    ingest: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hirag-recall-") as tmp:
        settings = Settings(server={"data_dir": Path(tmp)})
        parts = Hirag(settings)
        memory, counter = parts.contexts, parts.tokens.counter
        try:
            for conv in conversations:
                texts = [t.text for t in conv.turns]
                started = time.perf_counter()
                vectors = parts.model.embed(texts)  # the model alone, without the cache
                bare_s = time.perf_counter() - started
                items = [
                    NewContext(
                        t.text,
                        "LongTerm",
                        agent_id=conv.name,
                        session_id=t.session,
                        timestamp=t.timestamp,
                        metadata={"dia_id": t.dia_id},
                    )
                    for t in conv.turns
                ]
                started = time.perf_counter()
                memory.store_many(items)
                ingest_s = time.perf_counter() - started
                ingest.append(
                    {
                        "conversation": conv.name,
                        "turns": len(items),
                        "ingest_per_s": round(len(items) / ingest_s, 1),
                        "bare_embedding_per_s": round(len(items) / bare_s, 1),
                        "ratio": round(bare_s / ingest_s, 3),
                    }
                )
                for q in conv.questions:
                    started = time.perf_counter()
                    result = memory.search(q.text, args.max_tokens, agent_id=conv.name)
                    latencies.append((time.perf_counter() - started) * 1000)
                    tallies["hirag-oz"].add(q, [c.metadata["dia_id"] for c in result.contexts])
                baselines(conv, vectors, parts.model.embed, counter, args.max_tokens, tallies)
                console.print(
                    f"{conv.name}: {len(conv.turns)} turns, {len(conv.questions)} questions"
                )
        finally:
            parts.close()
    return {
        "bench": "conversation_recall",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "data_dir": str(args.data_dir),
        "conversations": [c.name for c in conversations],
        "max_tokens": args.max_tokens,
        "results": {name: tally.shares() for name, tally in tallies.items()},
        "search_latency": percentiles(latencies),
        "ingest": ingest,
    }


def print_report(report: dict[str, Any]) -> None:
    table = Table(
        title=f"Share of evidence turns returned (max_tokens {report['max_tokens']}; "
        f"conversations {', '.join(report['conversations'])})"
    )
    for col in ("category", "questions", "retriever", "top 5", "top 10", "budget"):
        table.add_column(col, justify="left" if col in ("category", "retriever") else "right")
    results = report["results"]
    for index, category in enumerate([*CATEGORIES.values(), "overall"]):
        if index:
            table.add_section()
        for name in RETRIEVERS:
            row = results[name][category]
            first = name == RETRIEVERS[0]
            table.add_row(
                category if first else "",
                str(row["questions"]) if first else "",
                name,
                f"{row['top5']:.3f}",
                f"{row['top10']:.3f}",
                f"{row['budget']:.3f}",
            )
    console.print(table)
    lat = report["search_latency"]
    console.print(
        f"hirag-oz search latency: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, "
        f"max {lat['max_ms']:.1f} ms"
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
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(__file__).parent / "results" / f"conversation_recall-{stamp}.json"
    write_report(out, report)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
