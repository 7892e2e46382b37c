"""The edge relay's ICE-TCP listener (RFC 6544 passive candidate, RFC 4571 framing): the socket adapter
beside the UDP one (edge/relay.py), sharing its core, its flow table and its backbone sockets.

Each accepted connection is admitted by the gate (edge/relay_tcp_core.py: per-source and total caps, a
first-packet deadline, life with its flow), its bytes are split into packets by a FrameReader, and each
packet is decided by the relay core exactly as a UDP datagram (``RelayCore.receive_tcp``): the first must be
a STUN Binding request with a valid routing token and opens a flow whose frame header carries the TCP bit
(voicemesh.wire.frame), so the transceiver's replies come back to this connection. The connection is the
flow: its peer address is the client address the transceiver sees (XOR-MAPPED-ADDRESS is right), and when
it closes the flow goes.

The per-packet path of a proven flow is one dict lookup each way, as on UDP: uplink, the packet is framed
with the flow's header and sent on its backbone socket; downlink (edge/relay.py ``on_backbone``), the flow's
``downlink`` writes the length and the packet in one ``write``. Downlink backpressure: above
``send_buffer_bytes`` queued in the kernel (TCP_NOTSENT_LOWAT) and in asyncio, RTP and RTCP (RFC 7983:
first byte 128-191) are dropped (``backpressure``), never STUN or DTLS, so a stalled connection holds at most
about that much stale audio. A reply for a connection that is closing is dropped (``closed``). Both count in
the relay core's ``tcp_drops``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, cast

from voicemesh.edge.flows import Flow, tcp_key
from voicemesh.edge.relay import Relay
from voicemesh.edge.relay_core import Uplink
from voicemesh.edge.relay_tcp_core import MAX_FRAME_BYTES, FrameReader, MalformedFraming, TcpConnection, TcpGate

log = logging.getLogger("voicemesh.relay.tcp")

SEND_BUFFER_BYTES = 16 * 1024
"""Downlink bytes a connection may hold unsent (kernel and asyncio) before its media is dropped: about one
second of Opus audio at 128 kbit/s with its framing."""
SWEEP_S = 1.0
"""Longest time between two sweeps of the connections (seconds)."""
BACKLOG = 1024


def bind_tcp(host: str, port: int, *, reuse_port: bool = False, backlog: int = BACKLOG) -> socket.socket:
    """A listening, non-blocking TCP socket on ``(host, port)`` (port 0 picks one), with SO_REUSEADDR and,
    with ``reuse_port``, SO_REUSEPORT (a new edge process takes new connections while the old one keeps its
    own). Raises OSError if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class TcpRelay:
    """Serves ICE-TCP clients on ``sock`` (a listening socket, bind_tcp) through ``relay``'s core.

    Settings: ``max_connections`` in all and ``max_per_source`` per source, ``first_packet_timeout_s``
    (seconds), ``max_frame_bytes``, ``send_buffer_bytes`` (see the module docstring). ``gate`` holds the
    connections and their counters; ``stats()`` reports them and is merged into ``relay.stats()`` under
    ``by_transport.tcp``. Drops of packets go to the core's ``tcp_drops``.
    """

    def __init__(self, relay: Relay, sock: socket.socket, *, max_connections: int = 10_000, max_per_source: int = 16,
                 first_packet_timeout_s: float = 5.0, max_frame_bytes: int = MAX_FRAME_BYTES,
                 send_buffer_bytes: int = SEND_BUFFER_BYTES) -> None:
        self.relay = relay
        self.sock = sock
        self.address = sock.getsockname()[:2]
        self.max_frame_bytes = max_frame_bytes
        self.send_buffer_bytes = send_buffer_bytes
        flows = relay.core.flows
        self.gate = TcpGate(lambda flow: flows.by_client.get(flow.key) is flow, max_connections=max_connections,
                            max_per_source=max_per_source, first_packet_timeout_s=first_packet_timeout_s)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        relay.tcp = self

    async def start(self) -> None:
        """Accept connections (inside the running loop)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=self.sock)
        self._sweep()

    def close(self) -> None:
        """Stop accepting and close every connection (again: nothing)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.gate.connections):
            conn.close("shutdown")

    def _sweep(self) -> None:
        self.gate.expire(time.time())
        self._sweeper = asyncio.get_running_loop().call_later(
            min(SWEEP_S, self.gate.first_packet_timeout_s / 4), self._sweep)

    def stats(self) -> dict[str, Any]:
        """``connections`` (now), ``connections_routed`` (now: their first packet opened a flow), and the
        gate's counters: ``accepted``, ``source_cap``, ``total_cap``, ``closed_<reason>``."""
        return {"connections": len(self.gate),
                "connections_routed": sum(conn.flow is not None for conn in self.gate.connections),
                **self.gate.counters}


