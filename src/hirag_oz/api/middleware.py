"""ASGI middleware, outermost first: observe (request id, metrics, access log), auth, rate
limit, body limit. Only `/api/` paths are protected and limited; operations endpoints
(`/`, `/health*`, `/metrics`, `/docs`, `/openapi.json`) are public.

Auth runs before rate limiting, so requests with a bad key never spend a real client's
quota; both answer before the body is read.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hirag_oz.api.errors import BodyTooLarge, envelope
from hirag_oz.api.ratelimit import RateLimiter
from hirag_oz.errors import AuthenticationError, HiragError, RateLimitedError, wire
from hirag_oz.keys import KeyStore
from hirag_oz.observability.metrics import Metrics

access_log = logging.getLogger("hirag_oz.access")

PROTECTED_PREFIX = "/api/"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _protected(scope: Scope, prefix: str = PROTECTED_PREFIX) -> bool:
    return scope["type"] == "http" and str(scope["path"]).startswith(prefix)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


async def _reject(
    scope: Scope,
    receive: Receive,
    send: Send,
    error: HiragError,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    response = envelope(wire(error).status, error.code, error.message, error.details)
    response.raw_headers.extend(headers)
    await response(scope, receive, send)


class ObserveMiddleware:
    """Gives each request an id (kept from a sane `X-Request-ID`), times it, counts it by
    route template and logs one line for it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        _state(scope)["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = 500
            raise
        finally:
            self.metrics.http_in_flight.dec()
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.observe_request(template, method, status, seconds)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


class AuthMiddleware:
    """`Authorization: Bearer <key>` on `prefix` (`/api/`; the MCP endpoint's `/mcp`) while
    any key is in force; the key's caller (tenant, role, agents) goes to the request's state
    for the operation's check."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        metrics: Metrics | None,
        prefix: str = PROTECTED_PREFIX,
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _protected(scope, self.prefix) or not self.keys.configured():
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        presented = token.strip()
        caller = self.keys.resolve(presented) if presented else None
        if caller is not None and scheme.lower() == "bearer":
            state = _state(scope)
            state["caller"] = caller
            state["client"] = f"key:{caller.key_id}"
            await self.app(scope, receive, send)
            return
        if scheme.lower() != "bearer" or not presented:
            reason, message = "missing", "an 'Authorization: Bearer <key>' header is required"
            challenge = b'Bearer realm="hirag-oz"'
        else:
            reason, message = "invalid", "the API key is not valid"
            challenge = b'Bearer realm="hirag-oz", error="invalid_token"'
        if self.metrics is not None:
            self.metrics.auth_failures.labels(reason).inc()
        await _reject(
            scope, receive, send, AuthenticationError(message), [(b"www-authenticate", challenge)]
        )


class RateLimitMiddleware:
    """429 with `Retry-After` over the limit; `X-RateLimit-*` on every limited response."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, metrics: Metrics) -> None:
        self.app = app
        self.limiter = limiter
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _protected(scope):
            await self.app(scope, receive, send)
            return
        client = _state(scope).get("client")
        if client is None:
            peer = scope.get("client")
            client = "addr:" + self.limiter.client_address(
                peer[0] if peer else None, _header(scope, b"x-forwarded-for")
            )
        decision = await self.limiter.hit(client)
        headers = decision.headers()
        if not decision.allowed:
            self.metrics.rate_limited.inc()
            error = RateLimitedError(
                f"rate limit exceeded; retry after {decision.retry_after} s",
                {
                    "limit": decision.limit,
                    "remaining": decision.remaining,
                    "retry_after_seconds": decision.retry_after,
                },
            )
            headers.append((b"retry-after", str(decision.retry_after).encode()))
            await _reject(scope, receive, send, error, headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """One limit for every request body (and its own for the paths in `per_path`), checked
    on `Content-Length` and while reading (chunked bodies too), so an oversize body is never
    held in memory."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.default_max)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await _reject(scope, receive, send, BodyTooLarge(max_bytes).error)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _reject(scope, receive, send, BodyTooLarge(max_bytes).error)
