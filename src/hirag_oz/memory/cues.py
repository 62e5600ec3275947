"""What a query says beyond its words' meaning: whom it names and which period it names.

Both are read from the query alone, and only when they are explicit: a speaker's name as a
word of the query, a calendar date, month or year. Relative times ("last week", "4 years
ago") are not read: a question asked later names them relative to the conversation, not to
the moment it is asked, so they cannot be placed on the calendar.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name} | {
    name.lower(): i for i, name in enumerate(calendar.month_abbr) if name
}
_MONTHS["sept"] = 9
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
# Most specific first; each pattern is tried on what the ones before it left.
_PATTERNS = (
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"(?<![\w-]){_YEAR}(?![\w-])"),  # not part of a number or code
    # A month without a year only after a preposition ("in June"), and capitalised: "may"
    # and "march" are verbs too.
    re.compile(
        r"\b(?:in|during|of|since|until|by|early|late|mid|mid-)\s+(?P<month>"
        + "|".join(name for name in calendar.month_name if name)
        + r")\b"
    ),
)
_APOSTROPHES = "'\u2019"
_WORD = re.compile(rf"[^\W_]+(?:[{_APOSTROPHES}][^\W_]+)?")


@dataclass(frozen=True)
class Period:
    """A span of the calendar a query names. `year` None: that month of any year."""

    year: int | None
    month: int | None = None
    day: int | None = None

    def contains_told(self, timestamp: float) -> bool:
        """Whether something said at `timestamp` may tell of this period: within it, or
        within one more period of the same length after it (people tell of events after
        they happen)."""
        when = datetime.fromtimestamp(timestamp, UTC)
        if self.year is None:
            assert self.month is not None
            months_after = (when.month - self.month) % 12
            return months_after <= 1
        start = datetime(self.year, self.month or 1, self.day or 1, tzinfo=UTC)
        if self.day is not None:
            length_days = 1.0
        elif self.month is not None:
            length_days = calendar.monthrange(self.year, self.month)[1]
        else:
            length_days = 366 if calendar.isleap(self.year) else 365
        elapsed = (when - start).total_seconds() / 86_400
        return 0 <= elapsed < 2 * length_days


def periods(query: str) -> list[Period]:
    """The calendar dates, months and years the query names, in the order found."""
    found: list[tuple[int, Period]] = []
    rest = query
    for pattern in _PATTERNS:
        for match in pattern.finditer(rest):
            parts = match.groupdict()
            month = _MONTHS[parts["month"].lower()] if parts.get("month") else None
            day = int(parts["day"]) if parts.get("day") else None
            year = int(parts["year"]) if parts.get("year") else None
            if day is not None and month and year and day > calendar.monthrange(year, month)[1]:
                continue  # "31 June 2023": not a date
            found.append((match.start(), Period(year, month, day)))
        # Blank what matched so that "May 2023" is not read again as "2023".
        rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)
    return [period for _, period in sorted(found, key=lambda item: item[0])]


def _plain(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def named_speakers(query: str, speakers: Iterable[str]) -> set[str]:
    """The speakers the query names: each whose full name, or first name, is a word of it.

    Possessives count ("Caroline's"). In a query written with capitals, only capitalised
    words count, so that a speaker called Will or May is not named by "will" or "may"; in
    one written all in lower case, every word does."""
    tokens = _WORD.findall(query)
    if query != query.lower():
        tokens = [t for t in tokens if t[0].isupper()]
    present = {_plain(t) for t in tokens}
    present |= {w[:-2] for w in present if w.endswith("'s")}
    named: set[str] = set()
    for speaker in speakers:
        parts = [_plain(w) for w in _WORD.findall(speaker)]
        if parts and (all(p in present for p in parts) or parts[0] in present):
            named.add(speaker)
    return named
