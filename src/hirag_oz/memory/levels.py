"""The three memory levels and their wire names."""

from __future__ import annotations

from enum import StrEnum

from hirag_oz.errors import ValidationError


class Level(StrEnum):
    IMMEDIATE = "Immediate"
    SHORT_TERM = "ShortTerm"
    LONG_TERM = "LongTerm"

    @classmethod
    def parse(cls, value: str | Level) -> Level:
        """Accepts the PascalCase wire names, L1/L2/L3 and snake_case, in any case."""
        if isinstance(value, Level):
            return value
        if isinstance(value, str):
            found = _ALIASES.get(value.strip().lower().replace("-", "_"))
            if found is not None:
                return found
        raise ValidationError(
            f"unknown level {value!r}; use Immediate, ShortTerm or LongTerm (or L1, L2, L3)",
            {"field": "level", "allowed": [lvl.value for lvl in cls]},
        )

    @property
    def weight(self) -> float:
        """The level term of the ranking formula."""
        return _WEIGHTS[self]

    @property
    def suffix(self) -> str:
        return self.value.lower()


_WEIGHTS = {Level.IMMEDIATE: 1.0, Level.SHORT_TERM: 0.7, Level.LONG_TERM: 0.5}
_ALIASES: dict[str, Level] = {}
for _level, _names in {
    Level.IMMEDIATE: ("immediate", "l1"),
    Level.SHORT_TERM: ("shortterm", "short_term", "l2"),
    Level.LONG_TERM: ("longterm", "long_term", "l3"),
}.items():
    for _name in _names:
        _ALIASES[_name] = _level
