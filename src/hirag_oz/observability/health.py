"""Health of the service's components, each probed for real and timed.

A probe is a function that raises when its component cannot serve, or returns
`(status, message)`. Probes run in a small thread pool with a timeout, so a hung dependency
reads unhealthy instead of hanging the health endpoint. Results are cached briefly, so
frequent liveness/readiness polling does not load the model or the store.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["healthy", "degraded", "unhealthy"]
ProbeResult = tuple[Status, str | None] | None
Probe = Callable[[], ProbeResult]

_RANK: dict[Status, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True)
class Component:
    """A named probe; `required` components decide readiness."""

    name: str
    probe: Probe
    required: bool = True


@dataclass
class ComponentHealth:
    name: str
    status: Status
    message: str | None
    response_time_ms: float
    required: bool


@dataclass
class SystemHealth:
    status: Status
    uptime_secs: float
    checked_at: float
    components: list[ComponentHealth] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(c.status != "unhealthy" for c in self.components if c.required)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HealthChecker:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        timeout_secs: float = 5.0,
        cache_secs: float = 2.0,
    ) -> None:
        self.components = list(components)
        self.timeout_secs = timeout_secs
        self.cache_secs = cache_secs
        self._started = time.monotonic()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.components)), thread_name_prefix="health"
        )
        self._lock = threading.Lock()
        self._cached: tuple[float, SystemHealth] | None = None

    def check(self) -> SystemHealth:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_secs:
                return self._cached[1]
            result = self._run()
            self._cached = (time.monotonic(), result)
            return result

    def _run(self) -> SystemHealth:
        started = time.perf_counter()
        # In the caller's context, so a probe's spans belong to the health request's trace.
        futures = [
            (c, self._pool.submit(contextvars.copy_context().run, _timed, c.probe))
            for c in self.components
        ]
        deadline = started + self.timeout_secs
        results = []
        for component, future in futures:
            try:
                status, message, elapsed = future.result(
                    timeout=max(0.0, deadline - time.perf_counter())
                )
            except FutureTimeout:
                status, message = "unhealthy", f"no answer within {self.timeout_secs:g} s"
                elapsed = self.timeout_secs
            results.append(
                ComponentHealth(
                    component.name,
                    status,
                    message,
                    round(elapsed * 1000, 3),
                    component.required,
                )
            )
        # An optional component that is down (the OCR engine, the breaker of a dependency
        # with a fallback) leaves the service degraded: everything required still serves.
        overall: Status = max(
            (r.status if r.required else _at_most_degraded(r.status) for r in results),
            key=_RANK.__getitem__,
            default="healthy",
        )
        return SystemHealth(
            status=overall,
            uptime_secs=round(time.monotonic() - self._started, 3),
            checked_at=time.time(),
            components=results,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _at_most_degraded(status: Status) -> Status:
    return "degraded" if status == "unhealthy" else status


def _timed(probe: Probe) -> tuple[Status, str | None, float]:
    started = time.perf_counter()
    try:
        outcome = probe()
    except Exception as exc:
        return "unhealthy", f"{type(exc).__name__}: {exc}"[:300], time.perf_counter() - started
    status, message = outcome if outcome is not None else ("healthy", None)
    return status, message, time.perf_counter() - started
