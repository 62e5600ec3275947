"""A nearly full disk: the real server, its data directory on a small tmpfs, refuses writes
with 507 and the error envelope while reads go on, stays up, refuses to start again rather
than die, and once space is freed starts with everything it acknowledged."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_cli import _serve
from tests.test_crash import _log_errors, _stop
from tests.vision_samples import text_pdf

# More than opening one collection takes (some 70 MB), as the default (256) is.
MIN_FREE_MB = 96
# The store's empty collections take some 95 MB.
DISK_MB = 224


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _free_mb(path: Path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / 2**20


def _refused(r: httpx.Response) -> None:
    assert r.status_code == 507, r.text
    body = r.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == "INSUFFICIENT_STORAGE"
    assert "min_free_disk_mb" in body["message"] and body["details"]["min_free_mb"] == MIN_FREE_MB


def _fill(url: str, writer: int, acked: dict[str, str], refusals: list[httpx.Response]) -> None:
    """Stores batches until the service refuses one (at most 100)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for batch in range(100):
            texts = [
                f"writer {writer} batch {batch} note {k} " + "harbour log " * 400 for k in range(25)
            ]
            r = http.post(
                "/api/v1/contexts/batch",
                json={"items": [{"text": t, "level": "LongTerm"} for t in texts]},
            )
            if r.status_code != 201:
                refusals.append(r)
                return
            acked.update(zip(r.json()["ids"], texts, strict=True))


def _metric(http: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name} in /metrics")


def _disk_component(http: httpx.Client) -> dict[str, Any]:
    components = http.get("/health").json()["components"]
    found: dict[str, Any] = next(c for c in components if c["name"] == "data_disk")
    return found


def test_a_nearly_full_disk_refuses_writes_and_keeps_serving_reads(
    small_disk: Path, tmp_path: Path
) -> None:
    data, log = small_disk / "data", tmp_path / "serve.log"
    env = {"HIRAG_RATE_LIMIT__ENABLED": "false", "HIRAG_SERVER__MIN_FREE_DISK_MB": str(MIN_FREE_MB)}
    filler = small_disk / "filler"
    proc, url = _serve(data, log, env)
    acked: dict[str, str] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            r = http.post(
                "/api/v1/sessions/chat/messages",
                json={"messages": [{"role": "user", "content": "Where did we moor the boat?"}]},
            )
            assert r.status_code == 201, r.text
            assert _disk_component(http)["status"] == "healthy"
            # Another process fills the disk to 2 MB above the reserve; three writers of the
            # service cross it at once.
            room = _free_mb(small_disk) - MIN_FREE_MB - 2
            assert room > 0, f"the empty store left {room + 2:.1f} MB above the reserve"
            filler.write_bytes(b"\0" * int(room * 2**20))
            free_at_start = _free_mb(small_disk)
            refusals: list[httpx.Response] = []
            writers = [
                threading.Thread(target=_fill, args=(url, n, acked, refusals)) for n in range(3)
            ]
            for w in writers:
                w.start()
            for w in writers:
                w.join()
            assert len(refusals) == 3, "the disk never filled"
            for refusal in refusals:
                _refused(refusal)
            free_when_refused = _free_mb(small_disk)
            print(
                f"\n{len(acked)} contexts stored by 3 writers, free {free_at_start:.1f} -> "
                f"{free_when_refused:.1f} MB, then refused"
            )
            assert free_when_refused < MIN_FREE_MB
            assert proc.poll() is None

            # Every kind of write is refused, and nothing of it is stored.
            _refused(
                http.post(
                    "/api/v1/sessions/chat/messages",
                    json={"messages": [{"role": "user", "content": "refused message"}]},
                )
            )
            _refused(http.post("/api/v1/contexts", json={"text": "refused", "level": "Immediate"}))
            _refused(
                http.post(
                    "/api/v1/facts",
                    json={
                        "subject": "boat",
                        "predicate": "at",
                        "object": "pier",
                        "confidence": 0.9,
                    },
                )
            )
            pdf = text_pdf([["A document that finds no room."]])
            _refused(http.post("/api/v1/vision/index", files={"file": ("d.pdf", pdf)}))
            assert list((data / "vision" / "uploads").iterdir()) == []

            # Reads go on, and health and metrics say why writes are refused.
            some = list(acked)[:5]
            for context_id in some:
                assert (
                    http.get(f"/api/v1/contexts/{context_id}").json()["text"] == acked[context_id]
                )
            r = http.post(
                "/api/v1/contexts/search", json={"query": "harbour log", "max_tokens": 500}
            )
            assert r.status_code == 200 and r.json()["contexts"], r.text
            r = http.post(
                "/api/v1/sessions/chat/context", json={"system_prompt": "You remember boats."}
            )
            assert r.status_code == 200, r.text
            assert http.get("/api/v1/sessions/chat").json()["message_count"] == 1
            assert http.get("/health/ready").status_code == 200
            disk = _disk_component(http)
            assert disk["status"] == "degraded" and "writes are refused" in disk["message"]
            assert _metric(http, "hirag_data_disk_free_bytes") < MIN_FREE_MB * 2**20
            assert _metric(http, "hirag_data_disk_min_free_bytes") == MIN_FREE_MB * 2**20

            # Deleting is not refused; once space is freed, writes are taken again.
            assert http.delete(f"/api/v1/contexts/{some[0]}").status_code == 200
            acked.pop(some[0])
            filler.unlink()
            r = http.post("/api/v1/contexts", json={"text": "room again", "level": "Immediate"})
            assert r.status_code == 201, r.text
            acked[r.json()["id"]] = "room again"
            time.sleep(2.1)  # past the health checker's cache
            assert _disk_component(http)["status"] == "healthy"
    finally:
        _stop(proc)
    assert _log_errors(log, 0) == []

    # Opening the store takes space: with the disk full again, the service refuses to start,
    # saying why.
    filler.write_bytes(b"\0" * int((_free_mb(small_disk) - MIN_FREE_MB + 2) * 2**20))
    offset = log.stat().st_size
    proc, _ = _serve(data, log, env, wait=False)
    assert proc.wait(timeout=120) != 0
    assert "min_free_disk_mb" in log.read_bytes()[offset:].decode()

    # With space freed it starts, holding everything it acknowledged, and takes writes.
    filler.unlink()
    subprocess.run(["mount", "-o", f"remount,size={DISK_MB * 3}m", str(small_disk)], check=True)
    proc, url = _serve(data, log, env)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            missing = [
                i
                for i, text in acked.items()
                if http.get(f"/api/v1/contexts/{i}").json().get("text") != text
            ]
            assert missing == []
            assert http.get("/api/v1/sessions/chat").json()["message_count"] == 1
            r = http.post(
                "/api/v1/sessions/chat/messages",
                json={"messages": [{"role": "user", "content": "Room again?"}]},
            )
            assert r.status_code == 201, r.text
    finally:
        _stop(proc)
