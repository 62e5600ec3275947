"""Reading whom and when a query names (hirag_oz.memory.cues)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hirag_oz.memory.cues import Period, named_speakers, periods


def at(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("What painting did Mel show on October 13, 2023?", [Period(2023, 10, 13)]),
        ("What happened on 8 May, 2023?", [Period(2023, 5, 8)]),
        ("the 3rd of Sept 2022", [Period(2022, 9, 3)]),
        ("What did they paint in July 2023?", [Period(2023, 7)]),
        ("How often did she go to the beach in 2023?", [Period(2023)]),
        ("When did Melanie go camping in June?", [Period(None, 6)]),
        ("From March 2022 to 2024", [Period(2022, 3), Period(2024)]),
        # Not dates: a modal verb, a month without a preposition, a day that does not exist.
        ("May I ask what she did?", []),
        ("Did the march go well?", []),
        ("What happened on 31 June 2023?", []),
        ("Call 555-2023-77 today", []),
    ],
)
def test_periods_a_query_names(query: str, expected: list[Period]) -> None:
    assert periods(query) == expected


def test_a_period_holds_what_was_said_in_it_or_one_span_after() -> None:
    july = Period(2023, 7)
    assert july.contains_told(at(2023, 7, 1))
    assert july.contains_told(at(2023, 8, 30))  # told the month after
    assert not july.contains_told(at(2023, 6, 30))
    assert not july.contains_told(at(2023, 9, 2))
    day = Period(2023, 10, 13)
    assert day.contains_told(at(2023, 10, 14))
    assert not day.contains_told(at(2023, 10, 16))
    year = Period(2022)
    assert year.contains_told(at(2023, 6, 1)) and not year.contains_told(at(2024, 1, 2))
    june = Period(None, 6)
    assert june.contains_told(at(2019, 6, 5)) and june.contains_told(at(2023, 7, 20))
    assert not june.contains_told(at(2023, 8, 1))


def test_named_speakers() -> None:
    speakers = ["Caroline", "Melanie", "Jon Smith", "Gina"]
    assert named_speakers("What is Caroline's identity?", speakers) == {"Caroline"}
    assert named_speakers("What is Caroline\u2019s job?", speakers) == {"Caroline"}
    assert named_speakers("Why did Jon start a studio?", speakers) == {"Jon Smith"}
    assert named_speakers("do jon smith and gina agree?", speakers) == {"Jon Smith", "Gina"}
    assert named_speakers("Do JON SMITH and Gina agree?", speakers) == {"Jon Smith", "Gina"}
    assert named_speakers("What did Mel paint?", speakers) == set()
    assert named_speakers("Where is the Melanie Café?", []) == set()
    # A name that is also a word: named only when written as a name.
    assert named_speakers("What will Ann bring in May?", ["Will", "Ann", "May"]) == {"Ann", "May"}
    assert named_speakers("what will ann bring", ["Will", "Ann"]) == {"Will", "Ann"}
