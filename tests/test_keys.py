"""Keys with a role and agents: every catalogued operation, through the real server and the
official client, with a read key, a key limited to another agent, a revoked key and a
rotated one. Every refused call gets the envelope and changes nothing; every allowed one works.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hirag_oz.api.app import create_app
from hirag_oz.archive.dump import KINDS, collection
from hirag_oz.client import Client
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.errors import AuthenticationError, HiragError, PermissionDeniedError
from hirag_oz.kernel.scope import needed_role
from hirag_oz.keys import KeyStore
from hirag_oz.service import Hirag
from hirag_oz.store.base import scan
from hirag_oz_client._client import build_request
from hirag_oz_client.catalogue import BY_NAME, OPERATIONS, Operation
from tests.conftest import ServerThread
from tests.vision_samples import text_pdf

ADMIN = "static-admin-key-for-the-matrix"
OWNER = "owner"  # the agent whose data the scenario makes
OTHER = "elsewhere"


def _settings(data_dir: Path, documents: Path) -> Settings:
    return Settings(  # type: ignore[arg-type]
        server={"data_dir": data_dir, "api_keys": [ADMIN]},
        hirag={"maintenance_enabled": False},
        rate_limit={"enabled": False},
        vision={"allowed_paths": [documents]},
    )


@pytest.fixture
def served(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[tuple[ServerThread, Hirag, Path]]:
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "a.pdf").write_bytes(text_pdf([["The depot budget grew by nine percent."]]))
    app = create_app(_settings(tmp_path / "data", documents), model=model)
    with ServerThread(app) as server:
        yield server, app.state.hirag, documents


def _state(hirag: Hirag) -> dict[str, Any]:
    """Every stored point's payload, and the documents' files: what a refused call must leave."""
    prefix = hirag.settings.vector_db.collection_prefix
    found: dict[str, Any] = {}
    for kind in KINDS:
        name = collection(prefix, kind)
        # Allowed reads count accesses; that is all they may change.
        found[name] = {
            p.id: {k: v for k, v in p.payload.items() if k != "access_count"}
            for page in scan(hirag.store, name)
            for p in page
        }
    root = Path(hirag.settings.server.data_dir) / "vision"
    found["files"] = sorted(str(p) for p in root.rglob("*") if p.is_file())
    return found


def _requests(admin: Client, documents: Path) -> dict[str, dict[str, Any]]:
    """A valid request of every operation on OWNER's data, made by the admin first."""
    stored = admin.store_context(text="The payments team owns billing", agent_id=OWNER)
    fact = admin.add_fact(
        subject="billing", predicate="owned_by", object="payments", confidence=0.9, agent_id=OWNER
    )
    job = admin.index_document(doc_url=str(documents / "a.pdf"), agent_id=OWNER, wait=True)
    region = admin.search_regions(query="depot budget", agent_id=OWNER, top_k=1).regions[0]
    admin.append_messages(
        session_id="chat", agent_id=OWNER, messages=[{"role": "user", "content": "hello"}]
    )
    a = {"agent_id": OWNER}
    requests = {
        "store_context": {"text": "a new note", **a},
        "store_contexts": {"items": [{"text": "one", **a}, {"text": "two", **a}]},
        "search_contexts": {"query": "who owns billing?", "max_tokens": 200, **a},
        "get_context": {"context_id": stored.id, **a},
        "update_context": {"context_id": stored.id, "metadata": {"k": 1}, **a},
        "delete_context": {"context_id": stored.id, **a},
        "clear_contexts": {"level": "ShortTerm", **a},
        "build_context": {"query": "billing?", "system_prompt": "You help.", **a},
        "add_fact": {
            "subject": "billing",
            "predicate": "runs_on",
            "object": "k8s",
            "confidence": 0.9,
            **a,
        },
        "query_facts": {"subject": "billing", **a},
        "get_fact": {"fact_id": fact.fact_id, **a},
        "delete_fact": {"fact_id": fact.fact_id, **a},
        "index_document": {"doc_url": str(documents / "a.pdf"), "force_reindex": True, **a},
        "get_job": {"job_id": job.job_id, **a},
        "search_regions": {"query": "depot", "top_k": 1, **a},
        "decode_regions": {"region_ids": [region.region_id], "fidelity": "1x", **a},
        "append_messages": {
            "session_id": "chat",
            "messages": [{"role": "user", "content": "more"}],
            **a,
        },
        "session_context": {"session_id": "chat", "system_prompt": "You help.", **a},
        "get_session": {"session_id": "chat", **a},
        "list_sessions": {**a},
        "list_messages": {"session_id": "chat", **a},
        "update_brief": {"session_id": "chat", "brief": "hello", **a},
        "close_session": {"session_id": "chat", **a},
        "delete_session": {"session_id": "chat", **a},
        "health": {},
    }
    assert set(requests) == {op.name for op in OPERATIONS}
    return requests


