"""ICE-TCP at the edge, sans-IO (RFC 6544 passive candidate, RFC 4571 framing): the framing parser and the
connection rules, bytes and time in, packets and decisions out. edge/relay_tcp.py owns the sockets; the
packets go through the same relay core as UDP datagrams (edge/relay_core.py), so a TCP client's first packet
passes the same checks (a STUN Binding request with a valid routing token, the caps, the table's size).

Rules (README "ICE-TCP on 443"):

- **Framing** (RFC 4571 section 2): each packet is a 16-bit big-endian length and that many bytes. A length
  of 0 or above ``max_frame_bytes`` closes the connection (``framing_length``); a connection never buffers
  more than one partial frame (2 + ``max_frame_bytes`` bytes).
- **Admission**: at most ``max_connections`` connections in all and ``max_per_source`` per source (an IPv4
  address, or an IPv6 /64); the rest are closed as they are accepted (``source_cap``, ``total_cap``).
- **First packet** (slowloris): a connection whose first packet has not opened a flow within
  ``first_packet_timeout_s`` of its accept is closed (``first_packet_timeout``), however many bytes it
  trickles. A first packet the relay core refuses closes the connection at once (``refused``): nothing is
  ever written to a connection that has not been routed.
- **Idle**: a routed connection lives as long as its flow: when the flow leaves the table (the session
  ended, the flow idled out after ``idle_timeout_s`` or stayed unproven for ``pending_timeout_s``, or was
  evicted), the connection is closed at the next sweep (``flow_gone``).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_FRAME_BYTES = 1500
"""Largest RFC 4571 frame accepted from a client (bytes). Browsers' largest ICE-TCP packets are DTLS
handshake flights of about 650 bytes; RTP audio stays under 400."""


class MalformedFraming(ValueError):
    """The byte stream is not RFC 4571 framing within the limits; ``reason`` is the counter label
    ("framing_length": a frame length of 0 or above the limit)."""

    def __init__(self, reason: str, length: int) -> None:
        super().__init__(f"bad RFC 4571 frame: {reason} ({length} bytes)")
        self.reason = reason


class FrameReader:
    """Splits a TCP byte stream into RFC 4571 packets (section 2: u16 length, then the packet).

    ``feed(data)`` returns the packets completed by ``data`` (bytes each, in order) and keeps at most one
    partial frame (``buffered`` bytes, never more than 2 + ``max_frame_bytes``). Raises MalformedFraming
    for a length of 0 or above ``max_frame_bytes``; the reader is then unusable (close the connection).
    """

    __slots__ = ("max_frame_bytes", "_partial")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if not 0 < max_frame_bytes <= 0xFFFF:
            raise ValueError(f"max_frame_bytes must be in 1..65535, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._partial = b""

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        """The packets that ``data`` (the next bytes of the stream) completes. Raises MalformedFraming."""
        if self._partial:
            data = self._partial + data
            self._partial = b""
        packets = []
        at, end, limit = 0, len(data), self.max_frame_bytes
        while end - at >= 2:
            length = (data[at] << 8) | data[at + 1]
            if not 0 < length <= limit:
                raise MalformedFraming("framing_length", length)
            stop = at + 2 + length
            if stop > end:
                break
            packets.append(data[at + 2:stop])
            at = stop
        if at < end:
            self._partial = data[at:]
        return packets


def frame_packet(packet: bytes) -> bytes:
    """``packet`` with its RFC 4571 length prefix. Raises ValueError above 65535 bytes."""
    return len(packet).to_bytes(2, "big") + packet


def source_of(peer: tuple[Any, ...]) -> str:
    """The admission key of a peer socket address: its IPv4 address (an IPv4-mapped IPv6 one too), or its
    IPv6 /64 (one host or subscriber holds a whole /64). Raises ValueError for a bad IP text."""
    address = ipaddress.ip_address(peer[0])
    if address.version == 6:
        if address.ipv4_mapped is None:
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        address = address.ipv4_mapped
    return str(address)


@dataclass(slots=True, eq=False)
class TcpConnection:
    """One accepted client connection, as the gate sees it: ``peer`` (socket address), ``source`` (admission
    key), ``opened_at`` (the caller's clock, seconds), and ``flow``: the relay flow its packets opened
    (None until its first packet did), whose presence in the flow table keeps it open. ``close`` is the
    adapter's way to close it (called with the reason by ``expire``)."""

    peer: tuple[Any, ...]
    source: str
    opened_at: float
    close: Callable[[str], object] = field(repr=False)
    flow: Any = None


class TcpGate:
    """The TCP connections of one relay: admission, first-packet deadline and life with the flow (module
    docstring). ``counters`` counts ``accepted``, refusals (``source_cap``, ``total_cap``) and closes by
    reason (``closed_<reason>``). ``has_flow(flow)`` says whether a flow is still in the relay's table.
    Raises ValueError for a setting that is not positive."""

    def __init__(self, has_flow: Callable[[Any], bool], *, max_connections: int = 10_000, max_per_source: int = 16,
                 first_packet_timeout_s: float = 5.0) -> None:
        for name, value in (("max_connections", max_connections), ("max_per_source", max_per_source),
                            ("first_packet_timeout_s", first_packet_timeout_s)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.has_flow = has_flow
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.first_packet_timeout_s = first_packet_timeout_s
        self.connections: set[TcpConnection] = set()
        self._per_source: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.connections)

    def accept(self, peer: tuple[Any, ...], now: float, close: Callable[[str], object]) -> TcpConnection | str:
        """Admit a connection from ``peer`` accepted at ``now`` (seconds): the connection, or the refusal's
        reason (counted; close the socket at once)."""
        try:
            source = source_of(peer)
        except ValueError:
            source = str(peer[0])
        if len(self.connections) >= self.max_connections:
            return self._count("total_cap")
        if self._per_source[source] >= self.max_per_source:
            return self._count("source_cap")
        conn = TcpConnection(peer, source, now, close)
        self.connections.add(conn)
        self._per_source[source] += 1
        self.counters["accepted"] += 1
        return conn

    def closed(self, conn: TcpConnection, reason: str) -> None:
        """Forget ``conn``, closed for ``reason`` (counted as ``closed_<reason>``); again: nothing."""
        if conn not in self.connections:
            return
        self.connections.remove(conn)
        self._per_source[conn.source] -= 1
        if not self._per_source[conn.source]:
            del self._per_source[conn.source]
        self.counters["closed_" + reason] += 1

    def expire(self, now: float) -> list[tuple[TcpConnection, str]]:
        """Sweep (about every second): the connections to close now, with the reason, each already forgotten
        and ``close(reason)`` called: unrouted ones past the first-packet deadline (``first_packet_timeout``),
        routed ones whose flow left the table (``flow_gone``)."""
        gone = []
        for conn in self.connections:
            if conn.flow is None:
                if now - conn.opened_at >= self.first_packet_timeout_s:
                    gone.append((conn, "first_packet_timeout"))
            elif not self.has_flow(conn.flow):
                gone.append((conn, "flow_gone"))
        for conn, reason in gone:
            self.closed(conn, reason)
            conn.close(reason)
        return gone

    def _count(self, reason: str) -> str:
        self.counters[reason] += 1
        return reason
