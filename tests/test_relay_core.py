"""Tests for edge.relay_core: the relay's decisions, bytes and time in, what to send (or drop) out.

STUN messages are built with aioice's codec, the one the transceiver and the test callers run.
"""

import os

import pytest
from aioice import stun as aioice_stun

from voicemesh.edge.flows import FlowState
from voicemesh.edge.relay_core import (
    HELLO_INTERVAL_S,
    VOUCH_WINDOW_S,
    Closed,
    Downlink,
    Drop,
    Held,
    Hello,
    RelayCore,
    Uplink,
    Vouched,
)
from voicemesh.wire import frame
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.unit

CODEC = TokenCodec({1: b"relay-core-test-key-32-bytes...."}, 1)
T0 = 1_800_000_000
"""When the test tokens are minted (unix seconds)."""
EDGE_ID = 9
TRANSCEIVER = ("10.0.1.5", 7000)
OTHER_TRANSCEIVER = ("10.0.1.6", 7000)
STRANGER = ("10.9.9.9", 7000)
CLIENT = ("198.51.100.7", 50000)
REBOUND = ("198.51.100.7", 50001)
SRTP = b"\x80\x6f" + bytes(98)
DTLS = bytes([22, 0xFE, 0xFD]) + bytes(60)
AFTER_WINDOW = T0 + 31


def make_core(**settings) -> RelayCore:
    core = RelayCore(EDGE_ID, CODEC, **settings)
    core.set_directory({(1, 5): TRANSCEIVER, (1, 6): OTHER_TRANSCEIVER})
    return core


def mint(nonce: int = 1, transceiver: int = 5, issued_at: int = T0) -> str:
    return CODEC.mint(region=1, transceiver=transceiver, nonce=nonce, issued_at=issued_at, lifetime_s=3600)


def client_check(ufrag: str) -> bytes:
    """A caller's connectivity check to the server (RFC 8445 7.2.2): USERNAME <server ufrag>:<client ufrag>."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{ufrag}:cli1"
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLING"] = 1
    msg.add_message_integrity(b"c" * 22)
    msg.add_fingerprint()
    return bytes(msg)


def server_check(ufrag: str) -> bytes:
    """The transceiver's check to the caller (aioice's triggered or consent check)."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"cli1:{ufrag}"
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLED"] = 1
    msg.add_message_integrity(b"s" * 22)
    msg.add_fingerprint()
    return bytes(msg)


def response_to(request: bytes, message_class=aioice_stun.Class.RESPONSE) -> bytes:
    """A Binding success (or error) response echoing the request's transaction id."""
    txid = aioice_stun.parse_message(request).transaction_id
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, message_class, transaction_id=txid)
    if message_class == aioice_stun.Class.ERROR:
        msg.attributes["ERROR-CODE"] = (487, "Role Conflict")
    else:
        msg.attributes["XOR-MAPPED-ADDRESS"] = ("198.51.100.7", 50000)
    msg.add_message_integrity(b"c" * 22)
    msg.add_fingerprint()
    return bytes(msg)


def header(client=CLIENT) -> bytes:
    return frame.encode_header(client, EDGE_ID)


def prove(core: RelayCore, client, ufrag: str, now: float, transceiver=TRANSCEIVER) -> None:
    """The transceiver checks the client and the client answers: the flow opens."""
    check = server_check(ufrag)
    assert isinstance(core.receive_backbone(header(client) + check, transceiver, now), Downlink)
    assert isinstance(core.receive_public(response_to(check), client, now), Uplink)


def open_flow(core: RelayCore, client=CLIENT, ufrag: str | None = None, now: float = T0 + 1,
              transceiver=TRANSCEIVER):
    ufrag = ufrag or mint()
    core.receive_public(client_check(ufrag), client, now)
    prove(core, client, ufrag, now, transceiver)
    flow = core.flows.by_client[client]
    assert flow.state is FlowState.OPEN
    return flow


# First packets


def test_a_valid_check_opens_a_flow_and_is_forwarded_framed():
    core = make_core()
    check = client_check(mint())

    result = core.receive_public(check, CLIENT, T0 + 1)

    assert isinstance(result, Uplink) and result.learned
    assert result.frame == header() + check
    flow = result.flow
    assert (flow.client, flow.transceiver, flow.state) == (CLIENT, TRANSCEIVER, FlowState.PROVISIONAL)
    assert flow.ufrag == mint().encode()
    assert core.flows.by_client == {CLIENT: flow}
    assert core.flows.open_by_client == {}, "not on the fast path before proof"


