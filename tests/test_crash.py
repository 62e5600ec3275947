"""Crash durability: `kill -9` the real server while concurrent writers store contexts, facts
and index documents, and while maintenance moves ShortTerm items into LongTerm or expires them;
restart it on the same data and find every acknowledged write, each item in exactly one level,
and every index job finished."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont

from hirag_oz.keys import KeyStore
from hirag_oz.memory.levels import Level
from hirag_oz.memory.manager import HiRAG, collection_indexes
from hirag_oz.store.base import CollectionSpec, PointRecord
from hirag_oz.store.edge import EdgeStore
from tests.test_cli import _serve
from tests.vision_samples import FONT, png_bytes, text_pdf

ROUNDS = 3
WRITERS = 4
# The check reads back hundreds of items at once: past the default per-client rate limit.
# A small L1 makes Immediate writes move items down to ShortTerm all along; pages rendered at
# 100 dpi keep the index jobs short.
ENV = {
    "HIRAG_RATE_LIMIT__ENABLED": "false",
    "HIRAG_HIRAG__L1_SIZE": "5",
    "HIRAG_VISION__RENDER_DPI": "100",
}
# Index jobs a writer keeps open at once: some are queued or running at each kill.
OPEN_JOBS = 3
TERMINAL = ("succeeded", "failed")
DIMENSION = 384  # MiniLM
# The tests of writes and of sessions write as a key of a tenant of their own: its
# collections, its files, its start-up repairs.
TENANT = "crash"
_KEYS: dict[str, str] = {}  # data directory -> the tenant's key
_URL_KEYS: dict[str, str] = {}  # server URL -> the key its clients send


def _serve_tenant(
    data: Path, log: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """`_serve`, with an admin key of TENANT in the data directory's key file."""
    if str(data) not in _KEYS:
        _KEYS[str(data)] = KeyStore(data / "keys.json").create("admin", tenant=TENANT)[1]
    proc, url = _serve(data, log, env)
    _URL_KEYS[url] = _KEYS[str(data)]
    return proc, url


def _client(url: str, timeout: float) -> httpx.Client:
    """A client of the server at `url`, with its tenant's key when it has one."""
    key = _URL_KEYS.get(url)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, timeout=timeout, headers=headers)


def _writer(url: str, stop: threading.Event, acked: list[tuple[str, str, str]], n: int) -> None:
    """Stores until the server dies; records (kind, id, text) of each 2xx answer."""
    with _client(url, 10) as http:
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


@dataclass
class IndexJob:
    job_id: str
    code: str
    """A word only this document holds."""
    kind: str
    status: str
    """The last status the server answered."""
    doc_id: str | None = None


def _document(code: str, kind: str) -> tuple[str, bytes]:
    """A one-page document holding `code`: a PDF with a text layer, or a small PNG to OCR."""
    line = f"Crash ledger entry {code} filed by the vision writer."
    if kind == "pdf":
        return f"{code}.pdf", text_pdf([[line]])
    image = Image.new("RGB", (1100, 120), "white")
    ImageDraw.Draw(image).text((30, 35), line, font=ImageFont.truetype(FONT, 34), fill="black")
    return f"{code}.png", png_bytes(image)


