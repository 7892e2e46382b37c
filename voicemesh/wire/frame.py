"""The backbone frame: a small header with the client's real address and the edge id, put in front of each
unchanged datagram between edge relay and transceiver, both ways (README "Contracts": backbone frame).

A frame with an EMPTY payload (the header alone) from a transceiver to an edge is a close: the session
that the header's route belongs to has ended. When a transceiver ends a session it sends, for each route of
the session, the route's header with no payload; the edge then removes the flow at once and revokes its
token, so no new flow opens for that session (edge/relay_core.py). Datagrams are never empty otherwise: the
edge drops empty datagrams from clients, so a client cannot forge a close or send an empty frame upstream.

A **control frame** has family byte 0 (``CONTROL``) and no client address: ``b"VM" | version u8 = 1 | 0 |
type u8``, then the type's body. It is how a restarted or upgraded edge picks up the live flows it has never
seen (edge/relay_core.py, core/mux_core.py):

- ``HELLO`` (type 1, edge to transceiver, 15 bytes): ``edge id u16 | nonce (8 bytes)``. "Vouch for the routes
  you have proven through my backbone address". The nonce is the edge's, random per relay process.
- ``VOUCH`` (type 2, transceiver to edge, at most MAX_CONTROL_BYTES): ``flags u8 (bit 0: the last frame of
  this answer) | nonce (8 bytes, the hello's) | count u8 | count x (frame header of the route, 12 or 24
  bytes | server ufrag length u8 | server ufrag)``. One answer is one or more frames, the last one flagged,
  even when it vouches for nothing.

- ``BATCH`` (type 3, transceiver to edge, at most MAX_CONTROL_BYTES): ``count u8 | count x (length u16 | frame)``,
  each frame a client frame (header, then its datagram) as it would travel alone. A transceiver packs the
  frames it sends one edge in one turn of its event loop (the agent's batched downlink: many sessions' packets
  at once) into one datagram: one system call and one wake-up on each side instead of one per packet, and
  fewer packets per second on the backbone. It sends BATCH only to an edge whose registry record says it reads
  them (``backbone_batch``); the edge checks each frame as if it had come alone.

**Transport** (RFC 6544 ICE-TCP): the family byte's top bit (``TCP`` = 0x80) marks a client that reached the
edge over TCP with RFC 4571 framing: family 0x84 (IPv4) or 0x86 (IPv6), header lengths unchanged. The frame
carries one framed packet (the RFC 4571 length is not carried). A TCP route and a UDP route of the same
client address are distinct headers, so the edge sends each reply back over the transport it came on. A
part that does not know the bit drops such frames (``family``), as it drops control frames. Frame version 1
is unchanged: a UDP header is byte for byte what it was.

The client never chooses a frame's header (the edge writes it), so no datagram of a client can be read as
a control frame, and header_length keeps refusing them (``family``): a part that does not know control
frames drops them. A new control message is a new type; an unknown type is dropped (``control_type``).
"""

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"VM"
VERSION = 1
_FIXED = struct.Struct(">2sBBHH")  # magic, version, family (4 or 6, | TCP), client port, edge id: 8 bytes
_PORT_AND_EDGE = struct.Struct(">HH").unpack_from
TCP = 0x80
"""Family bit: the client's packets come over TCP (RFC 6544 ICE-TCP, RFC 4571 framing)."""
_HEADER_LENGTHS = {MAGIC + bytes([VERSION, family]): 12 if family & 0x0F == 4 else 24
                   for family in (4, 6, 4 | TCP, 6 | TCP)}


CONTROL = 0
"""The family byte of a control frame."""
HELLO = 1
VOUCH = 2
BATCH = 3
VOUCH_LAST = 0x01
"""VOUCH flag: the last frame of the answer to one hello."""
NONCE_LENGTH = 8
MAX_CONTROL_BYTES = 1200
"""Largest VOUCH or BATCH frame encode_vouches and encode_batches write (bytes): one datagram on any backbone
path."""
_CONTROL_PREFIX = MAGIC + bytes([VERSION, CONTROL])
_HELLO = struct.Struct(">4sBH8s")  # prefix, type, edge id, nonce: 15 bytes
_VOUCH = struct.Struct(">4sBB8sB")  # prefix, type, flags, nonce, count: 15 bytes
_BATCH = struct.Struct(">4sBB")  # prefix, type, count: 6 bytes
_LENGTH = struct.Struct(">H")