@pytest.mark.parametrize(
    "datagram, reason",
    [
        (SRTP, "not_stun"),
        (DTLS, "not_stun"),
        (client_check(mint())[:30], "truncated"),
        (client_check("h6vY"), "length"),
        (client_check(TokenCodec({1: os.urandom(32)}, 1).mint(
            region=1, transceiver=5, nonce=1, issued_at=T0, lifetime_s=60)), "mac"),
        (client_check(mint(issued_at=T0 - 3600)), "expired"),
        (client_check(mint(transceiver=99)), "unknown_transceiver"),
        (b"", "empty"),
    ],
)
def test_bad_first_packets_are_dropped_with_their_reason(datagram, reason):
    core = make_core()

    assert core.receive_public(datagram, CLIENT, T0 + 1) == Drop(reason)
    assert len(core.flows) == 0
    assert core.drops == {reason: 1}


def test_a_forged_token_steering_to_another_transceiver_opens_nothing():
    core = make_core()
    raw = bytearray(client_check(mint(transceiver=5)))
    start = raw.index(mint(transceiver=5).encode())
    forged = mint(transceiver=6)
    raw[start:start + 8] = forged[:8].encode()  # another transceiver's fields, the old MAC

    assert core.receive_public(bytes(raw), CLIENT, T0 + 1) == Drop("mac")
    assert len(core.flows) == 0


def test_a_full_table_drops_new_clients():
    core = make_core(max_flows=2)
    core.receive_public(client_check(mint(nonce=1)), ("192.0.2.1", 1), T0)
    core.receive_public(client_check(mint(nonce=2)), ("192.0.2.2", 1), T0)

    assert core.receive_public(client_check(mint(nonce=3)), ("192.0.2.3", 1), T0) == Drop("table_full")
    assert len(core.flows) == 2


# Provisional flows (within the token's open window)


def test_within_the_window_media_goes_up_at_once_and_down_only_once_proven():
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, T0 + 1)

    up = core.receive_public(DTLS, CLIENT, T0 + 2)
    down = core.receive_backbone(header() + DTLS, TRANSCEIVER, T0 + 2)

    assert isinstance(up, Uplink) and up.frame == header() + DTLS
    assert down == Drop("unproven_downlink")
    prove(core, CLIENT, ufrag, T0 + 2)
    assert core.receive_backbone(header() + DTLS, TRANSCEIVER, T0 + 2) == Downlink(core.flows.by_client[CLIENT], DTLS)


def test_an_unproven_provisional_flow_becomes_pending_when_the_window_ends():
    core = make_core(open_window_s=30)
    core.receive_public(client_check(mint()), CLIENT, T0 + 1)

    assert isinstance(core.receive_public(SRTP, CLIENT, T0 + 29), Uplink)
    assert core.receive_public(SRTP, CLIENT, T0 + 30) == Drop("pending_not_stun")
    assert core.flows.by_client[CLIENT].state is FlowState.PENDING


def test_a_proven_flow_keeps_forwarding_after_the_window():
    core = make_core()
    flow = open_flow(core)

    assert core.receive_public(SRTP, CLIENT, AFTER_WINDOW) == Uplink(flow, header() + SRTP)
    assert core.receive_backbone(header() + SRTP, TRANSCEIVER, AFTER_WINDOW) == Downlink(flow, SRTP)
    assert core.flows.open_by_client == {CLIENT: flow}
    assert core.flows.open_by_header == {flow.header: flow}


# Proof: the client answers one of the transceiver's checks


@pytest.mark.parametrize("message_class", [aioice_stun.Class.RESPONSE, aioice_stun.Class.ERROR])
def test_a_response_echoing_the_transceivers_check_proves_the_flow(message_class):
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW)
    check = server_check(ufrag)
    assert core.receive_backbone(header() + check, TRANSCEIVER, AFTER_WINDOW) == Downlink(
        core.flows.by_client[CLIENT], check)

    answer = response_to(check, message_class)
    result = core.receive_public(answer, CLIENT, AFTER_WINDOW)

    assert result == Uplink(core.flows.by_client[CLIENT], header() + answer)
    assert core.flows.by_client[CLIENT].state is FlowState.OPEN
    assert core.receive_public(SRTP, CLIENT, AFTER_WINDOW + 1) == Uplink(core.flows.by_client[CLIENT], header() + SRTP)