def _vision_writer(url: str, stop: threading.Event, jobs: list[IndexJob], rnd: int) -> None:
    """Uploads one-page documents and polls their jobs until the server dies."""
    with _client(url, 10) as http:
        i = 0
        while not stop.is_set():
            try:
                mine = [j for j in jobs if j.status not in TERMINAL]
                for job in mine:
                    r = http.get(f"/api/v1/vision/index/jobs/{job.job_id}")
                    if r.status_code == 200:
                        job.status, job.doc_id = r.json()["status"], r.json()["doc_id"]
                if len(mine) < OPEN_JOBS:
                    i += 1
                    kind = "png" if i % 4 == 0 else "pdf"
                    code = f"zx{rnd}q{i}k{random.randrange(10**6)}"
                    name, data = _document(code, kind)
                    r = http.post("/api/v1/vision/index", files={"file": (name, data)})
                    if r.status_code == 202:
                        jobs.append(IndexJob(r.json()["job_id"], code, kind, r.json()["status"]))
                time.sleep(0.05)
            except httpx.HTTPError:
                return


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def _log_errors(log: Path, offset: int) -> list[str]:
    """Error lines the server logged after byte `offset` of its log."""
    found = []
    for line in log.read_bytes()[offset:].decode(errors="replace").splitlines():
        try:
            level = json.loads(line).get("level")
        except ValueError:
            level = None
        if level in ("error", "critical") or "Traceback" in line:
            found.append(line[:300])
    return found


def _stored_by_level(
    data: Path, prefix: str = "contexts"
) -> dict[Level, dict[str, dict[str, Any]]]:
    """Every point of every level (of the collections of `prefix`: a tenant's are its
    own), read from disk with the server stopped (not through a HiRAG, which would repair
    what it finds)."""
    store = EdgeStore(data / "qdrant")
    try:
        found = {}
        for level in Level:
            name = f"{prefix}_{level.suffix}"
            store.ensure_collection(
                CollectionSpec(name, DIMENSION, "Cosine", collection_indexes({}))
            )
            found[level] = {p.id: p.payload for p in store.scroll(name, None, 1_000_000)}
        return found
    finally:
        store.close()


def _placement_problems(
    stored: dict[Level, dict[str, dict[str, Any]]], acked: dict[str, str]
) -> list[str]:
    """Every acknowledged item (id -> text) once, in one level, unmarked; no id in two."""
    problems = []
    seen: dict[str, Level] = {}
    for level, points in stored.items():
        for point_id, payload in points.items():
            if point_id in seen:
                problems.append(f"{point_id} is in {seen[point_id].value} and {level.value}")
            seen[point_id] = level
            if payload.get("level") != level.value:
                problems.append(f"{point_id} in {level.value} says {payload.get('level')}")
            if payload.get("moving_to") is not None:
                problems.append(f"{point_id} is still marked moving to {payload['moving_to']}")
    for point_id, text in acked.items():
        where = seen.get(point_id)
        if where is None:
            problems.append(f"acknowledged {point_id} is lost")
        elif stored[where][point_id].get("text") != text:
            problems.append(f"acknowledged {point_id} holds other text")
    return problems


