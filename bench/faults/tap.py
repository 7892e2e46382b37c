"""A UDP hop between callers and an edge relay that timestamps every RTP packet both ways, and the audio
gaps read off those timestamps.

The edge advertises the hop's ``inside`` address as its relay (``--advertise``), so callers send there; each
caller gets its own outside socket towards the relay. The echo agent answers every 20 ms frame the caller
sends (speech or silence, Opus has no gaps), so the echo off the wire is a packet every 20 ms while the call
works: the longest silence between two echo packets is the longest audio gap the caller heard.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from dataclasses import dataclass, field

from bench.mesh.net import Endpoint


def is_rtp(data: bytes) -> bool:
    """An RTP (not RTCP) datagram: version 2 in the first byte (RFC 7983 demultiplexing: 128..191) and a
    second byte outside RTCP's packet types 192..223 (RFC 5761 section 4)."""
    return len(data) >= 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223


@dataclass
class Wire:
    """One caller's RTP arrival times at the hop (``time.monotonic()`` seconds): ``up`` from the caller,
    ``down`` towards it."""

    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Gap:
    """The longest stretch without echo, ``start`` to ``end`` (monotonic seconds), in ``ms``."""

    start: float
    end: float

    @property
    def ms(self) -> float:
        return round((self.end - self.start) * 1000, 1)


def longest_gap(wire: Wire, after: float = 0.0) -> Gap | None:
    """The longest stretch without an echo packet while the caller was sending, from the first echo packet
    at or after ``after`` to the caller's last packet (an echo that never comes back counts up to then).
    None if no echo arrived."""
    down = wire.down[bisect.bisect_left(wire.down, after):]
    if not down or not wire.up:
        return None
    times = [*down, max(wire.up[-1], down[-1])]
    start, end = max(itertools.pairwise(times), key=lambda pair: pair[1] - pair[0])
    return Gap(start, end)


def echo_after(wire: Wire, moment: float) -> float | None:
    """When the first echo packet at or after ``moment`` arrived, None if none did."""
    index = bisect.bisect_left(wire.down, moment)
    return wire.down[index] if index < len(wire.down) else None


class WireTap:
    """The hop: ``inside`` ("host", port) where callers send, forwarding from ``outside_host`` to ``relay``.

    ``wires`` holds a Wire per caller address.
    """

    def __init__(self, inside: tuple[str, int], outside_host: str, relay: tuple[str, int],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.relay = relay
        self.wires: dict[tuple[str, int], Wire] = {}
        self._outside_host = outside_host
        self._loop = loop
        self._mappings: dict[tuple[str, int], Endpoint] = {}
        self.inside = Endpoint(inside[0], loop, self._from_caller, port=inside[1])

    def _from_caller(self, _endpoint: Endpoint, data: bytes, caller: tuple) -> None:
        wire = self.wires.setdefault(caller, Wire())
        if is_rtp(data):
            wire.up.append(self._loop.time())
        mapping = self._mappings.get(caller)
        if mapping is None:
            def back(_e: Endpoint, reply: bytes, _addr: tuple) -> None:
                if is_rtp(reply):
                    wire.down.append(self._loop.time())
                self.inside.send(reply, caller)

            mapping = self._mappings[caller] = Endpoint(self._outside_host, self._loop, back)
        mapping.send(data, self.relay)

    def merged(self) -> Wire:
        """Every caller's wire as one: the legs of a re-dialled call come from new addresses."""
        return Wire(sorted(t for w in self.wires.values() for t in w.up), sorted(t for w in self.wires.values() for t in w.down))

    def close(self) -> None:
        self.inside.close()
        for mapping in self._mappings.values():
            mapping.close()
