"""The transceiver's backbone mux: one UDP socket for every ICE session (as Pion's UDPMux).

Edge relays send backbone frames (voicemesh.wire.frame: a header carrying the client's real address, then
the client's datagram unchanged). This module is the I/O half: it reads the socket, asks the sans-IO core
(core/mux_core.py, where every routing decision and its rules live) what to do with each frame and each
datagram aioice sends, and does it. aioice sees the client's true address, so ICE, XOR-MAPPED-ADDRESS and
consent (RFC 7675) see the client, not the relay. An edge's hello is answered on the same socket with the
core's vouches (core/mux_core.py "Vouching").
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Container
from functools import partial
from typing import Any

from aioice.ice import StunProtocol

from voicemesh.core import hooks
from voicemesh.core.mux_core import Address, MuxCore, MuxSession, Route
from voicemesh.runtime.udp import add_drain_reader, sockname
from voicemesh.wire import frame


class MuxTransport:
    """What aioice sees as its DatagramTransport: sends go out through the mux.

    aioice calls ``sendto(data, addr)`` with the client's real address;
    ``close()`` unregisters the session (the mux sends the edges their close
    frames) and then calls ``connection_lost``, which aioice's close waits for.
    """

    def __init__(self, mux: BackboneMux, public: Address) -> None:
        self._mux = mux
        self._public = public
        self.protocol: StunProtocol | None = None
        self.session: MuxSession | None = None

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.session is not None:
            self._mux.send(self.session, data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._public if name == "sockname" else default

    def close(self) -> None:
        if self.session is not None:
            self._mux.unregister(self.session)
            self.session = None
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
            self.protocol = None

    def is_closing(self) -> bool:
        return self.protocol is None


class BackboneMux:
    """Demultiplexes backbone frames on one socket to many aioice sessions.

    ``edges`` holds the backbone addresses of the registered edge relays (None: any
    source, for tests); ``batch_edges`` those of them that read BATCH frames (their registry records say
    ``backbone_batch``): the lean path's media for such an edge waits for the end of the event loop's turn and
    goes in BATCH frames (voicemesh/wire/frame.py), so the agent's batched downlink, many sessions' packets at
    once, costs one datagram per 1200 bytes instead of one per packet. ``counters`` is the core's
    (core/mux_core.py lists the reasons) plus ``tx`` (datagrams sent), ``tx_batched`` (media frames that waited
    for the end of a turn to go in BATCH frames; ``tx`` counts the datagrams they went in) and ``tx_error`` (the
    socket refused one).
    """

    def __init__(self, sock: socket.socket, edges: Container[Address] | None = None,
                 batch_edges: Container[Address] = ()) -> None:
        self.sock = sock
        self.address = sockname(sock)
        self.core = MuxCore(edges, send_control=self._sendto)
        self.counters = self.core.counters
        self.batch_edges = batch_edges
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[Address, list[bytes]] = {}
        self._flush_handle: asyncio.Handle | None = None

    def start(self) -> None:
        """Start reading the socket (call inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        add_drain_reader(self._loop, self.sock, self.core.datagram_received)

    def close(self) -> None:
        """Stop reading (what waits for the end of the turn goes out first) and close the socket."""
        self._flush()
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def register(self, ufrag: str, local_pwd: str, remote_pwd: str, transport: MuxTransport) -> None:
        """Route STUN for server ufrag ``ufrag`` to ``transport``'s aioice protocol.

        ``local_pwd`` is the session's ice-pwd (it signs the caller's checks), ``remote_pwd`` the caller's
        from its offer (it signs the answers to ours). Call after hooks.attach_protocol.
        """
        protocol = transport.protocol
        if protocol is None:
            raise ValueError("attach an aioice protocol to the transport first")
        transport.session = self.core.register(
            ufrag, local_pwd, remote_pwd,
            on_stun=protocol.datagram_received,
            on_media=hooks.media_receiver(protocol),
            on_forget=partial(hooks.forget_address, protocol))

    def rekey(self, transport: MuxTransport, ufrag: str, local_pwd: str, remote_pwd: str) -> None:
        """Route ``transport``'s session by its new server ufrag after an ICE restart (MuxCore.rekey).
        Raises ValueError if the session is closed or the ufrag taken."""
        if transport.session is None:
            raise ValueError("the session is closed")
        self.core.rekey(transport.session, ufrag, local_pwd, remote_pwd)

    def on_tcp(self, transport: MuxTransport) -> bool:
        """Whether ``transport``'s session has its media on an ICE-TCP route now (MuxCore.on_tcp)."""
        return transport.session is not None and self.core.on_tcp(transport.session)

    def unregister(self, session: MuxSession) -> None:
        """Forget a session and its routes, and tell each route's edge (a close frame: header, no payload)
        after the media still waiting for the end of the turn."""
        self._flush()
        for close, edge in self.core.unregister(session):
            self._sendto(close, edge)

    def __len__(self) -> int:
        return len(self.core)

    def send(self, session: MuxSession, data: bytes, client: tuple[Any, ...]) -> None:
        """Send ``data`` from ``session``'s ICE agent towards ``client`` over the route the core picks."""
        route = self.core.send(session, data, client)
        if isinstance(route, Route):
            self._sendto(route.header + data, route.edge)
        elif isinstance(route, tuple):
            for each in route:
                self._sendto(each.header + data, each.edge)

    def send_media(self, session: MuxSession, data: bytes) -> None:
        """Send SRTP from ``session``'s lean media path (core/lean.py) over its active route."""
        route = self.core.media_route(session)
        if not isinstance(route, Route):
            return
        if route.edge not in self.batch_edges:
            self._sendto(route.header + data, route.edge)
            return
        pending = self._pending.get(route.edge)
        if pending is None:
            pending = self._pending[route.edge] = []
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        pending.append(route.header + data)

    def _flush(self) -> None:
        """Send the media that waited for the end of the turn, in BATCH frames (frame.encode_batches)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # when called before the end of the turn (close, unregister)
            self._flush_handle = None
        pending, self._pending = self._pending, {}
        for edge, frames in pending.items():
            self.counters["tx_batched"] += len(frames)
            for datagram in frame.encode_batches(frames):
                self._sendto(datagram, edge)

    def _sendto(self, data: bytes, edge: Address) -> None:
        try:
            self.sock.sendto(data, edge)
        except OSError:
            self.counters["tx_error"] += 1
            return
        self.counters["tx"] += 1
