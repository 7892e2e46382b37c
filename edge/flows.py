"""The edge relay's flow table: client address -> owning transceiver and precomputed backbone header, aged
out by periodic sweeps so the packet path never reads a clock (sans-IO: time is passed in)."""

from collections.abc import Callable
from dataclasses import dataclass, field

from voicemesh.wire.frame import encode_header
from voicemesh.wire.token import RoutingToken


class FlowTableFull(ValueError):
    """The table holds max_flows flows and cannot learn a new client. `reason` is "table_full"."""

    def __init__(self, max_flows: int) -> None:
        super().__init__(f"flow table full: {max_flows} flows")
        self.reason = "table_full"


@dataclass(slots=True, eq=False)
class Flow:
    """One client 5-tuple relayed by this edge: the client's socket address, the owning transceiver's backbone
    address, the frame header for this client (see edge.frame), the token that routed it, when it was
    learned (seconds, the caller's clock), and counters the relay bumps per packet (in: client -> transceiver,
    out: transceiver -> client; payload bytes). Flows compare by identity. ``uplink`` is the adapter's
    send function towards the transceiver (the relay sets it: a connected socket's ``send``)."""

    client: tuple[str, int]
    transceiver: tuple[str, int]
    header: bytes
    token: RoutingToken
    created_at: float
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    uplink: Callable[[bytes], object] | None = field(default=None, repr=False)
    _swept_packets: int = field(default=0, init=False, repr=False)
    _active_at: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._active_at = self.created_at


class FlowTable:
    """The relay's flows, with two public dicts read directly on the packet path:

    - `by_client`: client socket address -> Flow, for client -> transceiver packets;
    - `by_header`: encoded frame header (bytes) -> the same Flow, for transceiver -> client packets:
      `flow = table.by_header.get(data[:n])` with `n = frame.header_length(data)`, then send `data[n:]` to
      `flow.client` (after checking that the frame came from `flow.transceiver`). A header is only here if its
      client first sent a valid STUN request, so the edge never sends to an address that did not contact it.

    Treat both dicts as read-only; change them through learn, remove and expire.

    Aging needs no clock per packet: `expire(now)` compares each flow's packet counters with the last sweep
    and drops flows that have not moved for at least `idle_timeout_s` seconds. Call it about every
    idle_timeout_s / 4; a silent flow then goes between idle_timeout_s and about 1.25 * idle_timeout_s after
    its last packet, never sooner.

    The timeout must exceed ICE consent freshness (RFC 7675: a consent check about every 5 s, consent lost
    after 30 s without a response). A live session, even a silent one, sends consent checks both ways, so it
    never goes 30 s without a packet: the default of 60 s gives it twice that margin, while the flow of a
    client that has gone is dropped 60 to 75 s after its last packet.
    """

    def __init__(self, edge_id: int, idle_timeout_s: float = 60.0, max_flows: int = 100_000) -> None:
        if not 0 <= edge_id <= 0xFFFF:
            raise ValueError(f"edge id must be in 0..65535, got {edge_id}")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        if max_flows <= 0:
            raise ValueError(f"max_flows must be positive, got {max_flows}")
        self.edge_id = edge_id
        self.idle_timeout_s = idle_timeout_s
        self.max_flows = max_flows
        self.by_client: dict[tuple[str, int], Flow] = {}
        self.by_header: dict[bytes, Flow] = {}

    def __len__(self) -> int:
        return len(self.by_client)

    def learn(
        self, client: tuple[str, int], transceiver: tuple[str, int], token: RoutingToken, now: float
    ) -> Flow:
        """Add the flow for `client` (a socket address as the relay's socket reports it), replacing any flow
        it had, with fresh counters. A NAT rebinding shows up as a new client address, so it gets a new flow
        and the old one ages out. Raises FlowTableFull when a new client would exceed max_flows, and
        ValueError (from edge.frame.encode_header) for an address that cannot be framed.
        """
        old = self.by_client.get(client)
        if old is None and len(self.by_client) >= self.max_flows:
            raise FlowTableFull(self.max_flows)
        header = old.header if old is not None else encode_header(client, self.edge_id)
        flow = Flow(client=client, transceiver=transceiver, header=header, token=token, created_at=now)
        self.by_client[client] = flow
        self.by_header[header] = flow
        return flow

    def remove(self, client: tuple[str, int]) -> Flow | None:
        """Remove and return the flow for `client`, or None if there is none."""
        flow = self.by_client.pop(client, None)
        if flow is not None and self.by_header.get(flow.header) is flow:
            del self.by_header[flow.header]
        return flow

    def expire(self, now: float) -> list[Flow]:
        """Sweep: remove and return the flows whose packets_in + packets_out have not changed for at least
        idle_timeout_s seconds before `now` (seconds, same clock as learn), as seen by this and earlier sweeps."""
        idle = []
        for flow in self.by_client.values():
            packets = flow.packets_in + flow.packets_out
            if packets != flow._swept_packets:
                flow._swept_packets = packets
                flow._active_at = now
            elif now - flow._active_at >= self.idle_timeout_s:
                idle.append(flow)
        for flow in idle:
            self.remove(flow.client)
        return idle
