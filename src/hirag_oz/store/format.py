"""The format of the stored data: which migrations brought it to this version's.

One point of `<prefix>_format` (a collection of its own) records each migration applied to
the store and when, like a migrations table; the format version is how many. The part of the
service that owns the data of a migration runs it when it opens, if it is not recorded, and
records it once it is done: a migration is idempotent, so one that a crash cut short runs
again whole at the next open. A new store runs each migration over no data, once.

A store whose record names a migration this version does not know was written by a newer
one: it is refused at open, naming both versions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from hirag_oz.errors import ConfigurationError
from hirag_oz.store.base import CollectionSpec, PointRecord, SparseVec, VectorStore

SEQ_IN_MICROSECONDS = "0001-seq-in-microseconds"
"""Memory items' `seq` was a clock in nanoseconds, past what a float holds exactly."""

MIGRATIONS: tuple[str, ...] = (SEQ_IN_MICROSECONDS,)
VERSION = len(MIGRATIONS)
_RECORD = str(uuid.UUID(int=1))


class DataFormat:
    def __init__(self, store: VectorStore, collection_prefix: str = "contexts") -> None:
        self.store = store
        self.collection = f"{collection_prefix}_format"
        store.ensure_collection(CollectionSpec(self.collection, 1))
        self.check()

    def applied(self) -> dict[str, float]:
        """Each migration recorded, with when it completed."""
        found = self.store.retrieve(self.collection, [_RECORD])
        applied = found[0].payload.get("applied") if found else None
        return dict(applied) if isinstance(applied, dict) else {}

    def check(self) -> None:
        """Refuse a store written by a newer version."""
        applied = self.applied()
        unknown = sorted(set(applied) - set(MIGRATIONS))
        if unknown:
            raise ConfigurationError(
                f"the stored data is in format {len(applied)}, newer than format {VERSION}, "
                f"which this version of hirag-oz reads (it does not know {', '.join(unknown)}): "
                "upgrade hirag-oz, or open another data directory or collection prefix",
                {"stored_format": len(applied), "readable_format": VERSION, "unknown": unknown},
            )

    def migrate(self, migration: str, run: Callable[[], object]) -> bool:
        """Run `migration` unless it is recorded, then record it; True if it ran."""
        assert migration in MIGRATIONS, migration
        if migration in self.applied():
            return False
        run()
        applied = self.applied() | {migration: time.time()}
        payload = {"applied": applied, "format": len(applied)}
        self.store.upsert(
            self.collection, [PointRecord(_RECORD, [1.0], SparseVec([], []), payload)]
        )
        return True
