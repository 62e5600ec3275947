"""HTTP load on the real hirag-oz service: concurrent clients mixing store and search.

Run from the repository root:

    python bench/http_load.py [--clients 1,4,8] [--duration 20] [--preload 10000]

The bench starts `hirag-oz serve` as a subprocess on a temp data dir and a free port, preloads
contexts through the batch endpoint, and then runs each client level in turn against the same
server. It prints one table row per level and op, and writes every number, with machine info,
to bench/results/http_load-<timestamp>.json. See bench/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from store_search import (
    chunks,
    console,
    fmt_ms,
    machine_info,
    make_queries,
    make_texts,
    parse_sizes,
    percentiles,
    write_report,
)

API = "/api/v1/contexts"
MAX_TOKENS = 1000
LEVELS = ("ShortTerm", "LongTerm", "Immediate")
LEVEL_WEIGHTS = (0.6, 0.3, 0.1)
SESSIONS_PER_AGENT = 10
OPS = ("store", "search", "all")
TARGET_CLIENTS = 8
TARGET_SEARCH_RPS = 150.0
TARGET_P99_MS = 250.0
TARGET_TEXT = (
    f"≥ {TARGET_SEARCH_RPS:g} search req/s with p99 ≤ {TARGET_P99_MS:g} ms and 0 errors "
    f"at {TARGET_CLIENTS} clients"
)
RATE_LIMIT_NOTE = (
    "rate limiting is off (HIRAG_RATE_LIMIT__ENABLED=false): with the default settings one key "
    "is capped at 600 requests/minute (10 req/s, burst 100), far below this load"
)
# Log lines of the server that point at a problem, counted and sampled into the report.
SERVER_LOG_MARKERS = ("Traceback", "ERROR", "CRITICAL", "WARNING", "unexpected error")
# Cores used by other processes above which a span is flagged as measured on a busy machine.
OTHER_CPU_WARN = 0.25


# ----------------------------------------------------------------------------- request data


class UniqueStream:
    """An endless supply of distinct strings drawn batch by batch from `make(n, seed)`.

    Every text the bench sends is sent once. The service puts an LRU cache in front of the
    embedder, keyed by the exact text; a few repeated query strings would be served from that
    cache and make search look faster than it is for real, varied traffic.
    """

    def __init__(
        self, make: Callable[[int, int], list[str]], seed: int, seen: set[str] | None = None
    ) -> None:
        self._make = make
        self._seed = seed
        self._seen = seen if seen is not None else set()
        self._buffer: Iterator[str] = iter(())
        self.issued = 0

    def __next__(self) -> str:
        while True:
            for text in self._buffer:
                if text not in self._seen:
                    self._seen.add(text)
                    self.issued += 1
                    return text
            self._seed += 1
            self._buffer = iter(self._make(1000, self._seed))

    def __iter__(self) -> UniqueStream:
        return self


def pick_level(rng: random.Random) -> str:
    return rng.choices(LEVELS, LEVEL_WEIGHTS)[0]


def preload_items(n: int, seed: int, agents: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    items = []
    for text in make_texts(n, seed):
        agent = rng.randrange(agents)
        items.append(
            {
                "text": text,
                "level": pick_level(rng),
                "agent_id": f"agent-{agent:02d}",
                "session_id": f"session-{agent:02d}-{rng.randrange(SESSIONS_PER_AGENT)}",
            }
        )
    return items


# ---------------------------------------------------------------------------------- server


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def system_busy_s() -> float | None:
    """CPU seconds all processes of the machine spent busy so far (Linux /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by the server, by this bench and by everything else while it runs.

    The bench shares the machine with the server; "other" shows when a third party (tests,
    builds) competed for the cores, which makes the figures of that span not comparable.
    """

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.wall = time.perf_counter()
        self.server = proc_cpu_s(server_pid)
        self.bench = time.process_time()
        self.system = system_busy_s()

    def read(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.wall
        server = proc_cpu_s(self.pid)
        bench = time.process_time() - self.bench
        system = system_busy_s()
        server_s = None if server is None or self.server is None else server - self.server
        out: dict[str, float | None] = {
            "wall_s": round(wall, 2),
            "server_cpu_s": None if server_s is None else round(server_s, 2),
            "server_cores": None if server_s is None else round(server_s / wall, 2),
            "bench_cores": round(bench / wall, 2),
            "other_cores": None,
        }
        if server_s is not None and system is not None and self.system is not None:
            out["other_cores"] = round(max(0.0, system - self.system - server_s - bench) / wall, 2)
        return out


def describe_cpu(cpu: dict[str, float | None]) -> str:
    text = f"CPU cores: server {cpu['server_cores']}, bench {cpu['bench_cores']}"
    other = cpu["other_cores"]
    if other is not None:
        text += f", other processes {other}"
        if other > OTHER_CPU_WARN:
            text += " [yellow](busy machine: these figures are not comparable)[/yellow]"
    return text


class Server:
    """`python -m hirag_oz.cli serve` in a subprocess, its output going to a log file."""

    def __init__(self, data_dir: Path, host: str, port: int, api_key: str) -> None:
        self.url = f"http://{host}:{port}"
        self.log_path = data_dir.parent / "server.log"
        env = dict(os.environ)
        env.pop("HIRAG_CONFIG", None)  # only the settings below and the defaults
        env.update(
            {
                "HIRAG_API_KEYS": api_key,
                "HIRAG_RATE_LIMIT__ENABLED": "false",
                "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false",
            }
        )
        self.command = [
            sys.executable,
            "-m",
            "hirag_oz.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--host",
            host,
            "--port",
            str(port),
        ]
        self._log = self.log_path.open("wb")
        started = time.perf_counter()
        # Own session: a Ctrl-C on the bench reaches only the bench, which then stops the
        # server with SIGTERM like a supervisor would.
        self.proc = subprocess.Popen(
            self.command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = started

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until GET /health/live answered 200; raises if the server dies or stalls."""
        deadline = self.started + timeout_s
        with httpx.Client(base_url=self.url, timeout=2.0) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode} before it was ready:\n"
                        + self.log_tail()
                    )
                try:
                    if http.get("/health/live").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"server not ready after {timeout_s:.0f} s:\n" + self.log_tail()
                    )
                time.sleep(0.25)

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM, wait for the exit; SIGKILL after `timeout_s`. The exit code is reported."""
        result: dict[str, Any] = {"signal": "SIGTERM", "killed": False}
        if self.proc.poll() is not None:
            result["already_exited"] = True
        else:
            started = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                result["killed"] = True
            result["shutdown_s"] = round(time.perf_counter() - started, 2)
        result["exit_code"] = self.proc.returncode
        self._log.close()
        return result

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_problems(self, sample: int = 20) -> dict[str, Any]:
        """Counts of log lines with a problem marker (ERROR, Traceback, ...) and the first few."""
        counts: Counter[str] = Counter()
        lines: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            hits = [m for m in SERVER_LOG_MARKERS if m in line]
            if hits:
                counts.update(hits)
                if len(lines) < sample:
                    lines.append(line[:500])
        return {"marker_counts": dict(counts), "first_lines": lines}


# ------------------------------------------------------------------------------------ load


@dataclass(slots=True)
class Sample:
    op: str
    started: float  # perf_counter seconds
    latency_ms: float
    status: int | None
    error: str | None
    returned: int | None = None  # contexts in a search answer


async def send(
    http: httpx.AsyncClient, op: str, path: str, body: dict[str, Any], expect: int
) -> Sample:
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    returned: int | None = None
    try:
        response = await http.post(path, json=body)
        status = response.status_code
        if status != expect:
            error = f"HTTP {status}: {response.text[:200]}"
        elif op == "search":
            returned = len(response.json()["contexts"])
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    except (ValueError, KeyError, TypeError) as exc:  # 2xx with a body not as documented
        error = f"bad body: {type(exc).__name__}: {exc}"[:200]
    latency_ms = (time.perf_counter() - started) * 1000
    return Sample(op, started, latency_ms, status, error, returned)


@dataclass
class LoadPlan:
    url: str
    headers: dict[str, str]
    agents: int
    store_ratio: float
    timeout_s: float
    texts: UniqueStream
    queries: UniqueStream


async def client_loop(plan: LoadPlan, rng: random.Random, until: float, out: list[Sample]) -> None:
    """One client: one connection (keep-alive), one request at a time, until `until`."""
    async with httpx.AsyncClient(
        base_url=plan.url,
        headers=plan.headers,
        timeout=plan.timeout_s,
        limits=httpx.Limits(max_connections=1),
    ) as http:
        body: dict[str, Any]
        while time.perf_counter() < until:
            agent = f"agent-{rng.randrange(plan.agents):02d}"
            if rng.random() < plan.store_ratio:
                body = {"text": next(plan.texts), "level": pick_level(rng), "agent_id": agent}
                out.append(await send(http, "store", API, body, 201))
            else:
                body = {"query": next(plan.queries), "max_tokens": MAX_TOKENS, "agent_id": agent}
                out.append(await send(http, "search", f"{API}/search", body, 200))


async def run_level(
    plan: LoadPlan, clients: int, warmup_s: float, duration_s: float, seed: int
) -> tuple[list[Sample], float, float]:
    """Warm-up then the measured window; returns all samples and the window's bounds."""
    begin = time.perf_counter()
    window_start = begin + warmup_s
    window_end = window_start + duration_s
    samples: list[Sample] = []
    await asyncio.gather(
        *(
            client_loop(plan, random.Random(seed * 1000 + i), window_end, samples)
            for i in range(clients)
        )
    )
    return samples, window_start, window_end


