from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hirag_oz.errors import ValidationError
from hirag_oz.kernel.fusion import similarity_from_score
from hirag_oz.memory.levels import Level
from hirag_oz.memory.ranking import Weights, composite, frequency, recency


def test_recency_is_exponential_in_hours_with_a_day_constant() -> None:
    assert recency(0) == 1.0
    assert recency(3600) == pytest.approx(0.959189, abs=1e-6)
    assert recency(24 * 3600) == pytest.approx(math.exp(-1))
    assert recency(48 * 3600) == pytest.approx(0.135335, abs=1e-6)
    assert recency(-500) == 1.0  # future events count as new


def test_level_scores() -> None:
    assert [lvl.weight for lvl in Level] == [1.0, 0.7, 0.5]


def test_frequency_is_logarithmic_and_capped() -> None:
    assert frequency(0) == 0.0
    assert frequency(1) == pytest.approx(math.log10(2) / math.log10(101))
    assert frequency(100) == pytest.approx(1.0)
    assert frequency(10_000) == 1.0


def test_composite_with_default_weights() -> None:
    score = composite(0.8, 3600, Level.SHORT_TERM, 9, Weights())
    expected = 0.6 * 0.8 + 0.2 * 0.959189 + 0.2 * 0.7  # frequency is off by default
    assert score == pytest.approx(expected, abs=1e-6)
    assert score == composite(0.8, 3600, Level.SHORT_TERM, 0, Weights())


def test_composite_with_the_original_weights() -> None:
    score = composite(0.8, 3600, Level.SHORT_TERM, 9, Weights(0.5, 0.2, 0.2, 0.1))
    expected = 0.5 * 0.8 + 0.2 * 0.959189 + 0.2 * 0.7 + 0.1 * (1 / math.log10(101))
    assert score == pytest.approx(expected, abs=1e-6)


def test_euclid_distance_becomes_higher_is_better() -> None:
    assert similarity_from_score("Euclid", 0.0) == 1.0
    assert similarity_from_score("Euclid", 0.5) > similarity_from_score("Euclid", 2.0)
    assert similarity_from_score("Cosine", -0.3) == 0.0
    assert similarity_from_score("Dot", 1.7) == 1.0


@given(
    st.floats(0, 1),
    st.floats(0, 1e7),
    st.sampled_from(list(Level)),
    st.integers(0, 10**6),
)
def test_composite_stays_within_zero_and_one(
    sim: float, age: float, level: Level, hits: int
) -> None:
    assert 0.0 <= composite(sim, age, level, hits, Weights()) <= 1.0 + 1e-9


@given(
    st.floats(0, 1),
    st.floats(-1e6, 1e8),
    st.sampled_from(list(Level)),
    st.integers(0, 10**6),
)
def test_composite_is_the_weighted_sum_of_its_terms(
    sim: float, age: float, level: Level, hits: int
) -> None:
    w = Weights(0.4, 0.3, 0.2, 0.1)
    expected = 0.4 * sim + 0.3 * recency(age) + 0.2 * level.weight + 0.1 * frequency(hits)
    assert composite(sim, age, level, hits, w) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("alias", ["L1", "l1", "Immediate", "immediate", "IMMEDIATE"])
def test_level_aliases(alias: str) -> None:
    assert Level.parse(alias) is Level.IMMEDIATE


def test_level_aliases_snake_case() -> None:
    assert Level.parse("short_term") is Level.SHORT_TERM
    assert Level.parse("long_term") is Level.LONG_TERM
    with pytest.raises(ValidationError):
        Level.parse("L4")
