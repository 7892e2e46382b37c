"""The edge relay's flow table: client address -> owning transceiver, precomputed backbone header and the
flow's proof state, with per-token caps and aging by sweeps, so the packet path never reads a clock
(sans-IO: time is passed in). The rules that move flows between states live in edge/relay_core.py."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voicemesh.wire.frame import encode_header
from voicemesh.wire.token import RoutingToken

MAX_CHECKS = 8
"""Transaction ids of the transceiver's Binding requests remembered per unproven flow (the newest ones):
aioice's triggered check and a few consent checks, each retransmitted under the same id."""


class FlowTableFull(ValueError):
    """No room for a new flow. `reason` is "table_full" (max_flows flows) or "token_cap" (the token holds
    max_flows_per_token flows and every one of them is proven)."""

    def __init__(self, reason: str, limit: int) -> None:
        super().__init__(f"no room for a new flow: {reason} ({limit})")
        self.reason = reason


class FlowState(enum.StrEnum):
    """Where a flow stands on the way to proving that its client address answers (RFC 7675 consent):

    - ``provisional``: opened while the token was within its open window; unproven; forwards everything
      upstream, until proven or the window ends (then pending);
    - ``pending``: unproven after the window: forwards only STUN upstream;
    - ``open``: the client answered one of the transceiver's checks; forwards everything (the fast path).

    Towards an unproven client (provisional or pending) only the transceiver's checks go, within the bytes
    received from it (edge/relay_core.py).
    """

    PROVISIONAL = "provisional"
    PENDING = "pending"
    OPEN = "open"


UDP = "udp"
TCP = "tcp"
"""Flow transports (``Flow.transport``), as OpenTelemetry's ``network.transport`` names them."""


def tcp_key(client: tuple[Any, ...]) -> tuple[Any, ...]:
    """The flow table key of a client over TCP: ``(host, port, "tcp")``, never equal to a UDP socket address
    (whose third item, if any, is an int), so a TCP and a UDP flow from the same address never collide."""
    return (client[0], client[1], TCP)


def _no_uplink(data: bytes) -> None:
    raise OSError("no uplink for this flow yet")


@dataclass(slots=True, eq=False)
class Flow:
    """One client 5-tuple relayed by this edge.

    ``client`` is the client's socket address, ``transceiver`` the owning transceiver's backbone address,
    ``header`` the frame header for this client (voicemesh.wire.frame), ``token`` the routing token that
    opened it (from the server ufrag ``ufrag``), ``created_at`` when (unix seconds, the caller's clock), and
    ``open_until`` the end of the token's open window (unix seconds).

    Counters the relay bumps per forwarded packet (payload bytes): ``packets_in``/``bytes_in`` client ->
    transceiver, ``packets_out``/``bytes_out`` transceiver -> client. While unproven, ``unproven_in`` and
    ``unproven_out`` count every byte received from and sent to the client (the amplification budget);
    ``checks`` holds the transaction ids of the transceiver's Binding requests sent to it, ``held`` the
    transceiver's latest Binding response to it (sent once proven), and ``answered`` says whether the
    transceiver has sent it anything (it answers only checks whose MESSAGE-INTEGRITY holds).
    ``uplink`` is the adapter's send function towards the transceiver (a connected socket's ``send``).
    ``transport`` is UDP or TCP (RFC 6544: the client reached the edge over TCP, RFC 4571 framing); ``key`` is
    the flow's key in the table (``client`` for UDP, tcp_key(client) for TCP); ``downlink`` is the
    adapter's send function towards a TCP client (None for UDP: the public socket sends to ``client``).
    ``heard_at`` is when the transceiver last sent this flow anything, as seen by the table's sweeps (unix
    seconds; ``created_at`` until it does). Flows compare by identity.
    """

    client: tuple[str, int]
    transceiver: tuple[str, int]
    header: bytes
    token: RoutingToken
    ufrag: bytes
    created_at: float
    open_until: float
    state: FlowState
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    unproven_in: int = 0
    unproven_out: int = 0
    answered: bool = False
    checks: list[bytes] = field(default_factory=list, repr=False)
    held: bytes = field(default=b"", repr=False)
    uplink: Callable[[bytes], object] = field(default=_no_uplink, repr=False)
    transport: str = UDP
    key: tuple[Any, ...] = field(default=(), repr=False)
    downlink: Callable[[bytes], object] | None = field(default=None, repr=False)
    heard_at: float = field(init=False, repr=False)
    _swept_packets: int = field(default=0, init=False, repr=False)
    _swept_out: int = field(default=0, init=False, repr=False)
    _active_at: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._active_at = self.heard_at = self.created_at
        if not self.key:
            self.key = self.client if self.transport == UDP else tcp_key(self.client)


