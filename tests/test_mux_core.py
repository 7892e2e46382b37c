"""The backbone mux's core, bytes in and bytes out: route learning, proof, switching, replay, the cap, close."""

from __future__ import annotations

import os

import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.core.mux_core import (
    CONSENT_S,
    HELLO_INTERVAL_S,
    MAX_ROUTES,
    REPLAY_WINDOW,
    MuxCore,
    MuxSession,
    Route,
)
from voicemesh.wire import frame

pytestmark = pytest.mark.unit

EDGE = ("10.0.0.1", 4000)
OTHER_EDGE = ("10.0.0.2", 4000)
CALLER = ("198.51.100.7", 50000)
REBOUND = ("198.51.100.7", 50001)
ATTACKER = ("203.0.113.66", 6666)
UFRAG, LOCAL_PWD = "AbCdToken0123456789abc", "l" * 22
CLIENT_UFRAG, REMOTE_PWD = "cli1", "r" * 22
DTLS = bytes([22, 0xFE, 0xFD]) + b"\x00" * 40
SRTP = b"\x80\x6f" + os.urandom(60)


def check(pwd: str = LOCAL_PWD, ufrag: str = UFRAG, transaction_id: bytes | None = None) -> bytes:
    """The caller's Binding request to us (RFC 8445 7.2.2): USERNAME server:client, signed with our pwd."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST,
                              transaction_id=transaction_id or os.urandom(12))
    msg.attributes["USERNAME"] = f"{ufrag}:{CLIENT_UFRAG}"
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLING"] = 1
    msg.add_message_integrity(pwd.encode())
    msg.add_fingerprint()
    return bytes(msg)


def our_check() -> bytes:
    """Our Binding request to the caller, as aioice sends it: USERNAME client:server, signed with its pwd."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{CLIENT_UFRAG}:{UFRAG}"
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLED"] = 1
    msg.add_message_integrity(REMOTE_PWD.encode())
    return bytes(msg)


def answer(request: bytes, pwd: str = REMOTE_PWD, client: tuple[str, int] = CALLER) -> bytes:
    """The caller's Binding success response to ``request``, signed with the caller's pwd (RFC 8489 14.5)."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE,
                              transaction_id=request[8:20])
    msg.attributes["XOR-MAPPED-ADDRESS"] = client
    msg.add_message_integrity(pwd.encode())
    msg.add_fingerprint()
    return bytes(msg)


def framed(client: tuple[str, int], payload: bytes, edge_id: int = 1) -> bytes:
    return frame.encode_header(client, edge_id) + payload


class Sink:
    """One session's receiving end: what reached its ICE agent and its DTLS transport, what it forgot."""

    def __init__(self) -> None:
        self.stun: list[tuple[bytes, tuple[str, int]]] = []
        self.media: list[bytes] = []
        self.forgotten: list[tuple[str, int]] = []

    def register(self, core: MuxCore, ufrag: str = UFRAG) -> MuxSession:
        return core.register(ufrag, LOCAL_PWD, REMOTE_PWD, lambda d, a: self.stun.append((d, a)),
                             self.media.append, self.forgotten.append)


@pytest.fixture
def core() -> MuxCore:
    return MuxCore({EDGE, OTHER_EDGE})


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def session(core: MuxCore, sink: Sink) -> MuxSession:
    return sink.register(core)


def prove(core: MuxCore, session: MuxSession, client: tuple[str, int], now: float = 0.0,
          edge: tuple[str, int] = EDGE, edge_id: int = 1) -> Route:
    """Open a route for ``client`` with a caller check, send our check over it, and answer it."""
    assert core.receive(framed(client, check(), edge_id), edge, now) is None
    request = our_check()
    route = core.send(session, request, client)
    assert isinstance(route, Route) and route.client == client
    assert core.receive(framed(client, answer(request, client=client), edge_id), edge, now) is None
    return route


