"""Admission of WHIP offers at the edge (sans-IO): per-source token buckets, keyed by the caller's IPv4
address or IPv6 /64. Time comes in as an argument (seconds on any monotonic clock)."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

from voicemesh.wire.ratelimit import TokenBucket

IPV6_PREFIX = 64
"""One IPv6 source is a /64: a single subscriber commonly holds a whole /64 (RFC 6177)."""


def source_key(ip: str) -> str:
    """The rate-limit key of a client IP: the IPv4 address, or the IPv6 /64 as ``prefix/64``
    (an IPv4-mapped IPv6 address counts as its IPv4 address). Anything unparsable is its own key."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class SourceLimiter:
    """Token buckets per source key, at most ``max_sources`` of them (memory stays bounded).

    When the table is full, the least recently used bucket is forgotten; a forgotten source starts
    again with a full bucket.
    """

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        TokenBucket(rate, burst, 0.0)  # validates rate and burst
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one request for ``key`` at ``now``: 0.0 if allowed, else the seconds to wait (> 0)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


def retry_after_s(wait_s: float) -> int:
    """A wait in seconds as a ``Retry-After`` value (RFC 9110 10.2.3): whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