def _refused(
    client: Client, op: Operation[Any, Any, Any], fields: dict[str, Any], error: type[HiragError]
) -> None:
    with pytest.raises(error) as refused:
        client.call(op, build_request(op, **fields))
    assert refused.value.code and refused.value.message, refused.value


def test_every_operation_with_every_kind_of_key(
    served: tuple[ServerThread, Hirag, Path], tmp_path: Path
) -> None:
    server, hirag, documents = served
    keys = KeyStore(tmp_path / "data" / "keys.json")  # the CLI's view of the same file
    _read, read_key = keys.create("read", name="dashboard")
    _limited, limited_key = keys.create("write", [OTHER], name="bot")
    revoked, revoked_key = keys.create("admin")
    keys.revoke(revoked.id)
    old, old_key = keys.create("write", name="rotated")
    _new, new_key = keys.create("write", name="rotated")
    keys.revoke(old.id)
    time.sleep(1.2)  # the server reads the file again within a second
    with Client(server.url, api_key=ADMIN) as admin:
        requests = _requests(admin, documents)
    clients = {
        name: Client(server.url, api_key=key)
        for name, key in [
            ("read", read_key),
            ("limited", limited_key),
            ("revoked", revoked_key),
            ("old", old_key),
            ("new", new_key),
        ]
    }
    try:
        before = _state(hirag)
        refusals = 0
        for op in OPERATIONS:
            fields = requests[op.name]
            # A revoked key and a rotated-out key: 401 for everything under /api/ (health is
            # public, like /health/live).
            if op.name != "health":
                _refused(clients["revoked"], op, fields, AuthenticationError)
                _refused(clients["old"], op, fields, AuthenticationError)
            # A read key: what reads works, what writes is refused.
            if needed_role(op) == "read":
                clients["read"].call(op, build_request(op, **fields))
            else:
                _refused(clients["read"], op, fields, PermissionDeniedError)
                refusals += 1
            # A key limited to another agent: refused for OWNER's data (health names no agent).
            if op.name == "health":
                clients["limited"].call(op, build_request(op, **fields))
            else:
                _refused(clients["limited"], op, fields, PermissionDeniedError)
                refusals += 1
            # The same key without an agent id gets its own, and never OWNER's.
            if "agent_id" in op.request.model_fields and needed_role(op) != "admin":
                own = {k: v for k, v in fields.items() if k != "agent_id"}
                if op.name == "store_contexts":
                    own["items"] = [{"text": "mine"}]
                try:
                    result = clients["limited"].call(op, build_request(op, **own))
                except HiragError as exc:  # OWNER's ids are not found under its agent
                    assert exc.code == "NOT_FOUND", (op.name, exc)
                else:
                    assert OWNER not in result.model_dump_json(), op.name
        after = _state(hirag)
        # Nothing OWNER had changed; only the limited key's own writes (agent OTHER) were added.
        for name, points in before.items():
            if name == "files":
                continue
            assert {k: v for k, v in after[name].items() if v.get("agent_id") != OTHER} == points, (
                name
            )
        writes = sum(needed_role(op) != "read" for op in OPERATIONS)
        assert refusals == writes + len(OPERATIONS) - 1
        # The rotated-in key works for what a write key may do; clears stay an admin's.
        with clients["new"] as client:
            assert client.store_context(text="after the rotation", agent_id=OWNER).id
            clear = BY_NAME["clear_contexts"]
            _refused(client, clear, requests["clear_contexts"], PermissionDeniedError)
    finally:
        for client in clients.values():
            client.close()


def test_keys_are_kept_as_hashes_and_reloaded_without_a_restart(
    served: tuple[ServerThread, Hirag, Path], tmp_path: Path
) -> None:
    server, _, _ = served
    path = tmp_path / "data" / "keys.json"
    made, key = KeyStore(path).create("read", name="ci")
    time.sleep(1.2)
    assert key not in path.read_text() and made.id in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(server.url + "/api/v1/sessions", headers=headers).status_code == 200
    KeyStore(path).revoke(made.id)  # another process: the command line
    time.sleep(1.2)
    refused = httpx.get(server.url + "/api/v1/sessions", headers=headers)
    assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
    # A key of the right shape with a wrong secret, and one with an unknown id: 401.
    for wrong in (key[:-4] + "AAAA", "hoz_000000000000_" + key.rsplit("_", 1)[1]):
        assert (
            httpx.get(
                server.url + "/api/v1/sessions", headers={"Authorization": f"Bearer {wrong}"}
            ).status_code
            == 401
        )


