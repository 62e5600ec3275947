"""Conversations replayed as an agent would, through sessions: is the evidence in the prompt?

Run from the repository root:

    python bench/session_replay.py DATA_DIR [--out PATH]

DATA_DIR holds LoCoMo-format JSON files (e.g. ../shared/data/locomo-dev). For each file, each
LoCoMo session becomes a session of the library's `Hirag.sessions`: its turns are appended one
by one with the session's date (the first speaker as `user`, the other as `assistant`, `name`
= the speaker, `metadata.dia_id` = the turn's id), and the session is closed when its turns
are done (consolidated: messages to LongTerm, a session summary stored). Then every question
of categories 1-4 is asked through the session-context call, with the default budget, in a
session of its own: the question is appended as the user's message, the prompt is built for
it, and the session is deleted.

Reported, averaged over the questions: the share of each question's evidence turns that are
in the built prompt (retrieved snippets, brief or recent turns), overall and per category,
beside the stateless search baseline (`HiRAG.search` of the question over the same stored
turns, session summaries left out, with the retrieved slot's budget). The same is run in four variants: without session
summaries; with them stored but kept out of the prompt's retrieved slot (the default); with
them retrieved as any context; and with them leading to their sessions' best messages. Also: append and context latency p50/p95 in-process
(no LLM), folds and consolidations. Everything goes to bench/results/session_replay-<UTC>.json.

Nothing here was tuned on anything but these development conversations.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from conversation_recall import CATEGORIES, Conversation, Question, load_conversation
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder, default_cache_dir
from hirag_oz.service import Hirag
from hirag_oz.sessions import NewMessage
from hirag_oz.store.base import Condition, Filter
from store_search import console, machine_info, percentiles, save_report

VARIANTS: dict[str, dict[str, Any]] = {
    "no summaries": {"summaries": False},
    "summaries (default)": {"summaries": True},
    "summaries as contexts": {"summaries": True, "summaries_retrieved": True},
    "summaries lead to messages": {"summaries": True, "summary_sessions": 3},
}
SYSTEM = "You answer questions about the user's earlier conversations."


@dataclass
class Shares:
    by_category: dict[int, list[float]] = field(default_factory=dict)

    def add(self, question: Question, found: set[str]) -> None:
        if question.evidence:
            share = len(question.evidence & found) / len(question.evidence)
            self.by_category.setdefault(question.category, []).append(share)

    def summary(self) -> dict[str, float]:
        out = {
            CATEGORIES[c]: round(statistics.fmean(v), 4)
            for c, v in sorted(self.by_category.items())
        }
        every = [x for v in self.by_category.values() for x in v]
        out["overall"] = round(statistics.fmean(every), 4) if every else 0.0
        return out


@dataclass
class Run:
    prompt: Shares = field(default_factory=Shares)
    baseline: Shares = field(default_factory=Shares)
    append_ms: list[float] = field(default_factory=list)
    context_ms: list[float] = field(default_factory=list)
    folds: int = 0
    consolidations: int = 0
    prompt_tokens: list[int] = field(default_factory=list)


def speaker_and_text(text: str) -> tuple[str, str]:
    name, _, said = text.partition(": ")
    return name, said


def replay(
    conv: Conversation,
    model: OnnxMiniLMEmbedder,
    options: dict[str, Any],
    run: Run,
    retrieved_tokens: int | None = None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="session-replay-") as data:
        settings = Settings(  # type: ignore[arg-type]
            server={"data_dir": Path(data)},
            hirag={"maintenance_enabled": False},
            sessions=options,
            token_budget={"retrieved_context": retrieved_tokens} if retrieved_tokens else {},
        )
        with Hirag(settings, model=model) as hirag:
            sessions = hirag.sessions
            first = speaker_and_text(conv.turns[0].text)[0]
            dia_of: dict[str, str] = {}
            order: list[str] = []
            for turn in conv.turns:
                if not order or order[-1] != turn.session:
                    order.append(turn.session)
            for key in order:
                for turn in (t for t in conv.turns if t.session == key):
                    name, said = speaker_and_text(turn.text)
                    message = NewMessage(
                        "user" if name == first else "assistant",
                        said,
                        name=name,
                        timestamp=turn.timestamp,
                        metadata={"dia_id": turn.dia_id},
                    )
                    started = time.perf_counter()
                    done = sessions.append(key, [message], agent_id=conv.name)
                    run.append_ms.append((time.perf_counter() - started) * 1000)
                    dia_of[done.messages[0][0].id] = turn.dia_id
                run.folds += sessions.get(key, agent_id=conv.name).folds
                sessions.close(key, agent_id=conv.name)
                run.consolidations += 1
            slot = hirag.settings.token_budget.retrieved_context
            # The baseline searches the conversation's turns, as without sessions.
            turns_only = Filter(must=(Condition("metadata.kind", match="message"),))
            for i, question in enumerate(conv.questions):
                asked = f"question-{i}"
                sessions.append(asked, [NewMessage("user", question.text)], agent_id=conv.name)
                started = time.perf_counter()
                built = sessions.context(asked, system_prompt=SYSTEM, agent_id=conv.name)
                run.context_ms.append((time.perf_counter() - started) * 1000)
                run.prompt_tokens.append(built.allocation.prompt_tokens)
                sessions.delete(asked, agent_id=conv.name)
                found = {dia_of[s.id] for s in built.snippets if s.id in dia_of}
                shown = (
                    built.running_brief + "\n" + "\n".join(t.content for t in built.recent_turns)
                )
                found |= {t.dia_id for t in conv.turns if speaker_and_text(t.text)[1] in shown}
                run.prompt.add(question, found)
                searched = hirag.contexts.search(
                    question.text, slot, agent_id=conv.name, filters=turns_only
                )
                run.baseline.add(
                    question, {dia_of[c.id] for c in searched.contexts if c.id in dia_of}
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of LoCoMo-format JSON files")
    parser.add_argument(
        "--retrieved-tokens",
        type=int,
        default=None,
        help="the retrieved slot for this run (default: the configured 3750)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    files = sorted(args.data.glob("*.json"))
    if not files:
        parser.error(f"no JSON files in {args.data}")
    conversations = [load_conversation(path) for path in files]
    model = OnnxMiniLMEmbedder(default_cache_dir())
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name, options in VARIANTS.items():
        run = Run()
        for conv in conversations:
            console.print(
                f"{name}: {conv.name} ({len(conv.turns)} turns, {len(conv.questions)} questions)"
            )
            replay(conv, model, options, run, args.retrieved_tokens)
        results[name] = {
            "options": options,
            "prompt_recall": run.prompt.summary(),
            "baseline_recall": run.baseline.summary(),
            "append_ms": percentiles(run.append_ms),
            "context_ms": percentiles(run.context_ms),
            "prompt_tokens_mean": round(statistics.fmean(run.prompt_tokens), 1),
            "folds": run.folds,
            "consolidations": run.consolidations,
        }
    table = Table(title="Evidence in the prompt (session_context) vs stateless search, same budget")
    table.add_column("variant")
    for label in (*CATEGORIES.values(), "overall"):
        table.add_column(f"{label} prompt / search", justify="right")
    for name, row in results.items():
        cells = [
            f"{row['prompt_recall'].get(label, 0):.3f} / {row['baseline_recall'].get(label, 0):.3f}"
            for label in (*CATEGORIES.values(), "overall")
        ]
        table.add_row(name, *cells)
    console.print(table)
    timing = Table(title="Latency in-process, no LLM (ms)")
    for column in (
        "variant",
        "append p50",
        "append p95",
        "context p50",
        "context p95",
        "folds",
        "consolidations",
    ):
        timing.add_column(column, justify="right")
    for name, row in results.items():
        timing.add_row(
            name,
            f"{row['append_ms']['p50_ms']:.1f}",
            f"{row['append_ms']['p95_ms']:.1f}",
            f"{row['context_ms']['p50_ms']:.1f}",
            f"{row['context_ms']['p95_ms']:.1f}",
            str(row["folds"]),
            str(row["consolidations"]),
        )
    console.print(timing)
    report = {
        "bench": "session_replay",
        "machine": machine_info(),
        "data": [str(p) for p in files],
        "retrieved_tokens": args.retrieved_tokens,
        "variants": results,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    save_report("session_replay", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