def test_a_response_to_another_transaction_proves_nothing():
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW)
    core.receive_backbone(header() + server_check(ufrag), TRANSCEIVER, AFTER_WINDOW)

    guessed = response_to(server_check(ufrag))  # a fresh random transaction id
    assert isinstance(core.receive_public(guessed, CLIENT, AFTER_WINDOW), Uplink)  # STUN still goes up

    assert core.flows.by_client[CLIENT].state is FlowState.PENDING
    assert core.receive_public(SRTP, CLIENT, AFTER_WINDOW) == Drop("pending_not_stun")


def test_a_response_from_another_address_proves_nothing_for_this_one():
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW)
    core.receive_public(client_check(ufrag), REBOUND, AFTER_WINDOW)
    check = server_check(ufrag)
    core.receive_backbone(header(CLIENT) + check, TRANSCEIVER, AFTER_WINDOW)

    core.receive_public(response_to(check), REBOUND, AFTER_WINDOW)

    assert core.flows.by_client[CLIENT].state is FlowState.PENDING
    assert core.flows.by_client[REBOUND].state is FlowState.PENDING


# Pending flows: STUN only, and no amplification


def test_a_pending_flow_forwards_only_stun():
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW)

    assert core.receive_public(SRTP, CLIENT, AFTER_WINDOW) == Drop("pending_not_stun")
    assert core.receive_public(DTLS, CLIENT, AFTER_WINDOW) == Drop("pending_not_stun")
    assert isinstance(core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW), Uplink)


@pytest.mark.parametrize("now", [T0 + 1, AFTER_WINDOW])
def test_an_unproven_flow_gets_only_checks_and_its_responses_wait_for_proof(now):
    core = make_core()
    ufrag = mint()
    check = client_check(ufrag)
    flow = core.receive_public(check, CLIENT, now).flow
    response = response_to(check)

    assert core.receive_backbone(header() + DTLS, TRANSCEIVER, now) == Drop("unproven_downlink")
    assert core.receive_backbone(header() + SRTP, TRANSCEIVER, now) == Drop("unproven_downlink")
    assert core.receive_backbone(header() + response, TRANSCEIVER, now) == Held(flow)
    triggered = server_check(ufrag)
    assert core.receive_backbone(header() + triggered, TRANSCEIVER, now) == Downlink(flow, triggered)

    answer = response_to(triggered)
    assert core.receive_public(answer, CLIENT, now) == Uplink(flow, header() + answer, release=response)
    assert flow.state is FlowState.OPEN and flow.held == b""


def test_an_unproven_flow_gets_no_stun_but_checks_and_responses():
    core = make_core()
    core.receive_public(client_check(mint()), CLIENT, T0 + 1)
    indication = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.INDICATION)

    assert core.receive_backbone(header() + bytes(indication), TRANSCEIVER, T0 + 1) == Drop("unproven_downlink")


def test_only_the_latest_response_is_held():
    core = make_core()
    ufrag = mint()
    first, second = client_check(ufrag), client_check(ufrag)
    flow = core.receive_public(first, CLIENT, AFTER_WINDOW).flow
    latest = response_to(second)
    core.receive_backbone(header() + response_to(first), TRANSCEIVER, AFTER_WINDOW)
    core.receive_backbone(header() + latest, TRANSCEIVER, AFTER_WINDOW)

    assert flow.held == latest
    assert core.drops == {"unproven_downlink": 1}


@pytest.mark.parametrize("now", [T0 + 1, AFTER_WINDOW])
def test_an_unproven_flow_never_gets_more_bytes_than_it_sent(now):
    core = make_core()
    ufrag = mint()
    check = client_check(ufrag)  # 120 bytes in
    core.receive_public(check, CLIENT, now)
    triggered = server_check(ufrag)  # 120 bytes out: the budget is spent

    assert isinstance(core.receive_backbone(header() + triggered, TRANSCEIVER, now), Downlink)
    assert core.receive_backbone(header() + triggered, TRANSCEIVER, now) == Drop("amplification")  # retransmitted
    core.receive_public(SRTP, CLIENT, now)  # forwarded or dropped, the address sent it: 100 bytes of budget
    assert core.receive_backbone(header() + triggered, TRANSCEIVER, now) == Drop("amplification")
    core.receive_public(SRTP, CLIENT, now)
    assert isinstance(core.receive_backbone(header() + triggered, TRANSCEIVER, now), Downlink)

    stats = core.stats()
    assert (stats["unproven_bytes_in"], stats["unproven_bytes_out"]) == (len(check) + 2 * len(SRTP),
                                                                         2 * len(triggered))
    assert stats["drops"]["amplification"] == 2


