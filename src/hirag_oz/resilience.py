"""Circuit breaker and retry policy shared by every remote adapter.

A remote dependency (embedding API, vector database) fails in two ways that call for
different handling: transient trouble (timeouts, dropped connections, 5xx, 429) is worth a
few retries with backoff, while a dependency that keeps failing should be left alone for a
while so that requests fail fast instead of piling up behind timeouts. `RetryPolicy` does
the first, `CircuitBreaker` the second, and `RetryPolicy.call` combines them: the breaker
is asked before every attempt, and every attempt's outcome is reported back to it.

Client errors (400, 401, 404, ...) are neither retried nor held against the breaker: the
upstream answered, so it is healthy; it is the request that is wrong.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from hirag_oz.errors import UnavailableError

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


class CircuitOpenError(UnavailableError):
    """Raised instead of calling the upstream while its circuit breaker rejects calls.

    A subclass of `UnavailableError` (HTTP 503), so callers that only care about
    "the dependency is unavailable" need not know about breakers; it is never retried.
    """

    def __init__(
        self, name: str, message: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(
            message or f"circuit breaker '{name}' is open", {"name": name, **(details or {})}
        )
        self.breaker_name = name


class CircuitBreaker:
    """Stops calling an upstream that keeps failing, then probes it until it recovers.

    - closed: every call is allowed; `failure_threshold` consecutive failures open it.
    - open: every call is rejected until `reset_timeout_secs` have passed since it opened;
      the next `allow()` after that moves it to half_open.
    - half_open: one probe call at a time is allowed (others are rejected while it is in
      flight). A failed probe re-opens the breaker and restarts the timer;
      `success_threshold` successful probes close it.

    A probe whose outcome is never recorded (the caller died between `allow()` and
    `record_*()`) is considered lost after `reset_timeout_secs`, so the breaker cannot
    wedge in half_open.

    Thread-safe. `on_state_change(name, new_state)` is called after each transition,
    outside the lock; an exception from it is logged and otherwise ignored so that a
    broken metrics hook cannot break calls.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        success_threshold: int = 2,
        reset_timeout_secs: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if success_threshold < 1:
            raise ValueError("success_threshold must be >= 1")
        if reset_timeout_secs < 0:
            raise ValueError("reset_timeout_secs must be >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.reset_timeout_secs = reset_timeout_secs
        self.on_state_change = on_state_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = CLOSED
        self._opened_at = 0.0
        self._probe_started_at: float | None = None
        self._half_open_successes = 0
        self._consecutive_failures = 0
        self._total_calls = 0
        self._total_failures = 0
        self._total_rejections = 0
        self._opened_count = 0

    @property
    def state(self) -> BreakerState:
        """The current state. An open breaker whose timeout has passed still reads "open"
        until the next `allow()` moves it to half_open."""
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """Whether a call may go to the upstream now. An allowed call must be followed by
        `record_success()` or `record_failure()`."""
        changed: BreakerState | None = None
        with self._lock:
            now = self._clock()
            if self._state == OPEN:
                if now - self._opened_at < self.reset_timeout_secs:
                    self._total_rejections += 1
                    return False
                changed = self._transition(HALF_OPEN, now)
            if self._state == HALF_OPEN:
                probe = self._probe_started_at
                if probe is not None and now - probe < self.reset_timeout_secs:
                    self._total_rejections += 1
                    allowed = False
                else:
                    self._probe_started_at = now
                    allowed = True
            else:
                allowed = True
        self._notify(changed)
        return allowed

    def record_success(self) -> None:
        """The upstream answered (including with a client error such as 400/404)."""
        changed: BreakerState | None = None
        with self._lock:
            self._total_calls += 1
            if self._state == HALF_OPEN:
                self._probe_started_at = None
                self._half_open_successes += 1
                if self._half_open_successes >= self.success_threshold:
                    changed = self._transition(CLOSED, self._clock())
            elif self._state == CLOSED:
                self._consecutive_failures = 0
            # OPEN: a straggler allowed before the breaker opened; it proves nothing.
        self._notify(changed)

    def record_failure(self) -> None:
        """The upstream failed: timeout, connection error, 5xx, 429 or a malformed answer."""
        changed: BreakerState | None = None
        with self._lock:
            self._total_calls += 1
            self._total_failures += 1
            self._consecutive_failures += 1
            if self._state == HALF_OPEN or (
                self._state == CLOSED and self._consecutive_failures >= self.failure_threshold
            ):
                changed = self._transition(OPEN, self._clock())
            # OPEN: a straggler; the timer keeps running from the original opening.
        self._notify(changed)

    def stats(self) -> dict[str, Any]:
        """A snapshot for metrics and health endpoints."""
        with self._lock:
            return {
                "state": self._state,
                "total_calls": self._total_calls,
                "total_failures": self._total_failures,
                "consecutive_failures": self._consecutive_failures,
                "opened_count": self._opened_count,
                "total_rejections": self._total_rejections,
            }

    def _transition(self, new_state: BreakerState, now: float) -> BreakerState:
        """Switch state; the caller holds the lock and notifies after releasing it."""
        self._state = new_state
        self._probe_started_at = None
        self._half_open_successes = 0
        if new_state == OPEN:
            self._opened_at = now
            self._opened_count += 1
        elif new_state == CLOSED:
            self._consecutive_failures = 0
        logger.info("circuit breaker '%s' is now %s", self.name, new_state)
        return new_state

    def _notify(self, new_state: BreakerState | None) -> None:
        hook = self.on_state_change
        if new_state is None or hook is None:
            return
        try:
            hook(self.name, new_state)
        except Exception:
            logger.exception("on_state_change hook of circuit breaker '%s' failed", self.name)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a remote call.

    Total attempts are `1 + max_retries`. Between attempts the delay grows exponentially
    from `base_delay_secs` (doubling per retry, capped at `max_delay_secs`) with "equal
    jitter" (a uniform draw from the upper half of the step), so that clients that failed
    together do not retry together. A Retry-After hint from the upstream replaces the
    computed delay, capped at `max_delay_secs`. `sleep` is injectable for tests.
    """

    max_retries: int
    base_delay_secs: float = 0.2
    max_delay_secs: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.base_delay_secs < 0 or self.max_delay_secs < 0:
            raise ValueError("retry delays must be >= 0")

    def backoff(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1 for the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_secs)
        exponent = min(max(retry_number - 1, 0), 62)
        ceiling = min(self.max_delay_secs, self.base_delay_secs * 2.0**exponent)
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)

    def call(
        self,
        fn: Callable[[], T],
        *,
        breaker: CircuitBreaker | None = None,
        is_retryable: Callable[[BaseException], bool],
        is_failure: Callable[[BaseException], bool] | None = None,
        retry_after: Callable[[BaseException], float | None] | None = None,
    ) -> T:
        """Run `fn` until it succeeds, fails with a non-retryable error, or attempts run out.

        - `breaker` is asked before each attempt; a rejection raises `CircuitOpenError`
          (an `UnavailableError`) at once, without calling `fn` and without retrying.
        - `is_retryable(exc)` says whether another attempt may help.
        - `is_failure(exc)` says whether the error is the upstream's fault and counts
          against the breaker (timeouts, connection errors, 5xx, 429, malformed answers);
          errors for which it is False (client errors: the upstream answered) count as
          breaker successes. Defaults to `is_retryable`.
        - `retry_after(exc)` extracts an upstream Retry-After hint in seconds, if any.

        The last exception is re-raised unchanged; callers map it to their own errors.
        """
        counts_as_failure = is_failure if is_failure is not None else is_retryable

        def attempt() -> T:
            if breaker is not None and not breaker.allow():
                raise CircuitOpenError(breaker.name)
            try:
                result = fn()
            except Exception as exc:
                if breaker is not None:
                    if counts_as_failure(exc):
                        breaker.record_failure()
                    else:
                        breaker.record_success()
                raise
            if breaker is not None:
                breaker.record_success()
            return result

        def should_retry(exc: BaseException) -> bool:
            return (
                isinstance(exc, Exception)
                and not isinstance(exc, CircuitOpenError)
                and is_retryable(exc)
            )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            hint = retry_after(exc) if retry_after is not None and exc is not None else None
            return self.backoff(state.attempt_number, hint)

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "%s: attempt %d/%d failed (%s: %s); retrying in %.2fs",
                breaker.name if breaker is not None else getattr(fn, "__qualname__", "call"),
                state.attempt_number,
                1 + self.max_retries,
                type(exc).__name__,
                exc,
                state.upcoming_sleep,
            )

        retrying = Retrying(
            sleep=self.sleep,
            stop=stop_after_attempt(1 + self.max_retries),
            wait=wait,
            retry=retry_if_exception(should_retry),
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(attempt)
