"""Who is calling, and what that caller may do: one check for every operation and surface.

A caller has a role, `read` (search, get, build, query, list), `write` (and store, update,
delete) or `admin` (and clear, manage keys, export, import, back up), and may be limited to
some agent ids. `authorize` runs before an operation: a role too low for it is refused
(403); an agent id outside the caller's is refused (403), and one left out is the caller's
own when it has exactly one. Every
operation that finds a record by its id takes an agent id too, and answers 404 for a
record of another agent, so ids cannot be probed.

The library, the command line and MCP over stdio run as `TRUSTED`: the machine's own user.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from hirag_oz.errors import PermissionDeniedError, ValidationError
from hirag_oz_client.catalogue import Operation

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
DEFAULT_TENANT = "default"

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

ADMIN_OPERATIONS = frozenset({"clear_contexts"})
"""Operations that reach beyond one item or session (`clear_contexts` empties levels)."""


@dataclass(frozen=True)
class Caller:
    tenant: str = DEFAULT_TENANT
    role: Role = "admin"
    agents: frozenset[str] | None = None
    """The agent ids this caller may use; None: every one."""
    key_id: str | None = None

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: Role, what: str) -> None:
        if not self.may(role):
            raise PermissionDeniedError(
                f"this key's role is {self.role}: {what} needs {role}",
                {"role": self.role, "needed": role},
            )

    def agent(self, agent_id: str | None, where: str = "agent_id") -> str | None:
        """`agent_id` if this caller may use it; its one agent when None and it has one."""
        if self.agents is None:
            return agent_id
        if agent_id is None:
            if len(self.agents) == 1:
                return next(iter(self.agents))
            raise PermissionDeniedError(
                f"this key is limited to some agents: name one in {where}",
                {"field": where, "agents": sorted(self.agents)},
            )
        if agent_id not in self.agents:
            raise PermissionDeniedError(
                f"this key may not use agent {agent_id[:64]!r}",
                {"field": where, "agents": sorted(self.agents)},
            )
        return agent_id


TRUSTED = Caller()


def caller_in(scope: Any) -> Caller:
    """The caller the auth middleware put in an ASGI request's `scope`; without one (no keys
    configured, or no HTTP request at all) the machine's own user."""
    state = scope.get("state") if isinstance(scope, dict) else None
    found = state.get("caller") if isinstance(state, dict) else None
    return found if isinstance(found, Caller) else TRUSTED


ADDING = frozenset(
    {"store_context", "store_contexts", "add_fact", "append_messages", "index_document"}
)
"""Operations that add stored items: refused once a tenant holds its quota."""


def check_tenant(name: str) -> str:
    if not TENANT_NAME.match(name):
        raise ValidationError(
            "a tenant is 1-32 lowercase letters, digits or '-', starting with a letter or digit",
            {"field": "tenant"},
        )
    return name


audit = logging.getLogger("hirag_oz.audit")

AUDITED = frozenset({"clear_contexts", "delete_session"})
"""Operations that remove much at once: each success is an audit event."""


def audit_call(caller: Caller, op: Operation[Any, Any, Any], request: BaseModel) -> None:
    """One structured audit event: who (the key's id, never the key), tenant, what, on what."""
    target: dict[str, Any] = {
        name: getattr(request, name)
        for name in ("agent_id", "session_id", "level")
        if name in type(request).model_fields
    }
    audit.info(
        op.name,
        extra={
            "event": op.name,
            "by": f"key:{caller.key_id}" if caller.key_id else "local",
            "tenant": caller.tenant,
            **target,
        },
    )


def needed_role(op: Operation[Any, Any, Any]) -> Role:
    if op.name in ADMIN_OPERATIONS:
        return "admin"
    return "read" if op.read_only else "write"


def authorize(caller: Caller, op: Operation[Any, Any, Any], request: BaseModel) -> BaseModel:
    """The request as `caller` may make it (its agent ids filled in), or a refusal."""
    caller.require(needed_role(op), op.name)
    if caller.agents is None:
        return request
    changes: dict[str, Any] = {}
    if "agent_id" in type(request).model_fields:
        changes["agent_id"] = caller.agent(getattr(request, "agent_id", None))
    items = getattr(request, "items", None)
    if isinstance(items, list) and items and isinstance(items[0], BaseModel):
        changes["items"] = [
            item.model_copy(
                update={
                    "agent_id": caller.agent(
                        getattr(item, "agent_id", None), f"items[{i}].agent_id"
                    )
                }
            )
            if "agent_id" in type(item).model_fields
            else item
            for i, item in enumerate(items)
        ]
    return request.model_copy(update=changes) if changes else request
