"""Soak: a long mixed workload on the real hirag-oz service, with the server's resident memory
and open file descriptors sampled as it runs.

Run from the repository root:

    python bench/soak.py [--duration 180 | --requests 20000] [--clients 3] [--sample-every 250]

The bench starts `hirag-oz serve` as a subprocess on a temp data dir and a free loopback port,
then `--clients` threads, each as its own agent, send a mix of requests: store one context,
store a batch, search, build a context, add a fact, query facts, get and delete a context; a
client holding more than LIVE_CONTEXTS contexts clears its three levels. Every
`--sample-every` requests it reads the server's resident memory (VmRSS, and its anonymous and
file-backed parts) and its count of open fds from /proc/<pid>. It prints a table of the samples
and writes them, with the op counts and statuses, to bench/results/soak-<timestamp>.json.

The data stops growing early (contexts are cleared, facts repeat) and the embedding cache is
lowered (`--embedding-cache`) so that it is full early: growth after the warm-up is the
service's, not its data's or a cache's. The store's segments are optimized every 500 writes
instead of 5000, so that the optimizer runs many times in a short run. tests/test_resources.py
runs the same workload, shorter, and asserts the bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

CONTEXTS = "/api/v1/contexts"
LEVELS = ("Immediate", "ShortTerm", "LongTerm")
TOPICS = ("deploy", "billing", "database", "search", "latency", "release", "backup", "alerts")
NOUNS = ("pipeline", "invoice", "replica", "index", "dashboard", "rollout", "snapshot", "pager")
# (op, weight): about one context written per request, and every route of the core service.
MIX = (
    ("store", 20),
    ("store_batch", 8),
    ("search", 28),
    ("build", 10),
    ("fact_add", 10),
    ("fact_query", 6),
    ("get", 10),
    ("delete", 8),
)
BATCH = 20
# Contexts a client keeps: past this it clears its levels. Facts repeat (an insert of a known
# fact changes nothing), so they stop growing too.
LIVE_CONTEXTS = 300
FACT_SUBJECTS, FACT_OBJECTS = 20, 10
# No rate limit (one client address sends everything); maintenance on and consolidating often;
# a small L1, so Immediate writes move items down all along; the store's segments optimized
# (deleted points dropped) every 500 writes instead of 5000.
SERVER_ENV = {
    "HIRAG_RATE_LIMIT__ENABLED": "false",
    "HIRAG_HIRAG__MAINTENANCE_ENABLED": "true",
    "HIRAG_HIRAG__MAINTENANCE_INTERVAL_SECS": "2",
    "HIRAG_HIRAG__L2_TTL_SECS": "10",
    "HIRAG_HIRAG__L1_SIZE": "5",
    "HIRAG_VECTOR_DB__OPTIMIZE_AFTER_POINTS": "500",
}


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process in MB: all of it (VmRSS), and its anonymous and
    file-backed parts (RssAnon: the heap; RssFile: mapped files, here mostly the store's)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_SEGMENT = re.compile(r"/qdrant/([^/]+)/segments/([0-9a-f-]{36})/")


def store_segments(pid: int) -> dict[str, set[str]]:
    """The embedded store's segments the process has mapped, by collection."""
    found: dict[str, set[str]] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        match = _SEGMENT.search(line)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


@dataclass
class Sample:
    requests: int
    elapsed_s: float
    rss_mb: float
    anon_mb: float
    file_mb: float
    fds: int
    segments: int
    """Store segments mapped, over all collections."""


@dataclass
class Tally:
    """What the clients sent and got, shared by them."""

    ops: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_EXPECTED = {"store": 201, "store_batch": 201}


