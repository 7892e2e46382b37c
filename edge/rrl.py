"""Response rate limiting for the geo DNS server, sans-IO: bounds what a spoofed flood can reflect to one network.

A UDP query's source address is not proven, so anyone can make the server answer a victim. RRL (the
BIND 9 and Knot DNS model, after Vixie and Schryver's DNS Response Rate Limiting) counts responses per
client prefix (/24 for IPv4, /56 for IPv6 by default) and response category, in a token bucket of
``rate`` responses per second: the balance earns ``rate`` credits a second, holds at most ``rate`` (a
one-second burst) and may fall to ``-window_s * rate``, so a prefix that keeps flooding stays limited
until it has been quiet for up to ``window_s`` seconds. Within the limit a response is sent as is. Over
it, every ``slip``-th response "slips": it is sent as a minimal truncated answer (TC=1, the header and
question only: about the query's size), which tells a legitimate resolver behind that prefix to
retry over TCP (RFC 7766). This server has no TCP yet, so such a resolver retries another name server
or later: slips keep a legitimate client told rather than silently timed out, and what bounds an
attack is the count. Over any T seconds a prefix receives at most ``rate * (1 + T)`` full responses
per category (and only the first ``rate`` once a flood faster than ``rate`` has begun, as its debt
never pays off), plus one slip per ``slip`` over-limit queries sent in its name. The rest are dropped.

Categories (BIND's): "answer" (NOERROR with records), "nodata" (NOERROR without), "nxdomain" and
"error" (REFUSED, FORMERR, SERVFAIL, NOTIMP; BADVERS, NOERROR in the header, counts as nodata), each
with its own rate; errors and NXDOMAIN are cheap to provoke with random names, so their defaults are stricter.
The table of buckets is bounded (least recently used evicted).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter, OrderedDict
from dataclasses import dataclass

CATEGORIES = ("answer", "nodata", "nxdomain", "error")
ACTIONS = ("sent", "slipped", "dropped")
_NOERROR, _NXDOMAIN = 0, 3
_TC = 0x02  # in the third header byte (RFC 1035 4.1.1)


@dataclass(frozen=True)
class RrlSettings:
    """Limits in responses per second per client prefix, by category (0: that category is not limited).

    ``window_s``: seconds of debt a flooding prefix can run up (BIND's ``window``). ``slip``: every
    ``slip``-th over-limit response is sent truncated (0: none, 1: all). ``ipv4_prefix`` and
    ``ipv6_prefix``: bits of the source address that name a client (BIND's ``ipv4-prefix-length``,
    ``ipv6-prefix-length``). ``max_entries``: buckets kept (least recently used evicted).
    """

    answers_per_s: int = 100
    nodata_per_s: int = 100
    nxdomains_per_s: int = 10
    errors_per_s: int = 10
    window_s: int = 15
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    max_entries: int = 100_000

    def __post_init__(self) -> None:
        for name in ("answers_per_s", "nodata_per_s", "nxdomains_per_s", "errors_per_s", "slip"):
            if getattr(self, name) < 0:
                raise ValueError(f"rrl {name} must be 0 or more, got {getattr(self, name)}")
        if self.window_s < 1 or self.max_entries < 1:
            raise ValueError("rrl window_s and max_entries must be at least 1")
        if not 0 <= self.ipv4_prefix <= 32 or not 0 <= self.ipv6_prefix <= 128:
            raise ValueError(f"rrl prefixes must be within /0../32 and /0../128, got /{self.ipv4_prefix} "
                             f"and /{self.ipv6_prefix}")

    def rate(self, category: str) -> int:
        """Responses per second allowed for ``category`` (one of CATEGORIES)."""
        return {"answer": self.answers_per_s, "nodata": self.nodata_per_s, "nxdomain": self.nxdomains_per_s,
                "error": self.errors_per_s}[category]


def category(response: bytes) -> str:
    """The RRL category of a response in DNS wire format (12+ bytes), from its header:
    rcode (RFC 1035 4.1.1) and ANCOUNT."""
    rcode = response[3] & 0x0F
    if rcode == _NOERROR:
        return "answer" if response[6] or response[7] else "nodata"
    return "nxdomain" if rcode == _NXDOMAIN else "error"


def slip(response: bytes) -> bytes:
    """The truncated form of a response this server rendered: its header with TC set and no records,
    and its question (at most one, its name uncompressed), so no larger than the query's header and
    question (the query's EDNS record is not echoed). Raises IndexError on a response shorter than
    its question says."""
    end = 12
    if response[4] or response[5]:
        while response[end]:
            end += response[end] + 1
        end += 5  # the root label, QTYPE, QCLASS
    if end > len(response):
        raise IndexError("response ends inside its question")
    return response[:2] + bytes([response[2] | _TC, response[3]]) + response[4:6] + bytes(6) + response[12:end]


@functools.lru_cache(maxsize=65536)
def _prefix(source: str, ipv4_bits: int, ipv6_bits: int) -> tuple[int, int]:
    address = ipaddress.ip_address(source)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = ipv4_bits if address.version == 4 else ipv6_bits
    return address.version, int(address) >> (address.max_prefixlen - bits)


class ResponseRateLimiter:
    """Decides, per response, to send it, slip it or drop it (see the module docstring).

    Counters: ``counts[action][category]`` for action in ACTIONS, ``evicted`` (buckets pushed out of a
    full table while still in debt, so their prefix got a fresh balance early).
    """

    def __init__(self, settings: RrlSettings) -> None:
        self.settings = settings
        self.counts: dict[str, Counter[str]] = {action: Counter() for action in ACTIONS}
        self.evicted = 0
        self._buckets: OrderedDict[tuple[int, int, str], list[float]] = OrderedDict()

    def __len__(self) -> int:
        """Buckets in the table."""
        return len(self._buckets)

    def limit(self, response: bytes, source: str, now: float) -> bytes | None:
        """What to send to ``source`` (an IP address as the socket reports it) for ``response`` (DNS
        wire, 12+ bytes, as rendered by edge/geodns.py) at ``now`` (seconds, monotonic): the response,
        its slip() form, or None to drop it."""
        kind = category(response)
        rate = self.settings.rate(kind)
        if not rate:
            self.counts["sent"][kind] += 1
            return response
        settings = self.settings
        key = (*_prefix(source, settings.ipv4_prefix, settings.ipv6_prefix), kind)
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = [float(rate), now, 0]
            if len(buckets) > settings.max_entries:
                _, (balance, last, _) = buckets.popitem(last=False)
                if balance + (now - last) * rate < rate:
                    self.evicted += 1
        else:
            buckets.move_to_end(key)
            balance, last, _ = bucket
            bucket[0] = min(float(rate), balance + max(now - last, 0.0) * rate)
            bucket[1] = max(now, last)
        bucket[0] -= 1
        if bucket[0] >= 0:
            self.counts["sent"][kind] += 1
            return response
        bucket[0] = max(bucket[0], -float(settings.window_s * rate))
        bucket[2] += 1
        if settings.slip and bucket[2] % settings.slip == 0:
            self.counts["slipped"][kind] += 1
            return slip(response)
        self.counts["dropped"][kind] += 1
        return None

    def stats(self) -> dict:
        """``{action: {category: responses}}`` for each action, ``buckets`` in the table, ``evicted``."""
        return {**{action: dict(counter) for action, counter in self.counts.items()},
                "buckets": len(self._buckets), "evicted": self.evicted}
