from __future__ import annotations

from pathlib import Path

import pytest

from hirag_oz.config import load_settings
from hirag_oz.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HIRAG_CONFIG", "HIRAG_API_KEYS", "HIRAG_HIRAG__L1_SIZE", "HIRAG_SERVER__PORT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.server.host == "127.0.0.1" and s.server.port == 8081
    assert s.token_budget.max_total == 8000 and s.token_budget.retrieved_context == 3750
    assert s.hirag.weights.similarity == 0.6 and s.hirag.weights.frequency == 0.0
    assert s.facts.confidence_threshold == 0.8


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[hirag]\nl1_size = 7\n\n[server]\nport = 9000\n\n[vector_db]\ncollection_prefix = "mem"\n'
    )
    monkeypatch.setenv("HIRAG_HIRAG__L1_SIZE", "20")
    s = load_settings(path)
    assert s.hirag.l1_size == 20  # environment wins over the file
    assert s.server.port == 9000
    assert s.vector_db.collection_prefix == "mem"
    monkeypatch.setenv("HIRAG_CONFIG", str(path))
    assert load_settings().server.port == 9000


def test_api_keys_from_environment_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIRAG_API_KEYS", "k-one, k-two")
    s = load_settings()
    assert [k.get_secret_value() for k in s.server.api_keys] == ["k-one", "k-two"]
    assert "k-one" not in repr(s) and "k-one" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[hirag]\nl1_size = 0\n", "hirag.l1_size"),
        ("[hirag.weights]\nsimilarity = 0.9\n", "hirag.weights"),
        ("[token_budget]\nretrieved_context = 9000\n", "token_budget"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[vector_db]\nurl = "ftp://x"\n', "vector_db.url"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("[hirag\n", "invalid configuration"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError) as err:
        load_settings(path)
    assert names in err.value.message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings(tmp_path / "nope.toml")
