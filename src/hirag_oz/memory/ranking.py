"""The ranking formula: w_sim*similarity + w_rec*recency + w_lvl*level + w_freq*frequency.

The similarity term comes from `hirag_oz.kernel.fusion`; recency, level and frequency are
the memory layer's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hirag_oz.memory.levels import Level

_LOG_101 = math.log10(101)


@dataclass(frozen=True)
class Weights:
    similarity: float = 0.6
    recency: float = 0.2
    level: float = 0.2
    frequency: float = 0.0


def recency(age_seconds: float) -> float:
    """exp(-age_hours / 24); an item from the future of `as_of` counts as brand new."""
    return math.exp(-max(0.0, age_seconds) / 3600.0 / 24.0)


def frequency(access_count: int) -> float:
    """log10(1 + n) / log10(101), capped at 1 (reached at 100 accesses)."""
    if access_count <= 0:
        return 0.0
    return min(1.0, math.log10(1 + access_count) / _LOG_101)


def composite(
    similarity: float, age_seconds: float, level: Level, access_count: int, weights: Weights
) -> float:
    return (
        weights.similarity * similarity
        + weights.recency * recency(age_seconds)
        + weights.level * level.weight
        + weights.frequency * frequency(access_count)
    )
