"""Search latency with tenancy: the default tenant against another, in one run.

Run from the repository root:

    python bench/tenancy.py [--contexts 10000] [--queries 200] [--rounds 6] [--out PATH]

The same `--contexts` contexts (texts of bench/store_search.py, real MiniLM vectors) are
stored in the default tenant and in tenant "acme". Then `--queries` searches run through
`Hirag.call`, the path of every surface, in alternating rounds: as the trusted caller
(the default tenant, no key) and as a key of acme limited to nothing (its own collections,
the scope check and the tenant's view on the way). Query vectors are cached before timing,
so the model is out of both. Prints p50/p95 of each and their ratio (target: within 10%),
and writes bench/results/tenancy-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from hirag_oz.config import Settings
from hirag_oz.kernel.scope import TRUSTED, Caller
from hirag_oz.memory.models import NewContext
from hirag_oz.service import Hirag
from hirag_oz_client.catalogue import SEARCH_CONTEXTS
from hirag_oz_client.models import SearchContextsRequest
from store_search import console, machine_info, make_queries, make_texts, percentiles, save_report

TARGET_RATIO = 1.10


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    texts = make_texts(args.contexts, 7)
    queries = make_queries(args.queries, 11)
    acme = Caller("acme", "write", None, "bench")
    callers = {"default tenant": TRUSTED, "tenant acme (key)": acme}
    samples: dict[str, list[float]] = {name: [] for name in callers}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(  # type: ignore[arg-type]
            server={"data_dir": Path(tmp)}, hirag={"maintenance_enabled": False}
        )
        with Hirag(settings) as hirag:
            console.print(f"storing {args.contexts} contexts in each tenant ...", style="dim")
            for start in range(0, args.contexts, 256):
                batch = texts[start : start + 256]
                vectors = hirag.embedder.embed(batch)
                for caller in callers.values():
                    memory = hirag.tenant(caller.tenant).contexts
                    memory.store_many(
                        [NewContext(text=t, level="LongTerm") for t in batch], vectors=vectors
                    )
            requests = [SearchContextsRequest(query=q, max_tokens=1000) for q in queries]
            for request in requests:  # every query vector cached, warm collections
                for caller in callers.values():
                    hirag.call(SEARCH_CONTEXTS, request, caller)
            order = list(callers)
            for round_ in range(args.rounds):
                for name in order if round_ % 2 == 0 else order[::-1]:
                    for request in requests:
                        started = time.perf_counter()
                        hirag.call(SEARCH_CONTEXTS, request, callers[name])
                        samples[name].append((time.perf_counter() - started) * 1000)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "contexts": args.contexts,
        "searches": {name: percentiles(s) for name, s in samples.items()},
    }
    base, other = (result["searches"][name] for name in order)
    result["p50_ratio"] = round(other["p50_ms"] / base["p50_ms"], 3)
    result["p95_ratio"] = round(other["p95_ms"] / base["p95_ms"], 3)
    table = Table(title=f"search with tenancy, {args.contexts} contexts per tenant")
    for column in ("caller", "n", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right" if column != "caller" else "left")
    for name, p in result["searches"].items():
        table.add_row(name, str(p["n"]), f"{p['p50_ms']:.3f}", f"{p['p95_ms']:.3f}")
    console.print(table)
    ok = result["p50_ratio"] <= TARGET_RATIO
    console.print(
        f"p50 ratio {result['p50_ratio']}, p95 ratio {result['p95_ratio']} "
        f"(target p50 <= {TARGET_RATIO}): {'PASS' if ok else 'FAIL'}"
    )
    save_report("tenancy", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
