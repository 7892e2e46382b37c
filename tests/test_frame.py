"""Tests for edge.frame: the backbone frame header between edge relay and transceiver."""

import pytest

from voicemesh.wire import frame
from voicemesh.wire.frame import MalformedFrame

pytestmark = pytest.mark.unit

DTLS_RECORD = bytes([22, 0xFE, 0xFD]) + bytes(range(40))


def reason(data: bytes) -> str:
    with pytest.raises(MalformedFrame) as caught:
        frame.header_length(data)
    with pytest.raises(MalformedFrame):
        frame.decode(data)
    return caught.value.reason


def test_ipv4_header_layout():
    header = frame.encode_header(("192.0.2.1", 54321), edge_id=7)

    assert header == b"VM" + bytes([1, 4]) + (54321).to_bytes(2, "big") + (7).to_bytes(2, "big") + bytes([192, 0, 2, 1])
    assert len(header) == 12


def test_ipv6_header_layout():
    header = frame.encode_header(("2001:db8::1", 443), edge_id=65535)

    assert header[:4] == b"VM\x01\x06"
    assert header[4:8] == bytes.fromhex("01bb ffff")
    assert header[8:] == bytes.fromhex("20010db8000000000000000000000001")
    assert len(header) == 24


def test_ipv4_mapped_ipv6_is_framed_as_ipv4():
    assert frame.encode_header(("::ffff:192.0.2.1", 5000), 1) == frame.encode_header(("192.0.2.1", 5000), 1)


def test_ipv6_socket_address_with_flowinfo_and_scope_id():
    assert frame.encode_header(("2001:db8::1", 5000, 0, 0), 1) == frame.encode_header(("2001:db8::1", 5000), 1)


@pytest.mark.parametrize("client", [("198.51.100.7", 3478), ("2001:db8:1234:5678:11:2233:4455:6677", 32853)])
def test_round_trip_keeps_the_datagram_intact(client):
    data = frame.encode_header(client, edge_id=42) + DTLS_RECORD

    address, edge_id, n = frame.decode(data)

    assert (address, edge_id) == (client, 42)
    assert frame.header_length(data) == n
    assert data[n:] == DTLS_RECORD


def test_header_alone_is_a_frame_with_an_empty_datagram_a_close():
    header = frame.encode_header(("192.0.2.1", 1), 1)

    assert frame.header_length(header) == 12
    assert frame.decode(header) == (("192.0.2.1", 1), 1, 12)


def test_decode_gives_canonical_ip_text():
    data = frame.encode_header(("2001:0DB8:0000::0001", 9), 1)

    assert frame.decode(data)[0] == ("2001:db8::1", 9)


def test_truncated():
    v4 = frame.encode_header(("192.0.2.1", 1), 1)
    v6 = frame.encode_header(("2001:db8::1", 1), 1)

    assert reason(b"") == "truncated"
    assert reason(b"VM\x01") == "truncated"
    assert reason(v4[:11]) == "truncated"
    assert reason(v6[:23]) == "truncated"


def test_wrong_magic():
    assert reason(b"XX\x01\x04" + bytes(8)) == "magic"
    assert reason(DTLS_RECORD) == "magic"


def test_unknown_version():
    assert reason(b"VM\x02\x04" + bytes(8)) == "version"


def test_unknown_family():
    assert reason(b"VM\x01\x05" + bytes(20)) == "family"


@pytest.mark.parametrize(
    "client, edge_id",
    [(("192.0.2.1", 65536), 1), (("192.0.2.1", -1), 1), (("192.0.2.1", 1), 65536), (("not-an-ip", 1), 1)],
)
def test_encode_rejects_what_does_not_fit(client, edge_id):
    with pytest.raises(ValueError):
        frame.encode_header(client, edge_id)


# Control frames: hello and vouch

NONCE = bytes(range(8))


def control_reason(data: bytes) -> str:
    with pytest.raises(MalformedFrame) as caught:
        frame.decode_control(data)
    return caught.value.reason


def test_hello_layout():
    hello = frame.encode_hello(7, NONCE)

    assert hello == b"VM\x01\x00" + bytes([1]) + (7).to_bytes(2, "big") + NONCE
    assert frame.is_control(hello)
    assert frame.decode_control(hello) == frame.Hello(7, NONCE)


def test_vouch_layout_and_round_trip():
    v4, v6 = frame.encode_header(("192.0.2.1", 5000), 3), frame.encode_header(("2001:db8::1", 9), 3)

    (vouch,) = frame.encode_vouches(NONCE, [(v4, b"tokenA"), (v6, b"tokenB")])

    assert vouch[:15] == b"VM\x01\x00" + bytes([2, frame.VOUCH_LAST]) + NONCE + bytes([2])
    assert vouch[15:] == v4 + b"\x06tokenA" + v6 + b"\x06tokenB"
    assert frame.decode_control(vouch) == frame.Vouch(NONCE, True, ((v4, b"tokenA"), (v6, b"tokenB")))


def test_an_answer_with_no_routes_is_one_empty_last_frame():
    assert frame.encode_vouches(NONCE, []) == [b"VM\x01\x00\x02\x01" + NONCE + b"\x00"]


def test_many_routes_are_split_into_frames_of_at_most_1200_bytes():
    routes = [(frame.encode_header(("2001:db8::1", port), 1), b"t" * 36) for port in range(200)]

    frames = frame.encode_vouches(NONCE, routes)

    assert all(len(f) <= frame.MAX_CONTROL_BYTES for f in frames) and len(frames) > 1
    decoded = [frame.decode_control(f) for f in frames]
    assert [v.last for v in decoded] == [False] * (len(frames) - 1) + [True]
    assert [r for v in decoded for r in v.routes] == routes