def _check_vision_jobs(http: httpx.Client, jobs: list[IndexJob], done_before: set[str]) -> None:
    """Every job ends within a bounded wait after the restart, each done before the kill is
    still done, and every finished document is searchable and decodes."""
    deadline = time.monotonic() + 120
    pending = list(jobs)
    while pending and time.monotonic() < deadline:
        for job in pending:
            body = http.get(f"/api/v1/vision/index/jobs/{job.job_id}").json()
            job.status, job.doc_id = body["status"], body["doc_id"]
        pending = [j for j in pending if j.status not in TERMINAL]
        time.sleep(0.2)
    assert pending == [], f"{len(pending)} index jobs never ended after the restart: {pending[:3]}"
    failed = [j for j in jobs if j.status != "succeeded"]
    assert failed == [], f"index jobs failed after the restart: {failed[:3]}"
    assert done_before <= {j.job_id for j in jobs if j.status == "succeeded"}
    for job in jobs:
        r = http.post(
            "/api/v1/vision/search",
            json={"query": f"ledger entry {job.code}", "filters": {"doc_id": job.doc_id}},
        )
        assert r.status_code == 200, r.text
        regions = r.json()["regions"]
        assert regions, f"the regions of {job.job_id} ({job.kind}) are not searchable"
        r = http.post(
            "/api/v1/vision/decode",
            json={"region_ids": [g["region_id"] for g in regions], "fidelity": "1x"},
        )
        assert r.status_code == 200, r.text
        text = " ".join(d["text"] for d in r.json()["results"])
        # A text layer is read exactly; OCR is asked only for a word it reads reliably.
        expected = job.code if job.kind == "pdf" else "ledger"
        assert expected in text, f"{job.job_id} ({job.kind}) decodes to {text!r}"


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    rng = random.Random(20261125)
    acked: list[tuple[str, str, str]] = []
    jobs: list[IndexJob] = []
    done_before: set[str] = set()
    open_at_kills = 0  # a job open at two kills counts twice
    for rnd in range(ROUNDS):
        proc, url = _serve_tenant(data, log, ENV)
        stop = threading.Event()
        writers = [
            threading.Thread(target=_writer, args=(url, stop, acked, n), daemon=True)
            for n in range(WRITERS)
        ]
        writers.append(
            threading.Thread(target=_vision_writer, args=(url, stop, jobs, rnd), daemon=True)
        )
        before = len(acked)
        for w in writers:
            w.start()
        time.sleep(rng.uniform(1.5, 3.0))
        _kill(proc)
        stop.set()
        for w in writers:
            w.join(timeout=15)
        assert len(acked) > before, "the writers stored nothing before the kill"
        done_before |= {j.job_id for j in jobs if j.status == "succeeded"}
        open_at_kills += sum(j.status not in TERMINAL for j in jobs)

    offset = log.stat().st_size
    proc, url = _serve_tenant(data, log, ENV)
    try:
        with _client(url, 30) as http:
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
            kinds = {k: sum(a[0] == k for a in acked) for k in ("context", "fact")}
            print(
                f"\nkill -9 x{ROUNDS}: acknowledged {kinds}, lost {len(lost)}; index jobs "
                f"{len(jobs)} ({len(done_before)} done before a kill, open at the kills "
                f"{open_at_kills} times)"
            )
            assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost"
            assert len(acked) >= ROUNDS * 10
            assert done_before, "no index job finished before a kill"
            assert open_at_kills, "no index job was queued or running at a kill"
            _check_vision_jobs(http, jobs, done_before)
    finally:
        _stop(proc)
    assert _log_errors(log, offset) == []
    contexts = {item_id: text for kind, item_id, text in acked if kind == "context"}
    problems = _placement_problems(_stored_by_level(data, f"contexts-t-{TENANT}"), contexts)
    assert problems == [], problems[:20]
    vision = data / "tenants" / TENANT / "vision"
    assert list((vision / "uploads").iterdir()) == [], "uploads left behind"
    assert list((vision / "jobs").glob(".tmp-*")) == [], "partial job files left behind"


MAINTENANCE_ROUNDS = 4
# Long enough that a batch acknowledged on a loaded machine (its request can take most of a
# second) was sent within the TTL before the kill that follows it.
L2_TTL = 1.5
# Maintenance every 1.5 s moves (or deletes) everything stored more than L2_TTL s before:
# bursts of several batches, which the kills aim at.
MAINTENANCE_ENV = {
    "HIRAG_RATE_LIMIT__ENABLED": "false",
    "HIRAG_HIRAG__MAINTENANCE_ENABLED": "true",
    "HIRAG_HIRAG__L2_TTL_SECS": str(L2_TTL),
    "HIRAG_HIRAG__MAINTENANCE_INTERVAL_SECS": "1.5",
}
_INTERRUPTED = re.compile(r"finished (\d+) and undid (\d+) move")


def _short_term_writer(
    url: str, stop: threading.Event, acked: dict[str, tuple[str, float]], n: int, rnd: int
) -> None:
    """Stores batches of ShortTerm items until the server dies; records id -> (text, wall
    time the store was sent: no later than its `stored_at`)."""
    with httpx.Client(base_url=url, timeout=10) as http:
        i = 0
        while not stop.is_set():
            i += 1
            texts = [f"round {rnd} writer {n} batch {i} item {k}" for k in range(50)]
            sent = time.time()
            try:
                r = http.post(
                    "/api/v1/contexts/batch",
                    json={"items": [{"text": t, "level": "ShortTerm"} for t in texts]},
                )
            except httpx.HTTPError:
                return
            if r.status_code == 201:
                acked.update((i, (t, sent)) for i, t in zip(r.json()["ids"], texts, strict=True))


