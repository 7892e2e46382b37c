"""Fuzzing the backbone frame (voicemesh/wire/frame.py) with hypothesis: header_length and decode on
arbitrary datagrams and mutated frames return normally or raise MalformedFrame; frames decode to what
was encoded; decode_control on mutated hellos, vouches and batches returns a well-formed message or raises
MalformedFrame."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.wire.frame import (
    Batch,
    Hello,
    MalformedFrame,
    Vouch,
    decode,
    decode_control,
    encode_batches,
    encode_header,
    encode_hello,
    encode_vouches,
    header_length,
)

pytestmark = pytest.mark.unit

addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
frames = st.builds(lambda host, port, edge, payload: encode_header((host, port), edge) + payload,
                   addresses, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=40))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@given(st.one_of(st.binary(max_size=64), frames, mutated()))
def test_header_length_and_decode_raise_only_malformed_frame(data):
    try:
        n = header_length(data)
    except MalformedFrame as exc:
        assert exc.reason in {"magic", "version", "family", "truncated"}
        with pytest.raises(MalformedFrame):
            decode(data)
        return
    (host, port), edge_id, length = decode(data)
    assert length == n in (12, 24) and len(data) >= n
    assert ipaddress.ip_address(host).version == (4 if n == 12 else 6)
    assert 0 <= port <= 0xFFFF and 0 <= edge_id <= 0xFFFF


@given(addresses, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=40))
def test_a_frame_decodes_to_what_was_encoded(host, port, edge_id, payload):
    data = encode_header((host, port), edge_id) + payload
    (decoded_host, decoded_port), decoded_edge, n = decode(data)
    address = ipaddress.ip_address(host)
    expected = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address
    assert (ipaddress.ip_address(decoded_host), decoded_port, decoded_edge) == (expected, port, edge_id)
    assert data[n:] == payload


controls = st.one_of(
    st.builds(encode_hello, st.integers(0, 0xFFFF), st.binary(min_size=8, max_size=8)),
    st.builds(lambda nonce, routes: encode_vouches(nonce, routes)[-1], st.binary(min_size=8, max_size=8),
              st.lists(st.tuples(frames.map(lambda f: f[:header_length(f)]), st.binary(min_size=1, max_size=40)),
                       max_size=5)),
    st.builds(lambda group: encode_batches(group)[0], st.lists(frames, min_size=2, max_size=4)))


@st.composite
def mutated_controls(draw) -> bytes:
    data = bytearray(draw(controls))
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=4))


@given(st.one_of(st.binary(max_size=64).map(lambda b: b"VM\x01\x00" + b), mutated_controls()))
def test_decode_control_raises_only_malformed_frame(data):
    try:
        message = decode_control(data)
    except MalformedFrame as exc:
        assert exc.reason in {"magic", "version", "family", "truncated", "control_length", "control_type",
                              "control_entry"}
        return
    if isinstance(message, Vouch):
        assert all(header_length(header) == len(header) and ufrag for header, ufrag in message.routes)
    elif isinstance(message, Batch):
        assert all(header_length(one) <= len(one) for one in message.frames)
    else:
        assert isinstance(message, Hello) and len(message.nonce) == 8
