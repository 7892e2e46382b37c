"""The backbone mux's decisions, sans-IO: which session a backbone frame belongs to, and where a reply goes.

Bytes and time in, decisions out (as aioquic's ``QuicConnection``; dispatch as Pion's ``udp_mux.go``).
``MuxCore.receive(data, edge, now)`` (``now`` in seconds, monotonic) takes one backbone frame
(voicemesh.wire.frame: header with the client's real address, then the client's datagram) and either hands
the datagram to its session (STUN to the session's ICE agent under the client's address, DTLS/SRTP to its
DTLS transport) or drops it with a counted reason. ``MuxCore.send(session, data, client)`` picks the route
(frame header and edge) for a datagram the ICE agent sends. core/mux.py is the socket and aioice adapter around it.

A route is one (client address, edge) path: one frame header. Its rules (RFC 8445 sections 7.2.5 and 7.3,
RFC 7675):

- A route is learned only from a STUN Binding request whose USERNAME starts with a registered server ufrag
  and whose MESSAGE-INTEGRITY verifies with that session's local pwd, from a registered edge.
- A route is *proven* when a Binding request that the session sent over it is answered over it by a Binding
  success response with that transaction id and MESSAGE-INTEGRITY under the remote (caller's) pwd
  (RFC 8445 7.2.5.2, RFC 8489 14.5). A proof lasts ``CONSENT_S`` (RFC 7675 consent freshness) and is
  renewed by every answered check.
- DTLS/SRTP (RFC 7983: first byte above 3) go out over the session's *active* route only. The first proven
  route becomes active; media arriving on another freshly proven route moves the session there (NAT
  rebinding, an edge restart), and the route it left must prove itself again before media can move back.
  Media arriving on an unproven route is dropped, not delivered (``unproven_media``): nothing from a path
  the caller has not shown it can receive on reaches the DTLS association (whose handshake messages are not
  authenticated until keys exist) or moves the downlink.
- Once a session has an ``on_rtp`` handler (the lean media path, core/lean.py), SRTP goes there instead of
  to ``on_media``: first byte 128-191 (RFC 7983) and a second byte outside 192-223, the RTCP packet types
  (RFC 5761 section 4). SRTCP, DTLS and STUN still go to aiortc and aioice.
- A Binding request whose transaction id the session already saw over another route is a replay and is
  dropped before the ICE agent sees it; retransmissions over the same route pass. The memory is the last
  ``REPLAY_WINDOW`` transaction ids per session.
- A route over TCP (RFC 6544; the frame header's TCP bit, voicemesh.wire.frame) follows the same rules: the
  ICE agent sees its client address as any other (a peer-reflexive candidate), and replies go back over the
  header they came with. ICE keys candidates by (ip, port) only, so a route whose client address a live
  route of the session holds on the other transport is refused (``transport_conflict``).
- A session has at most ``MAX_ROUTES`` routes. A new route at the cap evicts the oldest route that is
  neither active nor freshly proven, and the ICE agent is told to forget its address; without such a
  route the new one is refused (``route_cap``).

Vouching (voicemesh.wire.frame control frames): an edge that restarted, or a new process that took over its
ports, has lost its flows and sends a HELLO from its backbone address. From a registered edge, at most one
hello per edge every ``HELLO_INTERVAL_S``, the core answers with VOUCH frames (``send_control``) naming every
route of a live session whose last datagram came from that backbone address and whose proof is fresh: the
route's header and the session's server ufrag, which the edge checks (edge/relay_core.py). Unproven routes,
and routes the media left, are never vouched for, nor TCP routes (their connection died with the edge
process; the client connects again). A hello asks nothing of a session and moves no media.

Drop reasons in ``counters``: ``malformed_frame``, ``unknown_edge``, ``empty`` (a frame with no datagram),
``no_session`` (not a Binding request, or an unknown ufrag, on an unknown route), ``bad_integrity``,
``malformed_stun`` (first byte 0-3 but not STUN), ``replay``, ``transport_conflict``, ``route_cap``,
``unproven_media``, ``control`` (a malformed control frame, or one that is not a hello), ``hello_rate`` (a second hello from
the edge within HELLO_INTERVAL_S), ``tx_noroute`` (the agent sent STUN to an address with no route),
``tx_unproven`` (DTLS/SRTP before any route was proven), ``tx_empty``, and ``route_evicted`` (a route
dropped to make room); ``rx`` counts datagrams delivered.
Route events, in ``events``: ``route_learned`` (``route_learned_tcp`` over TCP), ``route_proven``,
``route_switched``; ``hello`` (hellos
answered) and ``vouched`` (routes vouched for); ``rekeyed`` (ICE restarts).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from voicemesh.wire import frame, stun

Address = tuple[str, int]
"""A UDP socket address, (host, port)."""

MAX_ROUTES = 4
"""Routes per session: the caller's path, a NAT rebinding or edge restart beside it, and some slack."""

