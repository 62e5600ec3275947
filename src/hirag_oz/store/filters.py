"""Parse the Qdrant-shaped JSON filter of the API into the neutral `Filter`."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from hirag_oz.errors import ValidationError
from hirag_oz.kernel.validation import INT64, is_utf8
from hirag_oz.store.base import Condition, Filter, Range

_MAX_DEPTH = 4
_MAX_CONDITIONS = 64
_META_KEY = re.compile(r"^metadata(\.[A-Za-z0-9_\-]{1,128}){1,4}$")
_TIME_KEYS = {"timestamp", "stored_at"}
FILTERABLE_CORE_KEYS = {
    "timestamp",
    "stored_at",
    "session_id",
    "user_id",
    "access_count",
    "token_count",
}


def parse_filter(raw: Any, *, allowed_core_keys: set[str] = FILTERABLE_CORE_KEYS) -> Filter | None:
    """`{"must"|"should"|"must_not": [{"key", "match"} | {"key", "range"} | nested]}` -> Filter."""
    if raw is None:
        return None
    counter = [0]
    return _parse(raw, "filters", 0, allowed_core_keys, counter)


def _parse(raw: Any, where: str, depth: int, core: set[str], counter: list[int]) -> Filter:
    if not isinstance(raw, dict):
        raise ValidationError(f"{where} must be an object", {"field": where})
    if depth > _MAX_DEPTH:
        raise ValidationError(f"{where} nests deeper than {_MAX_DEPTH}", {"field": where})
    unknown = set(raw) - {"must", "should", "must_not"}
    if unknown:
        raise ValidationError(
            f"{where} has unknown clause(s) {sorted(unknown)}; use must, should, must_not",
            {"field": where},
        )
    clauses: dict[str, tuple[Condition | Filter, ...]] = {}
    for clause in ("must", "should", "must_not"):
        items = raw.get(clause, [])
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise ValidationError(
                f"{where}.{clause} must be a list", {"field": f"{where}.{clause}"}
            )
        parsed: list[Condition | Filter] = []
        for i, item in enumerate(items):
            counter[0] += 1
            if counter[0] > _MAX_CONDITIONS:
                raise ValidationError(f"filters have more than {_MAX_CONDITIONS} conditions")
            path = f"{where}.{clause}[{i}]"
            if isinstance(item, dict) and "key" not in item:
                parsed.append(_parse(item, path, depth + 1, core, counter))
            else:
                parsed.append(_condition(item, path, core))
        clauses[clause] = tuple(parsed)
    return Filter(must=clauses["must"], should=clauses["should"], must_not=clauses["must_not"])


def _condition(item: Any, where: str, core: set[str]) -> Condition:
    if not isinstance(item, dict):
        raise ValidationError(f"{where} must be an object", {"field": where})
    key = item.get("key")
    if not isinstance(key, str) or not (key in core or _META_KEY.match(key)):
        raise ValidationError(
            f"{where}.key must be 'metadata.<name>' or one of {sorted(core)}",
            {"field": f"{where}.key", "value": key if isinstance(key, str) else None},
        )
    kinds = [k for k in ("match", "range") if k in item]
    extra = set(item) - {"key", "match", "range"}
    if len(kinds) != 1 or extra:
        raise ValidationError(f"{where} needs exactly one of 'match' or 'range'", {"field": where})
    if "match" in item:
        return _match(key, item["match"], where)
    return Condition(key=key, range=_range(key, item["range"], f"{where}.range"))


def _match(key: str, value: Any, where: str) -> Condition:
    if isinstance(value, dict):  # Qdrant's own shape: {"value": v} or {"any": [...]}
        if set(value) == {"value"}:
            value = value["value"]
        elif set(value) == {"any"} and isinstance(value["any"], list):
            items = value["any"]
            if not items or len(items) > 256:
                raise ValidationError(f"{where}.match.any needs 1..256 values", {"field": where})
            if not all(isinstance(v, str) for v in items) and not all(
                isinstance(v, int) and not isinstance(v, bool) for v in items
            ):
                raise ValidationError(
                    f"{where}.match.any must be all strings or all integers", {"field": where}
                )
            for item in items:
                check_match(item, f"{where}.match.any")
            return Condition(key=key, any_of=tuple(items))
        else:
            raise ValidationError(
                f"{where}.match must be a value, {{value}} or {{any}}", {"field": where}
            )
    return Condition(key=key, match=check_match(value, f"{where}.match"))


def check_match(value: Any, where: str) -> str | int | float | bool:
    """`value` if a store can match on it exactly: a string of Unicode text, a 64-bit
    integer, a finite number or a boolean."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{where} must be finite", {"field": where})
    if not isinstance(value, str | int | float | bool):
        raise ValidationError(f"{where} must be a string, number or boolean", {"field": where})
    if isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
        raise ValidationError(f"{where} is outside the 64-bit integer range", {"field": where})
    if isinstance(value, str) and not is_utf8(value):
        raise ValidationError(f"{where} contains a lone surrogate", {"field": where})
    return value


def _range(key: str, raw: Any, where: str) -> Range:
    if not isinstance(raw, dict) or not raw or set(raw) - {"gte", "gt", "lte", "lt"}:
        raise ValidationError(f"{where} must have some of gte, gt, lte, lt", {"field": where})
    bounds: dict[str, float] = {}
    for name, value in raw.items():
        if key in _TIME_KEYS and isinstance(value, str):
            try:
                value = to_epoch(value)
            except ValueError:
                raise ValidationError(
                    f"{where}.{name} is not an ISO 8601 date-time", {"field": f"{where}.{name}"}
                ) from None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValidationError(
                f"{where}.{name} must be a finite number", {"field": f"{where}.{name}"}
            )
        bounds[name] = float(value)
    return Range(**bounds)


def to_epoch(value: str | datetime) -> float:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
