"""CircuitBreaker state machine and RetryPolicy behaviour (no network, tiny delays)."""

from __future__ import annotations

import threading

import pytest

from hirag_oz.errors import UnavailableError, wire
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


class Transient(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("transient")
        self.retry_after = retry_after


class ClientError(Exception):
    pass


class Malformed(Exception):
    pass


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, Transient) else None


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Transient)


def _failure(exc: BaseException) -> bool:
    return isinstance(exc, Transient | Malformed)


def _breaker(clock: FakeClock, **kw: object) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []
    params: dict[str, object] = {
        "failure_threshold": 3,
        "success_threshold": 2,
        "reset_timeout_secs": 10.0,
    }
    params.update(kw)
    breaker = CircuitBreaker(
        "svc",
        clock=clock,
        on_state_change=lambda name, state: events.append((name, state)),
        **params,  # type: ignore[arg-type]
    )
    return breaker, events


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open"


# -- CircuitBreaker -----------------------------------------------------------------------


def test_breaker_opens_at_threshold_of_consecutive_failures() -> None:
    breaker, events = _breaker(FakeClock())
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # resets the consecutive count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert events == [("svc", "open")]
    stats = breaker.stats()
    assert stats["state"] == "open"
    assert stats["total_calls"] == 6
    assert stats["total_failures"] == 5
    assert stats["consecutive_failures"] == 3
    assert stats["opened_count"] == 1
    assert stats["total_rejections"] == 1


def test_breaker_half_open_allows_one_probe_at_a_time() -> None:
    clock = FakeClock()
    breaker, events = _breaker(clock)
    _open(breaker)
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.allow()  # the probe
    assert breaker.state == "half_open"
    assert not breaker.allow()  # a second caller while the probe is in flight
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "half_open"  # success_threshold is 2
    assert breaker.allow()  # the next probe
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(5))
    assert events == [("svc", "open"), ("svc", "half_open"), ("svc", "closed")]
    assert breaker.stats()["consecutive_failures"] == 0


def test_breaker_failed_probe_reopens_and_restarts_timer() -> None:
    clock = FakeClock()
    breaker, events = _breaker(clock)
    _open(breaker)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(9)  # timer restarted at the failed probe, not at the first opening
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    assert breaker.state == "half_open"
    assert breaker.stats()["opened_count"] == 2
    assert events == [("svc", "open"), ("svc", "half_open"), ("svc", "open"), ("svc", "half_open")]


def test_breaker_lost_probe_is_released_after_reset_timeout() -> None:
    clock = FakeClock()
    breaker, _ = _breaker(clock)
    _open(breaker)
    clock.advance(10)
    assert breaker.allow()  # probe never reports back
    clock.advance(5)
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow()


def test_breaker_half_open_probe_is_exclusive_across_threads() -> None:
    clock = FakeClock()
    breaker, _ = _breaker(clock)
    _open(breaker)
    clock.advance(10)
    start = threading.Barrier(16)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait()
        allowed = breaker.allow()
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_breaker_hook_errors_do_not_break_calls() -> None:
    def bad_hook(name: str, state: str) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker("x", failure_threshold=1, on_state_change=bad_hook)
    breaker.record_failure()
    assert breaker.state == "open"


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", success_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout_secs=-1)


# -- RetryPolicy ---------------------------------------------------------------------------


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _policy(max_retries: int, sleeps: list[float], **kw: float) -> RetryPolicy:
    return RetryPolicy(max_retries, sleep=sleeps.append, **kw)


def test_retry_succeeds_after_transient_errors() -> None:
    sleeps: list[float] = []
    fn = Flaky(Transient(), Transient())
    result = _policy(3, sleeps).call(fn, is_retryable=_retryable)
    assert result == "ok"
    assert fn.calls == 3
    assert len(sleeps) == 2


def test_retry_gives_up_after_max_retries_and_reraises_last_error() -> None:
    sleeps: list[float] = []
    fn = Flaky(*(Transient() for _ in range(10)))
    with pytest.raises(Transient):
        _policy(2, sleeps).call(fn, is_retryable=_retryable)
    assert fn.calls == 3  # 1 + max_retries
    assert len(sleeps) == 2


