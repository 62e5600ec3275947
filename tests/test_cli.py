"""The command line, end to end: `serve` as a real process; ingest/search/stats in-process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from hirag_oz.cli import cli
from hirag_oz.memory.levels import Level
from tests.conftest import free_port, wait_for_port


def test_ingest_search_stats(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lines = [
        {
            "text": "The staging database lives on host db-stage-2",
            "level": "LongTerm",
            "metadata": {"kind": "infra"},
        },
        {"text": "Alice owns the billing service", "agent_id": "default"},
        {
            "text": "Remember to rotate the API keys every 90 days",
            "level": "L1",
            "session_id": "s1",
        },
    ]
    source = tmp_path / "items.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(source), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "stored 3 contexts" in result.output

    result = runner.invoke(
        cli,
        [
            "search-contexts",
            "who owns billing?",
            "--max-tokens",
            "1000",
            "--data-dir",
            str(data),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["contexts"][0]["text"] == "Alice owns the billing service"

    result = runner.invoke(cli, ["stats", "--data-dir", str(data)])
    assert json.loads(result.output)["levels"] == {"Immediate": 1, "ShortTerm": 1, "LongTerm": 1}


def test_ingest_reports_the_bad_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"nope": 1}\n')
    result = CliRunner().invoke(cli, ["ingest", str(source), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code != 0
    assert "bad.jsonl:2" in result.output


def _serve(
    data: Path, log: Path, env: dict[str, str] | None = None, wait: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """`hirag-oz serve` as a real process on a free port, its log in `log`; `wait=False`
    returns before it listens, for a caller that starts several at once."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HIRAG_")} | {
        "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false",
        **(env or {}),
    }
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hirag_oz.cli",
                "serve",
                "--data-dir",
                str(data),
                "--port",
                str(port),
            ],
            env=environment,
            stdout=sink,
            stderr=sink,
        )
    if wait:
        wait_for_port(port, timeout=120)
    return proc, f"http://127.0.0.1:{port}"


