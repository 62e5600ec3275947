"""The official TypeScript MCP SDK client, for tests that drive `hirag-oz mcp` as a strict
third-party client does (tests/test_mcp_typescript.py).

`ensure_sdk()` installs the SDK pinned in tests/mcp_ts/package-lock.json with `npm ci`, once
per lock file, into a cache directory outside the repo that later runs reuse:
`$HIRAG_OZ_TEST_CACHE/mcp-ts-<hash>` (default `~/.cache/hirag-oz-tests/mcp-ts-<hash>`).
XDG_CACHE_HOME is not used: tests/conftest.py points it at a per-run temporary directory.
Without node/npm, or when npm cannot reach the registry, the calling test is skipped (set
HIRAG_OZ_REQUIRE_TS_SDK=1 to fail instead). `run_plan()` runs tests/mcp_ts/client.mjs on a
plan and returns its JSON report.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

HARNESS = Path(__file__).resolve().parent / "mcp_ts"
CLIENT = HARNESS / "client.mjs"
LOCK = HARNESS / "package-lock.json"
SDK_PACKAGE = "@modelcontextprotocol/sdk"
MIN_NODE_MAJOR = 18
NPM_TIMEOUT = 600.0

# What npm prints when the registry cannot be reached (DNS, refused, timeouts, proxies).
_OFFLINE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"ERR_SOCKET_TIMEOUT|network request to .* failed|request to .* failed|"
    r"code ENOTCACHED|self.signed certificate|UNABLE_TO_GET_ISSUER_CERT",
    re.IGNORECASE,
)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("HIRAG_OZ_REQUIRE_TS_SDK") == "1":
        pytest.fail(f"TypeScript MCP SDK required (HIRAG_OZ_REQUIRE_TS_SDK=1): {reason}")
    pytest.skip(reason)


def cache_root() -> Path:
    explicit = os.environ.get("HIRAG_OZ_TEST_CACHE")
    return Path(explicit) if explicit else Path.home() / ".cache" / "hirag-oz-tests"


def lock_hash() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} is not installed: the TypeScript MCP SDK tests need Node.js and npm")
    return path


def node() -> str:
    """The node executable, or skip when it is missing or too old."""
    path = _tool("node")
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"node does not run: {exc}")
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        _unavailable(f"node {version} is too old; the MCP SDK needs node >= {MIN_NODE_MAJOR}")
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _installed(target: Path, digest: str) -> bool:
    marker = target / ".installed"
    return (
        marker.is_file()
        and marker.read_text().strip() == digest
        and (target / "node_modules" / SDK_PACKAGE / "package.json").is_file()
    )


def ensure_sdk() -> Path:
    """The directory holding node_modules/ with the pinned SDK, installed there on first use
    (`npm ci` from the lock file, under a file lock so parallel runs install it once)."""
    node()
    npm = _tool("npm")
    digest = lock_hash()
    root = cache_root()
    target = root / f"mcp-ts-{digest}"
    if _installed(target, digest):
        return target
    with _file_lock(root / f"mcp-ts-{digest}.lock"):
        if _installed(target, digest):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"mcp-ts-{digest}.", dir=root))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(HARNESS / name, staging / name)
            try:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                    cwd=staging,
                    capture_output=True,
                    text=True,
                    timeout=NPM_TIMEOUT,
                    env={**os.environ, "npm_config_update_notifier": "false"},
                )
            except subprocess.TimeoutExpired:
                _unavailable(f"npm ci did not finish in {NPM_TIMEOUT:.0f}s (registry unreachable?)")
            if done.returncode != 0:
                output = f"{done.stdout}\n{done.stderr}"
                if _OFFLINE.search(output):
                    _unavailable(f"npm cannot reach the registry to install {SDK_PACKAGE}")
                raise RuntimeError(f"npm ci failed ({done.returncode}):\n{output[-4000:]}")
            (staging / ".installed").write_text(digest + "\n")
            if target.exists():  # a half-made install of an older run
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def sdk_version(sdk_dir: Path) -> str:
    package = sdk_dir / "node_modules" / SDK_PACKAGE / "package.json"
    return str(json.loads(package.read_text())["version"])


def run_plan(
    plan: dict[str, Any], timeout: float, *, stderr: IO[str] | None = None
) -> dict[str, Any]:
    """Run tests/mcp_ts/client.mjs on `plan` ({"command", "args", "env", "calls"}; see the
    script) and return its JSON report. The node process's stderr (and so the server's) is
    written to `stderr` (default sys.stderr) once the run ends, and its tail is in the
    RuntimeError raised on a harness failure (exit code, no JSON) or after `timeout` seconds."""
    sdk_dir = ensure_sdk()
    node_bin = node()
    with tempfile.TemporaryDirectory(prefix="mcp-ts-plan-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        err_file = Path(tmp) / "stderr.txt"
        with err_file.open("w+") as captured:
            proc = subprocess.Popen(
                [node_bin, str(CLIENT), str(plan_file)],
                cwd=sdk_dir,
                env={**os.environ, "NODE_PATH": str(sdk_dir / "node_modules")},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=captured,
                text=True,
                # Its own process group: on timeout, node and the server it started go together.
                start_new_session=True,
            )
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise RuntimeError(
                    f"the TypeScript MCP client did not finish in {timeout:.0f}s; "
                    f"stderr:\n{_tail(captured)}"
                ) from None
            err = _tail(captured, limit=None)
            (stderr or sys.stderr).write(err)
            err = err[-20_000:]
    if proc.returncode != 0:
        raise RuntimeError(f"the TypeScript MCP client failed ({proc.returncode}):\n{err}")
    try:
        report: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"the TypeScript MCP client printed no JSON:\n{out[:2000]}\n{err}"
        ) from None
    return report


def _tail(handle: IO[str], limit: int | None = 20_000) -> str:
    handle.flush()
    handle.seek(0)
    text = handle.read()
    return text if limit is None else text[-limit:]
