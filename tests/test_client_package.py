"""The client distribution stands alone: importing it loads nothing of the server, it
depends on httpx and pydantic only, and its errors say what went wrong, not which status."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from hirag_oz_client import errors
from hirag_oz_client.catalogue import OPERATIONS

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"
# The server's stack: none of it may be loaded by, or installed with, the client.
SERVER_STACK = {
    "fastapi",
    "starlette",
    "uvicorn",
    "qdrant_client",
    "qdrant_edge",
    "torch",
    "onnxruntime",
    "onnx",
    "sentence_transformers",
    "transformers",
    "pytesseract",
    "rapidocr_onnxruntime",
    "pypdfium2",
    "PIL",
    "cv2",
    "tiktoken",
    "mcp",
}


def _loaded_by(statement: str) -> set[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return {name.split(".")[0] for name in json.loads(done.stdout)}


@pytest.mark.parametrize(
    "statement",
    [
        "import hirag_oz_client, hirag_oz_client.models, hirag_oz_client.catalogue",
        "from hirag_oz.client import AsyncClient, Client",
        "from hirag_oz import Client, NotFoundError, models",
    ],
)
def test_importing_the_client_loads_none_of_the_server(statement: str) -> None:
    loaded = _loaded_by(statement)
    assert "httpx" in loaded and "pydantic" in loaded  # it did import the client
    assert loaded & SERVER_STACK == set()


def test_the_client_distribution_depends_on_httpx_and_pydantic_only() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]
    }
    assert names == {"httpx", "pydantic"}
    allowed = {"httpx", "pydantic", "hirag_oz_client", *sys.stdlib_module_names}
    for path in (CLIENT / "src").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"


def test_the_server_depends_on_the_client_distribution() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert f"{client['name']}=={client['version']}" in server["dependencies"]


def _error_classes() -> list[type[errors.HiragError]]:
    found = [errors.HiragError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def test_error_classes_name_no_http_status_and_each_travels_one_way() -> None:
    import hirag_oz.api.app
    import hirag_oz.service  # noqa: F401  (the server's own error subclasses, loaded)

    classes = _error_classes()
    assert len(classes) >= 16
    for cls in classes:
        assert "status" not in vars(cls), f"{cls.__name__} names an HTTP status"
        assert "code" not in vars(cls) or cls is errors.HiragError, f"{cls.__name__} names a code"
        if cls.__module__ == errors.__name__:
            assert cls in errors.WIRE, f"{cls.__name__} has no row in the table"
        else:  # a subclass of the server's travels as its nearest listed base
            assert errors.wire(cls("x")) == errors.WIRE[cls.__mro__[1]], cls.__name__
    pairs = [(w.code, w.status) for cls, w in errors.WIRE.items() if cls is not errors.HiragError]
    assert len(pairs) == len(set(pairs))
    for cls, wire in errors.WIRE.items():
        if cls is errors.HiragError:
            continue
        error = errors.from_envelope(cls("x").to_dict(), wire.status)
        assert type(error) is cls and error.status == wire.status
    assert issubclass(errors.UpstreamTimeoutError, errors.UpstreamError)
    assert issubclass(errors.UnavailableError, errors.UpstreamError)


def test_every_operation_declares_its_models_and_errors() -> None:
    names = [op.name for op in OPERATIONS]
    assert len(names) == len(set(names))
    for op in OPERATIONS:
        assert op.doc and op.doc.endswith("."), op.name
        assert set(op.path_fields) <= set(op.request.model_fields), op.name
        assert set(op.query_fields) <= set(op.request.model_fields), op.name
        assert set(op.arguments) <= set(op.request.model_fields), op.name
        assert all(issubclass(e, errors.HiragError) for e in op.errors), op.name


@pytest.mark.slow
def test_a_fresh_venv_with_only_the_client_is_small(tmp_path: Path) -> None:
    """Installs the client distribution from this checkout into a new venv (the registry
    serves httpx and pydantic) and measures it: under 60 MB, pip included."""
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(CLIENT)],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"client venv: {size / 1e6:.1f} MB")
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    packages = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert "hirag-oz-client" in packages and "torch" not in packages
    assert "fastapi" not in packages and "qdrant-client" not in packages
    assert size < 60e6