REPLAY_WINDOW = 128
"""Binding request transaction ids remembered per session (12 bytes each) to recognise replays."""

CHECKS_PER_ROUTE = 8
"""Transaction ids of our own Binding requests remembered per route, newest kept."""

CONSENT_S = 30.0
"""Seconds a proof stays fresh without another answered check (RFC 7675 section 5.1)."""

HELLO_INTERVAL_S = 0.1
"""Least time between two answered hellos from one edge (seconds): a spoofed flood of hellos costs at most
ten answers a second per edge, each sent to the edge, never to the spoofer."""

MAX_HELLO_EDGES = 1024
"""Edges whose last hello time is kept before old entries are pruned (only without an edge list, in tests)."""

BINDING_SUCCESS = 0x0101
_BINDING_REQUEST = b"\x00\x01"


def is_rtp(data: bytes, at: int = 0) -> bool:
    """Whether the datagram starting at ``data[at]`` is (S)RTP and not (S)RTCP: first byte 128-191 (RFC 7983
    section 7) and second byte outside 192-223, the RTCP packet types (RFC 5761 section 4)."""
    return 127 < data[at] < 192 and len(data) > at + 1 and not 191 < data[at + 1] < 224


@dataclass(slots=True, eq=False)
class Route:
    """One path to a caller: the client's address as the edge saw it, the frame header that carries it,
    and the edge's backbone address (which may move if the edge restarts on a new port).

    ``proven_at`` is the ``now`` (seconds) of the last check answered over this route, or None.
    ``checks`` holds the transaction ids of the session's Binding requests sent over it. ``left`` is True
    once the session's media has moved from this route to another.
    """

    session: MuxSession
    client: Address
    header: bytes
    edge: Address
    proven_at: float | None = None
    left: bool = False
    checks: deque[bytes] = field(default_factory=lambda: deque(maxlen=CHECKS_PER_ROUTE))


@dataclass(slots=True, eq=False)
class MuxSession:
    """One ICE session on the mux, keyed by its server ufrag (the routing token).

    ``on_stun(datagram, client)`` gets STUN for the ICE agent, ``on_media(datagram)`` DTLS/SRTP for its
    DTLS transport, ``on_forget(client)`` the address of an evicted route (the agent should drop the
    candidate it learned there). ``on_rtp(datagram)``, once set, gets SRTP (not SRTCP) instead of
    ``on_media`` (module docstring). ``routes`` is in learning order.
    """

    ufrag: bytes
    local_pwd: bytes
    remote_pwd: bytes
    on_stun: Callable[[bytes, Address], None]
    on_media: Callable[[bytes], None]
    on_forget: Callable[[Address], None]
    routes: list[Route] = field(default_factory=list)
    on_rtp: Callable[[bytes], None] | None = None
    active: Route | None = None
    by_client: dict[Address, Route] = field(default_factory=dict)
    seen: dict[bytes, Route] = field(default_factory=dict)


