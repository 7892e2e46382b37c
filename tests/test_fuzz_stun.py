"""Fuzzing the STUN parsers (voicemesh/wire/stun.py) with hypothesis: arbitrary datagrams, well-formed
messages and their mutations. Each function returns normally or raises MalformedStun, nothing else."""

from __future__ import annotations

import hmac
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.wire.stun import (
    FINGERPRINT,
    FINGERPRINT_XOR,
    MAGIC_COOKIE,
    MESSAGE_INTEGRITY,
    USERNAME,
    MalformedStun,
    binding_request_username,
    check_fingerprint,
    check_message_integrity,
    is_stun,
    parse,
    split_username,
)

pytestmark = pytest.mark.unit

KEY = b"abcdefghijklmnopqrstuvwx"


def encode(message_type: int, transaction_id: bytes, attributes: list[tuple[int, bytes]], *,
           integrity: bool, fingerprint: bool) -> bytes:
    """A STUN message (RFC 8489 5, 14) with padded attributes, then MESSAGE-INTEGRITY and FINGERPRINT if asked."""
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\x00" * (-len(v) % 4) for t, v in attributes)

    def header(length: int) -> bytes:
        return struct.pack("!HH", message_type, length) + MAGIC_COOKIE + transaction_id

    if integrity:
        mac = hmac.digest(KEY, header(len(body) + 24) + body, "sha1")
        body += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        crc = zlib.crc32(header(len(body) + 8) + body) ^ FINGERPRINT_XOR
        body += struct.pack("!HHI", FINGERPRINT, 4, crc)
    return header(len(body)) + body


attributes = st.lists(st.tuples(st.one_of(st.just(USERNAME), st.integers(0, 0xFFFF)),
                                st.binary(max_size=40)), max_size=6)
# Message types under 0x0400: the RFC 7983 demultiplexing range (first byte 0..3) the relay takes as STUN.
message_types = st.one_of(st.just(1), st.integers(0, 0x3FF))
messages = st.builds(encode, message_types, st.binary(min_size=12, max_size=12),
                     attributes, integrity=st.booleans(), fingerprint=st.booleans())


@st.composite
def mutated(draw, source: st.SearchStrategy[bytes]) -> bytes:
    """``source``'s bytes with a few overwritten, cut off or extended."""
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=8))


datagrams = st.one_of(st.binary(max_size=200), messages, mutated(messages))


def only_malformed(function, *args):
    """``function(*args)``, or None when it raises MalformedStun (any other exception fails the test)."""
    try:
        return function(*args)
    except MalformedStun as exc:
        assert exc.reason in {"not_stun", "truncated", "bad_length", "bad_attribute", "not_binding_request",
                              "no_username", "bad_username"}
        return None


@given(datagrams)
def test_the_parsers_raise_only_malformed_stun(data):
    assert isinstance(is_stun(data), bool)
    only_malformed(parse, data)
    username = only_malformed(binding_request_username, data)  # reads no further than USERNAME
    only_malformed(check_fingerprint, data)
    only_malformed(check_message_integrity, data, KEY)
    if username is not None:
        assert data[:2] == b"\x00\x01"
        only_malformed(split_username, username)


@given(st.binary(max_size=80))
def test_split_username_raises_only_malformed_stun(username):
    parts = only_malformed(split_username, username)
    assert parts is None or b":".join(parts) == username


@given(message_types, st.binary(min_size=12, max_size=12), attributes,
       st.booleans(), st.booleans())
def test_well_formed_messages_parse_back_and_verify(message_type, transaction_id, attrs, integrity, fingerprint):
    data = encode(message_type, transaction_id, attrs, integrity=integrity, fingerprint=fingerprint)
    message = parse(data)
    assert (message.message_type, message.transaction_id) == (message_type, transaction_id)
    assert message.attributes[: len(attrs)] == attrs
    assert check_fingerprint(data) == fingerprint or (not fingerprint and attrs and attrs[-1][0] == FINGERPRINT)
    if integrity and not any(t == MESSAGE_INTEGRITY for t, _ in attrs):
        assert check_message_integrity(data, KEY)