def test_a_check_dropped_for_the_budget_cannot_prove_the_flow():
    core = make_core()
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW)  # 120 bytes of budget
    sent, dropped = server_check(ufrag), server_check(ufrag)  # 120 bytes each
    core.receive_backbone(header() + sent, TRANSCEIVER, AFTER_WINDOW)
    assert core.receive_backbone(header() + dropped, TRANSCEIVER, AFTER_WINDOW) == Drop("amplification")

    core.receive_public(response_to(dropped), CLIENT, AFTER_WINDOW)
    assert core.flows.by_client[CLIENT].state is FlowState.PENDING
    core.receive_public(response_to(sent), CLIENT, AFTER_WINDOW)
    assert core.flows.by_client[CLIENT].state is FlowState.OPEN


# NAT rebinding


def test_nat_rebinding_after_the_window_goes_through_proof():
    core = make_core()
    ufrag = mint()
    old = open_flow(core, CLIENT, ufrag)

    check = client_check(ufrag)
    first = core.receive_public(check, REBOUND, AFTER_WINDOW)

    assert isinstance(first, Uplink) and first.learned and first.frame == header(REBOUND) + check
    new = first.flow
    assert new.state is FlowState.PENDING and new.header == header(REBOUND)
    assert core.receive_public(SRTP, REBOUND, AFTER_WINDOW) == Drop("pending_not_stun")
    prove(core, REBOUND, ufrag, AFTER_WINDOW)
    assert new.state is FlowState.OPEN
    assert core.receive_public(SRTP, REBOUND, AFTER_WINDOW) == Uplink(new, header(REBOUND) + SRTP)
    assert core.receive_backbone(header(REBOUND) + SRTP, TRANSCEIVER, AFTER_WINDOW) == Downlink(new, SRTP)
    assert core.receive_backbone(header(CLIENT) + SRTP, TRANSCEIVER, AFTER_WINDOW) == Downlink(old, SRTP)


def test_nat_rebinding_within_the_window_is_provisional():
    core = make_core()
    ufrag = mint()
    open_flow(core, CLIENT, ufrag)

    result = core.receive_public(client_check(ufrag), REBOUND, T0 + 7)

    assert isinstance(result, Uplink) and result.flow.state is FlowState.PROVISIONAL
    assert isinstance(core.receive_public(SRTP, REBOUND, T0 + 8), Uplink)


# Backbone frames


def test_frames_from_the_wrong_or_an_unknown_transceiver_are_dropped():
    core = make_core()
    open_flow(core)

    assert core.receive_backbone(header() + SRTP, OTHER_TRANSCEIVER, T0 + 2) == Drop("frame_wrong_transceiver")
    assert core.receive_backbone(header() + SRTP, STRANGER, T0 + 2) == Drop("frame_unknown_transceiver")
    assert isinstance(core.receive_backbone(header(REBOUND) + SRTP, TRANSCEIVER, T0 + 2), Hello), "and asks for vouches"
    assert core.receive_backbone(frame.encode_header(CLIENT, EDGE_ID + 1) + SRTP, TRANSCEIVER, T0 + 2) == Drop("no_flow")
    assert core.drops["no_flow"] == 2
    assert core.receive_backbone(b"XX" + header()[2:] + SRTP, TRANSCEIVER, T0 + 2) == Drop("frame_magic")
    assert core.receive_backbone(header(REBOUND) + SRTP, STRANGER, T0 + 2) == Drop("frame_unknown_transceiver")


def test_a_batch_comes_back_as_its_frames_only_from_a_registered_transceiver():
    core = make_core()
    open_flow(core)
    (batch,) = frame.encode_batches([header() + SRTP, header(REBOUND) + SRTP])

    assert core.receive_backbone(batch, STRANGER, T0 + 2) == Drop("vouch_unknown_transceiver")
    assert core.receive_backbone(batch, TRANSCEIVER, T0 + 2) == frame.Batch((header() + SRTP, header(REBOUND) + SRTP))
    assert core.receive_backbone(batch[:-1], TRANSCEIVER, T0 + 2) == Drop("frame_control_length")


def test_a_transceiver_that_leaves_and_reenters_the_directory_keeps_its_flows():
    """A registry blip takes a transceiver out of the edge's view and back: its live flows stay and keep
    forwarding both ways (issue 11: the stale-socket bug)."""
    core = make_core()
    flow = open_flow(core)
    directory = dict(core.directory)

    core.set_directory({})
    assert core.flows.open_by_client[CLIENT] is flow
    assert core.receive_backbone(header() + SRTP, TRANSCEIVER, T0 + 2) == Downlink(flow, SRTP)
    core.set_directory(directory)
    assert core.flows.open_by_client[CLIENT] is flow
    assert core.receive_backbone(header() + SRTP, TRANSCEIVER, T0 + 3) == Downlink(flow, SRTP)
    assert not core.drops