class MalformedFrame(ValueError):
    """A backbone datagram without a valid frame header.

    `reason` is a counter label: "truncated", "magic", "version" or "family"; for control frames
    "control_length" (shorter or longer than its type and count say), "control_type" (unknown type) or
    "control_entry" (a vouched route's header is not a client frame header, or its ufrag is empty).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed backbone frame: {reason}")
        self.reason = reason


def encode_header(client: tuple[str, int], edge_id: int, *, tcp: bool = False) -> bytes:
    """Return the frame header for a client address: 12 bytes for IPv4, 24 for IPv6.

    Layout (big endian): b"VM" | version u8 = 1 | family u8 (4 or 6, with TCP (0x80) set for a client
    over TCP when ``tcp``) | client port u16 | edge id u16 | client IP (4 or 16 bytes). `client` is a
    socket address (IPv6 ones may carry flowinfo and scope id, which are not encoded); an IPv4-mapped IPv6
    address ("::ffff:192.0.2.1") is encoded as IPv4.
    Raises ValueError for a bad IP text, or a port or edge id outside 0..65535.
    """
    address = ipaddress.ip_address(client[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    port = client[1]
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"client port must be in 0..65535, got {port}")
    if not 0 <= edge_id <= 0xFFFF:
        raise ValueError(f"edge id must be in 0..65535, got {edge_id}")
    return _FIXED.pack(MAGIC, VERSION, address.version | (TCP if tcp else 0), port, edge_id) + address.packed


def _reason(data: bytes) -> str:
    if len(data) >= 2 and data[:2] != MAGIC:
        return "magic"
    if len(data) >= 3 and data[2] != VERSION:
        return "version"
    if len(data) >= 4 and data[3] not in (4, 6, 4 | TCP, 6 | TCP):
        return "family"
    return "truncated"


def header_length(data: bytes) -> int:
    """Return the header length of a frame (12 or 24 bytes) after checking magic, version and family and
    that the datagram holds the whole header; `data[n:]` is the carried datagram (empty: a close, see above).

    Raises MalformedFrame: "magic", "version", "family" or "truncated".
    """
    n = _HEADER_LENGTHS.get(data[:4])
    if n is None or len(data) < n:
        raise MalformedFrame(_reason(data))
    return n


def is_tcp(header: bytes) -> bool:
    """Whether a frame (header_length accepts it) carries a client over TCP (family bit TCP)."""
    return bool(header[3] & TCP)


def decode(data: bytes) -> tuple[tuple[str, int], int, int]:
    """Return ((client ip, client port), edge id, header length) of a frame.

    The IP is in its canonical text form ("192.0.2.1", "2001:db8::1"). Raises MalformedFrame as header_length.
    """
    n = header_length(data)
    port, edge_id = _PORT_AND_EDGE(data, 4)
    host = socket.inet_ntop(socket.AF_INET if n == 12 else socket.AF_INET6, data[8:n])
    return (host, port), edge_id, n


@dataclass(frozen=True, slots=True)
class Hello:
    """A HELLO control frame: the sending edge's id and its nonce (NONCE_LENGTH bytes)."""

    edge_id: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Vouch:
    """A VOUCH control frame: the nonce of the hello it answers, whether it is the answer's last frame, and
    the routes vouched for as (frame header, server ufrag) pairs."""

    nonce: bytes
    last: bool
    routes: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """A BATCH control frame: the client frames it carries, in order."""

    frames: tuple[bytes, ...]


def is_control(data: bytes) -> bool:
    """Whether ``data`` starts like a control frame (magic, version 1, family 0)."""
    return data[:4] == _CONTROL_PREFIX


def encode_hello(edge_id: int, nonce: bytes) -> bytes:
    """A HELLO frame (15 bytes). Raises ValueError for an edge id outside 0..65535 or a nonce that is not
    NONCE_LENGTH bytes."""
    _check_nonce(nonce)
    if not 0 <= edge_id <= 0xFFFF:
        raise ValueError(f"edge id must be in 0..65535, got {edge_id}")
    return _HELLO.pack(_CONTROL_PREFIX, HELLO, edge_id, nonce)


