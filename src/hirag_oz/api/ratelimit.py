"""Per-client rate limiting with the `limits` library.

Two windows apply to every client: `requests_per_minute` over a minute, and
`ceil(requests_per_minute / 60) + burst` over one second, so a client may briefly go
`burst` requests above its steady per-second rate but never above its per-minute quota.
Counters live in `storage_uri`: memory by default, Redis when several processes must share
one limit. A client is its API key (hashed) when auth is on, else its address.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from hirag_oz.config import RateLimitSettings
from hirag_oz.errors import ConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_in: int
    retry_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset_in).encode()),
        ]


class RateLimiter:
    def __init__(self, settings: RateLimitSettings) -> None:
        uri = settings.storage_uri
        if not uri.startswith("async+"):
            uri = f"async+{uri}"
        try:
            storage = storage_from_string(uri)
        except Exception as exc:  # unknown scheme or a missing driver
            raise ConfigurationError(f"rate_limit.storage_uri: {exc}") from None
        assert isinstance(storage, Storage)
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self.per_minute: RateLimitItem = RateLimitItemPerMinute(settings.requests_per_minute)
        self.per_second: RateLimitItem = RateLimitItemPerSecond(
            math.ceil(settings.requests_per_minute / 60) + settings.burst
        )
        self.proxies = _networks(settings.trusted_proxies)

    async def hit(self, client: str) -> Decision:
        """Count one request of `client` and say whether it may proceed."""
        for item in (self.per_second, self.per_minute):
            if not await self._limiter.hit(item, client):
                stats = await self._limiter.get_window_stats(item, client)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                minute = await self._limiter.get_window_stats(self.per_minute, client)
                return Decision(
                    False,
                    self.per_minute.amount,
                    minute.remaining if item is self.per_second else 0,
                    max(wait, _seconds_until(minute.reset_time)),
                    wait,
                )
        minute = await self._limiter.get_window_stats(self.per_minute, client)
        return Decision(
            True, self.per_minute.amount, minute.remaining, _seconds_until(minute.reset_time), 0
        )

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The address to limit: the peer, or the nearest untrusted hop behind trusted proxies."""
        if peer is None:
            return "unknown"
        if not forwarded_for or not _in(peer, self.proxies):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not _in(hop, self.proxies):
                return hop
        return hops[0] if hops else peer


def _seconds_until(moment: float) -> int:
    return max(0, math.ceil(moment - time.time()))


def _networks(entries: Sequence[str]) -> list[Network]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigurationError(
                f"rate_limit.trusted_proxies: {entry!r} is not an IP address or network"
            ) from None
    return networks


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
