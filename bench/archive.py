"""Data out and back: export, import, backup and move, timed on one store.

Run from the repository root:

    python bench/archive.py [--contexts 10000] [--out PATH]

`--contexts` contexts (texts of bench/store_search.py, real MiniLM vectors, LongTerm) are
stored on the embedded store, then, one after the other on the same machine state:

1. export with vectors (gzip) and without; their size and rate;
2. import of each into an empty data directory (the one without vectors embeds every text
   again), beside the model alone embedding the same texts (the floor of that import);
3. a backup while one thread searches and one writes: how long writes were paused, the
   search p50 during the backup against before it (ratio), and the slowest write;
4. a move into qdrant-client's engine (the server adapter, in process) and back, verified.

Writes bench/results/archive-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from hirag_oz.archive import backup
from hirag_oz.archive.export import export
from hirag_oz.archive.load import import_dump
from hirag_oz.archive.move import move
from hirag_oz.config import Settings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.service import Hirag
from hirag_oz.store.server import ServerStore
from store_search import console, machine_info, make_queries, make_texts, percentiles, save_report


def _settings(data_dir: Path) -> Settings:
    return Settings(  # type: ignore[arg-type]
        server={"data_dir": data_dir},
        hirag={"maintenance_enabled": False},
        rate_limit={"enabled": False},
    )


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def _searches(hirag: Hirag, queries: list[str], stop: threading.Event, out: list[float]) -> None:
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        hirag.search_contexts(query=queries[i % len(queries)], max_tokens=500)
        out.append((time.perf_counter() - started) * 1000)
        i += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    n = args.contexts
    texts = make_texts(n, 7)
    queries = make_queries(200, 11)
    result: dict[str, Any] = {"machine": machine_info(), "contexts": n}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = Hirag(_settings(root / "source"))
        model: Embedder = source.model
        console.print(f"storing {n} contexts ...", style="dim")
        for start in range(0, n, 256):
            source.store_contexts(
                items=[{"text": t, "level": "LongTerm"} for t in texts[start : start + 256]]
            )
        rows: list[tuple[str, float, str]] = []
        for vectors in (True, False):
            path = root / f"dump-{'vectors' if vectors else 'bare'}.jsonl.gz"
            report, secs = _timed(export, source, path, vectors=vectors)
            mb = path.stat().st_size / 1e6
            key = "export_vectors" if vectors else "export_bare"
            result[key] = {"secs": round(secs, 2), "mb": round(mb, 2), "per_sec": round(n / secs)}
            rows.append(
                (f"export, {'with' if vectors else 'without'} vectors", secs, f"{mb:.1f} MB")
            )
        for vectors in (True, False):
            path = root / f"dump-{'vectors' if vectors else 'bare'}.jsonl.gz"
            with Hirag(_settings(root / f"import-{vectors}"), model=model) as target:
                report, secs = _timed(import_dump, target, path)
            assert report.complete and sum(report.written.values()) == n, report
            key = "import_vectors" if vectors else "import_bare"
            result[key] = {"secs": round(secs, 2), "per_sec": round(n / secs)}
            rows.append(
                (f"import, {'with' if vectors else 'without'} vectors", secs, f"{n / secs:.0f}/s")
            )
        _, bare = _timed(lambda: [model.embed(texts[i : i + 128]) for i in range(0, n, 128)])
        result["model_alone_secs"] = round(bare, 2)
        rows.append(("the model alone, same texts", bare, f"{n / bare:.0f}/s"))

        for query in queries:  # every query's vector cached, before and during alike
            source.search_contexts(query=query, max_tokens=500)
        idle: list[float] = []
        stop = threading.Event()
        searcher = threading.Thread(target=_searches, args=(source, queries, stop, idle))
        searcher.start()
        time.sleep(3)
        stop.set()
        searcher.join()
        during: list[float] = []
        writes: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            k = 0
            while not stop.is_set():
                started = time.perf_counter()
                source.store_context(text=f"written while the backup runs {k}")
                writes.append((time.perf_counter() - started) * 1000)
                k += 1

        threads = [
            threading.Thread(target=_searches, args=(source, queries, stop, during)),
            threading.Thread(target=writer),
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)
        before = len(during)
        made, secs = _timed(backup.create, source)
        in_backup = during[before:]
        stop.set()
        for t in threads:
            t.join()
        searched = percentiles(idle), percentiles(in_backup or [0.0])
        result["backup"] = {
            "secs": round(secs, 2),
            "writes_paused_ms": made.writes_paused_ms,
            "mb": round(made.bytes / 1e6, 2),
            "search_idle": searched[0],
            "search_during": searched[1],
            "search_p50_ratio": round(searched[1]["p50_ms"] / searched[0]["p50_ms"], 2),
            "slowest_write_ms": round(max(writes), 1),
            "searches_during": len(in_backup),
        }
        rows.append(
            ("backup (writes paused)", made.writes_paused_ms / 1000, f"{made.bytes / 1e6:.1f} MB")
        )

        server = Hirag(
            _settings(root / "source"), model=model, store=ServerStore.connect(":memory:")
        )
        moved, there = _timed(move, source, server)
        assert moved.verified, moved.mismatches
        back = Hirag(_settings(root / "back"), model=model)
        returned, home = _timed(move, server, back)
        assert returned.verified, returned.mismatches
        result["move"] = {"to_server_secs": round(there, 2), "back_secs": round(home, 2)}
        rows.append(("move to the server adapter, verified", there, ""))
        rows.append(("move back to the embedded store, verified", home, ""))
        for h in (back, server, source):
            h.close()

    table = Table(title=f"data out and back, {n} contexts")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("", justify="right")
    for name, secs, extra in rows:
        table.add_row(name, f"{secs:.2f}", extra)
    console.print(table)
    b = result["backup"]
    console.print(
        f"during the backup: search p50 {b['search_during']['p50_ms']} ms vs "
        f"{b['search_idle']['p50_ms']} ms before ({b['search_p50_ratio']}x, "
        f"{b['searches_during']} searches); slowest write {b['slowest_write_ms']} ms"
    )
    save_report("archive", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