def test_admin_keys_manage_keys_over_http_and_are_audited(
    served: tuple[ServerThread, Hirag, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, _, _ = served
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with caplog.at_level(logging.INFO, logger="hirag_oz.audit"):
        made = httpx.post(
            server.url + "/api/v1/keys", json={"role": "write", "agents": ["a1"]}, headers=admin
        )
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        writer = {"Authorization": f"Bearer {key}"}
        listed = httpx.get(server.url + "/api/v1/keys", headers=admin).json()["keys"]
        assert [k["id"] for k in listed] == [key_id] and "hash" not in listed[0]
        assert key not in json.dumps(listed)
        # A write key manages no keys.
        for method, path in [
            ("POST", "/api/v1/keys"),
            ("GET", "/api/v1/keys"),
            ("DELETE", f"/api/v1/keys/{key_id}"),
        ]:
            r = httpx.request(
                method,
                server.url + path,
                json={"role": "read"} if method == "POST" else None,
                headers=writer,
            )
            assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (method, path)
        # Without an agent id, the key's one agent is meant.
        stored = httpx.post(server.url + "/api/v1/contexts", json={"text": "x"}, headers=writer)
        assert stored.status_code == 201, stored.text
        mine = httpx.get(
            server.url + f"/api/v1/contexts/{stored.json()['id']}",
            params={"agent_id": "a1"},
            headers=admin,
        )
        assert mine.status_code == 200
        cleared = httpx.post(
            server.url + "/api/v1/contexts/clear",
            json={"level": "ShortTerm", "agent_id": "a1"},
            headers=admin,
        )
        assert cleared.status_code == 200, cleared.text
        gone = httpx.delete(server.url + f"/api/v1/keys/{key_id}", headers=admin)
        assert gone.status_code == 200 and gone.json()["revoked_at"]
        assert (
            httpx.delete(server.url + "/api/v1/keys/000000000000", headers=admin).status_code == 404
        )
        assert (
            httpx.post(
                server.url + "/api/v1/contexts", json={"text": "x"}, headers=writer
            ).status_code
            == 401
        )
    events = [
        (r.__dict__.get("event"), r.__dict__.get("by"))
        for r in caplog.records
        if r.name == "hirag_oz.audit"
    ]
    assert all(by.startswith("key:env:") for _, by in events)
    assert [e for e, _ in events] == ["key_created", "clear_contexts", "key_revoked"]
    assert all(
        key not in r.getMessage() and key not in json.dumps(r.__dict__, default=str)
        for r in caplog.records
    )


def _tenant_state(hirag: Hirag, tenant: str) -> dict[str, Any]:
    return _state(hirag.tenant(tenant))


def test_another_tenants_keys_never_reach_this_tenants_data(
    served: tuple[ServerThread, Hirag, Path], tmp_path: Path
) -> None:
    server, hirag, documents = served
    keys = KeyStore(tmp_path / "data" / "keys.json")
    _, acme_key = keys.create("write", name="acme app", tenant="acme")
    _, acme_admin_key = keys.create("admin", name="acme admin", tenant="acme")
    time.sleep(1.2)
    with Client(server.url, api_key=ADMIN) as admin:
        requests = _requests(admin, documents)
        # (A region's id is derived from its agent, document and place: acme indexing the
        # same document as its own agent "owner" gets the same ids, in its own collection.)
        owner_ids = [
            requests["get_context"]["context_id"],
            requests["get_fact"]["fact_id"],
            requests["get_job"]["job_id"],
        ]
    before = _state(hirag)
    not_found = 0
    with (
        Client(server.url, api_key=acme_key) as acme,
        Client(server.url, api_key=acme_admin_key) as acme_admin,
    ):
        for op in OPERATIONS:
            client = acme_admin if needed_role(op) == "admin" else acme
            fields = requests[op.name]
            try:
                result = client.call(op, build_request(op, **fields))
            except HiragError as exc:
                # The default tenant's ids do not exist for acme; nothing else may fail.
                assert exc.code == "NOT_FOUND", (op.name, exc)
                not_found += 1
                continue
            dumped = result.model_dump_json()
            assert not any(i in dumped for i in owner_ids), op.name
            assert "payments team owns billing" not in dumped.lower(), op.name
        # Agent ids are per tenant: acme's "owner" is not the default tenant's.
        mine = acme.store_context(text="acme's own note", agent_id=OWNER)
        with Client(server.url, api_key=ADMIN) as admin, pytest.raises(HiragError) as missing:
            admin.get_context(context_id=mine.id, agent_id=OWNER)
        assert missing.value.code == "NOT_FOUND"
        # Export, key lists and revocations stay within the tenant.
        with httpx.stream(
            "GET",
            server.url + "/api/v1/export",
            headers={"Authorization": f"Bearer {acme_admin_key}"},
        ) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        points = [line for line in lines if line["type"] == "point"]
        assert points and not any(p["id"] in owner_ids for p in points)
        acme_keys = httpx.get(
            server.url + "/api/v1/keys", headers={"Authorization": f"Bearer {acme_admin_key}"}
        ).json()["keys"]
        assert {k["tenant"] for k in acme_keys} == {"acme"} and len(acme_keys) == 2
        default_key = keys.create("read", name="default reader")[0]
        refused = httpx.delete(
            server.url + f"/api/v1/keys/{default_key.id}",
            headers={"Authorization": f"Bearer {acme_admin_key}"},
        )
        assert refused.status_code == 404
    # get_context, get_fact, get_job, get_session, list_messages, delete_*, update_*, ...: the
    # default tenant's ids are not found under acme.
    assert not_found >= 5
    assert _state(hirag) == before  # the default tenant's data, untouched
    acme_state = _tenant_state(hirag, "acme")
    assert "contexts-t-acme_shortterm" in acme_state  # acme's writes went to its collections
    assert any(points for name, points in acme_state.items() if name != "files")


def test_a_tenants_quota_refuses_what_adds_items(model: OnnxMiniLMEmbedder, tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[arg-type]
        server={"data_dir": tmp_path / "data", "api_keys": [ADMIN], "max_items_per_tenant": 3},
        hirag={"maintenance_enabled": False},
        rate_limit={"enabled": False},
    )
    _, key = KeyStore(tmp_path / "data" / "keys.json").create("write", tenant="small")
    app = create_app(settings, model=model)
    with ServerThread(app) as server, Client(server.url, api_key=key) as small:
        ids = [small.store_context(text=f"note {i}").id for i in range(3)]
        for call in (
            lambda: small.store_context(text="one too many"),
            lambda: small.store_contexts(items=[{"text": "a"}, {"text": "b"}]),
            lambda: small.add_fact(subject="a", predicate="b", object="c", confidence=0.9),
        ):
            with pytest.raises(HiragError) as full:
                call()
            assert full.value.code == "INSUFFICIENT_STORAGE" and "quota" in full.value.message
        small.delete_context(context_id=ids[0])
        assert small.store_context(text="room again").id
        # Another tenant has a quota of its own.
        with Client(server.url, api_key=ADMIN) as admin:
            assert admin.store_context(text="the default tenant's").id


def test_tenants_persist_and_open_with_the_service(
    model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    settings = Settings(  # type: ignore[arg-type]
        server={"data_dir": tmp_path / "data"}, hirag={"maintenance_enabled": False}
    )
    acme = KeyStore(tmp_path / "k.json").create("write", tenant="acme")[0].caller()
    with Hirag(settings, model=model) as hirag:
        stored = hirag.call(
            BY_NAME["store_context"],
            build_request(BY_NAME["store_context"], text="acme remembers this", agent_id="a"),
            acme,
        )
        assert hirag.known_tenants() == ["acme"]
        with pytest.raises(HiragError):  # not the default tenant's
            hirag.get_context(context_id=stored.id)
    with Hirag(settings, model=model) as again:
        again.open_all()  # as a server starts: the known tenants' parts too
        assert again.tenant("acme").built("contexts")
        got = again.call(
            BY_NAME["get_context"],
            build_request(BY_NAME["get_context"], context_id=stored.id),
            acme,
        )
        assert got.text == "acme remembers this"
        # A tenant's view hands another tenant's caller to that tenant, not to itself.
        view = again.tenant("acme")
        assert view.tenant("beta") is again.tenant("beta") is not view
        assert view.tenant("acme") is view and view.tenant("default") is view
    with pytest.raises(HiragError):
        Hirag(settings, model=model).tenant("Not A Tenant!")
