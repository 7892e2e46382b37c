"""The edge relay's decisions, sans-IO: datagrams and time in, what to send and where (or a drop and its
reason) out. edge/relay.py owns the sockets and feeds this core; aioquic's connection and h11 are the models.

Rules (README "The relay's rules"):

- A client's first datagram must be a STUN Binding request (RFC 8489) whose USERNAME starts with a routing
  token (voicemesh.wire.token) that verifies, names a transceiver in the directory, and is not revoked.
  It opens a flow for the client's address; everything else from an unknown address is dropped.
- A flow is unproven until the client proves it can be reached at its address: the relay notes the
  transaction ids of the STUN Binding requests that the transceiver sends to the client (aioice's triggered
  and consent checks) and opens the flow when the client returns a Binding success or error response with
  one of them (RFC 8445 section 7.2.5, RFC 7675). The relay cannot check MESSAGE-INTEGRITY (it has no pwd),
  but the 96-bit random transaction id, sent only to the client's address, proves return reachability; the
  transceiver checks the integrity of the same response.
- Towards an unproven flow the relay sends only the transceiver's Binding requests, and never more bytes
  than it received from the address (every byte counts, forwarded or dropped): no amplification, no media.
  The transceiver's Binding responses are held (the latest one) and sent when the flow is proven. aioice
  answers a check and then sends its triggered check, together more bytes than the check; sending the
  check first lets the caller prove the flow at once, and the held response then completes the caller's
  own check in the same round trip, so the first call waits for nothing.
- Upstream, a **provisional** flow (its token minted less than ``open_window_s`` seconds ago) forwards
  everything, so the caller's first DTLS and media are not lost; a **pending** flow (opened after the
  window: a NAT rebinding, an edge restart) forwards only STUN (RFC 7983: first byte 0-3). A provisional
  flow still unproven when the window ends becomes pending.
- A token holds at most ``max_flows_per_token`` flows; at the cap, its oldest unproven flow is evicted
  (edge/flows.py), never a proven one. Unproven flows expire after ``pending_timeout_s``.
- A frame with an empty payload from a flow's own transceiver closes the session (voicemesh.wire.frame):
  every flow of its token goes at once and the token is revoked until it expires. Empty datagrams from
  clients are dropped.
- Frames are accepted only from the transceiver that owns the flow their header names.
- **Vouching** (after an edge restart or upgrade, voicemesh.wire.frame control frames): the relay sends each
  transceiver a hello with its nonce (at start, and at most every ``HELLO_INTERVAL_S`` when a registered
  transceiver sends a frame for a client it has no flow for). The transceiver's mux answers with a vouch for
  every route that it has proven through this backbone address: the route's frame header and its session's
  server ufrag. Each vouched route opens an OPEN flow only if the vouch comes from a transceiver in the
  directory, carries this relay's nonce within ``VOUCH_WINDOW_S`` of a hello to that transceiver, and its
  ufrag is a routing token that verifies, is not revoked and names that same transceiver; the per-token cap
  and the table's size hold as for learned flows. A vouch for a client with a flow already opens nothing
  (an unproven flow with the same header and token is proven). Trusting a vouch is trusting a registered
  transceiver's word that the address proved return reachability (core/mux_core.py vouches only for
  proven routes of its live sessions); nothing a client sends can be a control frame.
- A transceiver that left the directory *for good* loses its flows: a flow whose transceiver is out of the
  directory and has sent it nothing for ``transceiver_gone_s`` goes at the next sweep. Either condition
  alone is not enough. The registry keeps a node in the view through an etcd outage (registry/base.py
  holds its record), and a transceiver that is only cut off from etcd, or leaves the view and comes back,
  still sends every live flow RTCP, consent checks and media; only a dead one falls silent. Its tokens are
  not revoked: the directory no longer names it, so they open no flow.

- **ICE-TCP** (RFC 6544, edge/relay_tcp.py): the packets of a client's TCP connection (RFC 4571 framing,
  split by edge/relay_tcp_core.py) follow every rule above (``receive_tcp``), in a flow of their own keyed
  by tcp_key(client) whose frame header carries the TCP bit, with drops counted in ``tcp_drops``. A vouch
  for a TCP route is refused (``vouch_tcp``): the connection died with the earlier process. When the
  connection closes, its flow goes (``disconnect``).

Times are unix seconds (``time.time()``): tokens carry the transceiver's wall clock.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from voicemesh.edge.flows import MAX_CHECKS, TCP, UDP, Flow, FlowState, FlowTable, FlowTableFull, tcp_key
from voicemesh.wire import frame, stun
from voicemesh.wire.token import BadToken, RoutingToken, TokenCodec

HELLO_INTERVAL_S = 0.25
"""Least time between two hellos to one transceiver prompted by its frames for clients without a flow."""
VOUCH_WINDOW_S = 5.0
"""Seconds after a hello to a transceiver during which its vouches are accepted."""


@dataclass(frozen=True, slots=True)
class Uplink:
    """Send ``frame`` (the flow's header, then the client's datagram) to ``flow.transceiver`` on the
    backbone; then, if ``release`` is not empty, send it to ``flow.client`` (the transceiver's response that
    was held while the flow was unproven: this datagram proved it). ``learned`` is True for the datagram
    that opened the flow."""

    flow: Flow
    frame: bytes
    learned: bool = False
    release: bytes = b""


@dataclass(frozen=True, slots=True)
class Downlink:
    """Send ``datagram`` to ``flow.client`` on the public socket."""

    flow: Flow
    datagram: bytes


@dataclass(frozen=True, slots=True)
class Held:
    """The transceiver's response to an unproven flow is kept (``Flow.held``) until the flow is proven.
    Nothing to send now."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class Closed:
    """The transceiver ended the session: ``flows`` were removed and their token revoked. Nothing to send."""

    flows: tuple[Flow, ...]