def _levels(http: httpx.Client) -> dict[str, int]:
    levels: dict[str, int] = http.get("/health").json()["store"]["levels"]
    return levels


def _wait_for_burst(http: httpx.Client, mode: str, timeout: float) -> bool:
    """Until maintenance is at work: LongTerm grows (consolidate) or ShortTerm shrinks
    (expire) while the writers only add to ShortTerm. False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    previous = _levels(http)
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = _levels(http)
        if mode == "consolidate" and now["LongTerm"] > previous["LongTerm"]:
            return True
        if mode == "expire" and now["ShortTerm"] < previous["ShortTerm"]:
            return True
        previous = now
    return False


def _wait_for_recent_ack(
    acked: dict[str, tuple[str, float]], within: float, timeout: float
) -> None:
    """Until an acknowledged item was sent less than `within` seconds ago."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = max((when for _, when in list(acked.values())), default=0.0)
        if newest > time.time() - within:
            return
        time.sleep(0.005)


@pytest.mark.parametrize("mode", ["consolidate", "expire"])
def test_kill_9_during_l2_maintenance_loses_and_duplicates_nothing(
    tmp_path: Path, mode: str
) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    rng = random.Random(20261126)
    acked: dict[str, tuple[str, float]] = {}
    in_burst = 0
    killed_at = 0.0
    for rnd in range(MAINTENANCE_ROUNDS):
        proc, url = _serve(data, log, MAINTENANCE_ENV | {"HIRAG_HIRAG__L2_EXPIRY": mode})
        stop = threading.Event()
        writers = [
            threading.Thread(
                target=_short_term_writer, args=(url, stop, acked, n, rnd), daemon=True
            )
            for n in range(2)
        ]
        for w in writers:
            w.start()
        with httpx.Client(base_url=url, timeout=10) as http:
            in_burst += _wait_for_burst(http, mode, timeout=15)
        # Killed while a batch sent within the TTL is acknowledged, so that the expiry round
        # has items it must keep (on a loaded machine a batch may take longer than the TTL).
        _wait_for_recent_ack(acked, L2_TTL - 0.2, timeout=15)
        time.sleep(rng.uniform(0.0, 0.1))
        killed_at = time.time()
        _kill(proc)
        stop.set()
        for w in writers:
            w.join(timeout=15)

    # Opened without maintenance: only the start-up repair may fix what the kills left.
    offset = log.stat().st_size
    proc, url = _serve(data, log, {"HIRAG_RATE_LIMIT__ENABLED": "false"})
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/health/ready").status_code == 200
            levels = _levels(http)
            sample = random.Random(1).sample(sorted(acked), min(200, len(acked)))
            for item_id in sample:
                r = http.get(f"/api/v1/contexts/{item_id}")
                if mode == "expire" and r.status_code == 404:
                    continue
                assert r.json().get("text") == acked[item_id][0], r.text
                assert r.json()["level"] in ("ShortTerm", "LongTerm")
    finally:
        _stop(proc)
    assert _log_errors(log, offset) == []
    stored = _stored_by_level(data)
    if mode == "consolidate":
        must_survive = {i: text for i, (text, _) in acked.items()}
    else:
        # Expired are only items older than the TTL at a maintenance run, all before the last
        # kill: those sent within the TTL before it must be kept.
        must_survive = {i: t for i, (t, when) in acked.items() if when > killed_at - L2_TTL}
        assert stored[Level.LONG_TERM] == {}, "expiry moved items"
        assert len(must_survive) > 0
    problems = _placement_problems(stored, must_survive)
    repairs = [tuple(map(int, m)) for m in _INTERRUPTED.findall(log.read_text())]
    print(
        f"\n{mode} kill -9 x{MAINTENANCE_ROUNDS} ({in_burst} during a burst): {len(acked)} "
        f"acknowledged, {len(must_survive)} of them checked on disk, levels {levels}, "
        f"moves finished/undone at restarts {repairs}, problems {len(problems)}"
    )
    assert problems == [], problems[:20]
    assert sum(levels.values()) == sum(len(p) for p in stored.values())
    assert in_burst >= MAINTENANCE_ROUNDS // 2, "the kills missed maintenance at work"
    if mode == "consolidate":
        assert len(stored[Level.LONG_TERM]) > 0, "nothing was consolidated"
    else:
        assert sum(len(p) for p in stored.values()) < len(acked), "nothing expired"