def test_the_flows_of_a_transceiver_that_left_the_directory_and_fell_silent_go_at_the_next_sweep():
    """A crashed transceiver: its lease expired, so it left the view, and it sends nothing any more. Its
    flows go once it has been silent for transceiver_gone_s (issue 11: the edge forwarded into the dead
    address for as long as the caller kept sending). The caller's packets still arriving do not keep them."""
    core = make_core(transceiver_gone_s=6)
    flow = open_flow(core)
    other = open_flow(core, REBOUND, mint(nonce=2, transceiver=6), transceiver=OTHER_TRANSCEIVER)
    core.expire(T0 + 2)  # the last sweep that saw the transceiver's packets
    core.set_directory({(1, 6): OTHER_TRANSCEIVER})
    for second in range(3, 8):
        core.receive_public(SRTP, CLIENT, T0 + second)
        core.receive_backbone(header(REBOUND) + SRTP, OTHER_TRANSCEIVER, T0 + second)
        assert core.expire(T0 + second) == []

    assert core.expire(T0 + 8) == [flow]
    assert list(core.flows.by_client) == [REBOUND]
    assert core.stats()["flows_transceiver_gone"] == 1
    assert core.receive_public(SRTP, CLIENT, T0 + 9) == Drop("not_stun")
    assert other.state is FlowState.OPEN


def test_a_transceiver_out_of_the_directory_that_still_sends_keeps_its_flows():
    """Cut off from etcd but alive (its lease expired, it has not registered again): it still sends its
    flows media, RTCP and consent checks, so the edge keeps them however long it stays out of the view."""
    core = make_core(transceiver_gone_s=6)
    flow = open_flow(core)
    core.set_directory({(1, 6): OTHER_TRANSCEIVER})
    for second in range(2, 30):
        assert core.receive_backbone(header() + SRTP, TRANSCEIVER, T0 + second) == Downlink(flow, SRTP)
        assert core.expire(T0 + second) == []
    assert core.flows.open_by_client[CLIENT] is flow


def test_a_transceiver_known_outside_the_directory_keeps_its_silent_flows_but_gets_no_new_ones():
    """A transceiver draining on an index another holds is passed as one of set_directory's ``others``: its flows
    stay through sweeps however long it is silent (a call on hold), and its frames are taken; a new flow with a
    token naming its index goes to the directory's transceiver."""
    core = make_core(transceiver_gone_s=6)
    flow = open_flow(core)
    core.set_directory({(1, 5): OTHER_TRANSCEIVER}, [TRANSCEIVER])
    for second in range(2, 30):
        assert core.expire(T0 + second) == []
    assert core.receive_backbone(header() + SRTP, TRANSCEIVER, T0 + 30) == Downlink(flow, SRTP)

    decision = core.receive_public(client_check(mint(nonce=2)), REBOUND, T0 + 30)
    assert decision.flow.transceiver == OTHER_TRANSCEIVER


def test_frames_for_an_ipv6_client():
    core = make_core()
    client = ("2001:db8::7", 50000, 0, 0)  # as an AF_INET6 socket reports it
    flow = open_flow(core, client)

    assert len(flow.header) == 24
    assert core.receive_backbone(flow.header + SRTP, TRANSCEIVER, T0 + 2) == Downlink(flow, SRTP)


# Per-token cap


def test_a_token_holds_at_most_its_cap_and_evicts_its_oldest_unproven_flow():
    core = make_core(max_flows_per_token=3)
    ufrag = mint()
    caller = open_flow(core, CLIENT, ufrag)
    spoofed = [(f"203.0.113.{i}", 4000) for i in range(1, 6)]

    for i, address in enumerate(spoofed):
        assert isinstance(core.receive_public(client_check(ufrag), address, AFTER_WINDOW + i), Uplink)
        assert len(core.flows.of_token(caller.token)) <= 3

    assert [f.client for f in core.flows.of_token(caller.token)] == [CLIENT, spoofed[3], spoofed[4]]
    assert core.stats()["flows_evicted"] == 3


