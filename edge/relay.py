"""The edge relay: one public UDP port, packets routed by the token in the server ufrag.

The first datagram from an unknown client address must be a STUN Binding
request (RFC 8489) whose USERNAME starts with a routing token (edge/token.py)
that verifies and names a registered transceiver; anything else is dropped and
counted by reason. A valid request creates a flow (edge/flows.py); after that,
DTLS, SRTP and STUN datagrams of that client are forwarded without parsing,
framed with the client's address (edge/frame.py) to the transceiver's backbone
socket. Frames coming back are unframed and sent to the client only if it has
a flow through this transceiver: the relay never sends to an address that did
not first send it a valid request (no reflection, no amplification).

Each transceiver gets its own backbone socket, bound to the backbone address
with SO_REUSEPORT and connected to that transceiver: ``send`` skips the
per-packet address parse and route lookup of ``sendto``, and ``recv`` builds
no address tuple (together about 20% of the relay's CPU per packet, measured
with bench/relay.py); the kernel delivers only that transceiver's datagrams
to it. The unconnected backbone socket still takes frames from a transceiver
whose socket is not open yet.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable

from voicemesh.edge.flows import Flow, FlowTable, FlowTableFull
from voicemesh.registry import NodeRecord
from voicemesh.runtime.udp import add_drain_reader, bind_udp, sockname
from voicemesh.wire import frame, stun
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.token import BadToken, TokenCodec

log = logging.getLogger("voicemesh.relay")


class Relay:
    """Forwards between the public socket and the backbone sockets.

    ``backbone`` must be bound with SO_REUSEPORT (ValueError otherwise).

    ``drops`` counts dropped datagrams by reason: the MalformedStun and
    BadToken reasons for first packets (``not_stun``, ``truncated``, ``mac``,
    ``expired``, ...), ``unknown_transceiver``, ``table_full``, and on the
    backbone side ``frame_<reason>``, ``no_flow`` (no flow for that client
    through the sending transceiver), ``tx_error``. Forwarded packets and
    bytes are counted per flow, so the hot path updates two integers; see
    ``stats()`` for the totals. ``on_flow(flow, server_ufrag)``, if set, is
    called once for each flow learned.
    """

    def __init__(
        self,
        public: socket.socket,
        backbone: socket.socket,
        edge_id: int,
        tokens: TokenCodec,
        *,
        idle_timeout_s: float = 60.0,
        max_flows: int = 100_000,
    ) -> None:
        if not backbone.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise ValueError("the backbone socket must be bound with SO_REUSEPORT (bind_udp(..., reuse_port=True)):"
                             " each transceiver gets a connected socket on the same address")
        self.public = public
        self.backbone = backbone
        self.public_address = sockname(public)
        self.backbone_address = sockname(backbone)
        self.tokens = tokens
        self.flows = FlowTable(edge_id, idle_timeout_s, max_flows)
        self.drops: Counter[str] = Counter()
        self.directory: dict[tuple[int, int], tuple[str, int]] = {}
        self._links: dict[tuple[str, int], socket.socket] = {}
        self.on_flow: Callable[[Flow, bytes], None] | None = None
        self._expired_totals: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start reading both sockets and sweeping idle flows (inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        add_drain_reader(self._loop, self.public, self.on_public)
        add_drain_reader(self._loop, self.backbone, self.on_backbone)
        for address in set(self.directory.values()) - set(self._links):
            self._open_link(address)
        self._sweep()

    def close(self) -> None:
        """Stop reading and close both sockets."""
        if self._loop is not None:
            self._loop.remove_reader(self.public.fileno())
            self._loop.remove_reader(self.backbone.fileno())
        if self._sweeper is not None:
            self._sweeper.cancel()
        for address in list(self._links):
            self._close_link(address)
        self.public.close()
        self.backbone.close()

    def set_transceivers(self, nodes: Iterable[NodeRecord]) -> None:
        """Replace the directory ``(region id, transceiver index) -> backbone address``
        and open or close the connected backbone socket of each transceiver."""
        self.directory = {
            (n.region_id, n.index): parse_hostport(n.backbone) for n in nodes if n.backbone and n.index
        }
        live = set(self.directory.values())
        for address in set(self._links) - live:
            self._close_link(address)
        if self._loop is not None:
            for address in live - set(self._links):
                self._open_link(address)

    def _open_link(self, address: tuple[str, int]) -> None:
        try:
            sock = bind_udp(*self.backbone_address, reuse_port=True)
            sock.connect(address)
        except OSError as exc:
            log.warning("cannot open backbone socket to %s:%d: %s", *address, exc)
            return
        self._links[address] = sock
        assert self._loop is not None
        add_drain_reader(self._loop, sock, self.on_backbone, peer=address)

    def _close_link(self, address: tuple[str, int]) -> None:
        sock = self._links.pop(address)
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def on_public(self, data: bytes, addr: tuple) -> None:
        """A datagram from a client (the per-packet path)."""
        flow = self.flows.by_client.get(addr)
        if flow is None:
            flow = self._first_packet(data, addr)
            if flow is None:
                return
        flow.packets_in += 1
        flow.bytes_in += len(data)
        try:
            flow.uplink(flow.header + data)
        except ConnectionRefusedError:
            self._resend(flow, data)
        except OSError:
            self.drops["tx_error"] += 1

    def _resend(self, flow: Flow, data: bytes) -> None:
        """A connected socket reports an ICMP error caused by an earlier datagram on the next send,
        which it then skips: send once more, so one unreachable moment costs no extra packet."""
        try:
            flow.uplink(flow.header + data)
        except OSError:
            self.drops["tx_error"] += 1

    def _first_packet(self, data: bytes, addr: tuple) -> Flow | None:
        try:
            server_ufrag, _ = stun.split_username(stun.binding_request_username(data))
            token = self.tokens.verify(server_ufrag, time.time())
        except (stun.MalformedStun, BadToken) as exc:
            self.drops[exc.reason] += 1
            return None
        transceiver = self.directory.get((token.region, token.transceiver))
        if transceiver is None:
            self.drops["unknown_transceiver"] += 1
            return None
        try:
            flow = self.flows.learn(addr, transceiver, token, time.monotonic())
        except FlowTableFull as exc:
            self.drops[exc.reason] += 1
            return None
        link = self._links.get(transceiver)
        flow.uplink = link.send if link is not None else _sendto(self.backbone, transceiver)
        log.debug("flow learned client=%s:%d transceiver=%s:%d", addr[0], addr[1], *transceiver)
        if self.on_flow is not None:
            self.on_flow(flow, server_ufrag)
        return flow

    def on_backbone(self, data: bytes, src: tuple) -> None:
        """A backbone frame from a transceiver (the per-packet return path)."""
        try:
            n = frame.header_length(data)
        except frame.MalformedFrame as exc:
            self.drops["frame_" + exc.reason] += 1
            return
        flow = self.flows.by_header.get(data[:n])
        if flow is None or flow.transceiver != src:
            self.drops["no_flow"] += 1
            return
        flow.packets_out += 1
        flow.bytes_out += len(data) - n
        try:
            self.public.sendto(data[n:], flow.client)
        except OSError:
            self.drops["tx_error"] += 1

    def _sweep(self) -> None:
        for flow in self.flows.expire(time.monotonic()):
            self._expired_totals.update(_flow_counts(flow))
        assert self._loop is not None
        self._sweeper = self._loop.call_later(self.flows.idle_timeout_s / 4, self._sweep)

    def stats(self) -> dict:
        """Counters: ``flows`` (active), ``packets_in``/``bytes_in`` (client to
        transceiver), ``packets_out``/``bytes_out`` (back to clients), ``drops`` by reason."""
        totals = Counter(self._expired_totals)
        for flow in self.flows.by_client.values():
            totals.update(_flow_counts(flow))
        return {"flows": len(self.flows), **{k: totals[k] for k in _COUNTS}, "drops": dict(self.drops)}


def _sendto(sock: socket.socket, address: tuple[str, int]):
    return lambda data: sock.sendto(data, address)


_COUNTS = ("packets_in", "bytes_in", "packets_out", "bytes_out")


def _flow_counts(flow: Flow) -> dict[str, int]:
    return {k: getattr(flow, k) for k in _COUNTS}
