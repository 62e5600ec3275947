"""Key management over HTTP, for admin keys: make, list and revoke their tenant's keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from hirag_oz.api.deps import caller_of
from hirag_oz.api.routes import ERROR_RESPONSES
from hirag_oz.errors import PermissionDeniedError
from hirag_oz.kernel.scope import Caller, Role
from hirag_oz.keys import KeyStore

router = APIRouter(tags=["keys"], responses=ERROR_RESPONSES)


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    agents: list[str] | None = Field(None, min_length=1, max_length=100)
    name: str = Field("", max_length=100)


def _store(request: Request) -> KeyStore:
    found: KeyStore = request.app.state.keys
    return found


def _admin(request: Request, what: str) -> Caller:
    caller = caller_of(request)
    caller.require("admin", what)
    return caller


def _by(caller: Caller) -> str:
    return f"key:{caller.key_id}" if caller.key_id else "local"


@router.post("/api/v1/keys", status_code=201)
def create_key(request: Request, body: NewKey) -> JSONResponse:
    """Make a key of the caller's tenant; the answer holds it, once."""
    caller = _admin(request, "making keys")
    agents = body.agents
    if caller.agents is not None:
        # A key limited to agents makes keys within them only.
        agents = [caller.agent(a, "agents") or "" for a in (agents or sorted(caller.agents))]
    made, secret = _store(request).create(
        body.role, agents, body.name, tenant=caller.tenant, by=_by(caller)
    )
    return JSONResponse({"key": secret, **made.public()}, status_code=201)


@router.get("/api/v1/keys")
def list_keys(request: Request) -> dict[str, Any]:
    """The caller's tenant's keys, never the keys themselves."""
    caller = _admin(request, "listing keys")
    return {"keys": [k.public() for k in _store(request).listed(caller.tenant)]}


@router.delete("/api/v1/keys/{key_id}")
def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
    """Revoke a key of the caller's tenant: refused from the next request on."""
    caller = _admin(request, "revoking keys")
    if caller.agents is not None:
        raise PermissionDeniedError("a key limited to agents may not revoke keys", {})
    return _store(request).revoke(key_id, tenant=caller.tenant, by=_by(caller)).public()