def test_the_transceivers_answer_protects_an_unproven_flow_from_eviction():
    core = make_core(max_flows_per_token=3)
    ufrag = mint()
    open_flow(core, CLIENT, ufrag)
    check = client_check(ufrag)
    core.receive_public(check, REBOUND, AFTER_WINDOW)  # the caller's rebinding, answered by the transceiver
    core.receive_backbone(header(REBOUND) + response_to(check), TRANSCEIVER, AFTER_WINDOW)

    for i in range(1, 20):  # garbage-integrity copies of the token, which the transceiver never answers
        core.receive_public(client_check(ufrag), (f"203.0.113.{i}", 4000), AFTER_WINDOW + 1)

    assert REBOUND in core.flows.by_client
    assert CLIENT in core.flows.by_client


def test_a_token_whose_flows_are_all_proven_refuses_more():
    core = make_core(max_flows_per_token=2)
    ufrag = mint()
    open_flow(core, CLIENT, ufrag)
    open_flow(core, REBOUND, ufrag)

    assert core.receive_public(client_check(ufrag), ("203.0.113.1", 4000), T0 + 2) == Drop("token_cap")
    assert core.receive_public(client_check(mint(nonce=2)), ("203.0.113.1", 4000), T0 + 2).learned


# Aging


def test_unproven_flows_expire_after_the_pending_timeout():
    core = make_core(pending_timeout_s=10)
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, AFTER_WINDOW)
    open_flow(core, REBOUND, mint(nonce=2), now=AFTER_WINDOW)

    assert core.expire(AFTER_WINDOW + 9) == []
    assert [f.client for f in core.expire(AFTER_WINDOW + 10)] == [CLIENT]
    assert list(core.flows.by_client) == [REBOUND]


def test_open_flows_expire_when_idle():
    core = make_core(idle_timeout_s=60)
    flow = open_flow(core)
    core.receive_public(SRTP, CLIENT, T0 + 2)

    assert core.expire(T0 + 15) == []
    assert core.expire(T0 + 74) == []
    assert core.expire(T0 + 75) == [flow]
    assert core.stats()["packets_in"] == 3, "the counts of expired flows stay in the totals"


# A session's end


def test_an_empty_frame_from_the_transceiver_closes_the_session_and_revokes_its_token():
    core = make_core()
    ufrag = mint()
    caller = open_flow(core, CLIENT, ufrag)
    rebound = core.receive_public(client_check(ufrag), REBOUND, T0 + 5).flow
    other = open_flow(core, ("192.0.2.1", 1), mint(nonce=2))

    result = core.receive_backbone(header(), TRANSCEIVER, T0 + 6)

    assert result == Closed((caller, rebound))
    assert list(core.flows.by_client) == [("192.0.2.1", 1)]
    assert core.receive_public(SRTP, CLIENT, T0 + 6) == Drop("not_stun")
    assert core.receive_public(client_check(ufrag), ("203.0.113.1", 4000), T0 + 6) == Drop("revoked")
    assert core.receive_backbone(other.header + SRTP, TRANSCEIVER, T0 + 6) == Downlink(other, SRTP)


def test_only_the_flows_own_transceiver_can_close_it():
    core = make_core()
    open_flow(core)

    assert core.receive_backbone(header(), OTHER_TRANSCEIVER, T0 + 2) == Drop("frame_wrong_transceiver")
    assert CLIENT in core.flows.by_client


def test_a_client_cannot_send_an_empty_datagram_upstream():
    core = make_core()
    open_flow(core)

    assert core.receive_public(b"", CLIENT, T0 + 2) == Drop("empty")


def test_revoked_tokens_are_forgotten_when_they_expire_and_bounded_in_number():
    core = make_core(max_flows=2)
    for nonce in range(1, 4):
        client = ("192.0.2.1", nonce)
        open_flow(core, client, mint(nonce=nonce))
        core.receive_backbone(header(client), TRANSCEIVER, T0 + 2)

    assert core.stats()["tokens_revoked"] == 2
    assert not core.is_revoked(CODEC.verify(mint(nonce=1), T0))
    assert core.is_revoked(CODEC.verify(mint(nonce=3), T0))
    core.expire(T0 + 3600)
    assert core.stats()["tokens_revoked"] == 0


def test_stats():
    core = make_core()
    open_flow(core)
    core.receive_public(client_check(mint(nonce=2)), REBOUND, AFTER_WINDOW)

    stats = core.stats()

    assert (stats["flows"], stats["flows_open"], stats["flows_unproven"]) == (2, 1, 1)
    assert stats["drops"] == {}


@pytest.mark.parametrize("settings", [dict(open_window_s=-1), dict(max_flows_per_token=0),
                                      dict(pending_timeout_s=0), dict(max_flows=0)])
def test_bad_settings(settings):
    with pytest.raises(ValueError):
        make_core(**settings)


# Vouching: a restarted or upgraded edge picks up the live flows it never saw