@dataclass(frozen=True, slots=True)
class Hello:
    """The frame had no flow (counted as drop ``no_flow``); send ``frame`` (a hello) to ``transceiver`` so
    that it vouches for the flows this relay is missing."""

    transceiver: tuple[str, int]
    frame: bytes


@dataclass(frozen=True, slots=True)
class Vouched:
    """``transceiver`` vouched: ``flows`` were opened (or proven) for its routes. ``last`` is True for the
    last frame of its answer to a hello. Nothing to send."""

    transceiver: tuple[str, int]
    flows: tuple[Flow, ...]
    last: bool


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing; ``reason`` is the drop counter's label (also counted in ``RelayCore.drops``)."""

    reason: str


_COUNTS = ("packets_in", "bytes_in", "packets_out", "bytes_out")


class RelayCore:
    """The relay's state: flows, the transceiver directory, revoked tokens, counters.

    ``directory`` maps (region id, transceiver index) -> backbone address (set it with set_directory).
    Settings (seconds, flows): ``open_window_s`` after a token's issue time during which its flows are
    provisional, ``pending_timeout_s`` for an unproven flow to prove itself, ``idle_timeout_s`` and
    ``max_flows`` of the flow table, ``max_flows_per_token``, ``transceiver_gone_s`` for a flow whose
    transceiver left the directory to go silent before it is removed. Raises ValueError for a bad setting.

    ``drops`` counts dropped datagrams by reason. First packets: the MalformedStun and BadToken reasons
    (``not_stun``, ``truncated``, ``mac``, ``expired``, ...), ``empty``, ``revoked``,
    ``unknown_transceiver``, ``table_full``, ``token_cap``. Flows: ``pending_not_stun`` (a pending flow's
    client sent media), ``unproven_downlink`` (the transceiver sent an unproven flow something other than
    a Binding request or response, or a held response was replaced by a newer one), ``amplification`` (a
    check over the unproven flow's byte budget). Backbone: ``frame_<reason>``
    (malformed), ``no_flow``, ``frame_wrong_transceiver`` (a registered transceiver, not the flow's),
    ``frame_unknown_transceiver``; control frames: ``frame_control_<reason>`` (malformed),
    ``vouch_unknown_transceiver`` (any control frame, BATCH too, from an unregistered source),
    ``vouch_unsolicited`` (wrong nonce, or no hello to that transceiver within
    VOUCH_WINDOW_S). Refused vouched routes, one each: ``vouch_<BadToken reason>``, ``vouch_revoked``,
    ``vouch_wrong_transceiver`` (the token names another transceiver), ``vouch_conflict`` (the client has a
    flow of another token or header), ``vouch_table_full``, ``vouch_token_cap``. The adapter adds
    ``tx_error``. ``counts`` holds the flows removed by kind (see stats).

    ``nonce`` (NONCE_LENGTH random bytes, by default from ``secrets``) goes in this relay's hellos.
    ``ipv6_clients``: the public socket is IPv6, so client addresses are (host, port, flowinfo, scope id)
    with IPv4 clients as IPv4-mapped; vouched flows are keyed the same way.
    """

    def __init__(
        self,
        edge_id: int,
        tokens: TokenCodec,
        *,
        idle_timeout_s: float = 60.0,
        max_flows: int = 100_000,
        max_flows_per_token: int = 4,
        open_window_s: float = 30.0,
        pending_timeout_s: float = 10.0,
        nonce: bytes | None = None,
        ipv6_clients: bool = False,
        transceiver_gone_s: float = 6.0,
    ) -> None:
        if open_window_s < 0:
            raise ValueError(f"open_window_s must not be negative, got {open_window_s}")
        if transceiver_gone_s <= 0:
            raise ValueError(f"transceiver_gone_s must be positive, got {transceiver_gone_s}")
        self.flows = FlowTable(edge_id, idle_timeout_s, max_flows, max_flows_per_token=max_flows_per_token,
                               pending_timeout_s=pending_timeout_s)
        self.tokens = tokens
        self.open_window_s = open_window_s
        self.transceiver_gone_s = transceiver_gone_s
        self.directory: dict[tuple[int, int], tuple[str, int]] = {}
        self._transceivers: set[tuple[str, int]] = set()
        self._revoked: dict[RoutingToken, int] = {}  # token -> expires_at, in the order revoked
        self.drops: Counter[str] = Counter()
        self.tcp_drops: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._retired: dict[str, Counter[str]] = {UDP: Counter(), TCP: Counter()}
        self.nonce = secrets.token_bytes(frame.NONCE_LENGTH) if nonce is None else nonce
        self._client_key: Callable[[tuple[str, int]], tuple[str, int]] = _ipv6_key if ipv6_clients else _ipv4_key
        self._asked: dict[tuple[str, int], float] = {}  # transceiver -> when the last hello went to it
        if len(self.nonce) != frame.NONCE_LENGTH:
            raise ValueError(f"nonce must be {frame.NONCE_LENGTH} bytes, got {len(self.nonce)}")

    def set_directory(self, directory: dict[tuple[int, int], tuple[str, int]],
                      others: Iterable[tuple[str, int]] = ()) -> None:
        """Replace the directory (region id, transceiver index) -> backbone address. Existing flows keep
        their transceiver. ``others``: backbone addresses of transceivers that are up but that the directory
        does not name (one draining on an index another transceiver holds): their frames are taken and their
        flows kept like those of the directory's transceivers, but no new flow goes to them."""
        self.directory = dict(directory)
        self._transceivers = set(self.directory.values()) | set(others)
        self._asked = {t: at for t, at in self._asked.items() if t in self._transceivers}

    def hello(self, transceiver: tuple[str, int], now: float) -> bytes:
        """The hello frame to send to ``transceiver`` (a backbone address in the directory) at ``now``: its
        vouches are accepted for VOUCH_WINDOW_S from now."""
        self._asked[transceiver] = now
        self.counts["hellos_sent"] += 1
        return frame.encode_hello(self.flows.edge_id, self.nonce)

    def receive_public(self, data: bytes, client: tuple[str, int], now: float) -> Uplink | Drop:
        """Decide what to do with a datagram from ``client`` (a socket address) at ``now`` (unix s)."""
        if not data:
            return self._drop("empty")
        flow = self.flows.by_client.get(client)
        if flow is None:
            return self._first_packet(data, client, now, UDP, self.drops)
        return self._uplink(flow, data, now, learned=False)

    def receive_tcp(self, packet: bytes, client: tuple[str, int], now: float) -> Uplink | Drop:
        """Decide what to do with one RFC 4571 packet (not empty: the framing refuses length 0) from a TCP
        connection of ``client`` (its peer address) at ``now`` (unix s): the rules of UDP datagrams, with
        the flow keyed by tcp_key(client), its header flagged TCP, and drops counted in ``tcp_drops``.
        A Drop while the connection has no flow means its packet opened none: close the connection."""
        flow = self.flows.by_client.get(tcp_key(client))
        if flow is None:
            return self._first_packet(packet, client, now, TCP, self.tcp_drops)
        return self._uplink(flow, packet, now, learned=False)

    def _first_packet(self, data: bytes, client: tuple[str, int], now: float, transport: str,
                      drops: Counter[str]) -> Uplink | Drop:
        try:
            server_ufrag, _ = stun.split_username(stun.binding_request_username(data))
            token = self.tokens.verify(server_ufrag, now)
        except (stun.MalformedStun, BadToken) as exc:
            return _drop(drops, exc.reason)
        if token in self._revoked:
            return _drop(drops, "revoked")
        transceiver = self.directory.get((token.region, token.transceiver))
        if transceiver is None:
            return _drop(drops, "unknown_transceiver")
        try:
            flow, evicted = self.flows.learn(client, transceiver, token, server_ufrag, now,
                                             open_until=token.issued_at + self.open_window_s, transport=transport)
        except FlowTableFull as exc:
            return _drop(drops, exc.reason)
        if evicted is not None:
            self.counts["flows_evicted"] += 1
            self._retire(evicted)
        return self._uplink(flow, data, now, learned=True)

    def _uplink(self, flow: Flow, data: bytes, now: float, *, learned: bool) -> Uplink | Drop:
        release = b""
        if flow.state is not FlowState.OPEN:
            if flow.state is FlowState.PROVISIONAL and now >= flow.open_until:
                flow.state = FlowState.PENDING
            flow.unproven_in += len(data)
            self.counts["unproven_bytes_in"] += len(data)
            if flow.state is FlowState.PENDING and data[0] > 3:
                return _drop(self.drops if flow.transport == UDP else self.tcp_drops, "pending_not_stun")
            if flow.checks and data[0] == 1 and self._answers_check(flow, data):
                release, flow.held = flow.held, b""
                self.flows.prove(flow)
        flow.packets_in += 1
        flow.bytes_in += len(data)
        return Uplink(flow, flow.header + data, learned, release)

    def _answers_check(self, flow: Flow, data: bytes) -> bool:
        try:
            message_type, txid = stun.transaction(data)
        except stun.MalformedStun:
            return False
        return (message_type == stun.BINDING_SUCCESS or message_type == stun.BINDING_ERROR) and txid in flow.checks

    def receive_backbone(self, data: bytes, transceiver: tuple[str, int],
                         now: float) -> Downlink | Held | Closed | Vouched | Hello | frame.Batch | Drop:
        """Decide what to do with a backbone frame from ``transceiver`` (its socket address) at ``now``. A BATCH
        from a registered transceiver comes back as its frames (frame.Batch), each to be taken as if it had come
        alone (from the same ``transceiver``)."""
        try:
            n = frame.header_length(data)
        except frame.MalformedFrame as exc:
            if frame.is_control(data):
                return self._control(data, transceiver, now)
            return self._drop("frame_" + exc.reason)
        flow = self.flows.by_header.get(data[:n])
        if flow is None or flow.transceiver != transceiver:
            if transceiver not in self._transceivers:
                return self._drop("frame_unknown_transceiver")
            if flow is not None:
                return self._drop("frame_wrong_transceiver")
            self.drops["no_flow"] += 1
            asked = self._asked.get(transceiver)
            if asked is None or now - asked >= HELLO_INTERVAL_S:
                return Hello(transceiver, self.hello(transceiver, now))
            return Drop("no_flow")
        if len(data) == n:
            return self._close(flow)
        if flow.state is not FlowState.OPEN:
            return self._to_unproven(flow, data[n:], now)
        flow.packets_out += 1
        flow.bytes_out += len(data) - n
        return Downlink(flow, data[n:])

    def _to_unproven(self, flow: Flow, datagram: bytes, now: float) -> Downlink | Held | Drop:
        if flow.state is FlowState.PROVISIONAL and now >= flow.open_until:
            flow.state = FlowState.PENDING
        try:
            message_type, txid = stun.transaction(datagram)
        except stun.MalformedStun:
            return self._drop("unproven_downlink")
        flow.answered = True
        if message_type == stun.BINDING_SUCCESS or message_type == stun.BINDING_ERROR:
            if flow.held:
                self.drops["unproven_downlink"] += 1
            flow.held = datagram
            return Held(flow)
        if message_type != stun.BINDING_REQUEST:
            return self._drop("unproven_downlink")
        if flow.unproven_out + len(datagram) > flow.unproven_in:
            return self._drop("amplification")
        flow.unproven_out += len(datagram)
        self.counts["unproven_bytes_out"] += len(datagram)
        if txid not in flow.checks:
            flow.checks.append(txid)
            del flow.checks[:-MAX_CHECKS]
        flow.packets_out += 1
        flow.bytes_out += len(datagram)
        return Downlink(flow, datagram)

    def _control(self, data: bytes, transceiver: tuple[str, int], now: float) -> Vouched | frame.Batch | Drop:
        if transceiver not in self._transceivers:
            return self._drop("vouch_unknown_transceiver")
        try:
            message = frame.decode_control(data)
        except frame.MalformedFrame as exc:
            return self._drop("frame_" + exc.reason)
        if isinstance(message, frame.Batch):
            return message
        if not isinstance(message, frame.Vouch):
            return self._drop("frame_control_type")  # a hello is for transceivers
        asked = self._asked.get(transceiver)
        if message.nonce != self.nonce or asked is None or now - asked > VOUCH_WINDOW_S:
            return self._drop("vouch_unsolicited")
        flows = []
        for header, ufrag in message.routes:
            flow = self._vouch(header, ufrag, transceiver, now)
            if flow is not None:
                flows.append(flow)
        return Vouched(transceiver, tuple(flows), message.last)

    def _vouch(self, header: bytes, ufrag: bytes, transceiver: tuple[str, int], now: float) -> Flow | None:
        """Open (or prove) the flow of one vouched route; None if refused (counted) or already open."""
        known = self.flows.open_by_header.get(header)
        if known is not None and known.transceiver == transceiver and known.ufrag == ufrag:
            self.counts["vouches_known"] += 1  # the common answer to a hello: nothing to check or change
            return None
        if frame.is_tcp(header):
            return self._refuse("vouch_tcp")  # its connection died with the earlier process
        try:
            token = self.tokens.verify(ufrag, now)
        except BadToken as exc:
            return self._refuse("vouch_" + exc.reason)
        if token in self._revoked:
            return self._refuse("vouch_revoked")
        if self.directory.get((token.region, token.transceiver)) != transceiver:
            return self._refuse("vouch_wrong_transceiver")
        client = self._client_key(frame.decode(header)[0])
        flow = self.flows.by_client.get(client)
        if flow is not None:
            if flow.token != token or flow.header != header:
                return self._refuse("vouch_conflict")
            if flow.state is FlowState.OPEN:
                self.counts["vouches_known"] += 1
                return None
            flow.held = b""
            self.flows.prove(flow)
        else:
            try:
                flow, evicted = self.flows.vouch(client, header, transceiver, token, ufrag, now,
                                                 open_until=token.issued_at + self.open_window_s)
            except FlowTableFull as exc:
                return self._refuse("vouch_" + exc.reason)
            if evicted is not None:
                self.counts["flows_evicted"] += 1
                self._retire(evicted)
        self.counts["flows_vouched"] += 1
        return flow

    def _refuse(self, reason: str) -> Flow | None:
        """Count a refused vouched route; None, as _vouch returns for it."""
        self.drops[reason] += 1
        return None

    def _close(self, flow: Flow) -> Closed:
        token = flow.token
        flows = self.flows.remove_token(token)
        for gone in flows:
            self._retire(gone)
        self.counts["flows_closed"] += len(flows)
        self._revoked[token] = token.expires_at
        while len(self._revoked) > self.flows.max_flows:
            del self._revoked[next(iter(self._revoked))]
        return Closed(tuple(flows))

    def expire(self, now: float) -> list[Flow]:
        """Sweep (about every min(idle_timeout_s, pending_timeout_s) / 4 seconds): remove and return the
        flows that aged out (edge/flows.py) and the flows of transceivers that left the directory for good
        (out of it, and silent on the flow for ``transceiver_gone_s``), and forget revoked tokens that have
        expired."""
        gone = self.flows.expire(now)
        self.counts["flows_expired"] += len(gone)
        orphans = [flow for flow in self.flows.by_client.values()
                   if flow.transceiver not in self._transceivers and now - flow.heard_at >= self.transceiver_gone_s]
        for flow in orphans:
            self.flows.remove(flow)
        self.counts["flows_transceiver_gone"] += len(orphans)
        gone += orphans
        for flow in gone:
            self._retire(flow)
        for token, expires_at in list(self._revoked.items()):
            if now >= expires_at:
                del self._revoked[token]
        return gone

    def disconnect(self, flow: Flow) -> None:
        """The TCP connection of ``flow`` closed: remove the flow (counted in ``flows_disconnected``); nothing
        if it is gone already. The session's consent (RFC 7675) lapses unless the client connects again."""
        if self.flows.remove(flow):
            self.counts["flows_disconnected"] += 1
            self._retire(flow)

    def is_revoked(self, token: RoutingToken) -> bool:
        """Whether a session's end revoked ``token`` (until it expires)."""
        return token in self._revoked

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)

    def _retire(self, flow: Flow) -> None:
        retired = self._retired[flow.transport]
        for key in _COUNTS:
            retired[key] += getattr(flow, key)

    def stats(self) -> dict[str, Any]:
        """Counters: ``flows`` (now), ``flows_open`` (proven) and ``flows_unproven``; ``packets_in``/
        ``bytes_in`` (client to transceiver) and ``packets_out``/``bytes_out`` (back to clients), forwarded
        payload bytes since start; ``unproven_bytes_in``/``unproven_bytes_out``: bytes received from and sent
        to addresses whose flow was unproven (out <= in per flow); ``flows_evicted``, ``flows_closed``,
        ``flows_expired``, ``flows_disconnected`` (TCP flows whose connection closed); ``flows_vouched``
        (opened or proven by a transceiver's vouch), ``vouches_known`` (vouched routes that had an open flow
        already), ``hellos_sent``; ``tokens_revoked`` (now); ``edge_id``
        (this process's); ``drops`` by reason (UDP datagrams and backbone frames). ``by_transport``: for ``udp``
        and ``tcp`` (RFC 6544 clients), ``flows``, ``flows_open``, the four packet and byte counts and
        ``drops`` by reason (``udp``'s are ``drops``; ``tcp``'s count the packets of TCP connections: a
        refused first packet, ``pending_not_stun``). The top-level counts are their sums."""
        by_transport: dict[str, dict[str, Any]] = {
            transport: {"flows": 0, "flows_open": 0, **{key: retired[key] for key in _COUNTS}}
            for transport, retired in self._retired.items()}
        for flow in self.flows.by_client.values():
            entry = by_transport[flow.transport]
            entry["flows"] += 1
            entry["flows_open"] += flow.state is FlowState.OPEN
            for key in _COUNTS:
                entry[key] += getattr(flow, key)
        by_transport[UDP]["drops"] = dict(self.drops)
        by_transport[TCP]["drops"] = dict(self.tcp_drops)
        return {
            "flows": len(self.flows),
            "flows_open": len(self.flows.open_by_client),
            "flows_unproven": len(self.flows) - len(self.flows.open_by_client),
            **{key: by_transport[UDP][key] + by_transport[TCP][key] for key in _COUNTS},
            **{key: self.counts[key] for key in ("unproven_bytes_in", "unproven_bytes_out", "flows_evicted",
                                                 "flows_closed", "flows_expired", "flows_vouched", "flows_transceiver_gone",
                                                 "flows_disconnected", "vouches_known", "hellos_sent")},
            "edge_id": self.flows.edge_id,
            "tokens_revoked": len(self._revoked),
            "drops": dict(self.drops),
            "by_transport": by_transport,
        }


def _drop(drops: Counter[str], reason: str) -> Drop:
    drops[reason] += 1
    return Drop(reason)


def _ipv4_key(client: tuple[str, int]) -> tuple[str, int]:
    return client


def _ipv6_key(client: tuple[str, int]) -> tuple[str, int]:
    host = client[0] if ":" in client[0] else "::ffff:" + client[0]
    return (host, client[1], 0, 0)  # type: ignore[return-value]