def test_serve_stores_and_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "serve.log"

    def start() -> tuple[subprocess.Popen[bytes], str]:
        return _serve(data, log)

    proc, url = start()
    try:
        r = httpx.post(
            f"{url}/api/v1/contexts",
            json={"text": "kept across restarts", "level": "Immediate"},
            timeout=30,
        )
        assert r.status_code == 201
        context_id = r.json()["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    proc, url = start()
    try:
        got = httpx.get(f"{url}/api/v1/contexts/{context_id}", timeout=30).json()
        assert got["text"] == "kept across restarts" and got["level"] == "Immediate"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # Served on loopback without keys: allowed, with one warning per start.
    warnings = [line for line in log.read_text().splitlines() if "no API keys configured" in line]
    assert len(warnings) == 2


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIRAG_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hirag_oz.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr
    assert not (tmp_path / "qdrant").exists(), "nothing is opened before the check"


def test_sigterm_finishes_the_request_in_flight_and_logs_are_json(
    tmp_path: Path, make_memory: Any
) -> None:
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    key = "sk-" + uuid.uuid4().hex
    secret = "the vault code is " + uuid.uuid4().hex
    auth = {"Authorization": f"Bearer {key}"}
    # Access counts written only at shutdown: the stop must write them.
    proc, url = _serve(data, log, {"HIRAG_API_KEYS": key, "HIRAG_HIRAG__ACCESS_FLUSH_SECS": "3600"})
    batch = [
        {"text": f"note {i}: the team discussed item {i} of the quarterly roadmap at length"}
        for i in range(600)
    ]
    result: dict[str, httpx.Response] = {}
    try:
        r = httpx.post(f"{url}/api/v1/contexts", json={"text": secret}, headers=auth, timeout=60)
        assert r.status_code == 201
        secret_id = r.json()["id"]
        found = httpx.post(
            f"{url}/api/v1/contexts/search",
            json={"query": secret, "max_tokens": 200},
            headers=auth,
            timeout=60,
        ).json()["contexts"]
        assert [(c["id"], c["access_count"]) for c in found] == [(secret_id, 1)]

        def send_batch() -> None:
            result["batch"] = httpx.post(
                f"{url}/api/v1/contexts/batch", json={"items": batch}, headers=auth, timeout=120
            )

        sender = threading.Thread(target=send_batch)
        sender.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the batch is being served
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            if re.search(r"^hirag_http_requests_in_flight 2\.0$", metrics, re.M):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the batch request never started")
        proc.send_signal(signal.SIGTERM)
        sender.join(timeout=120)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    response = result["batch"]
    assert response.status_code == 201 and len(response.json()["ids"]) == 600
    # Everything answered before the stop is on disk, the access count included.
    reopened = make_memory(data)
    assert reopened.count() == 601
    stored = reopened.backend.retrieve(reopened.collections[Level.SHORT_TERM], [secret_id])
    assert stored[0].payload["access_count"] == 1

    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    requests = [r for r in records if r.get("event") == "request"]
    stored = next(r for r in requests if r["route"] == "/api/v1/contexts")
    assert stored["status"] == 201 and stored["method"] == "POST"
    assert len(stored["request_id"]) == 32 and stored["duration_ms"] > 0
    assert stored["level"] == "info" and "timestamp" in stored
    assert any(r["route"] == "/api/v1/contexts/batch" and r["status"] == 201 for r in requests)
    text = log.read_text()
    assert key not in text and secret not in text
    assert not any("color_message" in r for r in records)
    assert any(r.get("logger") == "uvicorn.error" for r in records), "uvicorn logs as JSON too"


def test_invalid_config_stops_start_up_with_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[hirag]\nl1_size = -1\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hirag_oz.cli",
            "--config",
            str(config),
            "serve",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "hirag.l1_size" in result.stderr


def test_facts_add_and_query(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    runner = CliRunner()
    add = ["add-fact", "billing", "owned_by", "payments team", "--confidence", "0.9", *data]
    anchor = ["--source-doc", "org.pdf", "--source-anchor", '{"doc_id": "org.pdf", "page": 2}']
    first = runner.invoke(cli, [*add, *anchor])
    again = runner.invoke(cli, [*add, *anchor])
    assert first.exit_code == 0 and first.output.split()[1] == "new", first.output
    assert again.output.split() == [first.output.split()[0], "duplicate"]
    low = runner.invoke(cli, ["add-fact", "a", "b", "c", "--confidence", "0.1", *data])
    assert low.exit_code != 0 and "threshold 0.8" in str(low.exception or low.output)
    shown = runner.invoke(cli, ["query-facts", "--predicate", "owned_by", "--json", *data])
    body = json.loads(shown.output)
    assert body["total"] == 1 and body["facts"][0]["source_anchor"]["page"] == 2
    listed = runner.invoke(cli, ["query-facts", "--text", "who owns invoicing?", *data])
    assert "billing | owned_by | payments team" in listed.output and "1 of 1 facts" in listed.output


def test_vision_index_search_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hirag_oz.vision.ocr import tesseract_available
    from tests.vision_samples import page_of_paragraphs, scanned_pdf, text_pdf

    data = tmp_path / "data"
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(scanned_pdf([page_of_paragraphs([["Invoice 4471 total amount due"]]).image]))
    layer = tmp_path / "layer.pdf"
    layer.write_bytes(text_pdf([["The Porto depot budget grew by nine percent this year."]]))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["index-document", str(layer), "--data-dir", str(data), "--metadata", '{"k": 1}']
    )
    assert result.exit_code == 0, result.output
    assert re.search(
        r"job_[0-9a-f]{32}  succeeded  doc doc_\w+  pages 1/1  regions 1", result.output
    )
    monkeypatch.chdir(tmp_path)  # a relative path is the working directory's
    again = runner.invoke(cli, ["index-document", "layer.pdf", "--data-dir", str(data)])
    assert "(already indexed)" in again.output, again.output
    # A bad --metadata is a ValidationError raised by the command before anything is opened
    # (`hirag-oz`, main, prints "error: ..." and exits 2 on it), no longer a click usage error.
    from hirag_oz.errors import NotFoundError, ValidationError

    bad = runner.invoke(cli, ["index-document", str(layer), "--metadata", "[1]"])
    assert isinstance(bad.exception, ValidationError), bad.output
    assert [e["field"] for e in bad.exception.details["errors"]] == ["metadata"]
    unreadable = runner.invoke(cli, ["index-document", str(layer), "--metadata", "{nope"])
    assert isinstance(unreadable.exception, ValidationError), unreadable.output
    assert "--metadata must be JSON" in unreadable.exception.message
    if tesseract_available():
        scanned = runner.invoke(cli, ["index-document", str(scan), "--data-dir", str(data)])
        assert scanned.exit_code == 0 and "regions 1" in scanned.output

    found = runner.invoke(
        cli, ["search-regions", "depot budget", "--data-dir", str(data), "--json"]
    )
    assert found.exit_code == 0, found.output
    region = json.loads(found.output)["regions"][0]
    assert region["page"] == 1 and "budget" in region["why_relevant"]
    text = runner.invoke(
        cli, ["decode-regions", region["region_id"], "--fidelity", "1x", "--data-dir", str(data)]
    )
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[1] == "The Porto depot budget grew by nine percent this year."
    missing = runner.invoke(cli, ["decode-regions", str(uuid.uuid4()), "--data-dir", str(data)])
    # `hirag-oz` (main) prints "error: no such region" and exits 2 on this error.
    assert isinstance(missing.exception, NotFoundError)