def test_opening_finishes_or_undoes_interrupted_moves(make_memory: Any, tmp_path: Path) -> None:
    """The two states a kill inside a move leaves, written by hand: marked originals with and
    without their copy in the target level."""
    memory: HiRAG = make_memory(tmp_path / "m")
    copied = memory.store("the copy reached LongTerm before the kill", "ShortTerm")
    uncopied = memory.store("the kill came before the copy was written", "ShortTerm")
    l2, l3 = memory.collections[Level.SHORT_TERM], memory.collections[Level.LONG_TERM]
    memory.backend.set_payload(l2, [copied.id, uncopied.id], {"moving_to": "LongTerm"})
    [point] = memory.backend.retrieve(l2, [copied.id], with_vectors=True)
    assert point.dense is not None and point.sparse is not None
    payload = {k: v for k, v in point.payload.items() if k != "moving_to"}
    memory.backend.upsert(
        l3, [PointRecord(point.id, point.dense, point.sparse, {**payload, "level": "LongTerm"})]
    )
    memory.close()

    reopened: HiRAG = make_memory(tmp_path / "m")
    assert reopened.get(copied.id).level is Level.LONG_TERM
    assert reopened.get(uncopied.id).level is Level.SHORT_TERM
    assert reopened.count(Level.SHORT_TERM) == reopened.count(Level.LONG_TERM) == 1
    [left] = reopened.backend.retrieve(l2, [uncopied.id])
    assert left.payload.get("moving_to") is None
    # Unmarked, it moves like any other item.
    reopened.update(uncopied.id, level="LongTerm")
    assert reopened.count(Level.LONG_TERM) == 2 and reopened.count(Level.SHORT_TERM) == 0


SESSION_ROUNDS = 3
SESSION_WRITERS = 3
# A window of three folds on nearly every append; maintenance every 0.3 s closes the sessions
# left idle for 0.5 s; a closer closes sessions the writers are still appending to.
SESSION_ENV = {
    "HIRAG_RATE_LIMIT__ENABLED": "false",
    "HIRAG_HIRAG__L1_SIZE": "3",
    "HIRAG_HIRAG__MAINTENANCE_ENABLED": "true",
    "HIRAG_HIRAG__MAINTENANCE_INTERVAL_SECS": "0.3",
    "HIRAG_SESSIONS__IDLE_SECS": "0.5",
}
_SESSION_REPAIRS = re.compile(r"finished session writes interrupted by a crash: (\{[^}]*\})")


@dataclass
class SessionLog:
    """What the clients were told: acknowledged messages per session, in the order of their
    acknowledgements, and the sessions a delete was sent for."""

    acked: dict[str, list[tuple[str, str]]]
    doomed: set[str]
    closes: int = 0