OLD_EDGE_ID = 3
"""The edge id of the process before the restart: vouched routes keep the header it framed them with."""


def old_header(client=CLIENT) -> bytes:
    return frame.encode_header(client, OLD_EDGE_ID)


def vouch(core: RelayCore, routes, transceiver=TRANSCEIVER, now: float = T0 + 5, nonce: bytes | None = None):
    """The transceiver's answer to the relay's hello, frame by frame; the last frame's result."""
    result = None
    for data in frame.encode_vouches(core.nonce if nonce is None else nonce, routes):
        result = core.receive_backbone(data, transceiver, now)
    return result


def asked(core: RelayCore, transceiver=TRANSCEIVER, now: float = T0 + 5) -> None:
    hello = frame.decode_control(core.hello(transceiver, now))
    assert hello == frame.Hello(EDGE_ID, core.nonce)


def test_a_vouch_answering_the_hello_opens_the_flow_under_the_routes_own_header():
    core = make_core()
    ufrag = mint()
    asked(core)

    result = vouch(core, [(old_header(), ufrag.encode())])

    assert isinstance(result, Vouched) and result.last and result.transceiver == TRANSCEIVER
    (flow,) = result.flows
    assert (flow.client, flow.transceiver, flow.state, flow.header) == (CLIENT, TRANSCEIVER, FlowState.OPEN,
                                                                        old_header())
    assert core.flows.open_by_client == {CLIENT: flow}
    assert core.receive_public(SRTP, CLIENT, T0 + 6) == Uplink(flow, old_header() + SRTP)
    assert core.receive_backbone(old_header() + SRTP, TRANSCEIVER, T0 + 6) == Downlink(flow, SRTP)
    assert core.stats()["flows_vouched"] == 1 and core.stats()["hellos_sent"] == 1
    assert not core.drops


def test_vouches_for_many_routes_span_frames_and_only_the_last_is_flagged():
    core = make_core()
    asked(core)
    routes = [(old_header((f"192.0.2.{i}", 5000)), mint(nonce=i).encode()) for i in range(1, 61)]
    frames = frame.encode_vouches(core.nonce, routes)

    results = [core.receive_backbone(data, TRANSCEIVER, T0 + 5) for data in frames]

    assert len(frames) > 1 and [r.last for r in results] == [False] * (len(frames) - 1) + [True]
    assert len(core.flows.open_by_client) == 60


def test_a_vouch_without_this_relays_hello_is_refused():
    core = make_core()
    routes = [(old_header(), mint().encode())]

    assert vouch(core, routes) == Drop("vouch_unsolicited"), "no hello was sent"
    asked(core)
    assert vouch(core, routes, nonce=bytes(8)) == Drop("vouch_unsolicited"), "another relay's nonce"
    assert vouch(core, routes, now=T0 + 5 + VOUCH_WINDOW_S + 1) == Drop("vouch_unsolicited"), "too late"
    assert vouch(core, routes, transceiver=OTHER_TRANSCEIVER) == Drop("vouch_unsolicited"), "asked another one"
    assert len(core.flows) == 0 and core.drops["vouch_unsolicited"] == 4


def test_a_vouch_from_an_unregistered_transceiver_is_refused():
    core = make_core()
    asked(core)

    assert vouch(core, [(old_header(), mint().encode())], transceiver=STRANGER) == Drop("vouch_unknown_transceiver")
    assert len(core.flows) == 0


def test_a_transceiver_cannot_vouch_for_a_token_naming_another_transceiver():
    core = make_core()
    asked(core)

    result = vouch(core, [(old_header(), mint(transceiver=6).encode())])

    assert result == Vouched(TRANSCEIVER, (), True)
    assert len(core.flows) == 0 and core.drops == {"vouch_wrong_transceiver": 1}


def test_a_vouch_for_a_forged_revoked_or_expired_token_opens_nothing():
    core = make_core()
    ufrag = mint()
    open_flow(core, REBOUND, ufrag)
    core.receive_backbone(header(REBOUND), TRANSCEIVER, T0 + 2)  # that session ended: its token is revoked
    good = mint(nonce=2)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    asked(core)

    vouch(core, [(old_header(), ufrag.encode()), (old_header(("192.0.2.1", 1)), forged.encode())])
    asked(core, now=T0 + 3601)
    vouch(core, [(old_header(("192.0.2.2", 1)), good.encode())], now=T0 + 3601)

    assert len(core.flows) == 0
    assert core.drops == {"vouch_revoked": 1, "vouch_mac": 1, "vouch_expired": 1}


