"""The edge relay's socket adapter: one public UDP port for clients, backbone sockets towards transceivers,
and every decision taken by the sans-IO core (edge/relay_core.py), which says what to send where.

The per-packet path of a proven flow skips the core: a datagram from a client whose flow is open is framed
with the flow's precomputed header and sent on the flow's uplink, and a frame from the flow's transceiver is
unframed and sent to the client, after one dict lookup each (``FlowTable.open_by_client`` and
``open_by_header``, which the core keeps to exactly the flows that forward every non-empty datagram).
Everything else (first packets, unproven flows, closes, drops) goes through the core.

Each transceiver gets its own backbone socket, bound to the backbone address with SO_REUSEPORT and
connected to that transceiver: ``send`` skips the per-packet address parse and route lookup of ``sendto``,
and ``recv`` builds no address tuple; the kernel delivers only that transceiver's datagrams to it. The
unconnected backbone socket still takes frames from a transceiver whose socket is not open yet.

A restarted edge, or a new process taking over the ports of a running one (all sockets bound with
SO_REUSEPORT), starts with ``start(pick_up=True)``: before it reads the public socket it asks every
transceiver to vouch for the flows it has proven through this backbone address (a hello; edge/relay_core.py
"Vouching"), so the datagrams that queue meanwhile go on over the vouched flows. Of several connected
sockets with the same addresses the kernel delivers to the newest, so once a new process has opened its
backbone sockets, the transceivers' frames (the vouches too) reach it, not the old one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from voicemesh.edge.flows import Flow, FlowTable
from voicemesh.edge.relay_core import Closed, Downlink, Hello, RelayCore, Uplink, Vouched
from voicemesh.registry import NodeRecord
from voicemesh.runtime.udp import add_drain_reader, bind_udp, sockname
from voicemesh.wire import frame
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.token import TokenCodec

log = logging.getLogger("voicemesh.relay")


class TcpStats(Protocol):
    """What the relay needs of its ICE-TCP listener (edge/relay_tcp.py TcpRelay, which sets ``Relay.tcp``)."""

    def stats(self) -> dict[str, Any]: ...

VOUCH_WAIT_S = 0.5
"""Longest wait of start(pick_up=True) for the transceivers' vouches before the public socket is read
(seconds): a transceiver that does not answer (down, or an older version) delays the start by this much."""


class Relay:
    """Forwards between the public socket and the backbone sockets, as the core decides.

    ``backbone`` must be bound with SO_REUSEPORT (ValueError otherwise). The keyword settings are
    RelayCore's. ``core`` holds the flows and the counters (``stats()``, ``drops``); a send that fails
    counts as drop ``tx_error``. ``on_flow(flow)``, if set, is called once for each flow learned. ``tcp`` is
    the ICE-TCP listener on the same core (edge/relay_tcp.py), if any: TCP flows send their downlink through
    ``Flow.downlink``.
    ``ready`` is set once the public socket is read (see start).
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
        max_flows_per_token: int = 4,
        open_window_s: float = 30.0,
        pending_timeout_s: float = 10.0,
        transceiver_gone_s: float = 6.0,
    ) -> None:
        if not backbone.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise ValueError("the backbone socket must be bound with SO_REUSEPORT (bind_udp(..., reuse_port=True)):"
                             " each transceiver gets a connected socket on the same address")
        self.core = RelayCore(edge_id, tokens, idle_timeout_s=idle_timeout_s, max_flows=max_flows,
                              max_flows_per_token=max_flows_per_token, open_window_s=open_window_s,
                              pending_timeout_s=pending_timeout_s, ipv6_clients=public.family == socket.AF_INET6,
                              transceiver_gone_s=transceiver_gone_s)
        self.public = public
        self.backbone = backbone
        self.public_address = sockname(public)
        self.backbone_address = sockname(backbone)
        self.drops = self.core.drops
        self.on_flow: Callable[[Flow], None] | None = None
        self._links: dict[tuple[str, int], socket.socket] = {}
        self._open_by_client = self.core.flows.open_by_client
        self._open_by_header = self.core.flows.open_by_header
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.ready = asyncio.Event()
        self._unanswered: set[tuple[str, int]] = set()
        self._vouch_wait: asyncio.TimerHandle | None = None
        self.tcp: TcpStats | None = None

    @property
    def flows(self) -> FlowTable:
        """The core's flow table."""
        return self.core.flows

    @property
    def directory(self) -> dict[tuple[int, int], tuple[str, int]]:
        """(region id, transceiver index) -> backbone address; assigning it replaces the core's directory
        (without opening connected sockets: see set_transceivers)."""
        return self.core.directory

    @directory.setter
    def directory(self, directory: dict[tuple[int, int], tuple[str, int]]) -> None:
        self.core.set_directory(directory)

    def start(self, *, pick_up: bool = False) -> None:
        """Start reading the sockets and sweeping flows (inside the running loop).

        The public socket is read at once, or with ``pick_up`` only once every transceiver in the directory
        has answered this relay's hello (the last frame of its vouches came) or VOUCH_WAIT_S passed; its
        datagrams queue in the kernel meanwhile. ``ready`` is set then.
        """
        self._loop = asyncio.get_running_loop()
        add_drain_reader(self._loop, self.backbone, self.on_backbone)
        for address in set(self.directory.values()) - set(self._links):
            self._open_link(address)
        self._sweep()
        if not pick_up or not self.directory:
            self._read_public()
            return
        self._unanswered = set(self.directory.values())
        now = time.time()
        for address in self._unanswered:
            self._send(self.uplink_to(address), self.core.hello(address, now))
        self._vouch_wait = self._loop.call_later(VOUCH_WAIT_S, self._read_public)

    def _read_public(self) -> None:
        if self.ready.is_set() or self._loop is None:
            return
        if self._vouch_wait is not None:
            self._vouch_wait.cancel()
        if self._unanswered:
            log.warning("reading the public socket before %d transceivers vouched", len(self._unanswered))
        add_drain_reader(self._loop, self.public, self.on_public)
        self.ready.set()

    def close(self) -> None:
        """Stop reading and close every socket (again: nothing)."""
        if self.public.fileno() == -1:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.public.fileno())
            self._loop.remove_reader(self.backbone.fileno())
        for handle in (self._sweeper, self._vouch_wait):
            if handle is not None:
                handle.cancel()
        for address in list(self._links):
            self._close_link(address)
        self._loop = None  # set_transceivers opens no socket now: it would take the new process's frames
        self.public.close()
        self.backbone.close()

    def set_transceivers(self, nodes: Iterable[NodeRecord]) -> None:
        """Replace the directory from registry records and open or close the connected backbone socket
        of each transceiver.

        Two records with one (region id, index) (a transceiver that lost its index to another drains before it
        exits, still registered with it): the one not draining gets the index, so new calls, whose routing
        tokens carry it, reach the index's holder; the draining one stays known, so its live flows go on."""
        indexed = [n for n in nodes if n.backbone and n.index]
        directory = {(n.region_id, n.index): parse_hostport(n.backbone)
                     for n in sorted(indexed, key=lambda n: not n.draining)}  # stable: not draining is put last
        live = {parse_hostport(n.backbone) for n in indexed}
        self.core.set_directory(directory, live - set(directory.values()))
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
        self._bind_uplinks(address)

    def _close_link(self, address: tuple[str, int]) -> None:
        sock = self._links.pop(address)
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        self._bind_uplinks(address)

    def uplink_to(self, address: tuple[str, int]) -> Callable[[bytes], object]:
        """The send function towards the transceiver at ``address``: its connected backbone socket's ``send``,
        or ``sendto`` on the unconnected one while it has none."""
        link = self._links.get(address)
        return link.send if link is not None else _sendto(self.backbone, address)

    def _bind_uplinks(self, address: tuple[str, int]) -> None:
        """Point every flow towards the transceiver at ``address`` at its current socket. A transceiver
        that leaves the registry view and comes back (an etcd blip) gets a new connected socket; its live
        flows must not keep the closed one's ``send`` (they use the unconnected backbone socket
        meanwhile)."""
        uplink = self.uplink_to(address)
        for flow in self.core.flows.by_client.values():
            if flow.transceiver == address:
                flow.uplink = uplink

    def on_public(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """A datagram from a client (the per-packet path)."""
        flow = self._open_by_client.get(addr)
        if flow is not None and data:
            flow.packets_in += 1
            flow.bytes_in += len(data)
            try:
                flow.uplink(flow.header + data)
            except ConnectionRefusedError:
                self._resend(flow, flow.header + data)
            except OSError:
                self.drops["tx_error"] += 1
            return
        result = self.core.receive_public(data, addr, time.time())
        if isinstance(result, Uplink):
            flow = result.flow
            if result.learned:
                flow.uplink = self.uplink_to(flow.transceiver)
                log.debug("flow learned client=%s:%d transceiver=%s:%d state=%s",
                          *flow.client[:2], *flow.transceiver, flow.state)
                if self.on_flow is not None:
                    self.on_flow(flow)
            try:
                flow.uplink(result.frame)
            except ConnectionRefusedError:
                self._resend(flow, result.frame)
            except OSError:
                self.drops["tx_error"] += 1
            if result.release:
                try:
                    self.public.sendto(result.release, flow.client)
                except OSError:
                    self.drops["tx_error"] += 1

    def _send(self, uplink: Callable[[bytes], object], data: bytes) -> None:
        try:
            uplink(data)
        except OSError:
            self.drops["tx_error"] += 1

    def _resend(self, flow: Flow, data: bytes) -> None:
        """A connected socket reports an ICMP error caused by an earlier datagram on the next send,
        which it then skips: send once more, so one unreachable moment costs no extra packet."""
        try:
            flow.uplink(data)
        except OSError:
            self.drops["tx_error"] += 1

    def on_backbone(self, data: bytes, src: tuple[Any, ...]) -> None:
        """A backbone frame from a transceiver (the per-packet return path)."""
        try:
            n = frame.header_length(data)
        except frame.MalformedFrame:
            self._downlink(data, src)
            return
        flow = self._open_by_header.get(data[:n])
        payload = data[n:]
        if flow is not None and flow.transceiver == src and payload:
            flow.packets_out += 1
            flow.bytes_out += len(payload)
            if flow.downlink is not None:
                flow.downlink(payload)
                return
            try:
                self.public.sendto(payload, flow.client)
            except OSError:
                self.drops["tx_error"] += 1
            return
        self._downlink(data, src)

    def _downlink(self, data: bytes, src: tuple[Any, ...]) -> None:
        result = self.core.receive_backbone(data, (src[0], src[1]), time.time())
        if isinstance(result, Downlink):
            if result.flow.downlink is not None:
                result.flow.downlink(result.datagram)
                return
            try:
                self.public.sendto(result.datagram, result.flow.client)
            except OSError:
                self.drops["tx_error"] += 1
        elif isinstance(result, Closed):
            log.debug("session closed: %d flows removed", len(result.flows))
        elif isinstance(result, Vouched):
            for flow in result.flows:
                flow.uplink = self.uplink_to(flow.transceiver)
            log.debug("transceiver %s:%d vouched for %d flows", *result.transceiver, len(result.flows))
            if result.last and result.transceiver in self._unanswered:
                self._unanswered.discard(result.transceiver)
                if not self._unanswered:
                    self._read_public()
        elif isinstance(result, Hello):
            self._send(self.uplink_to(result.transceiver), result.frame)
        elif isinstance(result, frame.Batch):
            for one in result.frames:
                self.on_backbone(one, src)

    def _sweep(self) -> None:
        orphaned = self.core.counts["flows_transceiver_gone"]
        self.core.expire(time.time())
        if dropped := self.core.counts["flows_transceiver_gone"] - orphaned:
            log.warning("dropped %d flows of transceivers that left the registry view and fell silent", dropped)
        flows = self.core.flows
        assert self._loop is not None
        self._sweeper = self._loop.call_later(min(flows.idle_timeout_s, flows.pending_timeout_s) / 4, self._sweep)

    def stats(self) -> dict[str, Any]:
        """The core's counters (RelayCore.stats), with the ICE-TCP listener's (TcpRelay.stats) merged into
        ``by_transport.tcp`` when there is one."""
        stats = self.core.stats()
        if self.tcp is not None:
            stats["by_transport"]["tcp"].update(self.tcp.stats())
        return stats


def _sendto(sock: socket.socket, address: tuple[str, int]) -> Callable[[bytes], int]:
    return lambda data: sock.sendto(data, address)
