"""bench/conversation_recall.py on two tiny hand-made conversations in the LoCoMo format: every
table the bench prints is there, and its figures are the right ones for these questions.

Figures on real conversations come from `make bench-recall`, run by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import conversation_recall as bench


def _conversation(a: str, b: str, topic: str) -> dict[str, Any]:
    turns = [
        (a, f"I finally finished building the {topic} last weekend."),
        (b, "That sounds like a lot of work, how long did it take?"),
        (a, "About three months of evenings."),
        (b, "My sister just moved to Lisbon for a new job."),
        (a, "Lisbon is lovely in the spring, she will like it."),
        (b, "I started learning the cello in January."),
    ]
    session_1 = [
        {"speaker": s, "dia_id": f"D1:{i + 1}", "text": t} for i, (s, t) in enumerate(turns[:3])
    ]
    session_2 = [
        {"speaker": s, "dia_id": f"D2:{i + 1}", "text": t} for i, (s, t) in enumerate(turns[3:])
    ]
    return {
        "speaker_a": a,
        "speaker_b": b,
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": session_1,
        "session_2_date_time": "10:00 am on 20 June, 2023",
        "session_2": session_2,
        "qa": [
            {"question": f"What did {a} build?", "evidence": ["D1:1"], "category": 4},
            {"question": f"Where did {b}'s sister move?", "evidence": ["D2:1"], "category": 4},
            {"question": f"What instrument is {b} learning?", "evidence": ["D2:3"], "category": 2},
            {
                "question": f"How long did {a}'s {topic} take, and what did {b} ask?",
                "evidence": ["D1:1", "D1:3"],
                "category": 1,
            },
            {"question": "Anything else?", "category": 5, "adversarial_answer": "no"},
        ],
    }


def test_the_recall_bench_prints_every_comparison(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "1.json").write_text(json.dumps(_conversation("Ana", "Ben", "boat")))
    (data / "2.json").write_text(json.dumps(_conversation("Cy", "Dee", "shed")))
    out = tmp_path / "report.json"
    code = bench.main([str(data), "--runs", "2", "--scale", "40", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())

    names = ["hirag-oz", *(f"without {lever}" for lever in bench.LEVERS), *bench.BASELINES]
    assert list(report["results"]) == names
    overall = report["results"]["hirag-oz"]["overall"]
    # Four questions with evidence per conversation; category 5 has none and is left out.
    assert overall["questions"] == 8
    # A conversation of six turns fits the budget whole.
    assert overall["budget"] == 1.0
    assert report["results"]["hirag-oz"]["temporal"]["questions"] == 2
    assert set(report["per_conversation"]["bm25"]) == {"1", "2"}

    loo = report["leave_one_out"]
    assert set(loo) == set(bench.GRIDS)
    for setting, row in loo.items():
        assert set(row["chosen"]) == {"1", "2"}
        assert all(value in bench.GRIDS[setting] for value in row["chosen"].values())
        assert row["held_out"]["overall"]["questions"] == 8

    assert report["runs"] == 2
    assert report["spread"]["budget"] == {"mean": 1.0, "range": 0.0}
    scale = report["search_latency_at_scale"]
    assert scale["items"] == 40 and scale["defaults"]["n"] == scale["levers off"]["n"] == 4
    assert [row["turns"] for row in report["ingest"]] == [6, 6]


def test_leave_one_out_reports_each_conversation_with_the_value_chosen_on_the_other() -> None:
    def rows(conv: str, budget: float) -> list[bench.Shares]:
        return [bench.Shares(conv, 4, budget, budget, budget)]

    # Value 1 is best on conversation "a", value 2 on "b".
    by_value = {1: rows("a", 1.0) + rows("b", 0.2), 2: rows("a", 0.5) + rows("b", 0.9)}
    settings = bench.HiragSettings()
    got = bench.leave_one_out({"neighbour_hits": by_value}, ["a", "b"], settings)
    row = got["neighbour_hits"]
    assert row["chosen"] == {"a": 2, "b": 1}
    # "a" with value 2 (0.5) and "b" with value 1 (0.2): each worse than its own best.
    assert row["held_out"]["overall"]["budget"] == 0.35
