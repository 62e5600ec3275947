"""Concurrency on one agent through the real server: parallel store, PATCH, delete, search
and GET lose no update and no access count, and a deleted context never comes back.

Semantics checked: each search counts one access of every context it returns; PATCHes of one
context apply one at a time, each to the context as the one before left it (metadata is
merged), so concurrent PATCHes of different fields all stay and of the same field the one
applied last wins; a PATCH or a move that read a context before its DELETE never writes it
back.

Facts deduplication under races is covered by
tests/test_facts.py::test_forty_racing_inserts_store_one and
tests/test_facts_api.py::test_forty_racing_http_inserts_store_one.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from hirag_oz.api.app import create_app
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from tests.conftest import ServerThread, keyed_settings

KEY = "sk-concurrency-test"
AGENT = "racer"
SESSION = "s-race"
TOPICS = ("deploy", "billing", "database", "search", "latency", "release", "backup", "alerts")
NOUNS = ("pipeline", "invoice", "replica", "index", "dashboard", "rollout", "snapshot", "pager")
SEED_ITEMS = 60
DELETED = 15
L1_SIZE = 6
SEARCHERS, SEARCHES = 3, 100
PATCH_KEYS, PATCHES = ("a", "b"), 60
REVISIONS = 30
STORES = 50
GETS = 150


def _text(rng: random.Random, i: int) -> str:
    return (
        f"item {i}: the {rng.choice(TOPICS)} {rng.choice(NOUNS)} was reviewed with the "
        f"{rng.choice(TOPICS)} team and the {rng.choice(NOUNS)} owner"
    )


@dataclass
class Ledger:
    """What the clients were told: every acknowledged write and every search hit."""

    initial: list[str]
    targets: set[str]
    """Ids the deleter will delete: the only ones allowed to answer 404."""
    l1_order: list[str]
    """The session's Immediate items, oldest first: the last L1_SIZE are in L1."""
    hits: list[Counter[str]] = field(default_factory=list)
    meta: dict[str, dict[str, int]] = field(default_factory=dict)
    revised: dict[str, tuple[str, str]] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)
    deleted: dict[str, float] = field(default_factory=dict)
    """id -> monotonic time its DELETE was answered."""
    errors: list[str] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def count(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1


def _searcher(http: httpx.Client, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    hits: Counter[str] = Counter()
    for _ in range(SEARCHES):
        query = f"{rng.choice(TOPICS)} {rng.choice(NOUNS)}"
        started = time.monotonic()
        r = http.post(
            "/api/v1/contexts/search",
            json={"query": query, "max_tokens": rng.randint(60, 300), "agent_id": AGENT},
        )
        ledger.count("search")
        if r.status_code != 200:
            ledger.fail(f"search: {r.status_code} {r.text[:200]}")
            continue
        for context in r.json()["contexts"]:
            hits[context["id"]] += 1
            gone = ledger.deleted.get(context["id"])
            if gone is not None and gone < started:
                ledger.fail(f"search started after {context['id']} was deleted returned it")
    with ledger.lock:
        ledger.hits.append(hits)


def _patcher(http: httpx.Client, ledger: Ledger, key: str, seed: int) -> None:
    """Sets metadata[key] to 1, 2, 3... on random items; the last value answered must stay."""
    rng = random.Random(seed)
    last: dict[str, int] = {}
    for value in range(1, PATCHES + 1):
        item = rng.choice(ledger.initial)
        r = http.patch(
            f"/api/v1/contexts/{item}", params={"agent_id": AGENT}, json={"metadata": {key: value}}
        )
        ledger.count("patch")
        if r.status_code == 200:
            if r.json()["metadata"].get(key) != value:
                ledger.fail(f"PATCH {key}={value} of {item} answered {r.json()['metadata']}")
            last[item] = value
        elif not (r.status_code == 404 and item in ledger.targets):
            ledger.fail(f"PATCH {item}: {r.status_code} {r.text[:200]}")
    with ledger.lock:
        ledger.meta[key] = last


def _l1_patcher(http: httpx.Client, ledger: Ledger, stop: threading.Event) -> None:
    """PATCHes the session's oldest Immediate item, the one the next store moves down."""
    last: dict[str, int] = {}
    value = 0
    while not stop.is_set():
        with ledger.lock:
            item = ledger.l1_order[-L1_SIZE]
        value += 1
        r = http.patch(
            f"/api/v1/contexts/{item}", params={"agent_id": AGENT}, json={"metadata": {"l1": value}}
        )
        ledger.count("patch")
        if r.status_code == 200:
            last[item] = value
        elif not (r.status_code == 404 and item in ledger.targets):
            ledger.fail(f"PATCH {item}: {r.status_code} {r.text[:200]}")
    with ledger.lock:
        ledger.meta["l1"] = last


def _l1_searcher(http: httpx.Client, ledger: Ledger, stop: threading.Event) -> None:
    """Searches the session's Immediate items: counts accesses of the ones being moved."""
    hits: Counter[str] = Counter()
    while not stop.is_set():
        r = http.post(
            "/api/v1/contexts/search",
            json={
                "query": "item reviewed with the team",
                "max_tokens": 400,
                "agent_id": AGENT,
                "session_id": SESSION,
                "levels": ["Immediate"],
            },
        )
        ledger.count("search")
        if r.status_code != 200:
            ledger.fail(f"search: {r.status_code} {r.text[:200]}")
            continue
        hits.update(c["id"] for c in r.json()["contexts"])
    with ledger.lock:
        ledger.hits.append(hits)


def _reviser(http: httpx.Client, ledger: Ledger, seed: int) -> None:
    """New text (re-embedded) and a move between ShortTerm and LongTerm, both ways."""
    rng = random.Random(seed)
    last: dict[str, tuple[str, str]] = {}
    for revision in range(1, REVISIONS + 1):
        item = rng.choice(ledger.initial)
        text = f"revision {revision}: {_text(rng, revision)}"
        level = rng.choice(("ShortTerm", "LongTerm"))
        r = http.patch(
            f"/api/v1/contexts/{item}",
            params={"agent_id": AGENT},
            json={"text": text, "level": level},
        )
        ledger.count("patch")
        if r.status_code == 200:
            last[item] = (text, level)
        elif not (r.status_code == 404 and item in ledger.targets):
            ledger.fail(f"PATCH {item}: {r.status_code} {r.text[:200]}")
    with ledger.lock:
        ledger.revised = last


def _storer(http: httpx.Client, ledger: Ledger, seed: int) -> None:
    """Immediate items of the seeded session: each one pushes the oldest down to ShortTerm."""
    rng = random.Random(seed)
    for i in range(STORES):
        r = http.post(
            "/api/v1/contexts",
            json={
                "text": _text(rng, 1000 + i),
                "level": "Immediate",
                "agent_id": AGENT,
                "session_id": SESSION,
            },
        )
        ledger.count("store")
        if r.status_code == 201:
            with ledger.lock:
                ledger.stored.append(r.json()["id"])
                ledger.l1_order.append(r.json()["id"])
        else:
            ledger.fail(f"store: {r.status_code} {r.text[:200]}")


def _deleter(http: httpx.Client, ledger: Ledger, seed: int) -> None:
    """Deletes each target while another client PATCHes it: a PATCH that read the item
    before the DELETE must not write it back after."""
    rng = random.Random(seed)
    racer = httpx.Client(base_url=http.base_url, headers=http.headers, timeout=http.timeout)

    def patch_until_gone(item: str) -> None:
        for value in range(50):
            r = racer.patch(
                f"/api/v1/contexts/{item}",
                params={"agent_id": AGENT},
                json={"metadata": {"d": value}},
            )
            ledger.count("patch")
            if r.status_code == 404:
                return
            if r.status_code != 200:
                ledger.fail(f"PATCH {item}: {r.status_code} {r.text[:200]}")

    with racer:
        for item in sorted(ledger.targets):
            patching = threading.Thread(target=patch_until_gone, args=(item,))
            patching.start()
            time.sleep(rng.uniform(0.0, 0.05))
            r = http.delete(f"/api/v1/contexts/{item}", params={"agent_id": AGENT})
            ledger.count("delete")
            if r.status_code == 200:
                ledger.deleted[item] = time.monotonic()
            else:
                ledger.fail(f"DELETE {item}: {r.status_code} {r.text[:200]}")
            patching.join(timeout=120)


def _getter(http: httpx.Client, ledger: Ledger, seed: int) -> None:
    """Items that are never deleted answer 200 throughout, and their access counts never
    go down."""
    rng = random.Random(seed)
    kept = [i for i in ledger.initial if i not in ledger.targets]
    seen: dict[str, int] = {}
    for _ in range(GETS):
        item = rng.choice(kept)
        r = http.get(f"/api/v1/contexts/{item}")
        ledger.count("get")
        if r.status_code != 200:
            ledger.fail(f"GET {item} (never deleted): {r.status_code} {r.text[:200]}")
            continue
        count = r.json()["access_count"]
        if count < seen.get(item, 0):
            ledger.fail(f"access_count of {item} went down: {seen[item]} -> {count}")
        seen[item] = count


def _seed(http: httpx.Client) -> tuple[list[str], list[str]]:
    """All seeded ids, and the session's Immediate ones oldest first."""
    rng = random.Random(7)
    items = []
    for i in range(SEED_ITEMS):
        level = ("Immediate", "ShortTerm", "LongTerm")[i % 3]
        items.append(
            {
                "text": _text(rng, i),
                "level": level,
                "agent_id": AGENT,
                "session_id": SESSION if level == "Immediate" else f"s-{i % 4}",
            }
        )
    r = http.post("/api/v1/contexts/batch", json={"items": items})
    assert r.status_code == 201, r.text
    ids: list[str] = r.json()["ids"]
    return ids, [ids[i] for i in range(0, SEED_ITEMS, 3)]


def _level_counts(http: httpx.Client) -> dict[str, int]:
    body = http.get("/health").json()
    levels: dict[str, int] = body["store"]["levels"]
    return levels


def _check(http: httpx.Client, ledger: Ledger, hits: Counter[str], when: str) -> list[str]:
    """Every difference between what the server holds and what the clients were told."""
    problems = []
    survivors = [i for i in ledger.initial + ledger.stored if i not in ledger.deleted]
    for item in ledger.deleted:
        r = http.get(f"/api/v1/contexts/{item}")
        if r.status_code != 404:
            problems.append(f"{when}: deleted {item} answers {r.status_code}")
    for item in survivors:
        r = http.get(f"/api/v1/contexts/{item}")
        if r.status_code != 200:
            problems.append(f"{when}: {item} answers {r.status_code}")
            continue
        got = r.json()
        if got["access_count"] != hits[item]:
            problems.append(
                f"{when}: {item} access_count {got['access_count']}, returned {hits[item]} times"
            )
        for key, last in ledger.meta.items():
            if got["metadata"].get(key) != last.get(item):
                problems.append(
                    f"{when}: {item} metadata.{key} = {got['metadata'].get(key)}, "
                    f"last PATCH answered {last.get(item)}"
                )
        if item in ledger.revised and (got["text"], got["level"]) != ledger.revised[item]:
            problems.append(
                f"{when}: {item} is ({got['text'][:30]}, {got['level']}), "
                f"last PATCH answered {ledger.revised[item][0][:30]}, {ledger.revised[item][1]}"
            )
    total = sum(_level_counts(http).values())
    if total != len(survivors):
        problems.append(f"{when}: the levels hold {total} items, {len(survivors)} survive")
    return problems


@pytest.mark.parametrize("flush_secs", [0.0, 3600.0], ids=["flush-every-search", "flush-at-close"])
def test_parallel_writes_and_searches_on_one_agent_lose_nothing(
    model: OnnxMiniLMEmbedder, tmp_path: Path, flush_secs: float
) -> None:
    # A small L1: every Immediate store moves the session's oldest item down while the same
    # items are searched, patched and deleted.
    settings = keyed_settings(
        tmp_path, KEY, hirag={"l1_size": L1_SIZE, "access_flush_secs": flush_secs}
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        ServerThread(create_app(settings, model=model)) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
    ):
        initial, immediate = _seed(http)
        # Deleted ones are not among those the L1 patcher touches, which answer 200 throughout.
        ledger = Ledger(
            initial,
            set(random.Random(3).sample([i for i in initial if i not in immediate], DELETED)),
            immediate,
        )
        stop = threading.Event()
        workers: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
            *((_searcher, (ledger, 10 + n)) for n in range(SEARCHERS)),
            *((_patcher, (ledger, key, 20 + n)) for n, key in enumerate(PATCH_KEYS)),
            (_reviser, (ledger, 30)),
            (_storer, (ledger, 40)),
            (_deleter, (ledger, 50)),
            (_getter, (ledger, 60)),
        ]
        # These two run until the others are done.
        endless = [(_l1_patcher, (ledger, stop)), (_l1_searcher, (ledger, stop))]
        clients = [
            httpx.Client(base_url=server.url, headers=headers, timeout=60)
            for _ in workers + endless
        ]
        threads = [
            threading.Thread(target=fn, args=(client, *args), daemon=True)
            for (fn, args), client in zip(workers + endless, clients, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads[: len(workers)]:
            t.join(timeout=240)
        stop.set()
        for t in threads[len(workers) :]:
            t.join(timeout=60)
        for client in clients:
            client.close()
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        hits: Counter[str] = sum(ledger.hits, Counter())
        print(
            f"\nconcurrency (flush every {flush_secs:g} s): ops {dict(ledger.ops)}, "
            f"{sum(hits.values())} search hits on {len(hits)} items, "
            f"{len(ledger.deleted)} deleted, {len(ledger.stored)} stored"
        )
        assert ledger.errors == [], ledger.errors[:20]
        assert len(ledger.deleted) == DELETED and len(ledger.stored) == STORES
        assert sum(hits.values()) > SEARCHERS * SEARCHES, "searches returned too little"
        problems = _check(http, ledger, hits, "live")
        print(f"live mismatches: {len(problems)}")
        assert problems == [], problems[:20]

    # Stopped (pending counts written) and opened again: the same on disk.
    with (
        ServerThread(create_app(settings, model=model)) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
    ):
        problems = _check(http, ledger, hits, "reopened")
        print(f"reopened mismatches: {len(problems)}")
        assert problems == [], problems[:20]
