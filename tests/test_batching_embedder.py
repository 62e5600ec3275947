"""CoalescingEmbedder, and the cache in front of it, against a slow, deterministic in-process
embedder and the real MiniLM."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable, Sequence

import pytest

from hirag_oz.embeddings import batching
from hirag_oz.embeddings.base import Embedder
from hirag_oz.embeddings.batching import CoalescingEmbedder
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder

JOIN_SECS = 20.0


def vector_for(text: str) -> list[float]:
    return [float(len(text)), float(zlib.crc32(text.encode()) % 10_007)]


class InnerFailure(RuntimeError):
    pass


class SlowEmbedder:
    """Sleeps per call, records every batch, and fails any batch containing `fail_text`.

    A batch containing `gate_text` is held until `gate` is set, so a test can queue callers
    behind it deterministically.
    """

    model_name = "slow-fake"

    def __init__(
        self,
        delay: float = 0.05,
        fail_text: str | None = None,
        gate_text: str | None = None,
    ) -> None:
        self.delay = delay
        self.fail_text = fail_text
        self.gate_text = gate_text
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.received: list[list[str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return 2

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.received.append(list(texts))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.entered.set()
        try:
            if self.gate_text is not None and self.gate_text in texts:
                assert self.gate.wait(JOIN_SECS)
            time.sleep(self.delay)
            if self.fail_text is not None and self.fail_text in texts:
                raise InnerFailure(f"cannot embed {self.fail_text!r}")
            return [vector_for(t) for t in texts]
        finally:
            with self._lock:
                self.in_flight -= 1


class Outcome:
    def __init__(self) -> None:
        self.result: list[list[float]] | None = None
        self.error: BaseException | None = None


def start_callers(
    embedder: CoalescingEmbedder, inputs: Sequence[Sequence[str]]
) -> tuple[list[threading.Thread], list[Outcome]]:
    """Starts one thread per input, released together by a barrier."""
    barrier = threading.Barrier(len(inputs))
    outcomes = [Outcome() for _ in inputs]

    def call(texts: Sequence[str], outcome: Outcome) -> None:
        barrier.wait(JOIN_SECS)
        try:
            outcome.result = embedder.embed(texts)
        except BaseException as exc:
            outcome.error = exc

    threads = [
        threading.Thread(target=call, args=(texts, outcome), daemon=True)
        for texts, outcome in zip(inputs, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    return threads, outcomes


def join_all(threads: Sequence[threading.Thread]) -> None:
    deadline = time.monotonic() + JOIN_SECS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a caller never returned"


def run_concurrently(
    embedder: CoalescingEmbedder, inputs: Sequence[Sequence[str]]
) -> list[Outcome]:
    threads, outcomes = start_callers(embedder, inputs)
    join_all(threads)
    return outcomes


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_SECS
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def sixteen_jobs() -> list[list[str]]:
    return [[f"caller {i} text {k}" + "x" * i for k in range(1 + i % 3)] for i in range(16)]


def test_is_an_embedder_delegating_name_and_dimension() -> None:
    coalescer = CoalescingEmbedder(SlowEmbedder())
    assert isinstance(coalescer, Embedder)
    assert coalescer.model_name == "slow-fake"
    assert coalescer.dimension == 2
    assert coalescer.max_batch == 64


@pytest.mark.timeout(30)
def test_concurrent_results_match_inner_text_by_text_in_order() -> None:
    inner = SlowEmbedder()
    coalescer = CoalescingEmbedder(inner)
    jobs = sixteen_jobs()

    outcomes = run_concurrently(coalescer, jobs)

    for texts, outcome in zip(jobs, outcomes, strict=True):
        assert outcome.error is None
        assert outcome.result == [vector_for(t) for t in texts]
    embedded = [t for batch in inner.received for t in batch]
    assert sorted(embedded) == sorted(t for texts in jobs for t in texts)
    assert inner.max_in_flight == 1
    assert coalescer.calls == 16
    assert coalescer.batches == len(inner.received)


@pytest.mark.timeout(30)
def test_concurrent_calls_are_merged_into_few_batches() -> None:
    inner = SlowEmbedder()
    coalescer = CoalescingEmbedder(inner)

    outcomes = run_concurrently(coalescer, [[f"query {i}"] for i in range(16)])

    assert all(outcome.error is None for outcome in outcomes)
    assert coalescer.calls == 16
    assert coalescer.batches == len(inner.received)
    assert coalescer.batches < coalescer.calls
    assert coalescer.batches <= coalescer.calls // 2


def test_single_caller_gets_one_inner_call_per_embed() -> None:
    inner = SlowEmbedder(delay=0.0)
    coalescer = CoalescingEmbedder(inner, max_batch=4)

    for n, texts in enumerate([["a"], ["b", "cc"], ["d"] * 7, ["e", "f", "g"]], start=1):
        assert coalescer.embed(texts) == [vector_for(t) for t in texts]
        assert coalescer.calls == n
        assert coalescer.batches == n
        assert inner.received[-1] == texts
    assert len(inner.received) == 4


@pytest.mark.timeout(30)
def test_max_batch_is_respected_and_jobs_are_never_split() -> None:
    inner = SlowEmbedder()
    coalescer = CoalescingEmbedder(inner, max_batch=4)
    big = [f"big {k}" for k in range(6)]
    jobs = [*sixteen_jobs(), big]

    outcomes = run_concurrently(coalescer, jobs)

    for texts, outcome in zip(jobs, outcomes, strict=True):
        assert outcome.error is None
        assert outcome.result == [vector_for(t) for t in texts]
    for batch in inner.received:
        assert len(batch) <= 4 or batch == big
    assert big in inner.received
    for texts in jobs:
        holding = [batch for batch in inner.received if texts[0] in batch]
        assert len(holding) == 1
        start = holding[0].index(texts[0])
        assert holding[0][start : start + len(texts)] == texts
    assert coalescer.batches < coalescer.calls


@pytest.mark.timeout(30)
def test_inner_error_reaches_every_caller_of_its_batch_and_embedder_recovers() -> None:
    inner = SlowEmbedder(fail_text="boom", gate_text="first")
    coalescer = CoalescingEmbedder(inner)

    # "first" holds the model while five callers, one of them poisonous, queue behind it.
    first_threads, first_outcomes = start_callers(coalescer, [["first"]])
    assert inner.entered.wait(JOIN_SECS)
    queued = [["q1"], ["q2", "q3"], ["boom"], ["q4"], ["q5"]]
    threads, outcomes = start_callers(coalescer, queued)
    wait_until(lambda: coalescer.calls == 6)
    inner.gate.set()
    join_all(first_threads + threads)

    assert first_outcomes[0].error is None
    assert first_outcomes[0].result == [vector_for("first")]
    assert len(inner.received) == 2
    assert inner.received[0] == ["first"]
    assert sorted(inner.received[1]) == sorted(t for texts in queued for t in texts)
    for outcome in outcomes:
        assert outcome.result is None
        assert isinstance(outcome.error, InnerFailure)
        assert "boom" in str(outcome.error)

    assert coalescer.embed(["after"]) == [vector_for("after")]
    later = [[f"later {i}"] for i in range(8)]
    for texts, outcome in zip(later, run_concurrently(coalescer, later), strict=True):
        assert outcome.error is None
        assert outcome.result == [vector_for(t) for t in texts]


class MiscountingEmbedder(SlowEmbedder):
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return super().embed(texts)[:-1]


def test_wrong_vector_count_from_inner_is_an_error_not_a_misattribution() -> None:
    coalescer = CoalescingEmbedder(MiscountingEmbedder(delay=0.0))
    with pytest.raises(RuntimeError, match="1 vectors for 2 texts"):
        coalescer.embed(["a", "b"])


def test_empty_input_returns_empty_without_calling_inner() -> None:
    inner = SlowEmbedder()
    coalescer = CoalescingEmbedder(inner)

    assert coalescer.embed([]) == []
    assert inner.received == []
    assert coalescer.calls == 1
    assert coalescer.batches == 0


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        CoalescingEmbedder(SlowEmbedder(), max_batch=0)


def test_real_minilm_vectors_match_one_by_one_embedding(model: OnnxMiniLMEmbedder) -> None:
    minilm = model
    coalescer = CoalescingEmbedder(minilm)
    queries = [
        [f"thread {t} asks question {q} about {'memory ' * (t + q)}retrieval" for q in range(5)]
        for t in range(8)
    ]
    barrier = threading.Barrier(len(queries))
    got: dict[str, list[float]] = {}
    errors: list[BaseException] = []

    def search(texts: list[str]) -> None:
        barrier.wait(JOIN_SECS)
        try:
            for text in texts:
                [vector] = coalescer.embed([text])
                got[text] = vector
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=search, args=(texts,), daemon=True) for texts in queries]
    for thread in threads:
        thread.start()
    join_all(threads)

    assert errors == []
    assert coalescer.calls == 40
    assert coalescer.batches < coalescer.calls
    for texts in queries:
        for text in texts:
            [expected] = minilm.embed([text])
            assert got[text] == pytest.approx(expected, abs=1e-5)


def test_the_model_runs_on_one_thread_of_its_own() -> None:
    seen: set[str] = set()

    class Recording(SlowEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            seen.add(threading.current_thread().name)
            return super().embed(texts)

    coalescer = CoalescingEmbedder(Recording(delay=0.0))
    run_concurrently(coalescer, [[f"query {i}"] for i in range(8)])
    coalescer.embed(["from the test thread"])

    assert seen == {"embedding-batches"}
    coalescer.close()


@pytest.mark.timeout(30)
def test_submit_answers_an_event_loop_without_blocking_it() -> None:
    inner = SlowEmbedder(delay=0.05)
    coalescer = CoalescingEmbedder(inner)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def main() -> list[list[list[float]]]:
        ticker = asyncio.create_task(tick())
        try:
            return await asyncio.gather(
                *(asyncio.wrap_future(coalescer.submit([f"q{i}"])) for i in range(6))
            )
        finally:
            ticker.cancel()

    results = asyncio.run(main())

    assert results == [[vector_for(f"q{i}")] for i in range(6)]
    # The loop kept running while the model worked (at least two 50 ms batches).
    assert ticks >= 5
    assert coalescer.batches < 6
    coalescer.close()


@pytest.mark.timeout(30)
def test_a_cancelled_call_is_not_embedded_and_the_others_are() -> None:
    inner = SlowEmbedder(gate_text="first")
    coalescer = CoalescingEmbedder(inner)
    first = coalescer.submit(["first"])
    assert inner.entered.wait(JOIN_SECS)
    gone = coalescer.submit(["gone"])
    kept = coalescer.submit(["kept"])

    assert gone.cancel()
    inner.gate.set()

    assert first.result(JOIN_SECS) == [vector_for("first")]
    assert kept.result(JOIN_SECS) == [vector_for("kept")]
    assert inner.received == [["first"], ["kept"]]
    coalescer.close()


@pytest.mark.timeout(30)
def test_close_finishes_queued_calls_then_refuses_new_ones() -> None:
    inner = SlowEmbedder(gate_text="first")
    coalescer = CoalescingEmbedder(inner)
    futures = [coalescer.submit(["first"])]
    assert inner.entered.wait(JOIN_SECS)
    futures += [coalescer.submit([f"queued {i}"]) for i in range(3)]
    closer = threading.Thread(target=coalescer.close, daemon=True)
    closer.start()
    inner.gate.set()
    join_all([closer])

    assert [f.result(0) for f in futures] == [
        [vector_for(t)] for t in ["first", "queued 0", "queued 1", "queued 2"]
    ]
    with pytest.raises(RuntimeError, match="closed"):
        coalescer.embed(["late"])
    coalescer.close()  # a second close is a no-op


@pytest.mark.timeout(30)
def test_cache_submit_answers_hits_at_once_and_sends_misses_to_the_models_thread() -> None:
    inner = SlowEmbedder(delay=0.0)
    cache = CachedEmbedder(CoalescingEmbedder(inner))
    cache.embed(["known"])

    hit = cache.submit(["known"])
    assert hit.done() and hit.result() == [vector_for("known")]
    assert inner.received == [["known"]]

    mixed = cache.submit(["new", "known", "new"])
    assert mixed.result(JOIN_SECS) == [vector_for(t) for t in ["new", "known", "new"]]
    assert inner.received == [["known"], ["new"]]  # the repeated miss embedded once
    assert cache.submit(["new"]).done()
    assert (cache.hits, cache.misses) == (3, 3)


@pytest.mark.timeout(30)
def test_cache_submit_passes_a_failure_on_and_caches_nothing() -> None:
    inner = SlowEmbedder(delay=0.0, fail_text="boom")
    cache = CachedEmbedder(CoalescingEmbedder(inner))

    with pytest.raises(InnerFailure):
        cache.submit(["boom", "fine"]).result(JOIN_SECS)
    assert cache.size() == 0


def test_cache_submit_over_an_embedder_without_a_thread_computes_at_once() -> None:
    inner = SlowEmbedder(delay=0.0, fail_text="boom")
    cache = CachedEmbedder(inner)

    done = cache.submit(["plain"])
    assert done.done() and done.result() == [vector_for("plain")]
    failed = cache.submit(["boom"])
    assert failed.done() and isinstance(failed.exception(), InnerFailure)


@pytest.mark.timeout(30)
def test_an_idle_models_thread_ends_and_comes_back_on_the_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "IDLE_EXIT_SECS", 0.05)
    threads: list[threading.Thread] = []

    class Recording(SlowEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            threads.append(threading.current_thread())
            return super().embed(texts)

    coalescer = CoalescingEmbedder(Recording(delay=0.0))

    assert coalescer.embed(["one"]) == [vector_for("one")]
    wait_until(lambda: not threads[0].is_alive())
    assert coalescer.embed(["two"]) == [vector_for("two")]
    assert threads[1] is not threads[0]
    coalescer.close()
