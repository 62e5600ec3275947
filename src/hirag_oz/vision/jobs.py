"""Index jobs: their state, kept in one JSON file each under the data directory, and a
bounded pool of workers that runs them. A restart keeps finished jobs and queues the
unfinished ones again."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hirag_oz.errors import HiragError, NotFoundError, RateLimitedError, ValidationError
from hirag_oz.kernel.files import write_atomic
from hirag_oz.store.gate import WriteGate
from hirag_oz.vision.models import JobStatus

logger = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^job_[0-9a-f]{32}$")


@dataclass
class Job:
    job_id: str
    status: JobStatus
    agent_id: str
    source_kind: str
    source: str
    """The path, URL or stored upload the job reads."""
    source_name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    force_reindex: bool = False
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    pages_done: int = 0
    pages_total: int | None = None
    doc_id: str | None = None
    regions: int = 0
    reused: bool = False
    """The same content was already indexed: nothing was done again."""
    page_errors: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise NotFoundError("no such job", {"job_id": job_id[:80]})
    return job_id


class JobStore:
    """Jobs as JSON files, each replaced atomically on every change."""

    def __init__(self, folder: Path, gate: WriteGate | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.gate = gate or WriteGate()

    def path(self, job_id: str) -> Path:
        return self.folder / f"{check_job_id(job_id)}.json"

    def save(self, job: Job) -> None:
        data = json.dumps(job.to_dict(), ensure_ascii=False, sort_keys=True).encode()
        with self._lock, self.gate.write():
            write_atomic(self.path(job.job_id), data)

    def load(self, job_id: str) -> Job:
        try:
            data = json.loads(self.path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError("no such job", {"job_id": job_id}) from None
        return Job.from_dict(data)

    def all(self) -> list[Job]:
        jobs = []
        for path in sorted(self.folder.glob("job_*.json")):
            try:
                jobs.append(Job.from_dict(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("skipping unreadable job file %s: %s", path.name, exc)
        return sorted(jobs, key=lambda j: j.created_at)


Runner = Callable[[Job, Callable[[Job], None]], None]
"""Runs a job to its end; calls `save(job)` whenever it has progress to keep, and raises
`Interrupted` when the service stops under it."""


class Interrupted(Exception):
    """The service is stopping: the job goes back to the queue for the next start."""


def run_job(job: Job, work: Callable[[], None], save: Callable[[Job], None]) -> bool:
    """Run `work` as the job: running, then succeeded, or failed with the error's envelope
    (an unexpected error is logged and reads INTERNAL_ERROR). False when the work was
    interrupted: the job is queued again and has not finished."""
    job.status, job.started_at = "running", time.time()
    job.attempts += 1
    save(job)
    try:
        work()
    except Interrupted:
        job.status, job.pages_done = "queued", 0
        save(job)
        return False
    except HiragError as exc:
        job.status, job.error = "failed", exc.to_dict()
    except Exception as exc:
        logger.exception("index job %s failed", job.job_id)
        job.status = "failed"
        job.error = {
            "code": "INTERNAL_ERROR",
            "message": f"indexing failed: {type(exc).__name__}",
            "details": {},
        }
    else:
        job.status = "succeeded"
    job.finished_at = time.time()
    save(job)
    return True


class JobQueue:
    """A bounded pool of workers over a JobStore. At most `max_pending` jobs wait or run at
    once; more are refused with 429 until some finish."""

    def __init__(
        self,
        store: JobStore,
        run: Runner,
        workers: int,
        max_pending: int,
        on_finished: Callable[[Job], None] | None = None,
    ) -> None:
        self.store = store
        self._run = run
        self._on_finished = on_finished
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vision-job")
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: Job) -> Job:
        with self._lock:
            if self._closed:
                raise ValidationError("the service is shutting down", {})
            if len(self._pending) >= self._max_pending:
                raise RateLimitedError(
                    f"{self._max_pending} index jobs are already waiting or running",
                    {"max_pending": self._max_pending},
                    retry_after=5,
                )
            self._pending.add(job.job_id)
        self.store.save(job)
        # In the submitter's context: with tracing on, the job's spans join its request's trace.
        self._pool.submit(contextvars.copy_context().run, self._work, job.job_id)
        return job

    def resume(self) -> list[str]:
        """Queue again every job a previous process left queued or running."""
        resumed = []
        for job in self.store.all():
            if job.finished:
                continue
            job.status, job.pages_done, job.started_at = "queued", 0, None
            job.page_errors = []
            with self._lock:
                self._pending.add(job.job_id)
            self.store.save(job)
            self._pool.submit(self._work, job.job_id)
            resumed.append(job.job_id)
        return resumed

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, wait: bool = True) -> None:
        """Stop taking jobs; a running job stops after its current page. Unfinished jobs
        stay on disk for the next start."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _work(self, job_id: str) -> None:
        try:
            job = self.store.load(job_id)
            if job.finished or self._closed:
                return
            if run_job(job, lambda: self._run(job, self.store.save), self.store.save) and (
                self._on_finished is not None
            ):
                self._on_finished(job)
        except Exception:
            # The pool would keep the error in a future nobody reads.
            logger.exception("index job %s could not be run or saved", job_id)
        finally:
            with self._lock:
                self._pending.discard(job_id)