class MuxCore:
    """Routes backbone frames to sessions and the sessions' datagrams back to edges; no I/O.

    ``edges`` holds the backbone addresses of registered edge relays (None: any source is an edge, for
    tests). ``counters`` counts drops by reason, ``events`` route events (see the module docstring).
    ``sessions`` maps each registered server ufrag (bytes) to its session (read it, do not change it).
    ``send_control(frame, edge)`` sends the answers to hellos (None: hellos are counted, not answered).
    """

    def __init__(self, edges: Container[Address] | None = None, *, max_routes: int = MAX_ROUTES,
                 clock: Callable[[], float] = time.monotonic,
                 send_control: Callable[[bytes, Address], None] | None = None) -> None:
        if max_routes < 2:
            raise ValueError(f"max_routes must be at least 2 (NAT rebinding needs two), got {max_routes}")
        self.edges = edges
        self.max_routes = max_routes
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.sessions: dict[bytes, MuxSession] = {}
        self._by_header: dict[bytes, Route] = {}
        self.send_control = send_control
        self._hellos: dict[Address, float] = {}  # edge -> when its last hello was answered

    def __len__(self) -> int:
        return len(self.sessions)

    def routes_by_transport(self) -> dict[str, int]:
        """Live routes now, by the client's transport: ``{"udp": n, "tcp": n}``."""
        tcp = sum(frame.is_tcp(header) for header in self._by_header)
        return {"udp": len(self._by_header) - tcp, "tcp": tcp}

    def register(self, ufrag: str, local_pwd: str, remote_pwd: str,
                 on_stun: Callable[[bytes, Address], None], on_media: Callable[[bytes], None],
                 on_forget: Callable[[Address], None]) -> MuxSession:
        """Accept Binding requests for server ufrag ``ufrag`` (RFC 8445 5.3) signed with ``local_pwd``;
        ``remote_pwd`` is the caller's ice-pwd from its offer, which signs the answers to our checks.
        Returns the session to pass to ``send`` and ``unregister``. Replaces a session with the same ufrag.
        """
        session = MuxSession(ufrag.encode(), local_pwd.encode(), remote_pwd.encode(), on_stun, on_media, on_forget)
        self.sessions[session.ufrag] = session
        return session

    @staticmethod
    def on_tcp(session: MuxSession) -> bool:
        """Whether ``session``'s media runs over ICE-TCP now (its active route came through an edge's TCP
        listener)."""
        return session.active is not None and frame.is_tcp(session.active.header)

    def rekey(self, session: MuxSession, ufrag: str, local_pwd: str, remote_pwd: str) -> None:
        """ICE restart (RFC 8445 9, RFC 9725 4.3.3): ``session`` takes Binding requests for the new server
        ufrag ``ufrag`` signed with the new ``local_pwd``, and proves routes with answers signed with the
        caller's new ``remote_pwd``; the old ufrag opens no route any more.

        The session object, its routes (their proofs, the active route carrying the media), its replay
        memory and its route cap carry over: the media stays on the old path until the caller's first
        check of the new generation opens a route (from its new address) that is proven and then carries
        media, as for a NAT rebinding. Raises ValueError if ``session`` is not registered or another
        session has ``ufrag``.
        """
        new = ufrag.encode()
        if self.sessions.get(session.ufrag) is not session:
            raise ValueError("the session is not registered")
        if self.sessions.get(new, session) is not session:
            raise ValueError("another session has this ufrag")
        del self.sessions[session.ufrag]
        session.ufrag, session.local_pwd, session.remote_pwd = new, local_pwd.encode(), remote_pwd.encode()
        self.sessions[new] = session
        self.events["rekeyed"] += 1

    def unregister(self, session: MuxSession) -> list[tuple[bytes, Address]]:
        """Forget ``session`` and its routes; returns one close frame per route as (frame, edge).

        A close frame is the route's header with an empty payload: it tells the edge relay that the
        session ended, so it removes the flow and revokes the token. Calling it twice returns nothing.
        """
        if self.sessions.get(session.ufrag) is session:
            del self.sessions[session.ufrag]
        closes = []
        for route in session.routes:
            if self._by_header.get(route.header) is route:
                del self._by_header[route.header]
            closes.append((route.header, route.edge))
        session.routes.clear()
        session.by_client.clear()
        session.seen.clear()
        session.active = None
        return closes

    def datagram_received(self, data: bytes, edge: tuple[Any, ...]) -> None:
        """The socket adapter's per-frame entry: ``receive(data, edge, clock())``, with the common case
        (DTLS/SRTP on a session's active route, from its edge) decided without reading the clock."""
        try:
            n = frame.header_length(data)
        except frame.MalformedFrame:
            self.receive(data, edge, self.clock())
            return
        route = self._by_header.get(data[:n])
        if (route is not None and route.session.active is route and route.edge == edge
                and len(data) > n and data[n] > 3):
            self.counters["rx"] += 1
            session = route.session
            if session.on_rtp is not None and is_rtp(data, n):
                session.on_rtp(data[n:])
            else:
                session.on_media(data[n:])
            return
        self.receive(data, edge, self.clock())

    def receive(self, data: bytes, edge: Address, now: float) -> str | None:
        """Handle one backbone frame ``data`` from ``edge`` at ``now`` (seconds, monotonic).

        Delivers the datagram through the session's ``on_stun`` or ``on_media`` (or answers a hello through
        ``send_control``) and returns None, or returns the drop reason (also counted). Never raises.
        """
        try:
            n = frame.header_length(data)
        except frame.MalformedFrame:
            if frame.is_control(data):
                return self._hello(data, (edge[0], edge[1]), now)
            return self._drop("malformed_frame")
        route = self._by_header.get(data[:n])
        if route is None:
            return self._learn(data, n, edge, now)
        if route.edge != edge:
            if not self._known_edge(edge):
                return self._drop("unknown_edge")
            route.edge = edge
        if len(data) == n:
            return self._drop("empty")
        payload = data[n:]
        if payload[0] > 3:
            session = route.session
            if session.active is not route:
                if route.proven_at is None or now - route.proven_at > CONSENT_S:
                    return self._drop("unproven_media")
                self._switch(session, route)
            self.counters["rx"] += 1
            if session.on_rtp is not None and is_rtp(payload):
                session.on_rtp(payload)
            else:
                session.on_media(payload)
            return None
        return self._stun(route, payload, now)

    def send(self, session: MuxSession, data: bytes, client: tuple[Any, ...]) -> Route | tuple[Route, Route] | str:
        """Pick the route(s) for ``data`` that the session's ICE agent sends to ``client``.

        STUN goes to exactly ``client``'s route, so each check is answered on its own path; a Binding
        request is remembered as a check of that route. DTLS/SRTP go to the active route. A Binding
        request to a route the media has left (``Route.left``) also goes over the active route (and is remembered there):
        aioice never re-nominates, so after a NAT rebinding its consent checks (RFC 7675) still name the
        old address, whose NAT mapping is usually gone; over the active route the caller answers them, the
        session keeps its consent and the active route its proof. Returns the Route, or the pair (``client``'s
        route, the active route) (send ``route.header + data`` to ``route.edge`` for each), or the drop
        reason (also counted).
        """
        if not data:
            return self._drop("tx_empty")
        if data[0] > 3:
            return self.media_route(session)
        route = session.by_client.get((client[0], client[1]))
        if route is None:
            return self._drop("tx_noroute")
        if data[:2] == _BINDING_REQUEST and len(data) >= stun.HEADER_LENGTH:
            transaction_id = data[8:20]
            route.checks.append(transaction_id)
            active = session.active
            if route.left and active is not None:
                active.checks.append(transaction_id)
                return route, active
        return route

    def media_route(self, session: MuxSession) -> Route | str:
        """The route for DTLS/SRTP from ``session``: its active route, or the drop reason ``tx_unproven``
        (also counted) while no route is proven or after ``unregister``."""
        active = session.active
        return self._drop("tx_unproven") if active is None else active

    def _drop(self, reason: str) -> str:
        self.counters[reason] += 1
        return reason

    def _known_edge(self, edge: Address) -> bool:
        return self.edges is None or (edge[0], edge[1]) in self.edges

    def _stun(self, route: Route, payload: bytes, now: float) -> str | None:
        """STUN over a known route: requests are authenticated and checked for replay, success responses to
        our checks prove the route; everything else STUN goes to the agent, which checks it again."""
        session = route.session
        try:
            message = stun.parse(payload)
            if message.message_type == stun.BINDING_REQUEST:
                if not stun.check_message_integrity(payload, session.local_pwd):
                    return self._drop("bad_integrity")
                first = session.seen.get(message.transaction_id)
                if first is None:
                    self._remember(session, message.transaction_id, route)
                elif first is not route:
                    return self._drop("replay")
            elif (message.message_type == BINDING_SUCCESS and message.transaction_id in route.checks
                  and stun.check_message_integrity(payload, session.remote_pwd)):
                self._prove(route, message.transaction_id, now)
        except stun.MalformedStun:
            return self._drop("malformed_stun")
        self.counters["rx"] += 1
        session.on_stun(payload, route.client)
        return None

    def _learn(self, data: bytes, n: int, edge: Address, now: float) -> str | None:
        """A frame header not seen yet: only a signed, fresh Binding request from an edge opens a route."""
        if not self._known_edge(edge):
            return self._drop("unknown_edge")
        if len(data) == n:
            return self._drop("empty")
        payload = data[n:]
        try:
            local_ufrag, _ = stun.split_username(stun.binding_request_username(payload))
            session = self.sessions.get(local_ufrag)
            if session is None:
                return self._drop("no_session")
            if not stun.check_message_integrity(payload, session.local_pwd):
                return self._drop("bad_integrity")
        except stun.MalformedStun:
            return self._drop("no_session")
        transaction_id = payload[8:20]
        if transaction_id in session.seen:
            return self._drop("replay")
        client, _edge_id, _ = frame.decode(data)
        known = session.by_client.get(client)
        if known is not None and frame.is_tcp(known.header) != frame.is_tcp(data):
            return self._drop("transport_conflict")
        if len(session.routes) >= self.max_routes and not self._evict_one(session, now):
            return self._drop("route_cap")
        route = Route(session, client, data[:n], edge)
        session.routes.append(route)
        session.by_client[client] = route
        self._by_header[route.header] = route
        self._remember(session, transaction_id, route)
        self.events["route_learned_tcp" if frame.is_tcp(route.header) else "route_learned"] += 1
        self.counters["rx"] += 1
        session.on_stun(payload, client)
        return None

    def _hello(self, data: bytes, edge: Address, now: float) -> str | None:
        """Answer an edge's hello with the proven routes through it (module docstring: Vouching)."""
        if not self._known_edge(edge):
            return self._drop("unknown_edge")
        try:
            hello = frame.decode_control(data)
        except frame.MalformedFrame:
            return self._drop("control")
        if not isinstance(hello, frame.Hello):
            return self._drop("control")
        last = self._hellos.get(edge)
        if last is not None and now - last < HELLO_INTERVAL_S:
            return self._drop("hello_rate")
        if len(self._hellos) >= MAX_HELLO_EDGES:
            self._hellos = {e: at for e, at in self._hellos.items() if now - at < HELLO_INTERVAL_S}
        self._hellos[edge] = now
        routes = [(route.header, session.ufrag) for session in self.sessions.values() if len(session.ufrag) <= 0xFF
                  for route in session.routes
                  if route.edge == edge and route.proven_at is not None and now - route.proven_at <= CONSENT_S
                  and not frame.is_tcp(route.header)]
        self.events["hello"] += 1
        self.events["vouched"] += len(routes)
        if self.send_control is not None:
            for vouch in frame.encode_vouches(hello.nonce, routes):
                self.send_control(vouch, edge)
        return None

    def _remember(self, session: MuxSession, transaction_id: bytes, route: Route) -> None:
        seen = session.seen
        seen[transaction_id] = route
        if len(seen) > REPLAY_WINDOW:
            del seen[next(iter(seen))]

    def _evict_one(self, session: MuxSession, now: float) -> bool:
        """Remove the oldest route that is neither active nor freshly proven; False if there is none."""
        for route in session.routes:
            if route is not session.active and (route.proven_at is None or now - route.proven_at > CONSENT_S):
                break
        else:
            return False
        session.routes.remove(route)
        del self._by_header[route.header]
        self.counters["route_evicted"] += 1
        if session.by_client.get(route.client) is route:
            del session.by_client[route.client]
            for other in reversed(session.routes):
                if other.client == route.client:
                    session.by_client[route.client] = other
                    return True
            session.on_forget(route.client)
        return True

    def _prove(self, route: Route, transaction_id: bytes, now: float) -> None:
        route.checks.remove(transaction_id)
        route.proven_at = now
        self.events["route_proven"] += 1
        if route.session.active is None:
            route.session.active = route

    def _switch(self, session: MuxSession, route: Route) -> None:
        """Move the session's media to ``route``; the route it leaves must prove itself again."""
        if session.active is not None:
            session.active.proven_at = None
            session.active.left = True
        route.left = False
        session.active = route
        self.events["route_switched"] += 1