def test_a_verified_binding_request_opens_a_route(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    request = check()
    assert core.receive(framed(CALLER, request), EDGE, 0.0) is None
    assert sink.stun == [(request, CALLER)]
    [route] = session.routes
    assert (route.client, route.edge, route.header) == (CALLER, EDGE, frame.encode_header(CALLER, 1))
    assert session.active is None, "a new route is not proven"
    response = b"\x01\x01" + request[2:]
    assert core.send(session, response, CALLER) is route, "STUN answers go back over the route"
    assert core.events["route_learned"] == 1


@pytest.mark.parametrize("payload, reason", [
    (check(pwd="x" * 22), "bad_integrity"),
    (check(ufrag="NotRegistered0"), "no_session"),
    (DTLS, "no_session"),
    (b"", "empty"),
])
def test_nothing_else_opens_a_route(core: MuxCore, sink: Sink, session: MuxSession, payload: bytes,
                                    reason: str) -> None:
    assert core.receive(framed(CALLER, payload), EDGE, 0.0) == reason
    assert core.counters[reason] == 1
    assert session.routes == [] and sink.stun == []


def test_malformed_frames_and_unknown_edges_are_dropped(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    assert core.receive(b"XX\x01\x04" + check(), EDGE, 0.0) == "malformed_frame"
    assert core.receive(framed(CALLER, check()), ("192.0.2.99", 4000), 0.0) == "unknown_edge"
    assert session.routes == []
    prove(core, session, CALLER)
    delivered = len(sink.stun)
    assert core.receive(framed(CALLER, check()), ("192.0.2.99", 4000), 0.0) == "unknown_edge"
    assert core.receive(framed(CALLER, SRTP), ("192.0.2.99", 4000), 0.0) == "unknown_edge"
    assert len(sink.stun) == delivered and sink.media == []
    assert session.routes[0].edge == EDGE


def test_an_answered_check_proves_the_route_and_media_flows(core: MuxCore, sink: Sink,
                                                            session: MuxSession) -> None:
    assert core.receive(framed(CALLER, check()), EDGE, 0.0) is None
    assert core.send(session, DTLS, CALLER) == "tx_unproven", "no downlink before a proof"
    assert core.receive(framed(CALLER, DTLS), EDGE, 0.0) == "unproven_media"
    assert sink.media == []

    request = our_check()
    route = core.send(session, request, CALLER)
    assert isinstance(route, Route)
    reply = answer(request)
    assert core.receive(framed(CALLER, reply), EDGE, 1.0) is None
    assert sink.stun[-1] == (reply, CALLER), "the agent gets the answer too"
    assert session.active is route and route.proven_at == 1.0

    assert core.receive(framed(CALLER, SRTP), EDGE, 1.0) is None
    assert sink.media == [SRTP]
    assert core.send(session, DTLS, ("192.0.2.1", 9)) is route, "media follows the active route"


@pytest.mark.parametrize("entry", ["receive", "datagram_received"])
def test_a_lean_handler_gets_srtp_and_aiortc_keeps_srtcp_and_dtls(core: MuxCore, sink: Sink, session: MuxSession,
                                                                   entry: str) -> None:
    prove(core, session, CALLER)
    lean: list[bytes] = []
    session.on_rtp = lean.append
    srtp_marker = b"\x80\xef" + SRTP[2:]  # marker bit with payload type 111: RTP, not RTCP
    srtcp_rr = b"\x81\xc9" + SRTP[2:]  # packet type 201 (RFC 5761 section 4)
    for payload in (SRTP, srtp_marker, srtcp_rr, DTLS, b"\x80"):
        if entry == "receive":
            assert core.receive(framed(CALLER, payload), EDGE, 1.0) is None
        else:
            core.datagram_received(framed(CALLER, payload), EDGE)
    assert lean == [SRTP, srtp_marker]
    assert sink.media == [srtcp_rr, DTLS, b"\x80"]


@pytest.mark.parametrize("reply", [
    pytest.param(lambda request: answer(request, pwd=LOCAL_PWD), id="signed-with-our-pwd"),
    pytest.param(lambda request: answer(our_check()), id="unknown-transaction"),
    pytest.param(lambda request: b"\x01\x11" + answer(request)[2:], id="error-response"),
    pytest.param(lambda request: check(transaction_id=request[8:20]), id="request-not-response"),
])
def test_only_a_signed_success_response_to_our_check_proves(core: MuxCore, session: MuxSession, reply) -> None:
    assert core.receive(framed(CALLER, check()), EDGE, 0.0) is None
    request = our_check()
    core.send(session, request, CALLER)
    core.receive(framed(CALLER, reply(request)), EDGE, 0.0)
    assert session.active is None and session.routes[0].proven_at is None
    assert core.receive(framed(CALLER, SRTP), EDGE, 0.0) == "unproven_media"


def test_an_answer_over_another_route_proves_neither(core: MuxCore, session: MuxSession) -> None:
    assert core.receive(framed(CALLER, check()), EDGE, 0.0) is None
    assert core.receive(framed(ATTACKER, check()), EDGE, 0.0) is None
    request = our_check()
    core.send(session, request, CALLER)
    core.receive(framed(ATTACKER, answer(request, client=ATTACKER)), EDGE, 0.0)
    assert session.active is None
    assert all(route.proven_at is None for route in session.routes)


def test_replayed_check_then_junk_never_takes_the_downlink(core: MuxCore, sink: Sink,
                                                           session: MuxSession) -> None:
    """The review's attack: an on-path observer replays the caller's check from its own address and sends
    junk. Before route validation this moved the caller's downlink to the observer."""
    caller = prove(core, session, CALLER)
    seen = check()
    assert core.receive(framed(CALLER, seen), EDGE, 1.0) is None
    assert core.receive(framed(ATTACKER, seen), EDGE, 1.1) == "replay"
    assert core.receive(framed(ATTACKER, DTLS), EDGE, 1.2) == "no_session"
    assert [r.client for r in session.routes] == [CALLER]
    assert core.send(session, SRTP, CALLER) is caller


def test_a_forged_route_without_proof_never_takes_the_downlink(core: MuxCore, session: MuxSession) -> None:
    """A caller who knows its pwd signs a fresh check from another address: the route opens, but media on it
    is dropped and the downlink stays, because only the real path answers our check."""
    caller = prove(core, session, CALLER)
    assert core.receive(framed(ATTACKER, check()), EDGE, 1.0) is None
    core.send(session, our_check(), ATTACKER)
    assert core.receive(framed(ATTACKER, SRTP), EDGE, 1.1) == "unproven_media"
    assert session.active is caller and core.send(session, SRTP, ATTACKER) is caller


def test_retransmissions_over_the_same_route_reach_the_agent(core: MuxCore, sink: Sink,
                                                             session: MuxSession) -> None:
    request = check()
    for _ in range(3):
        assert core.receive(framed(CALLER, request), EDGE, 0.0) is None
    assert len(sink.stun) == 3
    prove(core, session, REBOUND)
    assert core.receive(framed(REBOUND, request), EDGE, 0.0) == "replay", "replay onto another known route"


def test_replay_memory_is_bounded(core: MuxCore, session: MuxSession) -> None:
    for _ in range(REPLAY_WINDOW + 50):
        assert core.receive(framed(CALLER, check()), EDGE, 0.0) is None
    assert len(session.seen) == REPLAY_WINDOW


def test_unsigned_checks_on_a_route_are_dropped(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    assert core.receive(framed(CALLER, check()), EDGE, 0.0) is None
    assert core.receive(framed(CALLER, check(pwd="x" * 22)), EDGE, 0.0) == "bad_integrity"
    assert core.receive(framed(CALLER, b"\x00\x01garbage"), EDGE, 0.0) == "malformed_stun"
    assert len(sink.stun) == 1 and sink.media == [], "not-STUN with a STUN first byte is not media either"


def test_nat_rebinding_moves_the_media_once_the_new_path_is_proven(core: MuxCore, sink: Sink,
                                                                   session: MuxSession) -> None:
    old = prove(core, session, CALLER)
    assert core.receive(framed(CALLER, SRTP), EDGE, 1.0) is None
    assert core.receive(framed(REBOUND, check()), EDGE, 2.0) is None
    assert core.receive(framed(REBOUND, SRTP), EDGE, 2.0) == "unproven_media"
    assert core.send(session, SRTP, CALLER) is old

    request = our_check()
    new = core.send(session, request, REBOUND)
    assert isinstance(new, Route) and new is not old
    assert core.receive(framed(REBOUND, answer(request, client=REBOUND)), EDGE, 2.1) is None
    assert session.active is old, "a proof alone does not move the media"
    assert core.receive(framed(REBOUND, SRTP), EDGE, 2.2) is None
    assert session.active is new and core.send(session, SRTP, CALLER) is new
    assert core.events["route_switched"] == 1

    assert core.receive(framed(CALLER, SRTP), EDGE, 2.3) == "unproven_media", "the old path must prove again"
    assert session.active is new
    request = our_check()
    core.send(session, request, CALLER)
    core.receive(framed(CALLER, answer(request)), EDGE, 3.0)
    assert core.receive(framed(CALLER, SRTP), EDGE, 3.1) is None and session.active is old


def test_after_a_rebinding_checks_to_the_old_address_also_go_over_the_active_route(
        core: MuxCore, sink: Sink, session: MuxSession) -> None:
    """aioice keeps sending its consent checks to the address it nominated: once the media has moved,
    each check goes over the active route too, and the caller's answer there keeps the session's consent
    and the active route's proof (without this the session died ~30 s after a NAT rebinding)."""
    old = prove(core, session, CALLER)
    assert core.receive(framed(CALLER, SRTP), EDGE, 1.0) is None
    new = prove(core, session, REBOUND, now=2.0)
    assert core.receive(framed(REBOUND, SRTP), EDGE, 2.1) is None and session.active is new

    consent = our_check()
    assert core.send(session, consent, CALLER) == (old, new)
    delivered = len(sink.stun)
    assert core.receive(framed(REBOUND, answer(consent, client=REBOUND)), EDGE, 2.0 + 25.0) is None
    assert len(sink.stun) == delivered + 1, "the answer reaches the ICE agent"
    assert new.proven_at == 27.0, "the answer renews the active route's proof"
    assert core.send(session, SRTP, CALLER) is new


def test_a_stale_proof_does_not_move_the_media(core: MuxCore, session: MuxSession) -> None:
    caller = prove(core, session, CALLER, now=0.0)
    prove(core, session, REBOUND, now=0.0)
    assert core.receive(framed(REBOUND, SRTP), EDGE, CONSENT_S + 1) == "unproven_media"
    assert session.active is caller


def test_a_route_follows_its_edge_to_a_new_port(core: MuxCore, session: MuxSession) -> None:
    route = prove(core, session, CALLER)
    assert core.receive(framed(CALLER, SRTP), OTHER_EDGE, 1.0) is None
    assert route.edge == OTHER_EDGE and core.send(session, SRTP, CALLER) is route


def test_the_same_client_through_another_edge_is_another_route(core: MuxCore, session: MuxSession) -> None:
    first = prove(core, session, CALLER)
    second = prove(core, session, CALLER, now=1.0, edge=OTHER_EDGE, edge_id=2)
    assert first is not second and second.edge == OTHER_EDGE
    assert core.receive(framed(CALLER, SRTP, edge_id=2), OTHER_EDGE, 1.1) is None
    assert core.send(session, SRTP, CALLER) is second


def test_routes_are_capped_evicting_the_oldest_unproven(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    caller = prove(core, session, CALLER)
    spoofed = [(f"203.0.113.{i}", 1000 + i) for i in range(20)]
    for address in spoofed:
        assert core.receive(framed(address, check()), EDGE, 1.0) is None
        assert len(session.routes) <= MAX_ROUTES
    assert session.routes[0] is caller and session.active is caller
    assert [r.client for r in session.routes[1:]] == spoofed[-(MAX_ROUTES - 1):]
    assert sink.forgotten == spoofed[:-(MAX_ROUTES - 1)], "the ICE agent forgets each evicted address"
    assert core.counters["route_evicted"] == len(spoofed) - (MAX_ROUTES - 1)
    assert core.send(session, our_check(), spoofed[0]) == "tx_noroute"
    assert core.receive(framed(spoofed[0], SRTP), EDGE, 1.0) == "no_session"


def test_at_the_cap_with_every_route_proven_a_new_one_is_refused(core: MuxCore, session: MuxSession) -> None:
    for i in range(MAX_ROUTES):
        prove(core, session, ("198.51.100.7", 50000 + i), now=1.0)
    assert core.receive(framed(ATTACKER, check()), EDGE, 2.0) == "route_cap"
    assert len(session.routes) == MAX_ROUTES
    assert core.receive(framed(ATTACKER, check()), EDGE, 2.0 + CONSENT_S) is None, "stale proofs are evictable"
    assert session.active in session.routes


def test_sessions_do_not_share_routes(core: MuxCore, session: MuxSession) -> None:
    other = Sink().register(core, ufrag="OtherSession0000")
    prove(core, session, CALLER)
    assert core.send(other, our_check(), CALLER) == "tx_noroute"
    assert core.send(other, SRTP, CALLER) == "tx_unproven"


def test_close_sends_each_edge_an_empty_frame_per_route(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    prove(core, session, CALLER)
    prove(core, session, CALLER, edge=OTHER_EDGE, edge_id=2)
    closes = core.unregister(session)
    assert closes == [(frame.encode_header(CALLER, 1), EDGE), (frame.encode_header(CALLER, 2), OTHER_EDGE)]
    for data, _edge in closes:
        client, _edge_id, n = frame.decode(data)
        assert client == CALLER and n == len(data), "an empty payload"
    assert core.receive(framed(CALLER, SRTP), EDGE, 1.0) == "no_session"
    assert core.receive(framed(CALLER, check()), EDGE, 1.0) == "no_session"
    assert core.unregister(session) == [] and len(core) == 0


def test_empty_payloads_on_a_route_are_dropped(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    prove(core, session, CALLER)
    assert core.receive(frame.encode_header(CALLER, 1), EDGE, 1.0) == "empty"
    assert sink.media == [] and core.counters["empty"] == 1
    assert core.send(session, b"", CALLER) == "tx_empty", "an empty frame would close the flow"


def test_a_cap_below_two_routes_is_refused() -> None:
    with pytest.raises(ValueError, match="NAT rebinding"):
        MuxCore(max_routes=1)


class Clock:
    """A hand-moved monotonic clock (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rebinding_under_attack(entry: str) -> tuple[dict[str, int], list[tuple[str, int]], list[bytes]]:
    """Feed one scenario through ``entry``; return the counters, the STUN sources and the media delivered."""
    clock = Clock()
    core = MuxCore({EDGE}, clock=clock)
    sink = Sink()
    session = sink.register(core)

    def feed(client: tuple[str, int], payload: bytes, edge: tuple[str, int] = EDGE) -> None:
        data = framed(client, payload)
        if entry == "receive":
            core.receive(data, edge, clock.now)
        else:
            core.datagram_received(data, edge)

    feed(CALLER, SRTP)
    feed(CALLER, check())
    feed(CALLER, DTLS)
    request = our_check()
    core.send(session, request, CALLER)
    feed(CALLER, answer(request))
    feed(CALLER, SRTP)
    feed(CALLER, SRTP, ("192.0.2.99", 1))
    feed(CALLER, b"")
    feed(REBOUND, check())
    feed(REBOUND, SRTP)
    request = our_check()
    core.send(session, request, REBOUND)
    feed(REBOUND, answer(request, client=REBOUND))
    clock.now = CONSENT_S + 1
    feed(REBOUND, SRTP)
    feed(CALLER, SRTP)
    return {**core.counters, **core.events}, [client for _, client in sink.stun], sink.media


def test_the_socket_entry_decides_as_receive_does() -> None:
    """``datagram_received`` (the adapter's entry, which skips the clock on the hot path) and ``receive``
    give the same deliveries and counters for the same frames."""
    counters, stun_from, media = rebinding_under_attack("receive")
    assert rebinding_under_attack("datagram_received") == (counters, stun_from, media)
    assert counters["rx"] > 0 and counters["unproven_media"] == 3 and len(media) == 2


clients = st.sampled_from([CALLER, ("198.51.100.7", 50001), ("2001:db8::1", 443)])
payloads = st.one_of(st.binary(max_size=120), st.sampled_from([check(), DTLS, SRTP, b""]),
                     st.builds(lambda p, i, b: p[:i] + bytes([b]) + p[i + 1:],
                               st.sampled_from([check(), SRTP]), st.integers(0, 99), st.integers(0, 255)))
datagrams = st.one_of(st.binary(max_size=64),
                      st.builds(lambda c, e, p: frame.encode_header(c, e) + p, clients, st.integers(0, 3), payloads),
                      st.builds(lambda b, cut: (frame.encode_hello(1, b"n" * 8) + b)[:cut], st.binary(max_size=4),
                                st.integers(0, 20)))


@given(st.lists(datagrams, max_size=8), st.sampled_from([EDGE, ("192.0.2.99", 1)]))
def test_any_frame_is_delivered_or_dropped_with_a_reason_fuzzed(datagrams, edge) -> None:
    core = MuxCore({EDGE})
    sink = Sink()
    session = sink.register(core)
    caller = prove(core, session, CALLER)
    before = sum(n for name, n in core.counters.items() if name != "route_evicted")
    for data in datagrams:
        reason = core.receive(data, edge, 1.0)
        assert reason is None or core.counters[reason] > 0
    accounted = sum(n for name, n in core.counters.items() if name != "route_evicted") + core.events["hello"]
    assert accounted == before + len(datagrams), "each frame is delivered (rx), answered (a hello) or dropped, once"
    assert session.active is caller, "only a proven route carries media"
    assert all(isinstance(route, Route) for route in session.routes)
    assert core.send(session, SRTP, CALLER) is caller


# Vouching: an edge that restarted asks for the routes proven through its backbone address

NONCE = b"edgenonc"


class Outbox:
    """What the core sends edges in answer to hellos: (decoded vouch, edge)."""

    def __init__(self, core: MuxCore) -> None:
        self.sent: list[tuple[frame.Vouch, tuple[str, int]]] = []
        core.send_control = lambda data, edge: self.sent.append((frame.decode_control(data), edge))

    def routes(self) -> list[tuple[bytes, bytes]]:
        return [route for vouch, _ in self.sent for route in vouch.routes]


def hello(core: MuxCore, edge: tuple[str, int] = EDGE, now: float = 1.0) -> str | None:
    return core.receive(frame.encode_hello(2, NONCE), edge, now)


def test_a_hello_from_an_edge_is_answered_with_a_vouch_per_proven_route_through_it(core: MuxCore, sink: Sink,
                                                                                  session: MuxSession) -> None:
    outbox = Outbox(core)
    caller = prove(core, session, CALLER)
    prove(core, session, REBOUND, now=0.5)
    prove(core, session, ("192.0.2.50", 7), edge=OTHER_EDGE)

    assert hello(core) is None

    [(vouch, to)] = outbox.sent
    assert to == EDGE and vouch.nonce == NONCE and vouch.last
    assert vouch.routes == ((caller.header, UFRAG.encode()), (session.routes[1].header, UFRAG.encode()))
    assert (core.events["hello"], core.events["vouched"]) == (1, 2)
    assert session.active is caller and sink.media == [], "a hello moves no media"


def test_unproven_stale_and_left_routes_are_not_vouched_for(core: MuxCore, session: MuxSession) -> None:
    outbox = Outbox(core)
    assert core.receive(framed(ATTACKER, check()), EDGE, 0.0) is None  # learned, never proven
    caller = prove(core, session, CALLER)
    rebound = prove(core, session, REBOUND, now=1.0)
    assert core.receive(framed(REBOUND, SRTP), EDGE, 1.0) is None  # the media moves: CALLER's route is left

    hello(core, now=2.0)
    hello(core, now=2.0 + CONSENT_S + 1)

    assert caller.left and outbox.sent[0][0].routes == ((rebound.header, UFRAG.encode()),)
    assert outbox.sent[1][0].routes == () and outbox.sent[1][0].last, "the proof went stale"


def test_a_hello_from_an_unregistered_edge_gets_nothing(core: MuxCore, session: MuxSession) -> None:
    outbox = Outbox(core)
    prove(core, session, CALLER)

    assert hello(core, edge=("192.0.2.99", 4000)) == "unknown_edge"
    assert outbox.sent == [] and core.events["hello"] == 0


def test_an_edge_gets_only_the_routes_whose_frames_came_from_its_backbone_address(core: MuxCore,
                                                                                  session: MuxSession) -> None:
    outbox = Outbox(core)
    prove(core, session, CALLER)

    hello(core, edge=OTHER_EDGE)

    assert outbox.routes() == []


def test_hellos_from_one_edge_are_answered_at_most_once_per_interval(core: MuxCore, session: MuxSession) -> None:
    outbox = Outbox(core)
    prove(core, session, CALLER)

    assert hello(core, now=1.0) is None
    assert hello(core, now=1.0 + HELLO_INTERVAL_S / 2) == "hello_rate"
    assert hello(core, edge=OTHER_EDGE, now=1.0) is None, "another edge has its own interval"
    assert hello(core, now=1.0 + HELLO_INTERVAL_S) is None
    assert len(outbox.sent) == 3 and core.counters["hello_rate"] == 1


def test_a_clients_datagram_shaped_as_a_hello_is_only_a_datagram(core: MuxCore, sink: Sink,
                                                                 session: MuxSession) -> None:
    """A client controls only what follows the header the edge wrote: a hello in its datagram is a
    datagram on its route (media on an unproven route, or no route at all), never answered."""
    outbox = Outbox(core)
    prove(core, session, CALLER)

    assert core.receive(framed(ATTACKER, frame.encode_hello(1, NONCE)), EDGE, 1.0) == "no_session"
    assert core.receive(framed(CALLER, frame.encode_hello(1, NONCE)), EDGE, 1.0) is None
    assert outbox.sent == [] and core.events["hello"] == 0
    assert sink.media == [frame.encode_hello(1, NONCE)], "delivered to DTLS as any datagram, which drops it"


def test_malformed_control_frames_and_vouches_sent_to_a_transceiver_are_dropped(core: MuxCore) -> None:
    outbox = Outbox(core)
    assert core.receive(frame.encode_hello(1, NONCE)[:-1], EDGE, 1.0) == "control"
    assert core.receive(frame.encode_vouches(NONCE, [])[0], EDGE, 1.0) == "control"
    assert outbox.sent == []


def test_the_socket_entry_answers_hellos_too() -> None:
    core = MuxCore({EDGE}, clock=lambda: 1.0)
    session = Sink().register(core)
    outbox = Outbox(core)
    prove(core, session, CALLER)

    core.datagram_received(frame.encode_hello(2, NONCE), EDGE)

    assert outbox.routes() == [(session.routes[0].header, UFRAG.encode())]


def tcp_framed(client: tuple[str, int], payload: bytes, edge_id: int = 1) -> bytes:
    return frame.encode_header(client, edge_id, tcp=True) + payload


def test_a_tcp_route_is_learned_proven_and_carries_media_as_a_udp_one(core: MuxCore, sink: Sink,
                                                                      session: MuxSession) -> None:
    assert core.receive(tcp_framed(CALLER, check()), EDGE, 0.0) is None
    [route] = session.routes
    assert frame.is_tcp(route.header) and sink.stun[-1][1] == CALLER, "ICE sees the client address, as on UDP"
    request = our_check()
    assert core.send(session, request, CALLER) is route
    assert core.receive(tcp_framed(CALLER, answer(request)), EDGE, 1.0) is None
    assert core.receive(tcp_framed(CALLER, SRTP), EDGE, 1.0) is None
    assert session.active is route and sink.media == [SRTP]
    assert core.events["route_learned_tcp"] == 1 and core.routes_by_transport() == {"udp": 0, "tcp": 1}


def test_a_route_on_the_other_transport_of_a_live_routes_address_is_refused(core: MuxCore, sink: Sink,
                                                                           session: MuxSession) -> None:
    udp = prove(core, session, CALLER)

    assert core.receive(tcp_framed(CALLER, check()), EDGE, 1.0) == "transport_conflict"
    assert session.routes == [udp] and session.by_client[CALLER] is udp
    assert core.receive(tcp_framed(REBOUND, check()), EDGE, 1.0) is None, "another port is another address"


def test_tcp_routes_are_never_vouched_for(core: MuxCore, session: MuxSession) -> None:
    outbox = Outbox(core)
    assert core.receive(tcp_framed(CALLER, check()), EDGE, 0.0) is None
    request = our_check()
    core.send(session, request, CALLER)
    assert core.receive(tcp_framed(CALLER, answer(request)), EDGE, 0.0) is None
    assert session.routes[0].proven_at == 0.0

    assert hello(core) is None

    [(vouch, _)] = outbox.sent
    assert vouch.routes == ()


NEW_UFRAG, NEW_LOCAL_PWD, NEW_REMOTE_PWD = "NewToken0123456789abcd", "n" * 22, "m" * 22


def test_an_ice_restart_rekeys_the_session_and_keeps_its_media_path(core: MuxCore, sink: Sink,
                                                                     session: MuxSession) -> None:
    old = prove(core, session, CALLER)
    assert core.receive(framed(CALLER, SRTP), EDGE, 1.0) is None and session.active is old

    core.rekey(session, NEW_UFRAG, NEW_LOCAL_PWD, NEW_REMOTE_PWD)
    assert core.sessions == {NEW_UFRAG.encode(): session} and core.events["rekeyed"] == 1
    assert core.receive(framed(CALLER, SRTP), EDGE, 2.0) is None and session.active is old, \
        "the media stays on its path until the new generation proves another"
    assert core.receive(framed(REBOUND, check()), EDGE, 2.0) == "no_session", "the old ufrag opens no route"
    assert core.receive(framed(CALLER, check()), EDGE, 2.0) == "bad_integrity", "nor old credentials on a route"

    assert core.receive(framed(REBOUND, check(NEW_LOCAL_PWD, NEW_UFRAG)), EDGE, 3.0) is None
    request = our_check()
    new = core.send(session, request, REBOUND)
    assert isinstance(new, Route)
    assert core.receive(framed(REBOUND, answer(request, client=REBOUND)), EDGE, 3.0) is None
    assert new.proven_at is None, "an answer signed with the caller's old pwd proves nothing"
    request = our_check()
    core.send(session, request, REBOUND)
    assert core.receive(framed(REBOUND, answer(request, NEW_REMOTE_PWD, REBOUND)), EDGE, 3.0) is None
    assert core.receive(framed(REBOUND, SRTP), EDGE, 3.5) is None
    assert session.active is new and core.events["route_switched"] == 1


def test_a_rekey_never_takes_another_sessions_ufrag(core: MuxCore, sink: Sink, session: MuxSession) -> None:
    other = Sink().register(core, NEW_UFRAG)
    with pytest.raises(ValueError, match="another session"):
        core.rekey(session, NEW_UFRAG, NEW_LOCAL_PWD, NEW_REMOTE_PWD)
    assert core.sessions == {UFRAG.encode(): session, NEW_UFRAG.encode(): other}
    core.unregister(session)
    with pytest.raises(ValueError, match="not registered"):
        core.rekey(session, "Another0123456789abcdef", NEW_LOCAL_PWD, NEW_REMOTE_PWD)


def test_on_tcp_follows_the_active_route_transport(core: MuxCore, session: MuxSession) -> None:
    assert not MuxCore.on_tcp(session), "no media path yet"
    prove(core, session, CALLER)
    assert core.receive(framed(CALLER, SRTP), EDGE, 1.0) is None and not MuxCore.on_tcp(session)
    header = frame.encode_header(REBOUND, 1, tcp=True)
    assert core.receive(header + check(), EDGE, 2.0) is None
    request = our_check()
    core.send(session, request, REBOUND)
    assert core.receive(header + answer(request, client=REBOUND), EDGE, 2.0) is None
    assert core.receive(header + SRTP, EDGE, 2.5) is None and MuxCore.on_tcp(session), "the media moved to TCP"
