"""The transceiver's backbone mux: one UDP socket for every ICE session (as Pion's UDPMux).

Edge relays send backbone frames (edge/frame.py: a header carrying the
client's real address, then the client's datagram unchanged). The mux strips
the header and hands the datagram to the aioice protocol of the session it
belongs to, under the client's true address, so ICE, XOR-MAPPED-ADDRESS and
consent (RFC 7675) see the client, not the relay. Dispatch follows Pion: by
the frame header (client address + edge) first; for a header not seen yet,
the datagram must be a STUN Binding request whose USERNAME starts with a
registered server ufrag and whose MESSAGE-INTEGRITY verifies with that
session's pwd (RFC 8445 7.2.2). Replies go back to the edge the client's
packets last came through. DTLS and SRTP go to the route the session's media
last arrived on: aioice keeps sending to the address it nominated, so when a
client's NAT rebinds (a new address, authenticated by its next consent check)
or a relay restarts, the mux moves the session instead of stranding it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from aioice.ice import StunProtocol

from voicemesh.runtime.udp import add_drain_reader, sockname
from voicemesh.wire import frame, stun

log = logging.getLogger("voicemesh.mux")


@dataclass(slots=True, eq=False)
class _Session:
    protocol: StunProtocol
    pwd: bytes
    routes: list[_Route] = field(default_factory=list)
    active: _Route | None = None


@dataclass(slots=True, eq=False)
class _Route:
    session: _Session
    client: tuple[str, int]
    header: bytes
    edge: tuple[str, int]


class MuxTransport:
    """What aioice sees as its DatagramTransport: sends go out through the mux.

    aioice calls ``sendto(data, addr)`` with the client's real address;
    ``close()`` unregisters the session and then calls ``connection_lost``,
    which aioice's close waits for.
    """

    def __init__(self, mux: BackboneMux, public: tuple[str, int]) -> None:
        self._mux = mux
        self._public = public
        self.protocol: StunProtocol | None = None

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._mux.send(data, (addr[0], addr[1]))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._public if name == "sockname" else default

    def close(self) -> None:
        if self.protocol is not None:
            self._mux.unregister(self.protocol)
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
            self.protocol = None

    def is_closing(self) -> bool:
        return self.protocol is None


class BackboneMux:
    """Demultiplexes backbone frames on one socket to many aioice sessions.

    ``counters`` counts datagrams in and out and drops by reason:
    ``malformed_frame``, ``unknown_edge``, ``no_session`` (not STUN, or an
    unknown ufrag, from an unknown client address), ``bad_integrity``,
    ``tx_noroute`` (aioice sent to an address no frame came from),
    ``tx_error``. ``edges`` is consulted for the source address of frames that
    would create a route: only registered edge relays may do so.
    """

    def __init__(self, sock: socket.socket, edges: Container[tuple[str, int]] | None = None) -> None:
        self.sock = sock
        self.address = sockname(sock)
        self.edges = edges
        self.counters: Counter[str] = Counter()
        self._by_ufrag: dict[bytes, _Session] = {}
        self._by_header: dict[bytes, _Route] = {}
        self._by_client: dict[tuple[str, int], _Route] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start reading the socket (call inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        add_drain_reader(self._loop, self.sock, self.datagram_received)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def register(self, ufrag: str, pwd: str, protocol: StunProtocol) -> None:
        """Route STUN requests for server ufrag ``ufrag`` to ``protocol``."""
        self._by_ufrag[ufrag.encode()] = _Session(protocol, pwd.encode())

    def unregister(self, protocol: StunProtocol) -> None:
        """Forget a session and every client route learned for it."""
        for ufrag, session in list(self._by_ufrag.items()):
            if session.protocol is protocol:
                session.active = None
                del self._by_ufrag[ufrag]
                for route in session.routes:
                    self._by_header.pop(route.header, None)
                    if self._by_client.get(route.client) is route:
                        del self._by_client[route.client]

    def __len__(self) -> int:
        return len(self._by_ufrag)

    def datagram_received(self, data: bytes, src: tuple) -> None:
        """Handle one backbone frame from an edge (the per-packet path)."""
        try:
            n = frame.header_length(data)
        except frame.MalformedFrame:
            self.counters["malformed_frame"] += 1
            return
        route = self._by_header.get(data[:n])
        if route is None:
            route = self._learn(data, n, src)
            if route is None:
                return
        elif route.edge != src:
            if not self._known_edge(src):
                return
            route.edge = src
        self.counters["rx"] += 1
        payload = data[n:]
        session = route.session
        if payload and payload[0] < 4:
            session.protocol.datagram_received(payload, route.client)
        else:
            session.active = route
            session.protocol.receiver.data_received(payload, 1)

    def _known_edge(self, src: tuple) -> bool:
        if self.edges is None or (src[0], src[1]) in self.edges:
            return True
        self.counters["unknown_edge"] += 1
        return False

    def _learn(self, data: bytes, n: int, src: tuple) -> _Route | None:
        if not self._known_edge(src):
            return None
        payload = data[n:]
        try:
            local_ufrag, _ = stun.split_username(stun.binding_request_username(payload))
        except stun.MalformedStun:
            self.counters["no_session"] += 1
            return None
        session = self._by_ufrag.get(local_ufrag)
        if session is None:
            self.counters["no_session"] += 1
            return None
        if not stun.check_message_integrity(payload, session.pwd):
            self.counters["bad_integrity"] += 1
            return None
        client, _edge_id, _ = frame.decode(data)
        route = _Route(session, client, data[:n], src)
        session.routes.append(route)
        self._by_header[route.header] = route
        self._by_client[client] = route
        log.debug("route learned client=%s:%d edge=%s:%d", *client, src[0], src[1])
        return route

    def send(self, data: bytes, client: tuple[str, int]) -> None:
        """Send ``data`` to ``client`` through the edge its packets last came from.

        STUN (RFC 7983: first byte 0-3) goes to exactly ``client``, so each
        ICE check is answered on its own 5-tuple; DTLS and SRTP follow the
        session's active route.
        """
        route = self._by_client.get(client)
        if route is None:
            self.counters["tx_noroute"] += 1
            return
        if data[0] >= 4 and route.session.active is not None:
            route = route.session.active
        try:
            self.sock.sendto(route.header + data, route.edge)
        except OSError:
            self.counters["tx_error"] += 1
            return
        self.counters["tx"] += 1

