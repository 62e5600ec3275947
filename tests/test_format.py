"""The stored data's format: recorded once per migration, a migration cut short runs again,
and data of a newer format is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hirag_oz.errors import ConfigurationError
from hirag_oz.memory.manager import HiRAG
from hirag_oz.store.base import PointRecord, SparseVec
from hirag_oz.store.edge import EdgeStore
from hirag_oz.store.format import MIGRATIONS, SEQ_IN_MICROSECONDS, VERSION, DataFormat

MakeMemory = Callable[..., HiRAG]


def test_a_new_store_records_every_migration_once(make_memory: MakeMemory, tmp_path: Path) -> None:
    memory = make_memory(tmp_path / "d")
    applied = DataFormat(memory.backend).applied()
    assert set(applied) == set(MIGRATIONS) and len(applied) == VERSION
    memory.close()
    reopened = make_memory(tmp_path / "d")
    assert DataFormat(reopened.backend).applied() == applied  # not run, nor recorded, again


def test_a_migration_cut_short_runs_again(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "q")
    try:
        data_format = DataFormat(store)
        runs: list[int] = []

        def crash() -> None:
            runs.append(1)
            raise OSError("killed mid-migration")

        with pytest.raises(OSError):
            data_format.migrate(SEQ_IN_MICROSECONDS, crash)
        assert data_format.applied() == {}
        assert data_format.migrate(SEQ_IN_MICROSECONDS, lambda: runs.append(2)) is True
        assert data_format.migrate(SEQ_IN_MICROSECONDS, lambda: runs.append(3)) is False
        assert runs == [1, 2]
    finally:
        store.close()


def _written_by_a_newer_version(memory: HiRAG) -> None:
    data_format = DataFormat(memory.backend)
    [record] = memory.backend.scroll(data_format.collection, None, 1)
    newer = data_format.applied() | {"9999-from-the-future": 0.0}
    payload = {"applied": newer, "format": len(newer)}
    memory.backend.upsert(
        data_format.collection, [PointRecord(record.id, [1.0], SparseVec([], []), payload)]
    )
    memory.close()


def test_data_of_a_newer_format_is_refused(make_memory: MakeMemory, tmp_path: Path) -> None:
    _written_by_a_newer_version(make_memory(tmp_path / "d"))
    with pytest.raises(ConfigurationError) as refused:
        make_memory(tmp_path / "d")
    message = refused.value.message
    assert f"format {VERSION + 1}" in message and f"format {VERSION}," in message
    assert "9999-from-the-future" in message


def test_the_service_refuses_it_before_any_part_opens(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    from hirag_oz.config import Settings
    from hirag_oz.service import Hirag

    _written_by_a_newer_version(make_memory(tmp_path / "d"))
    settings = Settings(server={"data_dir": tmp_path / "d"})  # type: ignore[arg-type]
    with Hirag(settings) as hirag, pytest.raises(ConfigurationError):
        hirag.store  # noqa: B018