class FlowTable:
    """The relay's flows, by client address, by frame header and by token.

    - ``by_client``: client socket address (UDP) or tcp_key(client) (TCP) -> Flow, every flow (``Flow.key``);
    - ``by_header``: encoded frame header (bytes) -> the same Flow, for frames coming back;
    - ``open_by_client`` and ``open_by_header``: the same for open (proven) flows only. The adapter reads
      these on its fast path: an open flow forwards every non-empty datagram, so a hit needs no decision.

    Treat the dicts as read-only; change them through learn, vouch, prove, remove, remove_token and expire.
    A header is only here if its client first sent a Binding request with a valid token, or if the
    transceiver its token names vouched that the client proved the route (after an edge restart), so the
    edge never sends to an address that did not contact it or this edge's earlier process.

    Limits: at most ``max_flows`` flows (FlowTableFull "table_full") and ``max_flows_per_token`` per token.
    A token at its cap makes room by evicting one of its unproven flows: the oldest that the transceiver
    has not answered, else the oldest. A proven flow is never evicted, so spoofed copies of a caller's token
    cannot push out the caller's flow, and the newest attempt (maybe the caller's NAT rebinding) gets in.
    Only when all of a token's flows are proven is a new one refused (FlowTableFull "token_cap").

    Aging needs no clock per packet. ``expire(now)`` removes unproven flows ``pending_timeout_s`` seconds
    after they were learned, and flows whose packets_in + packets_out have not moved for at least
    ``idle_timeout_s`` seconds, as seen by this and earlier sweeps. Call it about every
    min(idle_timeout_s, pending_timeout_s) / 4 seconds: a silent flow then goes between idle_timeout_s and
    about 1.25 * idle_timeout_s after its last packet, never sooner.

    The idle timeout must exceed ICE consent freshness (RFC 7675: a consent check about every 5 s, consent
    lost after 30 s without a response). A live session, even a silent one, sends consent checks both ways,
    so it never goes 30 s without a packet: the default of 60 s gives it twice that margin.
    """

    def __init__(
        self,
        edge_id: int,
        idle_timeout_s: float = 60.0,
        max_flows: int = 100_000,
        *,
        max_flows_per_token: int = 4,
        pending_timeout_s: float = 10.0,
    ) -> None:
        if not 0 <= edge_id <= 0xFFFF:
            raise ValueError(f"edge id must be in 0..65535, got {edge_id}")
        for name, value in (("idle_timeout_s", idle_timeout_s), ("max_flows", max_flows),
                            ("max_flows_per_token", max_flows_per_token), ("pending_timeout_s", pending_timeout_s)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.edge_id = edge_id
        self.idle_timeout_s = idle_timeout_s
        self.max_flows = max_flows
        self.max_flows_per_token = max_flows_per_token
        self.pending_timeout_s = pending_timeout_s
        self.by_client: dict[tuple[Any, ...], Flow] = {}
        self.by_header: dict[bytes, Flow] = {}
        self.open_by_client: dict[tuple[Any, ...], Flow] = {}
        self.open_by_header: dict[bytes, Flow] = {}
        self._unproven: dict[tuple[Any, ...], Flow] = {}  # in the order learned
        self._by_token: dict[RoutingToken, list[Flow]] = {}

    def __len__(self) -> int:
        return len(self.by_client)

    def of_token(self, token: RoutingToken) -> list[Flow]:
        """The flows a token opened, oldest first (a copy)."""
        return list(self._by_token.get(token, ()))

    def learn(
        self,
        client: tuple[str, int],
        transceiver: tuple[str, int],
        token: RoutingToken,
        ufrag: bytes,
        now: float,
        *,
        open_until: float,
        transport: str = UDP,
    ) -> tuple[Flow, Flow | None]:
        """Add an unproven flow for `client` (a socket address as the relay's socket reports it, with no flow
        yet on `transport`): provisional if `now` < `open_until` (unix seconds), else pending. A TCP flow's
        frame header carries the transport bit (voicemesh.wire.frame.TCP).

        Returns (the new flow, the flow evicted to make room for it or None). Raises FlowTableFull when the
        token holds max_flows_per_token proven flows ("token_cap") or the table is full ("table_full"),
        ValueError if `client` already has a flow or cannot be framed (voicemesh.wire.frame.encode_header).
        """
        key = client if transport == UDP else tcp_key(client)
        if key in self.by_client:
            raise ValueError(f"{client} already has a flow")
        header = encode_header(client, self.edge_id, tcp=transport == TCP)
        evicted = self._make_room(token)
        state = FlowState.PROVISIONAL if now < open_until else FlowState.PENDING
        flow = Flow(client=client, transceiver=transceiver, header=header, token=token, ufrag=ufrag,
                    created_at=now, open_until=open_until, state=state, transport=transport, key=key)
        self._add(flow)
        self._unproven[key] = flow
        return flow, evicted

    def vouch(
        self,
        client: tuple[str, int],
        header: bytes,
        transceiver: tuple[str, int],
        token: RoutingToken,
        ufrag: bytes,
        now: float,
        *,
        open_until: float,
    ) -> tuple[Flow, Flow | None]:
        """Add an open flow for `client` (no flow yet) under `header`, the frame header its transceiver knows
        the route by: the transceiver vouched that this route is proven (edge/relay_core.py). The header may
        carry another edge id than this table's (an earlier process of this edge learned the route).

        Returns (the new flow, the flow evicted to make room for it or None). Raises FlowTableFull as learn,
        ValueError if `client` or `header` already has a flow.
        """
        if client in self.by_client or header in self.by_header:
            raise ValueError(f"{client} already has a flow")
        evicted = self._make_room(token)
        flow = Flow(client=client, transceiver=transceiver, header=header, token=token, ufrag=ufrag,
                    created_at=now, open_until=open_until, state=FlowState.OPEN)
        self._add(flow)
        self.open_by_client[client] = flow
        self.open_by_header[header] = flow
        return flow, evicted

    def _make_room(self, token: RoutingToken) -> Flow | None:
        """Evict one of `token`'s unproven flows if it is at its cap; raise FlowTableFull if there is no room."""
        siblings = self._by_token.get(token, [])
        if len(siblings) >= self.max_flows_per_token:
            unproven = [f for f in siblings if f.state is not FlowState.OPEN]
            if not unproven:
                raise FlowTableFull("token_cap", self.max_flows_per_token)
            evicted = min(unproven, key=lambda f: (f.answered, f.created_at))
            self.remove(evicted)
            return evicted
        if len(self.by_client) >= self.max_flows:
            raise FlowTableFull("table_full", self.max_flows)
        return None

    def _add(self, flow: Flow) -> None:
        self.by_client[flow.key] = flow
        self.by_header[flow.header] = flow
        self._by_token.setdefault(flow.token, []).append(flow)

    def prove(self, flow: Flow) -> None:
        """Open `flow` for good: its client answered one of the transceiver's checks."""
        flow.state = FlowState.OPEN
        flow.checks.clear()
        self._unproven.pop(flow.key, None)
        self.open_by_client[flow.key] = flow
        self.open_by_header[flow.header] = flow

    def remove(self, flow: Flow) -> bool:
        """Remove `flow`; False if it was not in the table."""
        if self.by_client.get(flow.key) is not flow:
            return False
        del self.by_client[flow.key]
        del self.by_header[flow.header]
        self.open_by_client.pop(flow.key, None)
        self.open_by_header.pop(flow.header, None)
        self._unproven.pop(flow.key, None)
        siblings = self._by_token[flow.token]
        siblings.remove(flow)
        if not siblings:
            del self._by_token[flow.token]
        return True

    def remove_token(self, token: RoutingToken) -> list[Flow]:
        """Remove and return every flow `token` opened."""
        flows = self.of_token(token)
        for flow in flows:
            self.remove(flow)
        return flows

    def expire(self, now: float) -> list[Flow]:
        """Sweep: remove and return the flows learned at least pending_timeout_s before `now` (seconds, the
        clock of learn) that are still unproven, and the flows idle for at least idle_timeout_s (see above).
        Provisional flows whose window has ended become pending; ``heard_at`` moves to `now` for flows whose
        transceiver sent something since the last sweep."""
        gone = []
        for flow in self._unproven.values():  # oldest first
            if now - flow.created_at < self.pending_timeout_s:
                break
            gone.append(flow)
        for flow in self._unproven.values():
            if flow.state is FlowState.PROVISIONAL and now >= flow.open_until:
                flow.state = FlowState.PENDING
        for flow in self.by_client.values():
            if flow.packets_out != flow._swept_out:
                flow._swept_out = flow.packets_out
                flow.heard_at = now
            packets = flow.packets_in + flow.packets_out
            if packets != flow._swept_packets:
                flow._swept_packets = packets
                flow._active_at = now
            elif now - flow._active_at >= self.idle_timeout_s and flow.state is FlowState.OPEN:
                gone.append(flow)
        for flow in gone:
            self.remove(flow)
        return gone
