"""API keys with a role and, optionally, a set of agents; kept only as hashes.

A key reads `hoz_<id>_<secret>`: the id (12 hex digits) names it in lists, logs and audit
events, the secret (32 random bytes) is shown once, when the key is made. The key file
(`<data_dir>/keys.json`, mode 0600) holds each key's id, role, agents, name, times and the
SHA-256 of the whole key; it is read again when it changes, so keys made or revoked by the
command line take effect in a running server within a second. Several keys may be active at
once: a key is rotated by making the new one, moving clients to it, then revoking the old.

`HIRAG_API_KEYS` (`[server] api_keys`) are admin keys of the default tenant, compared as
given. Without any key the service answers without authentication, on loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hirag_oz.config import Settings
from hirag_oz.errors import NotFoundError, ValidationError
from hirag_oz.kernel.files import write_atomic
from hirag_oz.kernel.ids import check_agent_id
from hirag_oz.kernel.scope import DEFAULT_TENANT, ROLES, Caller, Role, check_tenant

audit = logging.getLogger("hirag_oz.audit")

_KEY = re.compile(r"^hoz_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
_RELOAD_SECS = 1.0
MAX_NAME = 100


@dataclass
class ApiKey:
    id: str
    role: Role
    agents: list[str] | None
    name: str
    created_at: float
    hash: str
    tenant: str = DEFAULT_TENANT
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def caller(self) -> Caller:
        agents = frozenset(self.agents) if self.agents is not None else None
        return Caller(self.tenant, self.role, agents, self.id)

    def public(self) -> dict[str, Any]:
        """What a list shows: everything but the hash."""
        shown = asdict(self)
        shown.pop("hash")
        return shown


@dataclass
class _Loaded:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    stamp: tuple[int, int] | None = None
    checked: float = 0.0


def key_store(settings: Settings) -> KeyStore:
    """The configured keys: the key file's and `[server] api_keys`."""
    server = settings.server
    path = server.keys_file or Path(server.data_dir) / "keys.json"
    return KeyStore(path, [k.get_secret_value() for k in server.api_keys])


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: Path, static: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self._static = [(k.encode(), "env:" + _digest(k)[:12]) for k in static]
        self._lock = threading.Lock()
        self._loaded = _Loaded()

    # ------------------------------------------------------------------------- reading
    def _keys(self) -> dict[str, ApiKey]:
        loaded = self._loaded
        now = time.monotonic()
        if now - loaded.checked < _RELOAD_SECS:
            return loaded.keys
        with self._lock:
            loaded = self._loaded
            if now - loaded.checked < _RELOAD_SECS:
                return loaded.keys
            try:
                info = self.path.stat()
                stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != loaded.stamp:
                self._loaded = _Loaded(self._read(), stamp, now)
            else:
                loaded.checked = now
            return self._loaded.keys

    def _read(self) -> dict[str, ApiKey]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {k["id"]: ApiKey(**k) for k in data.get("keys", [])}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A file being replaced or damaged: the keys read before stay in force.
            logging.getLogger(__name__).error("the key file %s is unreadable: %s", self.path, exc)
            return self._loaded.keys

    def configured(self) -> bool:
        """Whether any key is in force (then every /api/ request needs one)."""
        return bool(self._static) or any(k.active for k in self._keys().values())

    def resolve(self, presented: str) -> Caller | None:
        """The caller of the key `presented`, or None for a key that is not in force."""
        found = _KEY.match(presented)
        if found is not None:
            key = self._keys().get(found.group(1))
            if key is not None and key.active and hmac.compare_digest(_digest(presented), key.hash):
                return key.caller()
            return None
        raw = presented.encode()
        matched = None
        for static, key_id in self._static:  # every one compared: timing says nothing
            if hmac.compare_digest(raw, static):
                matched = key_id
        return Caller(DEFAULT_TENANT, "admin", None, matched) if matched else None

    def listed(self, tenant: str | None = None) -> list[ApiKey]:
        keys = self._keys().values()
        return sorted(
            (k for k in keys if tenant is None or k.tenant == tenant), key=lambda k: k.created_at
        )

    # ------------------------------------------------------------------------- writing
    def create(
        self,
        role: Role,
        agents: Iterable[str] | None = None,
        name: str = "",
        *,
        tenant: str = DEFAULT_TENANT,
        by: str = "cli",
    ) -> tuple[ApiKey, str]:
        """A new key and its secret form, which is not kept: show it to its user once."""
        check_tenant(tenant)
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}", {"field": "role"})
        chosen = sorted({check_agent_id(a) for a in agents}) if agents is not None else None
        if chosen is not None and not chosen:
            raise ValidationError("a key limited to agents needs one at least", {"field": "agents"})
        if len(name) > MAX_NAME:
            raise ValidationError(f"name is at most {MAX_NAME} characters", {"field": "name"})
        key_id = secrets.token_hex(6)
        secret = f"hoz_{key_id}_{secrets.token_urlsafe(32)}"
        made = ApiKey(key_id, role, chosen, name, time.time(), _digest(secret), tenant)
        with self._lock:
            keys = {**self._read_fresh(), key_id: made}
            self._write(keys)
        audit.info(
            "key created",
            extra={
                "event": "key_created",
                "key_id": key_id,
                "tenant": tenant,
                "role": role,
                "agents": chosen,
                "by": by,
            },
        )
        return made, secret

    def revoke(self, key_id: str, *, tenant: str | None = None, by: str = "cli") -> ApiKey:
        """Revoke the key `key_id` (of `tenant` when given: another tenant's is not found)."""
        with self._lock:
            keys = self._read_fresh()
            key = keys.get(key_id)
            if key is None or (tenant is not None and key.tenant != tenant):
                raise NotFoundError("no such key", {"key_id": key_id[:40]})
            if key.revoked_at is None:
                key.revoked_at = time.time()
                self._write(keys)
        audit.info(
            "key revoked",
            extra={"event": "key_revoked", "key_id": key_id, "tenant": key.tenant, "by": by},
        )
        return key

    def _read_fresh(self) -> dict[str, ApiKey]:
        self._loaded = _Loaded(self._read(), None, 0.0)
        return dict(self._loaded.keys)

    def _write(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2).encode()
        write_atomic(self.path, data)
        os.chmod(self.path, 0o600)
        self._loaded = _Loaded(dict(keys), None, 0.0)