def _appender(url: str, stop: threading.Event, log: SessionLog, n: int, rnd: int) -> None:
    """Appends one to three messages at a time to its sessions until the server dies. Each
    round it moves on by two sessions: the earlier ones go idle."""
    sessions = [f"w{n}-s{k}" for k in range(2 * rnd, 2 * rnd + 3)]
    with _client(url, 10) as http:
        i = 0
        while not stop.is_set():
            i += 1
            session = random.choice(sessions)
            batch = [
                (f"w{n}-r{rnd}-{i}-{k}", f"writer {n} round {rnd} says {i}.{k} {random.random()}")
                for k in range(random.randint(1, 3))
            ]
            body = {
                "messages": [
                    {"role": ("user", "assistant")[k % 2], "content": c, "message_id": m}
                    for k, (m, c) in enumerate(batch)
                ]
            }
            try:
                r = http.post(f"/api/v1/sessions/{session}/messages", json=body)
            except httpx.HTTPError:
                return
            if r.status_code in (200, 201):
                log.acked.setdefault(session, []).extend(batch)


def _closer_and_deleter(url: str, stop: threading.Event, log: SessionLog, rnd: int) -> None:
    """Closes the writers' sessions while they append to them; begins short sessions and
    deletes them."""
    with _client(url, 10) as http:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                session = random.choice(sorted(log.acked) or ["none"])
                if http.post(f"/api/v1/sessions/{session}/close").status_code == 200:
                    log.closes += 1
                doomed = f"doomed-r{rnd}-{i}"
                messages = [{"role": "user", "content": f"{doomed} line {k}"} for k in range(4)]
                http.post(f"/api/v1/sessions/{doomed}/messages", json={"messages": messages})
                log.doomed.add(doomed)
                http.delete(f"/api/v1/sessions/{doomed}")
            except httpx.HTTPError:
                return
            time.sleep(0.05)