class _Connection(asyncio.Protocol):
    """One client connection: framing in, the relay core's decisions, framed replies out."""

    def __init__(self, server: TcpRelay) -> None:
        self.server = server
        self.reader = FrameReader(server.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.conn: TcpConnection | None = None
        self.peer: tuple[Any, ...] = ()
        self.key: tuple[Any, ...] = ()
        self.paused = False
        self._open = server.relay.core.flows.open_by_client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.peer = transport.get_extra_info("peername")
        self.key = tcp_key(self.peer)
        admitted = self.server.gate.accept(self.peer, time.time(), self._close)
        if isinstance(admitted, str):
            self.transport.abort()
            return
        self.conn = admitted
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, self.server.send_buffer_bytes // 2)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=self.server.send_buffer_bytes // 2)

    def data_received(self, data: bytes) -> None:
        if self.conn is None:
            return
        try:
            packets = self.reader.feed(data)
        except MalformedFraming as exc:
            self._close(exc.reason)
            return
        open_flows = self._open
        for packet in packets:
            flow = open_flows.get(self.key)
            if flow is not None:
                flow.packets_in += 1
                flow.bytes_in += len(packet)
                self._up(flow, flow.header + packet)
                continue
            if not self._decide(packet):
                return

    def _decide(self, packet: bytes) -> bool:
        """A packet the fast path did not take, through the core; False if the connection was closed."""
        relay = self.server.relay
        result = relay.core.receive_tcp(packet, self.peer, time.time())
        if isinstance(result, Uplink):
            flow = result.flow
            if result.learned:
                flow.uplink = relay.uplink_to(flow.transceiver)
                flow.downlink = self.send
                assert self.conn is not None
                self.conn.flow = flow
                log.debug("tcp flow learned client=%s:%d transceiver=%s:%d state=%s",
                          *flow.client[:2], *flow.transceiver, flow.state)
                if relay.on_flow is not None:
                    relay.on_flow(flow)
            self._up(flow, result.frame)
            if result.release:
                self.send(result.release)
            return True
        if self.key not in relay.core.flows.by_client:
            self._close("refused")  # its first packet (or the first after its flow went) opened no flow
            return False
        return True

    def _up(self, flow: Flow, data: bytes) -> None:
        try:
            flow.uplink(data)
        except ConnectionRefusedError:  # an ICMP error of an earlier datagram, reported on this send
            try:
                flow.uplink(data)
            except OSError:
                self.server.relay.drops["tx_error"] += 1
        except OSError:
            self.server.relay.drops["tx_error"] += 1

    def send(self, payload: bytes) -> None:
        """Write one packet to the client, RFC 4571 framed; under backpressure, RTP/RTCP is dropped."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.server.relay.core.tcp_drops["closed"] += 1
            return
        if self.paused and payload[0] >= 128:
            self.server.relay.core.tcp_drops["backpressure"] += 1
            return
        transport.write(len(payload).to_bytes(2, "big") + payload)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def _close(self, reason: str) -> None:
        """Close for ``reason`` (counted by the gate); the flow goes in connection_lost."""
        if self.conn is not None:
            self.server.gate.closed(self.conn, reason)
        if self.transport is not None:
            if reason == "flow_gone":
                self.transport.close()
            else:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.server.gate.closed(conn, "peer")
        flow = conn.flow
        if flow is not None:
            self.server.relay.core.disconnect(flow)
        self.transport = None