def summarize(samples: Sequence[Sample], duration_s: float) -> dict[str, Any]:
    """Per op: counts, rate and latency percentiles (every request, failed ones included)."""
    out: dict[str, Any] = {}
    for op in OPS:
        chosen = [s for s in samples if op in ("all", s.op)]
        errors = [s for s in chosen if s.error is not None]
        row: dict[str, Any] = {
            "requests": len(chosen),
            "req_per_s": round(len(chosen) / duration_s, 2),
            "errors": len(errors),
            "statuses": dict(Counter(str(s.status) for s in chosen)),
        }
        if chosen:
            row.update(percentiles([s.latency_ms for s in chosen]))
        returned = [s.returned for s in chosen if s.returned is not None]
        if returned:
            row["mean_contexts_returned"] = round(statistics.mean(returned), 2)
        out[op] = row
    messages = Counter(s.error for s in samples if s.error is not None)
    out["error_messages"] = [{"count": n, "error": msg} for msg, n in messages.most_common(10)]
    return out


async def measure_levels(
    plan: LoadPlan, args: argparse.Namespace, server: Server, report: dict[str, Any]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        order = list(args.clients)
        if rnd % 2:  # alternate so the growing store and machine noise hit every level alike
            order.reverse()
        for clients in order:
            console.print(
                f"[bold]{clients} client(s)[/bold], round {rnd + 1}/{args.rounds}: "
                f"{args.warmup:g} s warm-up + {args.duration:g} s measured ..."
            )
            meter = CpuMeter(server.pid)
            samples, start, end = await run_level(
                plan, clients, args.warmup, args.duration, args.seed + 100 * rnd + clients
            )
            cpu = meter.read()
            measured = [s for s in samples if start <= s.started < end]
            warm = [s for s in samples if s.started < start]
            level: dict[str, Any] = {
                "clients": clients,
                "round": rnd + 1,
                "duration_s": args.duration,
                "warmup_requests": len(warm),
                "warmup_errors": sum(1 for s in warm if s.error is not None),
                "stores_ok": sum(1 for s in samples if s.op == "store" and s.error is None),
                # over warm-up + window, in cores (1.0 = one core busy the whole time)
                "cpu": cpu,
                # server CPU time per request served during warm-up + window
                "server_cpu_ms_per_request": None
                if cpu["server_cpu_s"] is None or not samples
                else round(cpu["server_cpu_s"] * 1000 / len(samples), 1),
                **summarize(measured, args.duration),
            }
            results.append(level)
            a = level["all"]
            console.print(
                f"  {a['requests']} requests, {a['req_per_s']:.1f} req/s, "
                f"p50 {fmt_ms(a.get('p50_ms'))} ms, p99 {fmt_ms(a.get('p99_ms'))} ms, "
                f"{a['errors']} errors"
            )
            console.print(
                f"  {describe_cpu(cpu)}; server CPU per request "
                f"{level['server_cpu_ms_per_request']} ms"
            )
            for e in level["error_messages"][:3]:
                console.print(f"  {e['count']} x {e['error']}", style="red", markup=False)
            report["levels"] = results
            save_partial(args, report)  # partial results survive an interrupted run
    return results


def merge_rounds(results: list[dict[str, Any]], clients: Sequence[int]) -> list[dict[str, Any]]:
    """One row per client level: median over rounds of every figure (a single round as is)."""
    merged = []
    for c in clients:
        runs = [r for r in results if r["clients"] == c]
        row: dict[str, Any] = {"clients": c, "rounds": len(runs)}
        for op in OPS:
            figures: dict[str, Any] = {}
            for key in ("requests", "req_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
                values = [r[op][key] for r in runs if key in r[op]]
                figures[key] = statistics.median(values) if values else None
            figures["errors"] = sum(r[op]["errors"] for r in runs)  # a sum: any error counts
            figures["runs_req_per_s"] = [r[op]["req_per_s"] for r in runs]
            row[op] = figures
        for key in ("server_cores", "other_cores"):
            values = [r["cpu"][key] for r in runs if r["cpu"][key] is not None]
            row[f"{key.removesuffix('_cores')}_cpu_cores"] = (
                statistics.median(values) if values else None
            )
        merged.append(row)
    return merged


def fmt_cores(value: float | None, warn: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    return f"[yellow]{text}[/yellow]" if warn and value > OTHER_CPU_WARN else text


def target_verdict(merged: Sequence[dict[str, Any]]) -> dict[str, Any]:
    row = next((r for r in merged if r["clients"] == TARGET_CLIENTS), None)
    if row is None:
        return {"measured": False}
    search = row["search"]
    reasons = []
    if search["req_per_s"] < TARGET_SEARCH_RPS:
        reasons.append(f"{search['req_per_s']:.1f} search req/s < {TARGET_SEARCH_RPS:g}")
    if search["p99_ms"] is None:
        reasons.append("no search requests")
    elif search["p99_ms"] > TARGET_P99_MS:
        reasons.append(f"search p99 {fmt_ms(search['p99_ms'])} ms > {TARGET_P99_MS:g}")
    if row["all"]["errors"]:
        reasons.append(f"{row['all']['errors']} errors")
    return {"measured": True, "pass": not reasons, "reasons": reasons}


def print_load_table(
    merged: Sequence[dict[str, Any]], args: argparse.Namespace, verdict: dict[str, Any]
) -> None:
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    table = Table(
        title=f"HTTP load: {args.duration:g} s per level after {args.warmup:g} s warm-up, "
        f"store ratio {args.store_ratio:g}, {args.preload:,} preloaded{rounds}; latency in ms"
    )
    for col in [
        "clients",
        "op",
        "requests",
        "req/s",
        "p50",
        "p95",
        "p99",
        "max",
        "errors",
        "server CPU",
        "other CPU",
        "target",
    ]:
        table.add_column(col, justify="left" if col in ("op", "target") else "right")
    for index, row in enumerate(merged):
        if index:
            table.add_section()
        for op in OPS:
            f = row[op]
            target = ""
            if op == "search" and row["clients"] == TARGET_CLIENTS and verdict["measured"]:
                target = "[green]PASS[/green]" if verdict["pass"] else "[red]FAIL[/red]"
            rate = f"{f['req_per_s']:.1f}"
            if len(f["runs_req_per_s"]) > 1:
                rate += " (" + " ".join(f"{v:.0f}" for v in f["runs_req_per_s"]) + ")"
            table.add_row(
                str(row["clients"]) if op == "store" else "",
                op,
                f"{f['requests']:.0f}" if f["requests"] is not None else "-",
                rate,
                fmt_ms(f["p50_ms"]),
                fmt_ms(f["p95_ms"]),
                fmt_ms(f["p99_ms"]),
                fmt_ms(f["max_ms"]),
                f"[red]{f['errors']}[/red]" if f["errors"] else "0",
                fmt_cores(row["server_cpu_cores"]) if op == "all" else "",
                fmt_cores(row["other_cpu_cores"], warn=True) if op == "all" else "",
                target,
            )
    console.print(table)
    console.print(
        "CPU columns are cores busy during warm-up + window (2 = both cores of a 2-core box): "
        "the server process, and other processes besides the server and this bench."
    )
    if not verdict["measured"]:
        line = f"not measured (no {TARGET_CLIENTS}-client level)"
    elif verdict["pass"]:
        line = "[green]PASS[/green]"
    else:
        line = "[red]FAIL[/red] (" + "; ".join(verdict["reasons"]) + ")"
    console.print(f"Target: {TARGET_TEXT}: {line} [dim](information only)[/dim]")


# ----------------------------------------------------------------------------- preload etc.


async def preload(
    url: str, headers: dict[str, str], items: list[dict[str, Any]], batch: int, timeout_s: float
) -> dict[str, Any]:
    """Sequential POST /contexts/batch; the rate counts the contexts the server accepted."""
    latencies: list[float] = []
    stored = 0
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s) as http:
        started = time.perf_counter()
        for part in chunks(items, batch):
            sample = await send(http, "batch", f"{API}/batch", {"items": list(part)}, 201)
            latencies.append(sample.latency_ms)
            if sample.error is None:
                stored += len(part)
            else:
                errors.append(sample.error)
        elapsed = time.perf_counter() - started
    result: dict[str, Any] = {
        "contexts": len(items),
        "stored": stored,
        "batch": batch,
        "requests": len(latencies),
        "errors": len(errors),
        "error_messages": errors[:10],
        "elapsed_s": round(elapsed, 2),
        "contexts_per_s": round(stored / elapsed, 1) if elapsed > 0 else None,
    }
    if latencies:
        result["batch_latency"] = percentiles(latencies)
    return result


async def check_auth(url: str, api_key: str) -> dict[str, Any]:
    """GET an unknown id without, with a wrong and with the key: 401, 401, 404 if enforced."""
    path = f"{API}/{uuid.uuid4()}"
    statuses: dict[str, int | str] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        for name, key in (("without_key", None), ("wrong_key", "wrong-key"), ("with_key", api_key)):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            try:
                statuses[name] = (await http.get(path, headers=headers)).status_code
            except httpx.HTTPError as exc:
                statuses[name] = f"{type(exc).__name__}: {exc}"[:200]
    return {
        "statuses": statuses,
        "enforced": statuses["without_key"] == 401
        and statuses["wrong_key"] == 401
        and statuses["with_key"] == 404,
    }


def find_levels(body: Any) -> dict[str, int] | None:
    """The {level: count} mapping anywhere in the /health body (its shape is not fixed)."""
    if isinstance(body, dict):
        levels = body.get("levels")
        if isinstance(levels, dict) and all(isinstance(v, int) for v in levels.values()):
            return levels
        for value in body.values():
            found = find_levels(value)
            if found is not None:
                return found
    return None


async def after_run(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """/health level counts and the cache lines of /metrics, once the load is over."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60.0) as http:
        try:
            response = await http.get("/health")
            out["health_status"] = response.status_code
            out["levels"] = find_levels(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            out["health_error"] = f"{type(exc).__name__}: {exc}"[:200]
        try:
            response = await http.get("/metrics")
            if response.status_code == 200:
                out["metrics_cache_lines"] = [
                    line
                    for line in response.text.splitlines()
                    if "cache" in line and not line.startswith("#")
                ][:40]
        except httpx.HTTPError:
            pass
    return out


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("httpx", "fastapi", "uvicorn", "starlette", "pydantic"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------------------------ main


async def bench(args: argparse.Namespace, report: dict[str, Any]) -> None:
    api_key = secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {api_key}"}
    with tempfile.TemporaryDirectory(prefix="hirag-http-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        server = Server(data_dir, args.host, free_port(args.host), api_key)
        report["server"] = {
            "command": [Path(server.command[0]).name, *server.command[1:]],
            "env": {
                "HIRAG_API_KEYS": "<random>",
                "HIRAG_RATE_LIMIT__ENABLED": "false",
                "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false",
            },
        }
        console.print(f"starting: {' '.join(report['server']['command'])}")
        try:
            ready_s = server.wait_ready(args.startup_timeout)
            report["server"]["ready_s"] = round(ready_s, 2)
            console.print(f"  /health/live answered 200 after {ready_s:.1f} s (pid {server.pid})")
            auth = await check_auth(server.url, api_key)
            report["auth"] = auth
            st = auth["statuses"]
            console.print(
                f"  API key check: {st['without_key']} without a key, {st['wrong_key']} with a "
                f"wrong one, {st['with_key']} with the right one -> keys "
                + ("enforced" if auth["enforced"] else "[red]NOT enforced as expected[/red]")
            )
            console.print(f"  {RATE_LIMIT_NOTE}")
            console.print(
                "  background maintenance is off (HIRAG_HIRAG__MAINTENANCE_ENABLED=false)"
            )

            if args.preload > 0:
                items = preload_items(args.preload, args.seed, args.agents)
                console.print(
                    f"[bold]preload[/bold]: {args.preload:,} contexts over {args.agents} agents "
                    f"in batches of {args.batch} ..."
                )
                meter = CpuMeter(server.pid)
                pre = await preload(server.url, headers, items, args.batch, args.timeout)
                pre["cpu"] = meter.read()
                report["preload"] = pre
                console.print(
                    f"  stored {pre['stored']:,} in {pre['elapsed_s']:.1f} s = "
                    f"{pre['contexts_per_s']} contexts/s; batch p50 "
                    f"{fmt_ms(pre['batch_latency']['p50_ms'])} ms, max "
                    f"{fmt_ms(pre['batch_latency']['max_ms'])} ms; {pre['errors']} errors"
                )
                console.print(f"  {describe_cpu(pre['cpu'])}")
                for msg in pre["error_messages"][:3]:
                    console.print(f"  {msg}", style="red", markup=False)
                seen = {item["text"] for item in items}
            else:
                seen = set()
            save_partial(args, report)

            plan = LoadPlan(
                url=server.url,
                headers=headers,
                agents=args.agents,
                store_ratio=args.store_ratio,
                timeout_s=args.timeout,
                # make_texts restarts its "(note i)" numbers in every batch; the seeds make the
                # sentences differ, and UniqueStream drops the (unlikely) exact repeats.
                texts=UniqueStream(make_texts, args.seed + 10_000, seen),
                # Distinct queries over the corpus vocabulary, never a few repeated strings:
                # the embedding cache would answer those (see UniqueStream).
                queries=UniqueStream(make_queries, args.seed + 20_000),
            )
            results = await measure_levels(plan, args, server, report)
            report["queries_sent"] = plan.queries.issued

            final = await after_run(server.url, headers)
            report["after_run"] = final
            counts = final.get("levels")
            expected = report.get("preload", {}).get("stored", 0) + sum(
                r["stores_ok"] for r in results
            )
            report["count_check"] = {
                "levels": counts,
                "expected_total": expected,
                "ok": counts is not None and sum(counts.values()) == expected,
            }
            report["server"]["rss_mb_at_end"] = proc_rss_mb(server.pid)
        finally:
            report["server"]["stop"] = server.stop()
            report["server"]["log"] = server.log_problems()

    merged = merge_rounds(report.get("levels", []), args.clients)
    verdict = target_verdict(merged)
    report["summary"] = merged
    report["target_result"] = verdict


def save_partial(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The report so far to `args.out`; callers that keep the report themselves pass None."""
    if args.out is not None:
        write_report(args.out, report)


def build_parser() -> argparse.ArgumentParser:
    """The command line; other benches build their `bench()` arguments with it too."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--clients",
        type=parse_sizes,
        default=[8],
        help="concurrent clients; a list such as 1,4,8 runs each level in turn (default 8)",
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds per level (default 20)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="unmeasured seconds of the same load before each level (default 3)",
    )
    parser.add_argument(
        "--preload",
        type=int,
        default=10_000,
        help="contexts stored through the batch endpoint before the load (default 10000)",
    )
    parser.add_argument(
        "--batch", type=int, default=256, help="items per preload batch request (max 1000)"
    )
    parser.add_argument(
        "--store-ratio",
        type=float,
        default=0.2,
        help="share of requests that store one context; the rest search (default 0.2)",
    )
    parser.add_argument(
        "--agents", type=int, default=8, help="agent_ids the data and the requests spread over"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measured windows per level, in alternating order; the table shows medians",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in seconds (an error)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for GET /health/live to answer 200",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report (default bench/results/http_load-<UTC timestamp>.json)",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients needs positive numbers")
    if not 1 <= args.batch <= 1000:
        parser.error("--batch must be 1..1000")
    if not 0.0 <= args.store_ratio <= 1.0:
        parser.error("--store-ratio must be within 0..1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    now = datetime.now(UTC)
    if args.out is None:
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        args.out = Path(__file__).resolve().parent / "results" / f"http_load-{stamp}.json"

    began = time.perf_counter()
    info = machine_info()
    info["packages"].update(versions())
    console.print(
        f"[bold]hirag-oz http_load[/bold] on {info['cpu_count']} CPUs ({info['cpu_model']}), "
        f"Python {info['python']}; the load generator shares the machine with the server"
    )
    report: dict[str, Any] = {
        "bench": "http_load",
        "started_at": now.isoformat(timespec="seconds"),
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "request": {
            "store": "POST /api/v1/contexts {text, level, agent_id} -> 201",
            "search": f"POST /api/v1/contexts/search {{query, max_tokens: {MAX_TOKENS}, "
            "agent_id}} -> 200",
            "levels": dict(zip(LEVELS, LEVEL_WEIGHTS, strict=True)),
        },
        "notes": [
            RATE_LIMIT_NOTE,
            "background maintenance is off (HIRAG_HIRAG__MAINTENANCE_ENABLED=false)",
            "every query and stored text is distinct, so the embedding cache never hits",
            "latency percentiles include failed requests; req/s counts requests started in the "
            "measured window",
        ],
        "targets": {
            "clients": TARGET_CLIENTS,
            "search_req_per_s": TARGET_SEARCH_RPS,
            "search_p99_ms": TARGET_P99_MS,
            "errors": 0,
        },
    }
    try:
        asyncio.run(bench(args, report))
    finally:
        report["elapsed_s"] = round(time.perf_counter() - began, 1)
        write_report(args.out, report)

    console.rule("results")
    pre = report.get("preload")
    if pre:
        console.print(
            f"Preload: {pre['stored']:,} of {pre['contexts']:,} contexts in {pre['requests']} "
            f"batch requests of {pre['batch']}: {pre['elapsed_s']:.1f} s, "
            f"{pre['contexts_per_s']} contexts/s, {pre['errors']} errors; {describe_cpu(pre['cpu'])}"
        )
    print_load_table(report["summary"], args, report["target_result"])
    console.print(f"Note: {RATE_LIMIT_NOTE}.")
    auth = report.get("auth", {})
    if auth and not auth["enforced"]:
        console.print(f"Note: API keys were not enforced as expected: {auth['statuses']}.")
    check = report["count_check"]
    console.print(
        f"Stored contexts after the run: {sum((check['levels'] or {}).values()):,} "
        f"(expected {check['expected_total']:,}) "
        + ("[green]ok[/green]" if check["ok"] else "[red]MISMATCH[/red]")
    )
    cache_lines = report.get("after_run", {}).get("metrics_cache_lines")
    if cache_lines:
        console.print("Embedding cache (/metrics): " + ", ".join(cache_lines), highlight=False)
    stop = report["server"]["stop"]
    log = report["server"]["log"]
    console.print(
        f"Server: stopped with SIGTERM, exit code {stop['exit_code']}"
        + (" (killed after timeout)" if stop["killed"] else "")
        + f", shutdown {stop.get('shutdown_s', '-')} s, RSS at end "
        f"{report['server'].get('rss_mb_at_end')} MB; log markers {log['marker_counts'] or 'none'}"
    )
    for line in log["first_lines"][:5]:
        console.print(f"  {line}", markup=False, highlight=False)
    console.print(f"wrote {args.out} (total {report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