def test_a_data_frame_is_no_control_frame_and_a_control_frame_no_data_frame():
    data = frame.encode_header(("192.0.2.1", 1), 1) + frame.encode_hello(1, NONCE)

    assert not frame.is_control(data)
    assert control_reason(data) == "family"
    assert reason(frame.encode_hello(1, NONCE)) == "family", "parts that know no control frames drop them"


def test_malformed_control_frames():
    hello = frame.encode_hello(1, NONCE)
    (vouch,) = frame.encode_vouches(NONCE, [(frame.encode_header(("192.0.2.1", 1), 1), b"tok")])

    assert control_reason(hello[:-1]) == "control_length"
    assert control_reason(hello + b"x") == "control_length"
    assert control_reason(hello[:4]) == "control_length"
    assert control_reason(hello[:4] + b"\x04") == "control_type"
    assert control_reason(vouch[:-1]) == "control_length"
    assert control_reason(vouch + b"x") == "control_length"
    assert control_reason(vouch[:15] + b"VM\x01\x00" + vouch[19:]) == "control_entry"
    assert control_reason(vouch[:15] + vouch[15:27] + b"\x00") == "control_entry"


@pytest.mark.parametrize("nonce, edge_id", [(bytes(7), 1), (bytes(9), 1), (NONCE, 65536), (NONCE, -1)])
def test_encode_hello_rejects_what_does_not_fit(nonce, edge_id):
    with pytest.raises(ValueError):
        frame.encode_hello(edge_id, nonce)


@pytest.mark.parametrize("route", [(b"VM\x01\x04" + bytes(8) + b"x", b"tok"), (b"VM\x01\x04" + bytes(8), b""),
                                   (b"VM\x01\x04" + bytes(8), b"t" * 256), (b"junk", b"tok")])
def test_encode_vouches_rejects_what_does_not_fit(route):
    with pytest.raises(ValueError):
        frame.encode_vouches(NONCE, [route])


@pytest.mark.parametrize("client, family", [(("192.0.2.1", 54132), 0x84), (("2001:db8::1", 54132), 0x86)])
def test_a_tcp_client_sets_the_transport_bit_and_keeps_the_layout(client, family):
    udp = frame.encode_header(client, edge_id=7)
    tcp = frame.encode_header(client, edge_id=7, tcp=True)

    assert tcp[3] == family and tcp[:3] + tcp[4:] == udp[:3] + udp[4:]
    assert frame.is_tcp(tcp) and not frame.is_tcp(udp)
    assert frame.header_length(tcp + DTLS_RECORD) == len(udp)
    assert frame.decode(tcp + DTLS_RECORD) == frame.decode(udp + DTLS_RECORD)


def test_a_udp_header_is_unchanged_by_the_transport_bit():
    assert frame.encode_header(("192.0.2.1", 54321), 7)[:4] == b"VM\x01\x04"


@pytest.mark.parametrize("family", [0x80, 0x85, 0xC4, 0x14])
def test_other_families_with_high_bits_are_refused(family):
    assert reason(b"VM\x01" + bytes([family]) + bytes(20)) == "family"


def test_a_vouch_may_name_a_tcp_route_and_the_edge_decides():
    header = frame.encode_header(("192.0.2.1", 1), 3, tcp=True)

    [vouch] = frame.encode_vouches(b"n" * 8, [(header, b"ufrag")])

    assert frame.decode_control(vouch).routes == ((header, b"ufrag"),)


def test_frames_for_one_edge_travel_in_batches_of_at_most_1200_bytes():
    frames = [frame.encode_header(("192.0.2.1", port), 1) + bytes([port]) * 150 for port in range(20)]

    datagrams = frame.encode_batches(frames)

    assert all(len(d) <= frame.MAX_CONTROL_BYTES and frame.is_control(d) for d in datagrams)
    assert datagrams[0][:6] == b"VM\x01\x00" + bytes([frame.BATCH, 7])
    assert datagrams[0][6:8] == (12 + 150).to_bytes(2, "big") and datagrams[0][8:8 + 162] == frames[0]
    assert [f for d in datagrams for f in frame.decode_control(d).frames] == frames, "in order, unchanged"
    assert reason(datagrams[0]) == "family", "a part that does not know BATCH drops it"


def test_a_frame_with_nothing_beside_it_travels_alone():
    small = frame.encode_header(("192.0.2.1", 1), 1) + b"x"
    big = frame.encode_header(("192.0.2.1", 2), 1) + bytes(1200)

    assert frame.encode_batches([small]) == [small]
    assert frame.encode_batches([small, big, small]) == [small, big, small]
    assert frame.encode_batches([]) == []


def test_malformed_batches():
    one = frame.encode_header(("192.0.2.1", 1), 1) + b"srtp"
    (batch,) = frame.encode_batches([one, one])
    hello = frame.encode_hello(1, NONCE)

    assert frame.decode_control(batch) == frame.Batch((one, one))
    assert control_reason(batch[:5]) == "control_length"
    assert control_reason(batch[:-1]) == "control_length"
    assert control_reason(batch + b"x") == "control_length"
    assert control_reason(batch[:5] + b"\x03" + batch[6:]) == "control_length", "a count above the frames"
    assert control_reason(batch[:8] + b"VX" + batch[10:]) == "control_entry"
    nested = batch[:5] + b"\x01" + len(hello).to_bytes(2, "big") + hello
    assert control_reason(nested) == "control_entry", "a control frame never travels inside a batch"
    short = batch[:5] + b"\x01\x00\x04" + one[:4]
    assert control_reason(short) == "control_entry", "each frame holds a whole header"
