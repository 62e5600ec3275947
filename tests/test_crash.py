"""Crash durability: `kill -9` the real server while concurrent writers store contexts and
facts, restart it on the same data, and find every acknowledged write."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.test_cli import _serve

ROUNDS = 3
WRITERS = 4
# The check reads back hundreds of items at once: past the default per-client rate limit.
ENV = {"HIRAG_RATE_LIMIT__ENABLED": "false"}


def _writer(url: str, stop: threading.Event, acked: list[tuple[str, str, str]], n: int) -> None:
    """Stores until the server dies; records (kind, id, text) of each 2xx answer."""
    with httpx.Client(base_url=url, timeout=10) as http:
        i = 0
        while not stop.is_set():
            i += 1
            text = f"writer {n} note {i} {random.random():.6f}"
            try:
                if i % 3 == 0:
                    r = http.post(
                        "/api/v1/facts",
                        json={
                            "subject": f"w{n}",
                            "predicate": f"p{i}",
                            "object": text,
                            "confidence": 0.9,
                        },
                    )
                    if r.status_code in (200, 201):
                        acked.append(("fact", r.json()["fact_id"], text))
                else:
                    level = ("Immediate", "ShortTerm", "LongTerm")[i % 3]
                    r = http.post(
                        "/api/v1/contexts",
                        json={"text": text, "level": level, "session_id": f"s{n}"},
                    )
                    if r.status_code == 201:
                        acked.append(("context", r.json()["id"], text))
            except httpx.HTTPError:
                return  # the server is gone


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    rng = random.Random(20261125)
    acked: list[tuple[str, str, str]] = []
    for _ in range(ROUNDS):
        proc, url = _serve(data, log, ENV)
        stop = threading.Event()
        writers = [
            threading.Thread(target=_writer, args=(url, stop, acked, n), daemon=True)
            for n in range(WRITERS)
        ]
        before = len(acked)
        for w in writers:
            w.start()
        time.sleep(rng.uniform(1.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        for w in writers:
            w.join(timeout=15)
        assert len(acked) > before, "the writers stored nothing before the kill"

    proc, url = _serve(data, log, ENV)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/health/ready").status_code == 200
            lost = []
            for kind, item_id, text in acked:
                path = (
                    f"/api/v1/contexts/{item_id}"
                    if kind == "context"
                    else f"/api/v1/facts/{item_id}"
                )
                r = http.get(path)
                body = r.json() if r.status_code == 200 else {}
                if body.get("text", body.get("object")) != text:
                    lost.append((kind, item_id, r.status_code))
            assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost"
            assert len(acked) >= ROUNDS * 10
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
