"""The retrieval levers on small hand-made conversations: neighbouring turns, the speaker and
the period a query names, BM25 fusion, ties broken by storage order, frequency off.

Each lever's test asserts what its lever changes, and that the same conversation ranks
otherwise with the lever switched off."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from hirag_oz import HiRAG, Level, NewContext
from hirag_oz.store.format import SEQ_IN_MICROSECONDS, DataFormat

MakeMemory = Callable[..., HiRAG]

QUESTION = "Gina: How did the opening night of your dance studio go?"
ANSWER = "Jon: It went great, we sold out and my feet still hurt."
# Two turns closer to the query than the answer is, and four unrelated ones.
FILLER = [
    "Jon: I watched a ballet performance on TV last night.",
    "Gina: My cousin teaches salsa on weekends at the community hall.",
    "Jon: I bought new running shoes for the marathon in spring.",
    "Gina: My clothing store launched an online shop this week.",
    "Jon: The bank called me about a mortgage offer again.",
    "Gina: We adopted a puppy named Biscuit from the shelter.",
]


def _conversation(memory: HiRAG, session: str, turns: Sequence[str], agent: str = "a") -> None:
    memory.store_many(
        [NewContext(t, "LongTerm", agent_id=agent, session_id=session) for t in turns]
    )


def _texts(memory: HiRAG, query: str, max_tokens: int, agent: str = "a") -> list[str]:
    return [c.text for c in memory.search(query, max_tokens, agent_id=agent).contexts]


def test_the_reply_to_a_matching_turn_comes_right_after_it(make_memory: MakeMemory) -> None:
    turns = [*FILLER[:3], QUESTION, ANSWER, *FILLER[3:]]
    without = make_memory(neighbour_hits=0)
    _conversation(without, "s1", turns)
    found = _texts(without, "opening night of the dance studio", 1000)
    assert found[0] == QUESTION
    assert found.index(ANSWER) > 1, "the reply alone is not similar to the query"
    without.close()

    with_neighbours = make_memory(neighbour_hits=5)
    found = _texts(with_neighbours, "opening night of the dance studio", 1000)
    assert found[0] == QUESTION
    # The turns before and after the question tie at 0.85 times its score.
    assert ANSWER in found[1:3]


def test_the_turn_before_a_matching_reply_is_pulled_in(make_memory: MakeMemory) -> None:
    memory = make_memory()
    question = "Gina: What did your brother think of it?"
    reply = "Jon: He loved the maple syrup festival and all the pancakes."
    _conversation(memory, "s1", [*FILLER[2:4], question, reply, *FILLER[4:]])
    found = _texts(memory, "maple syrup festival pancakes", 1000)
    assert found[0] == reply
    assert question in found[1:3], "shares no word with the query, below the threshold alone"


def test_neighbours_stay_in_their_session_and_scope(make_memory: MakeMemory) -> None:
    memory = make_memory()
    _conversation(memory, "s1", [*FILLER[:3], QUESTION])
    # Stored right after the question, but in another session and for another agent.
    _conversation(memory, "s2", [ANSWER])
    _conversation(memory, "s1", [ANSWER.replace("Jon", "Ann")], agent="b")
    found = _texts(memory, "opening night of the dance studio", 40)
    assert found[0] == QUESTION
    assert not any("sold out" in t for t in found[:2])
    assert all(c.agent_id == "a" for c in memory.search("sold out", 1000, agent_id="a").contexts)


def test_a_neighbour_scores_at_least_a_share_of_its_hit(make_memory: MakeMemory) -> None:
    memory = make_memory()
    _conversation(memory, "s1", [*FILLER[:3], QUESTION, ANSWER])
    contexts = memory.search("opening night of the dance studio", 1000, agent_id="a").contexts
    by_text = {c.text: c for c in contexts}
    hit, answer = by_text[QUESTION], by_text[ANSWER]
    assert hit.relevance_score is not None and answer.relevance_score is not None
    assert hit.similarity is not None and answer.similarity is not None
    # neighbour_weight is 0.85 by default
    assert answer.relevance_score == pytest.approx(0.85 * hit.relevance_score, abs=1e-5)
    assert answer.similarity == pytest.approx(0.85 * hit.similarity, abs=1e-5)
    # A neighbour that scores better on its own keeps its own score.
    other = by_text[FILLER[2]]  # the turn before the question
    assert other.relevance_score is not None and other.relevance_score >= answer.relevance_score


def test_frequently_returned_contexts_do_not_crowd_out_relevant_ones(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    popular = "The team lunch is at the office cafeteria on Friday."
    relevant = "The team picnic moved to the lakeside park because of the rain."

    def ask(memory: HiRAG) -> str:
        memory.store_many([NewContext(popular, "LongTerm"), NewContext(relevant, "LongTerm")])
        for _ in range(30):  # popular is the only thing these searches return
            assert _texts(memory, "office cafeteria lunch on Friday", 15, agent="default") == [
                popular
            ]
        return memory.search("where is the team picnic", 1000).contexts[0].text

    assert ask(make_memory(tmp_path / "default")) == relevant
    weights = {"similarity": 0.3, "recency": 0.2, "level": 0.2, "frequency": 0.3}
    assert ask(make_memory(tmp_path / "frequency", weights=weights)) == popular


def test_seq_written_in_nanoseconds_is_rescaled_on_open(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    memory = make_memory(tmp_path / "d")
    ref = memory.store("an old note", "LongTerm")
    legacy = time.time_ns()
    memory.backend.set_payload(memory.collections[Level.LONG_TERM], [ref.id], {"seq": legacy})
    # A store written before formats were recorded.
    records = memory.backend.scroll("contexts_format", None, 10)
    memory.backend.delete("contexts_format", [r.id for r in records])
    memory.close()
    reopened = make_memory(tmp_path / "d")
    assert SEQ_IN_MICROSECONDS in DataFormat(reopened.backend).applied()
    point = reopened.backend.retrieve(reopened.collections[Level.LONG_TERM], [ref.id])[0]
    assert point.payload["seq"] == legacy // 1000
    newer = reopened.store("a new note", "LongTerm")
    later = reopened.backend.retrieve(reopened.collections[Level.LONG_TERM], [newer.id])[0]
    assert later.payload["seq"] > point.payload["seq"]


def test_seq_keeps_rising_across_a_restart_whose_clock_went_back(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    memory = make_memory(tmp_path / "d")
    ref = memory.store("written while the clock ran an hour ahead", "Immediate")
    ahead = time.time_ns() // 1000 + 3600 * 10**6
    memory.backend.set_payload(memory.collections[Level.IMMEDIATE], [ref.id], {"seq": ahead})
    memory.close()
    reopened = make_memory(tmp_path / "d")
    newer = reopened.store("written after the restart", "ShortTerm")
    point = reopened.backend.retrieve(reopened.collections[Level.SHORT_TERM], [newer.id])[0]
    assert point.payload["seq"] > ahead


def _turns(memory: HiRAG, turns: Sequence[tuple[str, str, float]], agent: str = "a") -> None:
    """(speaker, text, timestamp) turns, stored the way a session stores its messages."""
    memory.store_many(
        [
            NewContext(
                f"{speaker}: {text}",
                "LongTerm",
                agent_id=agent,
                session_id="s1",
                timestamp=ts,
                metadata={"name": speaker},
            )
            for speaker, text, ts in turns
        ]
    )


SPEAKERS = [
    ("Anna", "What I like doing most at weekends is hiking in the mountains.", 1.0),
    ("Ben", "Saturdays I go fishing at the lake near my flat.", 2.0),
    ("Anna", "My sister sells handmade candles at the market.", 3.0),
    ("Ben", "The bakery on my street closed for the summer.", 4.0),
]


def test_what_a_named_speaker_said_ranks_before_what_others_said(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    query = "What does Ben like doing at weekends?"

    def first(memory: HiRAG) -> str:
        _turns(memory, SPEAKERS)
        return _texts(memory, query, 1000)[0]

    assert first(make_memory(tmp_path / "on")) == "Ben: " + SPEAKERS[1][1]
    # Anna's turn is closer to the query's words: without the lever it comes first.
    assert first(make_memory(tmp_path / "off", speaker_boost=0.0)) == "Anna: " + SPEAKERS[0][1]


def test_scores_stay_within_one_with_the_boosts(make_memory: MakeMemory) -> None:
    memory = make_memory()
    said = "Ben: In June 2023 I went fishing at the lake."
    # Said "now" (as_of), in Immediate, and searched by its own words: similarity, recency and
    # level at their maximum of 1.
    memory.store_many(
        [
            NewContext(
                said, "Immediate", agent_id="a", metadata={"name": "Ben"}, timestamp=JUNE_2023
            ),
            NewContext(
                "Anna: I like the mountains.", "Immediate", agent_id="a", metadata={"name": "Anna"}
            ),
        ]
    )
    found = memory.search(said, 1000, agent_id="a", as_of=JUNE_2023).contexts
    assert found[0].text == said
    # Both boosts applied to a score of nearly 1; a caller's snippet of score 1 still ranks
    # before it in a prompt.
    assert found[0].relevance_score is not None and 0.99 < found[0].relevance_score <= 1.0


def test_a_query_naming_every_speaker_favours_none(make_memory: MakeMemory, tmp_path: Path) -> None:
    query = "What do Anna and Ben like doing at weekends?"
    results = []
    for name, boost in (("on", 0.1), ("off", 0.0)):
        memory = make_memory(tmp_path / name, speaker_boost=boost)
        _turns(memory, SPEAKERS)
        found = memory.search(query, 1000, agent_id="a").contexts
        results.append([(c.text, c.relevance_score) for c in found])
    assert results[0] == results[1]


JUNE_2023 = 1_686_830_400.0  # 15 June 2023, 12:00 UTC
SEPTEMBER_2023 = 1_694_779_200.0  # 15 September 2023, 12:00 UTC


def test_what_was_said_in_a_named_month_ranks_first(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    # The same words said twice; the September turn is stored first, so it wins the tie
    # unless the query's month counts.
    turns = [
        ("Anna", "We went camping by the river with the kids.", SEPTEMBER_2023),
        ("Anna", "We went camping by the river with the kids.", JUNE_2023),
    ]

    def first_timestamp(memory: HiRAG, query: str) -> float:
        _turns(memory, turns)
        return memory.search(query, 1000, agent_id="a").contexts[0].timestamp.timestamp()

    query = "Where did Anna go camping in June 2023?"
    assert first_timestamp(make_memory(tmp_path / "on"), query) == JUNE_2023
    assert first_timestamp(make_memory(tmp_path / "off", period_boost=0.0), query) == SEPTEMBER_2023
    # A month named without a year matches that month of any year.
    assert first_timestamp(make_memory(tmp_path / "any"), "camping in June?") == JUNE_2023


def test_ties_go_to_the_turn_stored_first_in_every_run(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    turns = [*FILLER[:3], QUESTION, ANSWER, *FILLER[3:]]
    orders = []
    for run in range(3):
        memory = make_memory(tmp_path / str(run))
        _conversation(memory, "s1", turns)
        orders.append(_texts(memory, "opening night of the dance studio", 1000))
    assert orders[0] == orders[1] == orders[2]
    # The turns just before and after the question tie at 0.85 times its score: the one
    # stored first comes first.
    assert orders[0][:3] == [QUESTION, FILLER[2], ANSWER]


def test_a_rare_word_of_the_query_finds_its_turn_through_bm25(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    turns = [
        ("Ben", "What did you say about the invoice we sent them?", 1.0),
        ("Gina", "The invoice template needs the new logo.", 2.0),
        ("Anna", "88213 is paid in full.", 3.0),
    ]
    query = "What about invoice 88213?"

    def first(memory: HiRAG) -> str:
        _turns(memory, turns)
        return _texts(memory, query, 1000)[0]

    assert first(make_memory(tmp_path / "on")) == "Anna: " + turns[2][1]
    # Dense similarity alone prefers a turn about invoices in general.
    assert first(make_memory(tmp_path / "off", hybrid_alpha=1.0)).startswith(("Ben", "Gina"))
