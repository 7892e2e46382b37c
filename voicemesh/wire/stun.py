"""Just enough STUN (RFC 8489, formerly RFC 5389) for the edge relay: the RFC 7983 demux test, the USERNAME
of a Binding request and the type and transaction id of any message read straight from the bytes, plus a
small parser and the FINGERPRINT and MESSAGE-INTEGRITY checks for tests and slow paths."""

import hmac
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
HEADER_LENGTH = 20
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
MESSAGE_INTEGRITY_SHA256 = 0x001C
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E

_TYPE_AND_LENGTH: Callable[..., tuple[int, int]] = struct.Struct("!HH").unpack_from


class MalformedStun(ValueError):
    """A datagram that is not the STUN message the caller needs.

    `reason` is a short counter label: "not_stun", "truncated", "bad_length", "bad_attribute",
    "not_binding_request", "no_username" or "bad_username".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed STUN message: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A parsed STUN message: the 14-bit message type (method and class, e.g. 0x0001 for a Binding request),
    the 12-byte transaction id, and the attributes as (type, raw value without padding) in wire order."""

    message_type: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]]


def is_stun(data: bytes) -> bool:
    """Whether a datagram is STUN (RFC 7983 section 7: first byte 0..3) with a full 20-byte header and the
    RFC 8489 section 5 magic cookie. Anything else on the relay port is DTLS, SRTP or SRTCP (or junk)."""
    return len(data) >= HEADER_LENGTH and data[0] < 4 and data[4:8] == MAGIC_COOKIE


def _check_header(data: bytes) -> int:
    """Validate the header and message length (RFC 8489 section 5); return the message type."""
    if not data or data[0] > 3:
        raise MalformedStun("not_stun")
    if len(data) < HEADER_LENGTH:
        raise MalformedStun("truncated")
    if data[4:8] != MAGIC_COOKIE:
        raise MalformedStun("not_stun")
    message_type, length = _TYPE_AND_LENGTH(data)
    if HEADER_LENGTH + length > len(data):
        raise MalformedStun("truncated")
    if HEADER_LENGTH + length < len(data) or length & 3:
        raise MalformedStun("bad_length")
    return message_type


def transaction(data: bytes) -> tuple[int, bytes]:
    """Return (message type, 12-byte transaction id) of a STUN message (RFC 8489 section 5), e.g.
    (BINDING_SUCCESS, txid) for a Binding success response; attributes are not read.

    The header is checked as in `parse`. Raises MalformedStun: "not_stun", "truncated" or "bad_length".
    """
    return _check_header(data), data[8:HEADER_LENGTH]


def binding_request_username(data: bytes) -> bytes:
    """Return the raw USERNAME value (RFC 8489 section 14.3) of a STUN Binding request, without decoding
    anything else.

    The header is checked as in `parse`; the message type must be 0x0001 (class request, method Binding).
    Attributes are walked with bounds checks up to the first MESSAGE-INTEGRITY(-SHA256), after which
    RFC 8489 section 14.5 says attributes are to be ignored.
    Raises MalformedStun: "not_stun", "truncated", "bad_length", "not_binding_request", "bad_attribute"
    (a value overruns the message) or "no_username".
    """
    if _check_header(data) != BINDING_REQUEST:
        raise MalformedStun("not_binding_request")
    for attr_type, start, stop in _walk(data):
        if attr_type == USERNAME:
            return data[start:stop]
        if attr_type == MESSAGE_INTEGRITY or attr_type == MESSAGE_INTEGRITY_SHA256:
            break
    raise MalformedStun("no_username")


def split_username(username: bytes) -> tuple[bytes, bytes]:
    """Split an ICE USERNAME "<receiver ufrag>:<sender ufrag>" (RFC 8445 section 7.2.2) at the first colon.

    For a client's check to the server, the first part is the server ufrag (our routing token).
    Raises MalformedStun("bad_username") if there is no colon or either part is empty.
    """
    receiver, colon, sender = username.partition(b":")
    if not colon or not receiver or not sender:
        raise MalformedStun("bad_username")
    return receiver, sender


def _walk(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value stop) of each attribute in order, with bounds checks (the header must
    have been checked). Raises MalformedStun("bad_attribute") when a value overruns the message."""
    end = len(data)
    pos = HEADER_LENGTH
    # end and pos are multiples of 4, so an attribute header always fits, and so does a value's padding.
    while pos < end:
        attr_type, attr_length = _TYPE_AND_LENGTH(data, pos)
        start = pos + 4
        stop = start + attr_length
        if stop > end:
            raise MalformedStun("bad_attribute")
        yield attr_type, start, stop
        pos = start + ((attr_length + 3) & ~3)


def _attributes(data: bytes) -> list[tuple[int, int, int]]:
    """(type, value start, value stop) of every attribute, after a header check."""
    _check_header(data)
    return list(_walk(data))


def parse(data: bytes) -> StunMessage:
    """Parse any STUN message (RFC 8489 sections 5 and 14) into a StunMessage; attribute values are kept raw.

    Raises MalformedStun: "not_stun", "truncated", "bad_length" or "bad_attribute".
    """
    attributes = [(t, data[start:stop]) for t, start, stop in _attributes(data)]
    return StunMessage(message_type=int.from_bytes(data[:2], "big"), transaction_id=data[8:20], attributes=attributes)


def check_fingerprint(data: bytes) -> bool:
    """Whether the message ends in a FINGERPRINT attribute holding CRC-32 of everything before it XOR
    0x5354554E (RFC 8489 section 14.7). False if it is absent, misplaced or wrong.

    Raises MalformedStun if the data is not a well-formed STUN message.
    """
    attributes = _attributes(data)
    if not attributes:
        return False
    attr_type, start, stop = attributes[-1]
    if attr_type != FINGERPRINT or stop - start != 4:
        return False
    return zlib.crc32(data[:-8]) ^ FINGERPRINT_XOR == int.from_bytes(data[-4:], "big")


def check_message_integrity(data: bytes, key: bytes) -> bool:
    """Whether MESSAGE-INTEGRITY holds HMAC-SHA1(key, message up to that attribute), computed with the
    header's length field covering the message only up to and including MESSAGE-INTEGRITY
    (RFC 8489 section 14.5). False if the attribute is absent or wrong.

    `key` is the ICE pwd for short-term credentials (RFC 8445 section 7.2.2), or MD5("user:realm:password")
    for long-term ones (RFC 8489 section 9.2.2). Raises MalformedStun if the data is not a well-formed
    STUN message.
    """
    for attr_type, start, stop in _attributes(data):
        if attr_type == MESSAGE_INTEGRITY:
            if stop - start != 20:
                return False
            signed = data[:2] + (stop - HEADER_LENGTH).to_bytes(2, "big") + data[4 : start - 4]
            return hmac.compare_digest(hmac.digest(key, signed, "sha1"), data[start:stop])
    return False
