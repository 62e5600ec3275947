from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from hirag_oz.config import HiragSettings, Settings
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder, default_cache_dir
from hirag_oz.memory.manager import HiRAG
from hirag_oz.store.edge import EdgeStore
from hirag_oz.tokens import TokenCounter, TokenCounterInfo, load_token_counter


class FakeClock:
    """The Clock port, moved by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start

    def now(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ONNX export of the run, shared by the servers the tests start (they inherit it)."""
    path = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def model(model_cache: Path) -> OnnxMiniLMEmbedder:
    """The real MiniLM model (the service's default runtime), loaded once for the whole run."""
    return OnnxMiniLMEmbedder(default_cache_dir())


@pytest.fixture(scope="session")
def embedder(model: OnnxMiniLMEmbedder) -> CachedEmbedder:
    return CachedEmbedder(model)


@pytest.fixture(scope="session")
def token_info() -> TokenCounterInfo:
    return load_token_counter()


@pytest.fixture(scope="session")
def counter(token_info: TokenCounterInfo) -> TokenCounter:
    return token_info.counter


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_memory(
    tmp_path: Path, embedder: CachedEmbedder, counter: TokenCounter, clock: FakeClock
) -> Iterator[object]:
    opened: list[HiRAG] = []

    def make(data_dir: Path | None = None, **settings: object) -> HiRAG:
        store = EdgeStore((data_dir or tmp_path) / "qdrant")
        memory = HiRAG(store, embedder, counter, HiragSettings(**settings), clock=clock)  # type: ignore[arg-type]
        opened.append(memory)
        return memory

    yield make
    for memory in opened:
        with contextlib.suppress(Exception):
            memory.close()


@pytest.fixture
def memory(make_memory: object) -> HiRAG:
    return make_memory()  # type: ignore[operator, no-any-return]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


class ServerThread:
    """A real uvicorn server on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        from hirag_oz.api.app import server_config

        self.port = free_port()
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def keyed_settings(data_dir: Path, api_key: str, **sections: dict[str, object]) -> Settings:
    """Settings for a test server: one API key, no rate limit, no background maintenance;
    `sections` add to (or replace) these."""
    base: dict[str, dict[str, object]] = {
        "server": {"data_dir": data_dir, "api_keys": [api_key]},
        "hirag": {"maintenance_enabled": False},
        "rate_limit": {"enabled": False},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings(**base)  # type: ignore[arg-type]
