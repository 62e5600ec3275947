"""Group commit for embedders: concurrent calls that arrive while the model is busy share a batch."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from hirag_oz.embeddings.base import Embedder


class _Job:
    """One caller's texts and, once its batch has run, its vectors or the batch's error."""

    __slots__ = ("done", "error", "result", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: list[list[float]] = []
        self.error: BaseException | None = None
        self.done = False


class CoalescingEmbedder:
    """Merges concurrent `embed` calls into one call of the wrapped embedder.

    A batched model call costs far less per text than one call per text, and the HTTP service
    embeds each search query from its own worker thread. A caller that finds the model idle
    runs its texts at once, so a lone caller never waits; callers that arrive while a batch is
    running queue up and go together in the next batch.
    """

    def __init__(self, inner: Embedder, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.inner = inner
        self.model_name = inner.model_name
        self.max_batch = max_batch
        self.calls = 0
        self.batches = 0
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._leading = False

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            with self._cond:
                self.calls += 1
            return []
        job = _Job(list(texts))
        with self._cond:
            self.calls += 1
            self._queue.append(job)
            while self._leading and not job.done:
                self._cond.wait()
            if not job.done:
                self._lead(job)
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self, own: _Job) -> None:
        """Runs queued batches until `own` is finished, then hands leadership on.

        Called, and returns, with the condition's lock held; the lock is released while the
        wrapped embedder runs.
        """
        self._leading = True
        try:
            while not own.done:
                batch = self._take_batch()
                self.batches += 1
                self._cond.release()
                try:
                    vectors, error = self._run(batch)
                finally:
                    self._cond.acquire()
                offset = 0
                for job in batch:
                    if error is None:
                        job.result = vectors[offset : offset + len(job.texts)]
                        offset += len(job.texts)
                    else:
                        job.error = error
                    job.done = True
                if not own.done:
                    # Let the callers of this batch return while we run the next one.
                    self._cond.notify_all()
        finally:
            # Leading only until our own job is done bounds every caller's latency; a waiter
            # whose job is still queued wakes up and takes over.
            self._leading = False
            self._cond.notify_all()

    def _take_batch(self) -> list[_Job]:
        # Whole jobs only, in arrival order; the first job goes even if it alone is too big.
        batch = [self._queue.popleft()]
        size = len(batch[0].texts)
        while self._queue and size + len(self._queue[0].texts) <= self.max_batch:
            job = self._queue.popleft()
            batch.append(job)
            size += len(job.texts)
        return batch

    def _run(self, batch: list[_Job]) -> tuple[list[list[float]], BaseException | None]:
        texts = [text for job in batch for text in job.texts]
        try:
            vectors = self.inner.embed(texts)
        except BaseException as exc:
            # Even KeyboardInterrupt must reach the waiters, or they would wait forever.
            return [], exc
        if len(vectors) != len(texts):
            # Slicing a short or long result would hand callers other callers' vectors.
            return [], RuntimeError(
                f"{self.inner.model_name} returned {len(vectors)} vectors for {len(texts)} texts"
            )
        return vectors, None
