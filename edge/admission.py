"""Admission of WHIP requests at the edge (sans-IO): token buckets per source, keyed by the caller's IPv4
address or IPv6 /64, and per session for its PATCHes (RFC 9725 4.3). Time comes in as an argument (seconds on
any monotonic clock)."""

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


class KeyedLimiter:
    """Token buckets per key (a source's ``source_key``, or a session id), at most ``max_keys`` of them (memory
    stays bounded). ``rate`` in requests per second, ``burst`` requests at once.

    When the table is full, the least recently used bucket is forgotten; a forgotten key starts
    again with a full bucket. Raises ValueError unless rate > 0 and burst >= 1.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        TokenBucket(rate, burst, 0.0)  # validates rate and burst
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one request for ``key`` at ``now``: 0.0 if allowed, else the seconds to wait (> 0)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


class PatchLimiter:
    """The work one session's PATCHes (RFC 9725 4.3) may cause at this edge, per session id.

    An ICE restart (a PATCH with ``If-Match: *``, RFC 9725 4.3.3) makes the owning transceiver mint a routing
    token and re-key the session: each session may make ``restarts_per_min`` of them at once, then one every
    ``60 / restarts_per_min`` seconds. Any other PATCH (trickle, RFC 8840) is cheaper: ``patches_per_min`` at
    once, then one every ``60 / patches_per_min`` seconds. Two buckets, so trickle never uses up a restart.
    At most ``max_sessions`` sessions are tracked (least recently used forgotten). Raises ValueError unless
    both counts are >= 1.
    """

    def __init__(self, patches_per_min: int, restarts_per_min: int, max_sessions: int = 65536) -> None:
        self.patches = KeyedLimiter(patches_per_min / 60.0, patches_per_min, max_sessions)
        self.restarts = KeyedLimiter(restarts_per_min / 60.0, restarts_per_min, max_sessions)

    def take(self, session_id: str, restart: bool, now: float) -> float:
        """Take one PATCH of ``session_id`` (``restart``: it asks for an ICE restart) at ``now``: 0.0 if
        allowed, else the seconds to wait (> 0)."""
        return (self.restarts if restart else self.patches).take(session_id, now)


def retry_after_s(wait_s: float) -> int:
    """A wait in seconds as a ``Retry-After`` value (RFC 9110 10.2.3): whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