def encode_vouches(nonce: bytes, routes: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The VOUCH frames answering the hello with ``nonce``: ``routes`` (frame header, server ufrag) packed
    into frames of at most MAX_CONTROL_BYTES, the last one flagged VOUCH_LAST; one empty frame if there are
    no routes. Raises ValueError for a bad nonce, a header that header_length refuses or one with a
    payload, or a ufrag of 0 or more than 255 bytes."""
    _check_nonce(nonce)
    frames: list[bytes] = []
    entries: list[bytes] = []
    size = _VOUCH.size
    for header, ufrag in routes:
        if header_length(header) != len(header) or not 0 < len(ufrag) <= 0xFF:
            raise ValueError("a vouched route is a whole frame header and a ufrag of 1..255 bytes")
        entry = header + bytes([len(ufrag)]) + ufrag
        if entries and (size + len(entry) > MAX_CONTROL_BYTES or len(entries) == 0xFF):
            frames.append(_VOUCH.pack(_CONTROL_PREFIX, VOUCH, 0, nonce, len(entries)) + b"".join(entries))
            entries, size = [], _VOUCH.size
        entries.append(entry)
        size += len(entry)
    frames.append(_VOUCH.pack(_CONTROL_PREFIX, VOUCH, VOUCH_LAST, nonce, len(entries)) + b"".join(entries))
    return frames


def encode_batches(frames: list[bytes]) -> list[bytes]:
    """The datagrams that carry ``frames`` (client frames for one edge, in order): consecutive frames packed into
    BATCH frames of at most MAX_CONTROL_BYTES and 255 frames; a frame that would travel alone (nothing beside it
    fits) is sent as it is. Does not check the frames (they are the caller's own)."""
    datagrams: list[bytes] = []
    group: list[bytes] = []
    size = _BATCH.size
    for data in frames:
        if group and (size + 2 + len(data) > MAX_CONTROL_BYTES or len(group) == 0xFF):
            datagrams.append(_batch(group))
            group, size = [], _BATCH.size
        group.append(data)
        size += 2 + len(data)
    if group:
        datagrams.append(_batch(group))
    return datagrams


def _batch(group: list[bytes]) -> bytes:
    if len(group) == 1:
        return group[0]
    return _BATCH.pack(_CONTROL_PREFIX, BATCH, len(group)) + b"".join(_LENGTH.pack(len(f)) + f for f in group)


def decode_control(data: bytes) -> Hello | Vouch | Batch:
    """Parse a control frame (is_control is true). Raises MalformedFrame: "control_length",
    "control_type", "control_entry" (for BATCH: a frame that header_length refuses, a control frame among
    them); or as header_length if ``data`` is no control frame."""
    if not is_control(data):
        raise MalformedFrame("family" if data[:4] in _HEADER_LENGTHS else _reason(data))
    if len(data) < 5:
        raise MalformedFrame("control_length")
    kind = data[4]
    if kind == HELLO:
        if len(data) != _HELLO.size:
            raise MalformedFrame("control_length")
        _, _, edge_id, nonce = _HELLO.unpack(data)
        return Hello(edge_id, nonce)
    if kind == BATCH:
        return _decode_batch(data)
    if kind != VOUCH:
        raise MalformedFrame("control_type")
    if len(data) < _VOUCH.size:
        raise MalformedFrame("control_length")
    _, _, flags, nonce, count = _VOUCH.unpack_from(data)
    routes = []
    at = _VOUCH.size
    for _ in range(count):
        n = _HEADER_LENGTHS.get(data[at:at + 4])
        if n is None:
            raise MalformedFrame("control_entry" if len(data) >= at + 4 else "control_length")
        if len(data) < at + n + 1:
            raise MalformedFrame("control_length")
        length = data[at + n]
        if length == 0:
            raise MalformedFrame("control_entry")
        end = at + n + 1 + length
        if len(data) < end:
            raise MalformedFrame("control_length")
        routes.append((data[at:at + n], data[at + n + 1:end]))
        at = end
    if at != len(data):
        raise MalformedFrame("control_length")
    return Vouch(nonce, bool(flags & VOUCH_LAST), tuple(routes))


def _decode_batch(data: bytes) -> Batch:
    if len(data) < _BATCH.size:
        raise MalformedFrame("control_length")
    count = data[5]
    frames = []
    at = _BATCH.size
    for _ in range(count):
        if len(data) < at + 2:
            raise MalformedFrame("control_length")
        end = at + 2 + _LENGTH.unpack_from(data, at)[0]
        if len(data) < end:
            raise MalformedFrame("control_length")
        one = data[at + 2:end]
        n = _HEADER_LENGTHS.get(one[:4])
        if n is None or len(one) < n:
            raise MalformedFrame("control_entry")
        frames.append(one)
        at = end
    if at != len(data):
        raise MalformedFrame("control_length")
    return Batch(tuple(frames))


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_LENGTH:
        raise ValueError(f"a control nonce is {NONCE_LENGTH} bytes, got {len(nonce)}")