def test_zero_retries_means_one_attempt() -> None:
    fn = Flaky(Transient())
    with pytest.raises(Transient):
        _policy(0, []).call(fn, is_retryable=_retryable)
    assert fn.calls == 1


def test_non_retryable_error_is_raised_at_once() -> None:
    sleeps: list[float] = []
    fn = Flaky(ClientError())
    with pytest.raises(ClientError):
        _policy(5, sleeps).call(fn, is_retryable=_retryable)
    assert fn.calls == 1
    assert sleeps == []


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(5, base_delay_secs=0.1, max_delay_secs=0.5)
    for _ in range(50):
        assert 0.05 <= policy.backoff(1) <= 0.1
        assert 0.1 <= policy.backoff(2) <= 0.2
        assert 0.2 <= policy.backoff(3) <= 0.4
        assert 0.25 <= policy.backoff(4) <= 0.5
        assert 0.25 <= policy.backoff(60) <= 0.5
    assert len({policy.backoff(3) for _ in range(20)}) > 1  # jittered


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    sleeps: list[float] = []
    fn = Flaky(Transient(retry_after=0.0), Transient(retry_after=0.03), Transient(retry_after=99))
    policy = _policy(3, sleeps, base_delay_secs=5.0, max_delay_secs=0.05)
    assert policy.call(fn, is_retryable=_retryable, retry_after=_retry_after) == "ok"
    assert sleeps == [0.0, 0.03, 0.05]


def test_real_sleep_honours_retry_after() -> None:
    fn = Flaky(Transient(retry_after=0.0))
    policy = RetryPolicy(1, base_delay_secs=30.0)  # a backoff would hang the test
    assert policy.call(fn, is_retryable=_retryable, retry_after=_retry_after) == "ok"


def test_breaker_sees_failures_but_not_client_errors() -> None:
    clock = FakeClock()
    breaker, _ = _breaker(clock, failure_threshold=2)
    policy = _policy(0, [])
    for _ in range(3):
        with pytest.raises(ClientError):
            policy.call(
                Flaky(ClientError()), breaker=breaker, is_retryable=_retryable, is_failure=_failure
            )
    assert breaker.state == "closed"
    assert breaker.stats()["total_failures"] == 0
    assert breaker.stats()["total_calls"] == 3
    for _ in range(2):
        with pytest.raises(Malformed):
            policy.call(
                Flaky(Malformed()), breaker=breaker, is_retryable=_retryable, is_failure=_failure
            )
    assert breaker.state == "open"


def test_open_breaker_rejects_without_calling_and_without_retrying() -> None:
    clock = FakeClock()
    breaker, _ = _breaker(clock, failure_threshold=2)
    sleeps: list[float] = []
    fn = Flaky(*(Transient() for _ in range(10)))
    # Two failed attempts open the breaker; the third attempt is rejected, not retried.
    with pytest.raises(CircuitOpenError) as info:
        _policy(5, sleeps).call(fn, breaker=breaker, is_retryable=_retryable)
    assert fn.calls == 2
    assert isinstance(info.value, UnavailableError)
    assert wire(info.value).status == 503
    assert info.value.message == "circuit breaker 'svc' is open"
    assert info.value.details == {"name": "svc"}

    fn2 = Flaky()
    with pytest.raises(CircuitOpenError):
        _policy(5, sleeps).call(fn2, breaker=breaker, is_retryable=_retryable)
    assert fn2.calls == 0

    clock.advance(10)
    assert _policy(0, sleeps).call(fn2, breaker=breaker, is_retryable=_retryable) == "ok"
    assert breaker.state == "half_open"
    assert _policy(0, sleeps).call(fn2, breaker=breaker, is_retryable=_retryable) == "ok"
    assert breaker.state == "closed"


def test_retry_policy_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(-1)
    with pytest.raises(ValueError):
        RetryPolicy(1, base_delay_secs=-0.1)
