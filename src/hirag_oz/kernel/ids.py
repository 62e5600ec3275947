"""Scope ids (agent, session, user) and point ids, checked the same way in every store."""

from __future__ import annotations

import re
import uuid
from typing import Any

from hirag_oz.errors import ValidationError

DEFAULT_AGENT = "default"
"""The agent of an item or query that names none."""

_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")


def check_scope_id(value: Any, field: str, required: bool = False) -> str | None:
    """`value` if it is a valid scope id; None when it is absent and not `required`."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise ValidationError(
            f"{field} must be 1-128 characters of letters, digits and _ . : @ -",
            {"field": field},
        )
    return value


def check_agent_id(value: Any, field: str = "agent_id") -> str:
    """The agent id to scope by: `value`, or `DEFAULT_AGENT` when it is empty or None."""
    agent = check_scope_id(value or DEFAULT_AGENT, field, required=True)
    assert agent is not None
    return agent


def is_uuid(value: object) -> bool:
    """Whether `str(value)` is a UUID, the form of every point id, so a malformed id is
    turned away (or reported missing) before it reaches a store."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
