"""Input rules for stored text, queries, metadata and timestamps.

Every store (contexts, facts, regions) and the filter parser apply the same rules, so text
that one part accepts is text that every other part can store and give back unchanged.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from hirag_oz.errors import ValidationError

_META_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 4
INT64 = range(-(2**63), 2**63)
_ALLOWED_CONTROLS = {"\n", "\t", "\r"}


def check_text(text: Any, field: str, max_chars: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(f"{field} must be a non-empty string", {"field": field})
    if len(text) > max_chars:
        raise ValidationError(
            f"{field} has {len(text)} characters, more than the limit of {max_chars}",
            {"field": field, "length": len(text), "max_length": max_chars},
        )
    for ch in text:
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValidationError(
                f"{field} contains the control character U+{ord(ch):04X}",
                {"field": field, "codepoint": f"U+{ord(ch):04X}"},
            )
    return text


def check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValidationError("metadata must be an object", {"field": "metadata"})
    _check_value(metadata, "metadata", 0)
    size = len(json.dumps(metadata, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            f"metadata is {size} bytes of JSON, more than {MAX_METADATA_BYTES}",
            {"field": "metadata", "size": size, "max_size": MAX_METADATA_BYTES},
        )
    return metadata


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValidationError(f"{where} nests deeper than {MAX_METADATA_DEPTH}", {"field": where})
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not _META_KEY.match(key):
                raise ValidationError(
                    f"{where} key {key!r} must be 1-128 letters, digits, _ or -",
                    {"field": where, "key": str(key)[:128]},
                )
            _check_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(f"{where} contains a NUL character", {"field": where})
        if not is_utf8(value):
            raise ValidationError(
                f"{where} contains a lone surrogate (not Unicode text)", {"field": where}
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{where} must be a finite number", {"field": where})
    elif isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
        # The store would keep it as a float: it would come back changed.
        raise ValidationError(f"{where} is outside the 64-bit integer range", {"field": where})
    elif value is not None and not isinstance(value, bool | int):
        raise ValidationError(f"{where} has an unsupported type", {"field": where})


def check_timestamp(value: Any, field: str = "timestamp") -> float | None:
    """A datetime, ISO 8601 string or epoch seconds, as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                f"{field} is not an ISO 8601 date-time", {"field": field}
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return float(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{field} must be a date-time or epoch seconds", {"field": field})
    if not 0 <= value <= 32_503_680_000:  # year 3000
        raise ValidationError(f"{field} is out of range", {"field": field})
    return float(value)


def check_unicode(text: str, field: str) -> str:
    """`text` unless it holds a lone surrogate, which no store, tokenizer or JSON answer
    can carry."""
    if not is_utf8(text):
        raise ValidationError(
            f"{field} contains a lone surrogate (not Unicode text)", {"field": field}
        )
    return text


def is_utf8(text: str) -> bool:
    """False for a string with a lone surrogate (JSON `\\ud800`), which no store can keep."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
