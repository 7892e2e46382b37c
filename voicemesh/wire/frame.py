"""The backbone frame: a small header with the client's real address and the edge id, put in front of each
unchanged datagram between edge relay and transceiver, both ways (README "Contracts": backbone frame).

A frame with an EMPTY payload (the header alone) from a transceiver to an edge is a close: the session
that the header's route belongs to has ended. When a transceiver ends a session it sends, for each route of
the session, the route's header with no payload; the edge then removes the flow at once and revokes its
token, so no new flow opens for that session (edge/relay_core.py). Datagrams are never empty otherwise: the
edge drops empty datagrams from clients, so a client cannot forge a close or send an empty frame upstream.
"""

import ipaddress
import socket
import struct

MAGIC = b"VM"
VERSION = 1
_FIXED = struct.Struct(">2sBBHH")  # magic, version, family (4 or 6), client port, edge id: 8 bytes
_PORT_AND_EDGE = struct.Struct(">HH").unpack_from
_HEADER_LENGTHS = {MAGIC + bytes([VERSION, 4]): 12, MAGIC + bytes([VERSION, 6]): 24}


class MalformedFrame(ValueError):
    """A backbone datagram without a valid frame header.

    `reason` is a counter label: "truncated", "magic", "version" or "family".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed backbone frame: {reason}")
        self.reason = reason


def encode_header(client: tuple[str, int], edge_id: int) -> bytes:
    """Return the frame header for a client address: 12 bytes for IPv4, 24 for IPv6.

    Layout (big endian): b"VM" | version u8 = 1 | family u8 (4 or 6) | client port u16 | edge id u16 |
    client IP (4 or 16 bytes). `client` is a socket address (IPv6 ones may carry flowinfo and scope id,
    which are not encoded); an IPv4-mapped IPv6 address ("::ffff:192.0.2.1") is encoded as IPv4.
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
    return _FIXED.pack(MAGIC, VERSION, address.version, port, edge_id) + address.packed


def _reason(data: bytes) -> str:
    if len(data) >= 2 and data[:2] != MAGIC:
        return "magic"
    if len(data) >= 3 and data[2] != VERSION:
        return "version"
    if len(data) >= 4 and data[3] not in (4, 6):
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


def decode(data: bytes) -> tuple[tuple[str, int], int, int]:
    """Return ((client ip, client port), edge id, header length) of a frame.

    The IP is in its canonical text form ("192.0.2.1", "2001:db8::1"). Raises MalformedFrame as header_length.
    """
    n = header_length(data)
    port, edge_id = _PORT_AND_EDGE(data, 4)
    host = socket.inet_ntop(socket.AF_INET if n == 12 else socket.AF_INET6, data[8:n])
    return (host, port), edge_id, n
