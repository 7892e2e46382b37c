"""Tests for edge.relay_tcp_core (ICE-TCP at the edge, sans-IO): RFC 4571 framing with its limits, and the
connection gate's rules (admission caps, first-packet deadline, life with the flow); with the relay core's
handling of TCP packets (RelayCore.receive_tcp) and the mux's of TCP routes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_relay_core import (
    AFTER_WINDOW,
    CLIENT,
    DTLS,
    SRTP,
    T0,
    TRANSCEIVER,
    client_check,
    make_core,
    mint,
    response_to,
    server_check,
)

from voicemesh.edge.flows import TCP, UDP, FlowState, tcp_key
from voicemesh.edge.relay_core import Drop, Uplink
from voicemesh.edge.relay_tcp_core import FrameReader, MalformedFraming, TcpGate, frame_packet, source_of
from voicemesh.wire import frame

pytestmark = pytest.mark.unit


def framing_reason(reader: FrameReader, data: bytes) -> str:
    with pytest.raises(MalformedFraming) as caught:
        reader.feed(data)
    return caught.value.reason


# --- RFC 4571 framing ---

def test_frames_split_at_any_byte_boundary_come_out_whole_and_in_order():
    packets = [b"\x00\x01" + bytes(18), DTLS, SRTP]
    stream = b"".join(frame_packet(p) for p in packets)
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == packets
        assert reader.buffered == 0


def test_a_byte_at_a_time_buffers_one_partial_frame_at_most():
    reader = FrameReader(max_frame_bytes=100)
    out = []
    for byte in frame_packet(bytes(100)) * 3:
        out += reader.feed(bytes([byte]))
        assert reader.buffered <= 2 + 100
    assert out == [bytes(100)] * 3


@pytest.mark.parametrize("length", [0, 101, 0xFFFF])
def test_a_length_of_zero_or_above_the_limit_is_malformed(length):
    reader = FrameReader(max_frame_bytes=100)

    assert framing_reason(reader, length.to_bytes(2, "big") + bytes(5)) == "framing_length"


def test_an_oversized_length_is_refused_before_its_bytes_arrive():
    reader = FrameReader(max_frame_bytes=1500)
    assert reader.feed(frame_packet(SRTP)) == [SRTP]

    assert framing_reason(reader, (1501).to_bytes(2, "big")) == "framing_length"


def test_frame_packet_is_the_rfc_4571_length_prefix():
    assert frame_packet(b"abc") == b"\x00\x03abc"


# --- the gate ---

class Closer:
    def __init__(self):
        self.reasons = []

    def __call__(self, reason):
        self.reasons.append(reason)


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s():
    assert source_of(("198.51.100.7", 1)) == "198.51.100.7"
    assert source_of(("::ffff:198.51.100.7", 1, 0, 0)) == "198.51.100.7"
    assert source_of(("2001:db8:1:2:3::4", 1, 0, 0)) == "2001:db8:1:2::/64"


def test_one_source_holds_at_most_max_per_source_connections():
    gate = TcpGate(lambda flow: True, max_per_source=2)
    first = gate.accept(("198.51.100.7", 1), 0.0, Closer())
    gate.accept(("198.51.100.7", 2), 0.0, Closer())

    assert gate.accept(("198.51.100.7", 3), 0.0, Closer()) == "source_cap"
    assert not isinstance(gate.accept(("198.51.100.8", 1), 0.0, Closer()), str), "another source is not counted"
    gate.closed(first, "peer")
    assert not isinstance(gate.accept(("198.51.100.7", 4), 0.0, Closer()), str), "a closed one frees its place"
    assert gate.counters["source_cap"] == 1 and gate.counters["closed_peer"] == 1


def test_an_ipv6_subscriber_cannot_spread_over_its_slash_64():
    gate = TcpGate(lambda flow: True, max_per_source=2)
    gate.accept(("2001:db8::1", 1, 0, 0), 0.0, Closer())
    gate.accept(("2001:db8::2", 1, 0, 0), 0.0, Closer())

    assert gate.accept(("2001:db8::ffff:3", 1, 0, 0), 0.0, Closer()) == "source_cap"


def test_the_relay_holds_at_most_max_connections():
    gate = TcpGate(lambda flow: True, max_connections=2)
    gate.accept(("198.51.100.1", 1), 0.0, Closer())
    gate.accept(("198.51.100.2", 1), 0.0, Closer())

    assert gate.accept(("198.51.100.3", 1), 0.0, Closer()) == "total_cap" and len(gate) == 2


def test_a_connection_without_a_first_packet_is_closed_at_its_deadline_however_it_trickles():
    gate = TcpGate(lambda flow: True, first_packet_timeout_s=5.0)
    closer = Closer()
    conn = gate.accept(("198.51.100.7", 1), 100.0, closer)

    assert gate.expire(104.9) == [] and closer.reasons == []
    assert gate.expire(105.0) == [(conn, "first_packet_timeout")]
    assert closer.reasons == ["first_packet_timeout"] and len(gate) == 0
    assert gate.counters["closed_first_packet_timeout"] == 1


def test_a_routed_connection_lives_with_its_flow():
    flows = {"flow"}
    gate = TcpGate(lambda flow: flow in flows, first_packet_timeout_s=5.0)
    closer = Closer()
    conn = gate.accept(("198.51.100.7", 1), 100.0, closer)
    conn.flow = "flow"

    assert gate.expire(1000.0) == [], "routed: the first-packet deadline no longer applies"
    flows.clear()
    assert gate.expire(1000.5) == [(conn, "flow_gone")] and closer.reasons == ["flow_gone"]


def test_closing_twice_counts_once():
    gate = TcpGate(lambda flow: True)
    conn = gate.accept(("198.51.100.7", 1), 0.0, Closer())
    gate.closed(conn, "framing_length")
    gate.closed(conn, "peer")

    assert gate.counters["closed_framing_length"] == 1 and "closed_peer" not in gate.counters


# --- the relay core on TCP packets ---

def test_a_tcp_first_packet_opens_a_flow_flagged_tcp_beside_a_udp_flow_of_the_same_address():
    core = make_core()
    ufrag = mint()

    udp = core.receive_public(client_check(ufrag), CLIENT, T0 + 1)
    tcp = core.receive_tcp(client_check(ufrag), CLIENT, T0 + 1)

    assert isinstance(udp, Uplink) and isinstance(tcp, Uplink) and udp.flow is not tcp.flow
    assert tcp.learned and tcp.flow.transport == TCP and udp.flow.transport == UDP
    assert frame.is_tcp(tcp.frame) and not frame.is_tcp(udp.frame)
    assert frame.decode(tcp.frame)[0] == CLIENT
    assert core.flows.by_client[tcp_key(CLIENT)] is tcp.flow and core.flows.by_client[CLIENT] is udp.flow
    assert tcp.flow.transceiver == TRANSCEIVER


@pytest.mark.parametrize("first, reason", [(DTLS, "not_stun"), (SRTP, "not_stun")])
def test_a_tcp_first_packet_that_is_not_a_valid_check_opens_nothing_and_counts_as_tcp(first, reason):
    core = make_core()

    assert core.receive_tcp(first, CLIENT, T0 + 1) == Drop(reason)
    assert core.tcp_drops[reason] == 1 and not core.drops and len(core.flows) == 0


def test_a_tcp_check_with_a_bad_token_opens_nothing():
    core = make_core()
    forged = mint()[:-2] + ("AA" if not mint().endswith("AA") else "BB")

    assert isinstance(core.receive_tcp(client_check(forged), CLIENT, T0 + 1), Drop)
    assert len(core.flows) == 0 and sum(core.tcp_drops.values()) == 1


def test_tcp_flows_count_against_the_tokens_cap_like_udp_ones():
    core = make_core(max_flows_per_token=2)
    ufrag = mint()
    for port in (1, 2, 3):
        core.receive_tcp(client_check(ufrag), ("198.51.100.7", port), T0 + 1)

    assert len(core.flows.of_token(core.flows.by_client[tcp_key(("198.51.100.7", 3))].token)) == 2
    assert core.counts["flows_evicted"] == 1


def test_a_tcp_flow_is_proven_like_a_udp_one_and_a_pending_one_forwards_only_stun():
    core = make_core()
    ufrag = mint()
    flow = core.receive_tcp(client_check(ufrag), CLIENT, AFTER_WINDOW).flow
    assert flow.state is FlowState.PENDING

    assert core.receive_tcp(SRTP, CLIENT, AFTER_WINDOW) == Drop("pending_not_stun")
    assert core.tcp_drops["pending_not_stun"] == 1
    check = server_check(ufrag)
    core.receive_backbone(flow.header + check, TRANSCEIVER, AFTER_WINDOW)
    core.receive_tcp(response_to(check), CLIENT, AFTER_WINDOW)
    assert flow.state is FlowState.OPEN and core.flows.open_by_client[tcp_key(CLIENT)] is flow


def test_a_closed_tcp_connection_removes_its_flow_and_keeps_its_counts_by_transport():
    core = make_core()
    flow = core.receive_tcp(client_check(mint()), CLIENT, T0 + 1).flow

    core.disconnect(flow)
    core.disconnect(flow)

    stats = core.stats()
    assert len(core.flows) == 0 and stats["flows_disconnected"] == 1
    assert stats["by_transport"]["tcp"]["packets_in"] == 1 and stats["by_transport"]["udp"]["packets_in"] == 0
    assert stats["packets_in"] == 1


def test_stats_split_flows_packets_and_drops_by_transport():
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, T0 + 1)
    core.receive_tcp(client_check(ufrag), ("198.51.100.7", 9), T0 + 1)
    core.receive_tcp(DTLS, ("198.51.100.8", 9), T0 + 1)
    core.receive_public(DTLS, ("198.51.100.8", 9), T0 + 1)

    by = core.stats()["by_transport"]
    assert (by["udp"]["flows"], by["tcp"]["flows"]) == (1, 1)
    assert (by["udp"]["packets_in"], by["tcp"]["packets_in"]) == (1, 1)
    assert by["udp"]["drops"] == {"not_stun": 1} and by["tcp"]["drops"] == {"not_stun": 1}


def test_a_vouch_for_a_tcp_route_is_refused():
    core = make_core()
    ufrag = mint()
    header = frame.encode_header(CLIENT, 9, tcp=True)
    core.hello(TRANSCEIVER, T0)
    [vouch] = frame.encode_vouches(core.nonce, [(header, ufrag.encode())])

    core.receive_backbone(vouch, TRANSCEIVER, T0 + 1)

    assert core.drops["vouch_tcp"] == 1 and len(core.flows) == 0


def test_metrics_carry_the_transport_of_every_count():
    from voicemesh.edge.observe import RELAY_METRICS, relay_observations

    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, T0 + 1)
    core.receive_tcp(client_check(ufrag), ("198.51.100.7", 9), T0 + 1)
    core.receive_tcp(DTLS, ("198.51.100.8", 9), T0 + 1)
    stats = core.stats()
    stats["by_transport"]["tcp"]["connections"] = 2

    out = relay_observations(stats, {"voicemesh.edge.id": "9"})

    assert out.keys() == RELAY_METRICS.keys()
    packets = {(a["network.transport"], a["network.io.direction"]): n for n, a in out["voicemesh.relay.packets"]}
    assert packets == {("udp", "receive"): 1, ("udp", "transmit"): 0, ("tcp", "receive"): 1, ("tcp", "transmit"): 0}
    assert out["voicemesh.relay.drops"] == [
        (1, {"voicemesh.edge.id": "9", "network.transport": "tcp", "voicemesh.drop.reason": "not_stun"})]
    assert {a["network.transport"]: n for n, a in out["voicemesh.relay.flows"]} == {"udp": 1, "tcp": 1}
    assert out["voicemesh.relay.tcp.connections"] == [(2, {"voicemesh.edge.id": "9"})]


@given(st.lists(st.binary(max_size=200), max_size=30))
@settings(max_examples=300, deadline=None)
def test_any_byte_stream_gives_packets_or_one_framing_error_within_the_buffer_bound_fuzzed(chunks):
    reader = FrameReader(max_frame_bytes=64)
    try:
        for chunk in chunks:
            for packet in reader.feed(chunk):
                assert 0 < len(packet) <= 64
            assert reader.buffered <= 2 + 64
    except MalformedFraming as exc:
        assert exc.reason == "framing_length"


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
@settings(max_examples=200, deadline=None)
def test_any_tcp_packets_are_forwarded_or_dropped_never_raised_fuzzed(packets):
    """Unrouted, then (after a valid check) routed: any packet is decided."""
    core = make_core()
    for packet in [*packets, client_check(mint()), *packets]:
        assert isinstance(core.receive_tcp(packet, CLIENT, T0 + 1), (Uplink, Drop))