def test_a_client_cannot_forge_a_vouch():
    """A client's datagram never becomes a control frame: the relay writes every header, so a vouch sent to
    the public port is a first packet that is not STUN, and one sent over an open flow goes upstream framed
    as that client's datagram (the transceiver reads it as media, core/mux_core.py)."""
    core = make_core()
    asked(core)
    forged = frame.encode_vouches(core.nonce, [(old_header(REBOUND), mint(nonce=2).encode())])[0]

    assert core.receive_public(forged, REBOUND, T0 + 5) == Drop("not_stun")
    flow = open_flow(core)
    result = core.receive_public(forged, CLIENT, T0 + 5)

    assert result == Uplink(flow, header() + forged) and not frame.is_control(result.frame)
    assert list(core.flows.by_client) == [CLIENT] and core.stats()["flows_vouched"] == 0


def test_vouched_flows_keep_the_per_token_cap_and_the_table_size():
    core = make_core(max_flows_per_token=2, max_flows=3)
    ufrag = mint().encode()
    asked(core)

    vouch(core, [(old_header((f"192.0.2.{i}", 1)), ufrag) for i in range(1, 4)])
    vouch(core, [(old_header((f"192.0.2.{i}", 2)), mint(nonce=i).encode()) for i in range(2, 4)])

    assert core.drops == {"vouch_token_cap": 1, "vouch_table_full": 1}
    assert len(core.flows) == 3


def test_a_vouch_for_a_client_with_a_flow_changes_only_an_unproven_flow_of_the_same_route():
    core = make_core(open_window_s=0)
    ufrag = mint()
    core.receive_public(client_check(ufrag), CLIENT, T0 + 4)  # learned under this edge id: pending
    other = open_flow(core, REBOUND, mint(nonce=2))
    asked(core)

    vouch(core, [(old_header(), ufrag.encode()), (other.header, other.ufrag)])
    assert core.drops == {"vouch_conflict": 1}, "the pending flow is framed under another header"
    assert core.flows.by_client[CLIENT].state is FlowState.PENDING
    assert core.stats()["vouches_known"] == 1

    vouch(core, [(header(), ufrag.encode())])
    assert core.flows.by_client[CLIENT].state is FlowState.OPEN
    assert core.stats()["flows_vouched"] == 1


def test_a_frame_for_a_client_without_a_flow_prompts_a_hello_at_most_every_interval():
    core = make_core()

    first = core.receive_backbone(old_header() + SRTP, TRANSCEIVER, T0 + 5)
    again = core.receive_backbone(old_header() + SRTP, TRANSCEIVER, T0 + 5 + HELLO_INTERVAL_S / 2)
    later = core.receive_backbone(old_header() + SRTP, TRANSCEIVER, T0 + 5 + HELLO_INTERVAL_S)

    assert isinstance(first, Hello) and first.transceiver == TRANSCEIVER
    assert frame.decode_control(first.frame) == frame.Hello(EDGE_ID, core.nonce)
    assert again == Drop("no_flow") and isinstance(later, Hello)
    assert core.drops["no_flow"] == 3 and core.stats()["hellos_sent"] == 2
    assert vouch(core, [(old_header(), mint().encode())]).flows, "the vouch answering it is accepted"
    assert core.receive_backbone(old_header() + SRTP, STRANGER, T0 + 6) == Drop("frame_unknown_transceiver")


def test_malformed_control_frames_and_hellos_sent_to_an_edge_are_dropped():
    core = make_core()
    asked(core)
    good = frame.encode_vouches(core.nonce, [(old_header(), mint().encode())])[0]

    assert core.receive_backbone(good[:-1], TRANSCEIVER, T0 + 5) == Drop("frame_control_length")
    assert core.receive_backbone(frame.encode_hello(1, bytes(8)), TRANSCEIVER, T0 + 5) == Drop("frame_control_type")
    assert core.receive_backbone(good[:4] + b"\x09" + good[5:], TRANSCEIVER, T0 + 5) == Drop("frame_control_type")
    assert len(core.flows) == 0


def test_vouched_ipv4_clients_are_keyed_as_an_ipv6_public_socket_reports_them():
    core = RelayCore(EDGE_ID, CODEC, ipv6_clients=True)
    core.set_directory({(1, 5): TRANSCEIVER})
    asked(core)

    vouch(core, [(old_header(), mint().encode()), (old_header(("2001:db8::7", 9)), mint(nonce=2).encode())])

    assert set(core.flows.by_client) == {("::ffff:198.51.100.7", 50000, 0, 0), ("2001:db8::7", 9, 0, 0)}
