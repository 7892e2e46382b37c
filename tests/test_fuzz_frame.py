"""Fuzzing the backbone frame (voicemesh/wire/frame.py) with hypothesis: header_length and decode on
arbitrary datagrams and mutated frames return normally or raise MalformedFrame; frames decode to what
was encoded."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.wire.frame import MalformedFrame, decode, encode_header, header_length

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