def _all_messages(http: httpx.Client, session: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        r = http.get(f"/api/v1/sessions/{session}/messages", params={"after": after, "limit": 500})
        assert r.status_code == 200, r.text
        found += r.json()["messages"]
        after = r.json()["next_after"]
    return found


def _session_problems(http: httpx.Client, log: SessionLog) -> list[str]:
    """Every acknowledged message in its session once, in the order acknowledged; every
    session's counts agree with its messages; a deleted session is whole or gone."""
    problems = []
    for session in sorted(set(log.acked) | log.doomed):
        r = http.get(f"/api/v1/sessions/{session}")
        if r.status_code == 404 and session in log.doomed:
            continue
        if r.status_code != 200:
            problems.append(f"{session}: {r.status_code}")
            continue
        record, listed = r.json(), _all_messages(http, session)
        by_id = {m["message_id"]: m for m in listed if m["message_id"] is not None}
        if len(by_id) != sum(m["message_id"] is not None for m in listed):
            problems.append(f"{session}: a message id stored twice")
        if record["message_count"] != len(listed):
            problems.append(f"{session}: counts {record['message_count']}, holds {len(listed)}")
        if record["token_total"] != sum(m["token_count"] for m in listed):
            problems.append(f"{session}: its token total disagrees with its messages")
        acked = log.acked.get(session, [])
        lost = [m for m, content in acked if by_id.get(m, {}).get("content") != content]
        if lost:
            problems.append(f"{session}: acknowledged {lost[:3]} lost ({len(lost)})")
        order = [by_id[m]["seq"] for m, _ in acked if m in by_id]
        if order != sorted(order):
            problems.append(f"{session}: stored out of the order acknowledged")
    return problems


def _session_disk_problems(
    data: Path, stored: dict[Level, dict[str, dict[str, Any]]], prefix: str = "contexts"
) -> list[str]:
    """On disk: no record names a write under way; a session's messages pushed out of its
    window are exactly those folded; a closed session is all in LongTerm with one summary."""
    store = EdgeStore(data / "qdrant")
    try:
        name = f"{prefix}_sessions"
        store.ensure_collection(CollectionSpec(name, DIMENSION, "Cosine", {}))
        records = [p.payload for p in store.scroll(name, None, 1_000_000)]
    finally:
        store.close()
    problems = []
    for record in records:
        session, through = record["session_id"], record["folded_through"]
        mine = {
            level: [p for p in points.values() if p.get("session_id") == session]
            for level, points in stored.items()
        }
        kinds = {
            level: [p for p in ps if (p.get("metadata") or {}).get("kind") == "message"]
            for level, ps in mine.items()
        }
        summaries = [
            p for p in mine[Level.LONG_TERM] if p["metadata"].get("kind") == "session_summary"
        ]
        if record.get("pending") is not None:
            problems.append(f"{session}: still pending {record['pending']}")
        if any(p["seq"] <= through for p in kinds[Level.IMMEDIATE]):
            problems.append(f"{session}: a message in the window is counted folded")
        pushed = kinds[Level.SHORT_TERM] + kinds[Level.LONG_TERM]
        if any(p["seq"] > through for p in pushed):
            problems.append(f"{session}: a message out of the window is not folded")
        if len(summaries) > 1:
            problems.append(f"{session}: {len(summaries)} summaries")
        if record["state"] == "closed" and (kinds[Level.IMMEDIATE] or kinds[Level.SHORT_TERM]):
            problems.append(f"{session}: closed with messages outside LongTerm")
        if record["messages"] != sum(len(ps) for ps in kinds.values()):
            problems.append(f"{session}: counts {record['messages']} messages on disk")
    return problems


def test_kill_9_during_appends_folds_and_consolidation_loses_no_message(tmp_path: Path) -> None:
    data, log_file = tmp_path / "data", tmp_path / "serve.log"
    rng = random.Random(20261207)
    log = SessionLog({}, set())
    for rnd in range(SESSION_ROUNDS):
        proc, url = _serve_tenant(data, log_file, SESSION_ENV)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_appender, args=(url, stop, log, n, rnd), daemon=True)
            for n in range(SESSION_WRITERS)
        ]
        threads.append(
            threading.Thread(target=_closer_and_deleter, args=(url, stop, log, rnd), daemon=True)
        )
        before = sum(len(a) for a in log.acked.values())
        for t in threads:
            t.start()
        time.sleep(rng.uniform(2.0, 3.5))
        _kill(proc)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert sum(len(a) for a in log.acked.values()) > before, "nothing appended before the kill"

    # Opened without maintenance: only the start-up repair may finish what the kills cut.
    offset = log_file.stat().st_size
    proc, url = _serve_tenant(data, log_file, {"HIRAG_RATE_LIMIT__ENABLED": "false"})
    try:
        with _client(url, 30) as http:
            assert http.get("/health/ready").status_code == 200
            problems = _session_problems(http, log)
            listed = http.get("/api/v1/sessions", params={"limit": 500}).json()["sessions"]
    finally:
        _stop(proc)
    assert _log_errors(log_file, offset) == []
    stored = _stored_by_level(data, f"contexts-t-{TENANT}")
    ids = {
        point_id: payload["text"]
        for points in stored.values()
        for point_id, payload in points.items()
        if (payload.get("metadata") or {}).get("kind") == "message"
    }
    problems += _placement_problems(stored, ids)
    problems += _session_disk_problems(data, stored, f"contexts-t-{TENANT}")
    repairs = _SESSION_REPAIRS.findall(log_file.read_text())
    acked = sum(len(a) for a in log.acked.values())
    folds = sum(s["folds"] for s in listed)
    closed = sum(s["state"] == "closed" for s in listed)
    print(
        f"\nsessions kill -9 x{SESSION_ROUNDS}: {acked} messages acknowledged in "
        f"{len(log.acked)} sessions, {folds} folds, {log.closes} closes acknowledged, "
        f"{closed} sessions closed at the end, {len(log.doomed)} deletes sent; writes "
        f"finished at restarts {repairs}; problems {len(problems)}"
    )
    assert problems == [], problems[:20]
    assert acked >= SESSION_ROUNDS * 20
    assert folds > 0 and log.closes > 0
