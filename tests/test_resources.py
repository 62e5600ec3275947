"""Resource bounds: a long mixed run keeps the server's memory flat and its open files
bounded. bench/soak.py runs the same workload for minutes and reports the same figures."""

from __future__ import annotations

import signal
from pathlib import Path

from bench.soak import SERVER_ENV, Workload, format_samples, store_segments, summary

from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.memory.levels import Level
from tests.test_cli import _serve

CLIENTS = 3
SAMPLE_EVERY = 250
# The warm-up lasts until the store has optimized each level's collection once, and the
# searches have read the new segments: the first optimized segment of a collection makes its
# files resident (about 70 MB each), once. Then the measured part runs long enough for more
# optimizations, which must not add to that.
MAX_WARMUP = 6000
MEASURED = 1500
FD_SLACK = 16
RSS_GROWTH_MB = 40.0
LEVELS = [f"contexts_{level.suffix}" for level in Level]


def _optimized(before: dict[str, set[str]], now: dict[str, set[str]]) -> set[str]:
    """The level collections with a segment that was not there `before`."""
    return {c for c in LEVELS if now.get(c, set()) - before.get(c, set())}


def test_a_long_mixed_run_keeps_memory_flat_and_files_bounded(
    tmp_path: Path, model: OnnxMiniLMEmbedder
) -> None:
    # `model` exported the ONNX model the server loads: it starts as it does in production,
    # without loading torch to export it.
    env = SERVER_ENV | {"HIRAG_EMBEDDING__CACHE_SIZE": "256"}
    proc, url = _serve(tmp_path / "data", tmp_path / "serve.log", env)
    workload = Workload(url, proc.pid, clients=CLIENTS, sample_every=SAMPLE_EVERY)
    try:
        first = store_segments(proc.pid)
        while workload.sent < MAX_WARMUP and _optimized(first, store_segments(proc.pid)) != set(
            LEVELS
        ):
            workload.run(requests=SAMPLE_EVERY)
        # A new segment's files become resident as the searches after it read them: the
        # last level optimized needs those reads before the warm-up ends.
        workload.run(requests=SAMPLE_EVERY)
        warm = workload.samples[-1]
        at_warm = store_segments(proc.pid)
        workload.run(requests=MEASURED)
        at_end = store_segments(proc.pid)
    finally:
        workload.close()
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=120)
    samples, tally = workload.samples, workload.tally
    figures = summary(samples, warm.requests)
    rss, fds = figures["rss_mb"], figures["fds"]
    report = (
        f"{format_samples(samples)}\nwarm after {warm.requests} requests\nRSS MB {rss}\n"
        f"fds {fds}\nsegments at warm {at_warm}\nat end {at_end}\n"
        f"ops {dict(tally.ops)}, statuses {dict(tally.statuses)}"
    )
    print(f"\n{report}")
    assert tally.errors == [], tally.errors[:10]
    assert exit_code == 0
    assert _optimized(first, at_warm) == set(LEVELS), f"not every level was optimized\n{report}"
    assert _optimized(at_warm, at_end), f"nothing was optimized after the warm-up\n{report}"
    assert fds["max_after_warmup"] <= fds["after_warmup"] + FD_SLACK, report
    kept = {c: len(at_end.get(c, ())) for c in LEVELS}
    assert max(kept.values()) <= 2, f"replaced segments are still mapped: {kept}\n{report}"
    assert rss["growth_after_warmup"] < RSS_GROWTH_MB, report