class Client:
    """One client: its own connection, random generator, sessions and stored ids."""

    def __init__(self, url: str, number: int, tally: Tally, seed: int) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        self.number = number
        self.agent = f"soak-{number}"
        self.tally = tally
        self.rng = random.Random(seed)
        self.sent = 0
        self.stored: list[str] = []
        ops, weights = zip(*MIX, strict=True)
        self.ops: tuple[str, ...] = ops
        self.weights: tuple[int, ...] = weights

    def text(self) -> str:
        self.sent += 1
        r = self.rng
        return (
            f"client {self.number} note {self.sent}: the {r.choice(TOPICS)} {r.choice(NOUNS)} "
            f"was reviewed with the {r.choice(TOPICS)} team, ticket {r.randrange(10**6)}"
        )

    def item(self) -> dict[str, Any]:
        return {
            "text": self.text(),
            "level": self.rng.choice(LEVELS),
            "agent_id": self.agent,
            "session_id": f"s{self.rng.randrange(4)}",
        }

    def one(self) -> None:
        """Send one request of the mix."""
        op = self.rng.choices(self.ops, self.weights)[0]
        if op in ("get", "delete") and not self.stored:
            op = "store"
        elif len(self.stored) >= LIVE_CONTEXTS:
            op = "clear"
        query = f"{self.rng.choice(TOPICS)} {self.rng.choice(NOUNS)}"
        http = self.http
        if op == "store":
            r = http.post(CONTEXTS, json=self.item())
            if r.status_code == 201:
                self.stored.append(r.json()["id"])
        elif op == "store_batch":
            r = http.post(f"{CONTEXTS}/batch", json={"items": [self.item() for _ in range(BATCH)]})
            if r.status_code == 201:
                self.stored.extend(r.json()["ids"])
        elif op == "clear":
            for level in LEVELS:
                r = http.post(f"{CONTEXTS}/clear", json={"level": level, "agent_id": self.agent})
                if r.status_code != 200:
                    break
            else:
                self.stored.clear()
        elif op == "search":
            r = http.post(
                f"{CONTEXTS}/search",
                json={"query": query, "max_tokens": 400, "agent_id": self.agent},
            )
        elif op == "build":
            r = http.post(
                "/api/v1/context/build",
                json={
                    "query": query,
                    "system_prompt": "You are the operations assistant.",
                    "agent_id": self.agent,
                    "session_id": "s0",
                    "recent_turns": [{"role": "user", "content": self.text()}],
                },
            )
        elif op == "fact_add":
            r = http.post(
                "/api/v1/facts",
                json={
                    "subject": f"service {self.rng.randrange(FACT_SUBJECTS)}",
                    "predicate": "owned_by",
                    "object": f"team {self.rng.randrange(FACT_OBJECTS)}",
                    "confidence": 0.9,
                },
            )
        elif op == "fact_query":
            r = http.post(
                "/api/v1/facts/query",
                json={"query": {"subject": f"service {self.rng.randrange(FACT_SUBJECTS)}"}},
            )
        elif op == "get":
            r = http.get(f"{CONTEXTS}/{self.rng.choice(self.stored)}")
        else:
            target = self.stored.pop(self.rng.randrange(len(self.stored)))
            r = http.delete(f"{CONTEXTS}/{target}", params={"agent_id": self.agent})
        # A known fact answers 200, a new one 201.
        expected = (200, 201) if op == "fact_add" else (_EXPECTED.get(op, 200),)
        with self.tally.lock:
            self.tally.ops[op] += 1
            self.tally.statuses[str(r.status_code)] += 1
            if r.status_code not in expected:
                self.tally.errors.append(f"{op}: {r.status_code} {r.text[:200]}")

    def close(self) -> None:
        self.http.close()


class Workload:
    """The mix from `clients` threads against one server. `run` may be called again: it
    goes on with the same clients, data and series of samples."""

    def __init__(
        self,
        url: str,
        pid: int,
        *,
        clients: int,
        sample_every: int,
        seed: int = 1,
        on_sample: Callable[[Sample], None] | None = None,
    ) -> None:
        self.pid = pid
        self.sample_every = sample_every
        self.on_sample = on_sample
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.clients = [Client(url, n, self.tally, seed * 100 + n) for n in range(clients)]
        self.sent = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.sample(0)

    def sample(self, requests: int) -> Sample:
        """The server's memory, open fds and mapped store segments now."""
        memory = memory_mb(self.pid)
        s = Sample(
            requests,
            round(time.monotonic() - self._started, 2),
            memory["VmRSS"],
            memory["RssAnon"],
            memory["RssFile"],
            open_fds(self.pid),
            sum(len(ids) for ids in store_segments(self.pid).values()),
        )
        with self._lock:
            self.samples.append(s)
        if self.on_sample is not None:
            self.on_sample(s)
        return s

    def run(self, *, requests: int | None = None, duration_s: float | None = None) -> None:
        """Send `requests` more requests, or send for `duration_s` seconds; sample every
        `sample_every` requests and at the end."""
        if (requests is None) == (duration_s is None):
            raise ValueError("give requests or duration_s")
        last = None if requests is None else self.sent + requests
        deadline = None if duration_s is None else time.monotonic() + duration_s

        def take() -> int | None:
            with self._lock:
                if last is not None and self.sent >= last:
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                self.sent += 1
                return self.sent

        def loop(client: Client) -> None:
            while (number := take()) is not None:
                try:
                    client.one()
                except httpx.HTTPError as exc:
                    with self.tally.lock:
                        self.tally.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if number % self.sample_every == 0:
                    self.sample(number)

        threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.samples[-1].requests != self.sent:
            self.sample(self.sent)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def summary(samples: list[Sample], warmup: int) -> dict[str, Any]:
    """RSS and fd figures from the first sample at or after `warmup` requests to the end."""
    after = [s for s in samples if s.requests >= warmup] or samples[-1:]
    base, end = after[0], after[-1]
    return {
        "warmup_requests": base.requests,
        "rss_mb": {
            "start": samples[0].rss_mb,
            "after_warmup": base.rss_mb,
            "end": end.rss_mb,
            "max": max(s.rss_mb for s in samples),
            "growth_after_warmup": round(end.rss_mb - base.rss_mb, 1),
            "growth_after_warmup_pct": round(100 * (end.rss_mb - base.rss_mb) / base.rss_mb, 1),
            "anon_growth_after_warmup": round(end.anon_mb - base.anon_mb, 1),
            "file_growth_after_warmup": round(end.file_mb - base.file_mb, 1),
        },
        "fds": {
            "start": samples[0].fds,
            "after_warmup": base.fds,
            "end": end.fds,
            "max_after_warmup": max(s.fds for s in after),
        },
    }


