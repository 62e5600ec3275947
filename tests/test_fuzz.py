"""Fuzzing the running service from its own OpenAPI document (schemathesis): whatever a
client sends, the answer is never a 5xx, and every error carries the envelope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hirag_oz.api.app import create_app
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.keys import KeyStore
from tests.conftest import ServerThread


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """The body of POST /api/v1/import (a dump) as the fuzzer made it: bytes, or text."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def fuzz_server(
    model: OnnxMiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    settings = Settings(  # type: ignore[arg-type]
        server={"data_dir": data, "api_keys": ["fuzz-default-tenant-key"]},
        hirag={"maintenance_enabled": False},
        rate_limit={"requests_per_minute": 1_000_000},
    )
    # The fuzzer's key is an admin key of a tenant of its own: every route, through the
    # tenant's view of the service.
    _, key = KeyStore(data / "keys.json").create("admin", name="fuzzer", tenant="fuzz")
    with ServerThread(create_app(settings, model=model)) as server:
        server.key = key  # type: ignore[attr-defined]
        yield server


# One hypothesis run per operation, driven by hand: schemathesis's own pytest plugin does not
# work with this pytest version.
def test_no_server_errors_and_one_error_shape(fuzz_server: ServerThread) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    seen: dict[str, set[int]] = {}

    def fuzz(operation: Any, mode: schemathesis.GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure reproduces
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {fuzz_server.key}"},  # type: ignore[attr-defined]
                # Some rules cannot be said in JSON Schema (metadata size and depth, the
                # timestamp range, filter shapes); the service answers them with 422.
                excluded_checks=[positive_data_acceptance],
            )
            seen.setdefault(label, set()).add(response.status_code)
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"code", "message", "details"}, body
                assert isinstance(body["details"], dict)

        try:
            check()
        except Unsatisfiable:
            # An operation with no inputs has no invalid requests to make.
            assert mode is schemathesis.GenerationMode.NEGATIVE, label

    for operation in operations:
        for mode in schemathesis.GenerationMode:  # valid requests, then invalid ones
            fuzz(operation, mode)
    assert all(max(codes) < 500 for codes in seen.values()), seen
    assert len(seen) == len(operations)
    # The fuzzer got past auth and validation, not only into error paths.
    assert 201 in seen["POST /api/v1/contexts"]
    assert 422 in seen["POST /api/v1/contexts/search"]
