"""The command line, end to end: `serve` as a real process; ingest/search/stats in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from hirag_oz.cli import cli
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

    result = runner.invoke(cli, ["search", "who owns billing?", "--data-dir", str(data), "--json"])
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


def test_serve_stores_and_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false"}

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
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
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, timeout=120)
        return proc, f"http://127.0.0.1:{port}"

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