def format_samples(samples: list[Sample]) -> str:
    lines = [
        f"{'requests':>9} {'elapsed s':>9} {'RSS MB':>8} {'anon MB':>8} {'file MB':>8} "
        f"{'fds':>5} {'segments':>8}"
    ]
    lines += [
        f"{s.requests:>9} {s.elapsed_s:>9.1f} {s.rss_mb:>8.1f} {s.anon_mb:>8.1f} "
        f"{s.file_mb:>8.1f} {s.fds:>5} {s.segments:>8}"
        for s in samples
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    data_dir: Path, log: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """`hirag-oz serve` on a free loopback port; returns once /health/live answers."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HIRAG_")} | env
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hirag_oz.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"the server was not ready after 180 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--duration", type=float, help="seconds to run (default 180)")
    budget.add_argument("--requests", type=int, help="requests to send instead of a duration")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--sample-every", type=int, default=250)
    parser.add_argument(
        "--warmup", type=int, default=3000, help="requests before the baseline of the summary"
    )
    parser.add_argument("--embedding-cache", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="default bench/results/soak-<timestamp>.json")
    args = parser.parse_args(argv)
    if args.duration is None and args.requests is None:
        args.duration = 180.0
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(__file__).parent / "results" / f"soak-{stamp}.json"
    env = SERVER_ENV | {"HIRAG_EMBEDDING__CACHE_SIZE": str(args.embedding_cache)}

    with tempfile.TemporaryDirectory(prefix="hirag-soak-") as tmp:
        log = Path(tmp) / "server.log"
        proc, url = start_server(Path(tmp) / "data", log, env)
        budget_text = f"{args.requests} requests" if args.requests else f"{args.duration:g} s"
        print(f"server pid {proc.pid} at {url}; {budget_text} from {args.clients} clients")
        print(format_samples([]).splitlines()[0], flush=True)
        workload = Workload(
            url,
            proc.pid,
            clients=args.clients,
            sample_every=args.sample_every,
            seed=args.seed,
            on_sample=lambda s: print(format_samples([s]).splitlines()[1], flush=True),
        )
        try:
            workload.run(requests=args.requests, duration_s=args.duration)
        finally:
            workload.close()
            exit_code = stop_server(proc)
        samples, tally = workload.samples, workload.tally
        problems = [
            line[:300]
            for line in log.read_text(errors="replace").splitlines()
            if '"level": "error"' in line or "Traceback" in line
        ]

    figures = summary(samples, args.warmup)
    sent = samples[-1].requests
    elapsed = samples[-1].elapsed_s
    print()
    print(format_samples(samples))
    rss, fds = figures["rss_mb"], figures["fds"]
    print(
        f"\n{sent} requests in {elapsed:.0f} s ({sent / elapsed:.1f} req/s), "
        f"{len(tally.errors)} errors, server exit {exit_code}, {len(problems)} error log lines"
    )
    print(
        f"RSS MB: start {rss['start']}, after {figures['warmup_requests']} requests "
        f"{rss['after_warmup']}, end {rss['end']}, max {rss['max']} "
        f"(growth after warm-up {rss['growth_after_warmup']} MB, "
        f"{rss['growth_after_warmup_pct']}%: anonymous {rss['anon_growth_after_warmup']}, "
        f"file-backed {rss['file_growth_after_warmup']})"
    )
    print(
        f"open fds: start {fds['start']}, after warm-up {fds['after_warmup']}, end {fds['end']}, "
        f"max after warm-up {fds['max_after_warmup']}"
    )
    print(f"ops {dict(tally.ops)}; statuses {dict(tally.statuses)}")
    for error in tally.errors[:5]:
        print(f"  error: {error}")
    report = {
        "bench": "soak",
        "started": stamp,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "server_env": env,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "requests": sent,
        "elapsed_s": elapsed,
        "ops": dict(tally.ops),
        "statuses": dict(tally.statuses),
        "errors": tally.errors[:50],
        "error_count": len(tally.errors),
        "server_exit_code": exit_code,
        "server_error_log_lines": problems[:20],
        "summary": figures,
        "samples": [asdict(s) for s in samples],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if not tally.errors and exit_code == 0 and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
