"""The README's library example runs as printed (its in-process part, in a fresh process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
