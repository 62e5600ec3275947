"""The README's examples run as printed: the chat loop with curl and with the Python client
against a real server, and the library example in a fresh process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hirag_oz.api.app import create_app
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parent.parent


def test_the_library_example_runs_as_printed(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nimport hirag_oz")
    block = text[start + len("```python\n") : text.index("```", start + 10)]
    in_process = block[: block.index("# The same methods over HTTP")]
    assert "from hirag_oz." not in block, "the README's examples import only from hirag_oz"
    done = subprocess.run(
        [sys.executable, "-c", in_process],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "['User prefers dark mode']"
    assert lines[-1].startswith("NOT_FOUND ")
    assert (tmp_path / "data" / "qdrant").is_dir()


def _block(text: str, after: str, language: str) -> str:
    start = text.index(f"```{language}\n", text.index(after))
    return text[start + len(f"```{language}\n") : text.index("```", start + 4)]


@pytest.fixture
def server(model: OnnxMiniLMEmbedder, tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(  # type: ignore[arg-type]
        server={"data_dir": tmp_path / "data"},
        hirag={"maintenance_enabled": False},
        rate_limit={"enabled": False},
    )
    with ServerThread(create_app(settings, model=model)) as running:
        yield running


def test_the_chat_loop_walk_through_runs_as_printed(server: ServerThread) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    text = (ROOT / "README.md").read_text()
    script = _block(text, "## Walk-through: a chat loop", "sh")
    # The same requests, each answer on a line of its own and an HTTP error failing the run.
    script = script.replace("localhost:8081", f"127.0.0.1:{server.port}")
    script = script.replace("curl -s ", "curl -s -w '\\n' --fail-with-body ")
    done = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(answers) == script.count("curl ")
    prompt = answers[3]
    assert prompt["messages"][0]["role"] == "system"
    sources = {s["source"] for s in prompt["snippets"]}
    assert "retrieved" in sources and "fact" in sources
    assert answers[5]["message_count"] == 2 and answers[6]["messages"][1]["role"] == "assistant"
    assert answers[7]["state"] == "closed"

    loop = _block(text, "The same loop with the Python client", "python")
    loop = loop.replace("http://127.0.0.1:8081", server.url)
    ran = subprocess.run([sys.executable, "-c", loop], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "4"
