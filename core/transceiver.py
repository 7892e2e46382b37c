"""The transceiver: terminates ICE, DTLS and SRTP with aiortc and owns each session.

For every WHIP offer forwarded by an edge it mints the routing token as the
server ICE ufrag, claims the session in the registry, answers with the edge's
public relay address as the only candidate, and once the caller connects bridges
its audio to an agent over gRPC (core/agent_link.py), and the JSON events of its
``oai-events`` data channel, if it opens one (core/realtime.py). All sessions share one backbone UDP
socket (core/mux.py). Media takes the lean path (core/lean.py: SRTP straight between the mux and the agent
link once DTLS is up) or, with ``media_path = "aiortc"``, aiortc's own RTP path (the reference). A session
ends on DELETE, ICE or DTLS failure, consent
expiry, the agent hanging up, or a watchdog (not connected in time, too long).
A connected session's ICE restarts (WHIP PATCH, RFC 9725 4.3.3) with a new token as its server ufrag.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import grpc
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from opentelemetry import metrics, trace

from voicemesh.agent.v1 import agent_pb2
from voicemesh.core import hooks, realtime, vad
from voicemesh.core.agent_link import AgentLink, AgentSession
from voicemesh.core.config import MEDIA_PATHS, TransceiverConfig
from voicemesh.core.lean import EarlyRtp, LeanPath, negotiated
from voicemesh.core.media import RTP_CLOCK_HZ, AgentAudioTrack, OpusDecoder, OpusEncoder
from voicemesh.core.mux import BackboneMux, MuxTransport
from voicemesh.core.offer import (
    OfferRejected,
    add_tcp_candidate,
    check_offer,
    limit_opus_rates,
    restart_answer,
    tcp_candidate,
)
from voicemesh.core.priority import SetupHold
from voicemesh.registry import AlreadyClaimed, Claim, NodeRecord, Registry, RegistryUnavailable
from voicemesh.runtime import telemetry
from voicemesh.runtime.tasks import spawn
from voicemesh.runtime.udp import bind_udp
from voicemesh.wire.addr import format_hostport, parse_hostport
from voicemesh.wire.sessionid import RANDOM_BYTES, SessionIds
from voicemesh.wire.token import TokenCodec

log = logging.getLogger("voicemesh.transceiver")

AGENTS_FROM_REGISTRY = "registry"
"""TransceiverConfig.agent value: find agents in the registry instead of at a fixed address."""

RTCP_TICK_S = 0.5
"""Seconds between two passes over the lean paths for their RTCP reports (each is due every few seconds,
core/lean.py RTCP_INTERVAL_S): one timer for all sessions instead of two per session."""
COLLECT_AFTER_END_S = 5.0
"""Seconds from a session's end to the full garbage collection that frees it, joined by every session that
ends in between: ended sessions are held at most this long, and the collection runs at most once per window.

An ended session's objects (aiortc's peer connection, its ICE, DTLS and SRTP transports, their tasks and
callbacks) are reference cycles, and they lived long enough to reach CPython's oldest generation, which it
collects only when the objects promoted since its last full collection outnumber a quarter of those it kept.
Left to itself, a transceiver under churn frees its ended sessions in bursts minutes apart (the Python objects
of a hundred or more sessions and the C memory behind them); the allocator's heap grows
to hold them and stays that large. Collected within the window, they are freed while the next sessions can
reuse the memory. A full collection scans the objects that are not frozen: the transceiver process freezes
what it holds at start-up (``voicemesh transceiver``), so its cost follows the live sessions."""

CERTIFICATE_ROTATE_S = 24 * 3600.0
"""Seconds a DTLS certificate serves new sessions (core/hooks.py SharedCertificate: one per process instead of
one per session) before a fresh one replaces it; sessions keep the one they started with. aiortc's certificates
are valid for 30 days from their making, so this plus ``max_session_s`` must stay well under that."""

CODECS = {"opus": agent_pb2.CODEC_OPUS, "pcm16": agent_pb2.CODEC_PCM16}
"""Agent link formats by config name: Opus as received, or PCM16 mono."""


def _agent_encoder(config: TransceiverConfig) -> OpusEncoder:
    """The encoder of one PCM16 session's agent audio, as configured. Raises ValueError for a bad setting."""
    return OpusEncoder(config.agent_rate_hz, bitrate=config.opus_bitrate, complexity=config.opus_complexity,
                       application=config.opus_application)


MAX_ICE_RESTARTS = 32
"""ICE restarts one session may make. Each mints a token (which the relay may open flows for); a caller
that changes networks restarts a few times in a call."""


class Downlink(Protocol):
    """Where the agent's Opus packets go towards the caller: aiortc's sender track or the lean path."""

    def push(self, payload: bytes) -> None:
        """Send (or queue) one 20 ms Opus packet."""

    def flush(self) -> int:
        """Drop what is queued (barge-in); returns how many packets."""


@dataclass(frozen=True)
class EdgeHop:
    """Where an offer came from: the edge's numeric id, its public relay address and, if it serves ICE-TCP
    (RFC 6544), its public TCP address."""

    edge_id: int
    relay: tuple[str, int]
    client_ip: str = ""
    relay_tcp: tuple[str, int] | None = None


class Capacity(Exception):
    """No room for another session: ``reason`` is ``full``, ``draining`` or ``registry_unavailable`` (the
    session could not be claimed); ``retry_after_s`` says when to try again (seconds)."""

    retry_after_s = 1

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RestartRefused(Exception):
    """An ICE restart that cannot be made; the session goes on as it was. ``reason``: ``not_connected``
    (ICE has no selected pair yet, or is closing), ``too_many`` (MAX_ICE_RESTARTS made), ``closing``
    (the transceiver is shutting down), ``index_lost`` (another node holds this transceiver's registry index,
    which a new routing token would carry: the caller must start a new session)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Session:
    """One call: its peer connection, registry claim, agent stream and timers.

    ``ufrag`` is the current server ufrag (a routing token), ``remote_ufrag`` and ``remote_pwd`` the
    caller's current ICE credentials; all three change with an ICE restart, which also moves ``edge`` to
    the edge that forwarded it. ``expires_at`` (unix s) is when the first token expires; restarted
    tokens keep it. ``media`` is the (kind, mid) of the offer's first (bundled) m-line.
    """

    id: str
    pc: RTCPeerConnection
    track: AgentAudioTrack
    ufrag: str
    edge: EdgeHop
    created_at: float
    events: realtime.RealtimeEvents
    remote_ufrag: str = ""
    remote_pwd: str = ""
    expires_at: int = 0
    media: tuple[str, str] = ("audio", "0")
    transport: MuxTransport | None = None
    restarts: int = 0
    session_config: str = ""
    claim: Claim | None = None
    agent: AgentSession | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    ended: bool = False
    span: trace.Span = trace.INVALID_SPAN
    trace_id: str = ""
    first_uplink_at: float = 0.0
    first_downlink_at: float = 0.0
    answer: str = ""
    downlink: Downlink | None = None
    lean: LeanPath | None = None
    early: EarlyRtp | None = None
    media_in: Callable[[bytes], None] | None = None
    decoder: OpusDecoder | None = None

    def log_extra(self, **more: object) -> dict:
        """Fields every log line about this session carries."""
        return {"session_id": self.id, "trace_id": self.trace_id, **more}

    @property
    def etag(self) -> str:
        """The strong entity tag of the session's ICE generation (RFC 9725 4.3.1, RFC 9110 8.8.3), quoted:
        it changes with every ICE restart, and only then."""
        return '"' + hashlib.blake2b(self.ufrag.encode(), digest_size=12).hexdigest() + '"'


class Transceiver:
    """Answers offers and runs sessions.

    ``registry`` must be started. ``start()`` binds the backbone socket,
    allocates this node's numeric index in its region (carried in routing
    tokens), connects to the agent and registers the node. ``agent_credentials``
    turns TLS to the agent on (voicemesh.agent.tls.client_credentials).
    """

    def __init__(self, config: TransceiverConfig, registry: Registry, tokens: TokenCodec, *,
                 agent_credentials: grpc.ChannelCredentials | None = None) -> None:
        if config.agent_codec not in CODECS:
            raise ValueError(f"agent codec must be one of {sorted(CODECS)}, got {config.agent_codec!r}")
        if config.agent_rate_hz <= 0:
            # The agent stream opens only once a caller connects: a bad format must fail here, not then.
            raise ValueError(f"agent rate must be a positive number of Hz, got {config.agent_rate_hz}")
        if config.media_path not in MEDIA_PATHS:
            raise ValueError(f"media path must be one of {MEDIA_PATHS}, got {config.media_path!r}")
        if config.agent_codec == "pcm16":
            _agent_encoder(config)  # raises ValueError
        if config.setup_hold_ms < 0:
            raise ValueError(f"setup hold must be 0 ms or more, got {config.setup_hold_ms}")
        self.config = config
        self.registry = registry
        self.tokens = tokens
        self.session_ids = SessionIds(tokens.mesh_keys)
        self.sessions: dict[str, Session] = {}
        self.realtime_counters: Counter[str] = Counter()
        """The counters of all sessions' event channels (core/realtime.py RealtimeEvents)."""
        self._admitting: set[str] = set()
        self.setup_hold = SetupHold(config.setup_hold_ms / 1000)
        """Holds new sessions' set-up back while a session that just connected waits for its first audio
        (core/priority.py)."""
        self.record: NodeRecord | None = None
        self.mux: BackboneMux | None = None
        self.agent_link = AgentLink(self._agent_target if config.agent == AGENTS_FROM_REGISTRY else config.agent,
                                    batch_ms=config.agent_batch_ms, credentials=agent_credentials)
        self._edges: set[tuple[str, int]] = set()
        self._batch_edges: set[tuple[str, int]] = set()
        self.media_counters: Counter[str] = Counter()
        """The lean media path's packets and drops by reason (core/lean.py), over all sessions; in PCM16 mode
        also ``pcm_rx_<bandwidth>``: ended sessions by the audio bandwidth of the caller's last packet
        (core/media.py BANDWIDTHS), which shows whether callers keep to the answer's ``maxplaybackrate``."""
        self.index_lost = False
        """Another node holds this transceiver's registry index (``_on_index_lost``): ICE restarts are refused."""
        self._load_update: asyncio.TimerHandle | None = None
        self._collect: asyncio.TimerHandle | None = None
        self._reporting: set[LeanPath] = set()
        """Lean paths that send their own RTCP (LeanPath.tick), ticked together every RTCP_TICK_S."""
        self._rtcp_tick: asyncio.TimerHandle | None = None
        self._certificate: hooks.SharedCertificate | None = None
        self._certificate_made_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session_states = telemetry.Snapshot(self._count_states)
        meter = telemetry.meter()
        self._setup_duration = meter.create_histogram(
            "voicemesh.session.setup.duration", unit="s",
            description="from the offer reaching the transceiver to DTLS connected")
        self._agent_latency = meter.create_histogram(
            "voicemesh.agent.latency", unit="s",
            description="from a session's first audio to the agent to the agent's first audio back")
        self._network_rtt = meter.create_histogram(
            "voicemesh.session.network_rtt", unit="s",
            description="caller <-> transceiver round-trip time from RTCP (RFC 3550 6.4.1), at session end")
        meter.create_observable_gauge(
            "voicemesh.sessions", unit="{session}", description="live sessions by connection state",
            callbacks=[self._observe_sessions])

    async def start(self, http_url: str) -> None:
        """Bind, register as ``http_url`` (the base URL of the transceiver API)."""
        hooks.check()
        self._session_states.start()
        self.mux = BackboneMux(bind_udp(*parse_hostport(self.config.backbone)), self._edges, self._batch_edges)
        self.mux.start()
        self.registry.subscribe(self._on_view)
        self.registry.subscribe_lease(self._on_new_lease)
        self.registry.subscribe_index_lost(self._on_index_lost)
        self._on_view()
        await self.agent_link.start()
        index = await self.registry.allocate_index("transceiver", self.config.region)
        self.record = NodeRecord(
            role="transceiver",
            region=self.config.region,
            node_id=self.config.node_id,
            index=index,
            region_id=self.config.region_id,
            http=http_url,
            backbone=format_hostport(self.mux.address),
            capacity=self.config.capacity,
            lat=self.config.lat,
            lon=self.config.lon,
        )
        await self.registry.register(self.record)
        log.info("transceiver up", extra={"node": self.config.node_id, "index": index,
                                          "backbone": self.record.backbone})

    async def close(self) -> None:
        """Drain: mark draining (edges send no new offers), give live sessions up to
        ``drain_timeout_s`` to end, end the rest, close the mux and the agent link."""
        if self.record is not None:
            self.record = replace(self.record, draining=True)
            try:
                await self.registry.register(self.record)
            except RegistryUnavailable:
                log.warning("cannot mark this transceiver draining; its lease will expire the record")
        deadline = asyncio.get_running_loop().time() + self.config.drain_timeout_s
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.gather(*(self.end(s, "shutdown") for s in list(self.sessions.values())))
        if self._load_update is not None:
            self._load_update.cancel()
        if self._collect is not None:
            self._collect.cancel()
            self._collect = None
        if self._rtcp_tick is not None:
            self._rtcp_tick.cancel()
            self._rtcp_tick = None
        self._session_states.close()
        self.record = None
        await self.agent_link.close()
        if self.mux is not None:
            self.mux.close()
            self.mux = None

    def _agent_target(self, unreachable: frozenset[str]) -> str | None:
        """The agent to connect to when agents come from the registry: the current one while it is
        registered, not draining and not ``unreachable`` (its stream just failed: its record outlives a
        crash by a lease TTL), else one in our region first, spread over transceivers by rendezvous
        hashing (the highest hash of transceiver id and agent id wins); an unreachable one only if no
        other is left."""
        registered = [n for n in self.registry.nodes("agent") if n.grpc and not n.draining]
        agents = [n for n in registered if n.grpc not in unreachable] or registered
        if any(n.grpc == self.agent_link.target for n in agents):
            return self.agent_link.target
        local = [n for n in agents if n.region == self.config.region] or agents
        if not local:
            return None
        me = self.config.node_id.encode()
        return max(local, key=lambda n: hashlib.blake2b(me + b"/" + n.node_id.encode(), digest_size=8).digest()).grpc

    def _on_view(self) -> None:
        edges, batch_edges = set(), set()
        for node in self.registry.nodes("edge"):
            if node.backbone:
                address = parse_hostport(node.backbone)
                edges.add(address)
                if node.backbone_batch:
                    batch_edges.add(address)
        self._edges.clear()
        self._edges.update(edges)
        self._batch_edges.clear()
        self._batch_edges.update(batch_edges)

    def _count_states(self) -> tuple[tuple[str, int], ...]:
        """Live sessions by connection state, taken on the event loop (telemetry.Snapshot)."""
        return tuple(Counter(s.pc.connectionState for s in self.sessions.values()).items())

    def _observe_sessions(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        attrs = self._attributes()
        return [metrics.Observation(n, {**attrs, "voicemesh.session.state": state})
                for state, n in self._session_states.value]

    def _attributes(self) -> dict[str, str]:
        return {telemetry.NODE_ID: self.config.node_id, telemetry.REGION: self.config.region}

    async def create_session(self, offer_sdp: str, edge: EdgeHop, *, session_config: str = "") -> Session:
        """Answer ``offer_sdp`` for a caller arriving through ``edge``; ``session_config`` is the caller's
        Realtime session configuration (a JSON object as text, or ""), for the agent's SessionStart.

        Returns the Session; its answer is ``session.answer``: aiortc's (``pc.localDescription.sdp``) with,
        in PCM16 mode, the agent's rate as Opus' ``maxplaybackrate`` and ``sprop-maxcapturerate`` (core/offer.py
        limit_opus_rates: the transceiver decodes at that rate, so audio above half of it is lost on the agent,
        and a browser then sends wideband SILK at 16 kHz, cheaper to decode), and, when the edge serves ICE-TCP
        (``edge.relay_tcp``), a passive TCP candidate after the UDP one.
        Raises OfferRejected (a 400 for the caller), Capacity (503): capacity
        is taken before the first await, so concurrent offers never exceed
        it. The agent stream opens only when the connection state becomes
        ``connected`` (ICE and DTLS up), so an offer that never connects costs
        the agent nothing. The session's span (``session``, a child of the
        current span, which the API's middleware continues from the edge's
        ``traceparent``) lasts until the session ends; ICE, DTLS and first
        audio are its events. While a session that just connected waits for its first audio from the agent,
        the offer waits before it builds a peer connection, and a session's DTLS waits until it connects
        (core/priority.py). An offer that leaves the DTLS role to us (``a=setup:actpass``) is answered as
        the DTLS server (``a=setup:passive``): the session is keyed, and its media path in place, before
        the caller's DTLS connects.
        """
        started = time.monotonic()
        session_id = self.session_ids.mint(secrets.token_bytes(RANDOM_BYTES))
        self._admit(session_id)
        try:
            offer, description = check_offer(offer_sdp)
            await self.setup_hold.turn()
        except BaseException:
            self._admitting.discard(session_id)
            raise
        assert self.record is not None and self.mux is not None
        with hooks.new_peer_connections_use(self._dtls_certificate()):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except BaseException as exc:
            self._admitting.discard(session_id)
            await pc.close()
            if isinstance(exc, Exception):  # aiortc raises ValueError, InternalError, ...
                raise OfferRejected("unsupported-offer", f"the offer was not accepted: {exc}") from None
            raise
        for rtp in pc.getTransceivers():
            hooks.receive_without_decoder(rtp.receiver)
        track = AgentAudioTrack()
        pc.addTrack(track)
        issued_at = int(time.time())
        ufrag = self.tokens.mint(
            region=self.config.region_id,
            transceiver=self.record.index,
            nonce=secrets.randbits(32),
            issued_at=issued_at, lifetime_s=int(self.config.max_session_s),
        )
        session = Session(session_id, pc, track, ufrag, edge, time.monotonic(),
                          realtime.RealtimeEvents(self.realtime_counters, time.monotonic),
                          expires_at=issued_at + int(self.config.max_session_s), session_config=session_config)
        session.downlink = track if self.config.media_path == "aiortc" else None
        pc.on("datachannel", lambda channel: self._open_channel(session, channel))
        session.span = telemetry.tracer().start_span("session", attributes={
            telemetry.SESSION_ID: session_id, telemetry.EDGE_ID: edge.edge_id, "client.address": edge.client_ip,
            **self._attributes()})
        session.trace_id = telemetry.trace_id(session.span)
        try:
            conn = hooks.ice_connection(pc)
            hooks.set_local_ufrag(conn, ufrag)
            transport = MuxTransport(self.mux, edge.relay)
            transport.protocol = hooks.attach_protocol(conn, transport, edge.relay)
            if all(m.dtls is not None and m.dtls.role == "auto" for m in description.media):
                hooks.answer_as_dtls_server(pc)
            first = description.media[0]
            remote = first.ice  # BUNDLE: one ICE agent for all m-lines
            if remote is None or not remote.password or not remote.usernameFragment:
                raise OfferRejected("no-ice-credentials", "the offer has no a=ice-pwd")
            session.remote_ufrag, session.remote_pwd = remote.usernameFragment, remote.password
            session.media = (first.kind, str(first.rtp.muxId))
            session.transport = transport
            self.mux.register(ufrag, conn.local_password, remote.password, transport)
            if transport.session is not None:
                # Until it connects, the session's DTLS waits while another session's first audio goes first.
                session.media_in = transport.session.on_media
                transport.session.on_media = partial(self.setup_hold.run, session.media_in)
            if self.config.media_path == "lean" and transport.session is not None:
                session.early = EarlyRtp(self.media_counters)
                transport.session.on_rtp = session.early.receive
            # The claim (a write to this region's etcd) runs while aiortc builds the answer; the answer goes out
            # only once the claim holds, so its revision fences the session before the caller can use it.
            claiming = asyncio.ensure_future(self._claim(session))
            try:
                await pc.setLocalDescription(await pc.createAnswer())
            finally:
                claim_ms = await asyncio.shield(claiming)
            self._admitting.discard(session_id)
            self.sessions[session_id] = session
            session.answer = pc.localDescription.sdp
            if self.config.agent_codec == "pcm16":
                session.answer = limit_opus_rates(session.answer, self.config.agent_rate_hz)
            if edge.relay_tcp is not None:
                session.answer = add_tcp_candidate(session.answer, edge.relay_tcp)
        except BaseException:
            await self.end(session, "setup_failed")
            raise
        self._watch(session)
        self._schedule_load_update()
        log.info("session answered", extra=session.log_extra(
            edge_id=edge.edge_id, client_ip=edge.client_ip, claim_ms=claim_ms,
            answer_ms=round((time.monotonic() - started) * 1000, 1)))
        return session

    def restart_ice(self, session: Session, remote_ufrag: str, remote_pwd: str, edge: EdgeHop) -> str:
        """ICE restart (RFC 8445 9, RFC 9725 4.3.3) of ``session`` to the caller's new ``remote_ufrag`` and
        ``remote_pwd``, through ``edge`` (the edge that forwarded the PATCH, which GeoDNS may have picked
        anew after the caller moved).

        Mints a new routing token for this transceiver (fresh issue time, so the relay's first-packet path
        opens a provisional flow for the caller's new address; the first token's expiry) as the server
        ufrag with a new pwd, switches aioice's credentials (core/hooks.py restart_ice) and the mux's
        routing key (core/mux_core.py rekey), and returns the answer fragment (``ice_answer``). The DTLS
        association, the agent stream and the media path carry on; the media moves to the new path once
        the caller's checks prove it. Runs without awaiting, so restarts of one session never interleave.
        Raises RestartRefused; the session is then unchanged.
        """
        if session.restarts >= MAX_ICE_RESTARTS:
            raise RestartRefused("too_many")
        if self.record is None or self.mux is None or session.transport is None or session.transport.session is None:
            raise RestartRefused("closing")
        if self.index_lost:
            raise RestartRefused("index_lost")
        now = int(time.time())
        ufrag = self.tokens.mint(region=self.config.region_id, transceiver=self.record.index,
                                 nonce=secrets.randbits(32), issued_at=now,
                                 lifetime_s=max(0, session.expires_at - now))
        pwd = secrets.token_hex(16)
        try:
            hooks.restart_ice(hooks.ice_connection(session.pc), ufrag, pwd, remote_ufrag, remote_pwd)
        except ValueError:
            raise RestartRefused("not_connected") from None
        self.mux.rekey(session.transport, ufrag, pwd, remote_pwd)
        session.ufrag, session.remote_ufrag, session.remote_pwd, session.edge = ufrag, remote_ufrag, remote_pwd, edge
        session.restarts += 1
        session.span.add_event("ice restart", {"voicemesh.ice.restarts": session.restarts,
                                               telemetry.EDGE_ID: edge.edge_id, "client.address": edge.client_ip})
        log.info("ice restarted", extra=session.log_extra(edge_id=edge.edge_id, restarts=session.restarts))
        return self.ice_answer(session)

    def ice_answer(self, session: Session) -> str:
        """The session's current ICE answer as a WHIP PATCH answer fragment (core/offer.py restart_answer):
        server ufrag and pwd, and one candidate on ``session.edge``: its ICE-TCP address (passive) when the
        edge serves ICE-TCP and the session's media runs over TCP now (the caller's network drops UDP),
        else its UDP relay address.

        One candidate, not the first answer's two: the reference WHIP client (whip-whep 1.2.0) joins the
        candidates of a restart answer with commas into the remote description, which browsers then refuse.
        Raises RestartRefused("closing") once the session's ICE is closed."""
        conn = hooks.ice_connection(session.pc)
        if self.mux is None or session.transport is None or session.transport.protocol is None:
            raise RestartRefused("closing")
        relay_tcp = session.edge.relay_tcp
        if relay_tcp is not None and self.mux.on_tcp(session.transport):
            candidate = tcp_candidate(relay_tcp)
        else:
            candidate = hooks.local_candidate_sdp(session.transport.protocol, session.edge.relay)
        kind, mid = session.media
        return restart_answer(conn.local_username, conn.local_password, kind, mid, candidate)

    def _dtls_certificate(self) -> hooks.SharedCertificate:
        """The DTLS certificate for a new session: one for every session of the process (its key, fingerprints
        and DTLS context are made once, not per call), replaced for new sessions every CERTIFICATE_ROTATE_S."""
        now = time.monotonic()
        if self._certificate is None or now - self._certificate_made_at >= CERTIFICATE_ROTATE_S:
            self._certificate = hooks.SharedCertificate.generateCertificate()
            self._certificate_made_at = now
        return self._certificate

    async def _claim(self, session: Session) -> float:
        """Claim ``session`` in the registry (its ``claim``, whose revision fences it); the ms it took. A claim
        that lands after the session ended (its setup failed or was cancelled meanwhile) is released at once,
        so none outlives its session. Raises Capacity("registry_unavailable")."""
        assert self.record is not None
        started = time.monotonic()
        with telemetry.tracer().start_as_current_span(
                "registry claim", context=trace.set_span_in_context(session.span),
                attributes={telemetry.SESSION_ID: session.id}) as claim_span:
            try:
                claim = await self.registry.claim_session(session.id, self.record)
            except RegistryUnavailable as exc:
                log.warning("session not claimed: %s", exc, extra=session.log_extra())
                raise Capacity("registry_unavailable") from exc
            claim_span.set_attribute("voicemesh.claim.revision", claim.revision)
        if session.ended:
            try:
                await self.registry.release(claim)
            except Exception:
                log.warning("claim release failed; the lease will expire it", extra=session.log_extra(),
                            exc_info=True)
        else:
            session.claim = claim
        return round((time.monotonic() - started) * 1000, 1)

    def _on_new_lease(self) -> None:
        spawn(self._reclaim(), "reclaim sessions", self._tasks)

    def _on_index_lost(self, _key: str) -> None:
        """Another node holds this transceiver's registry index (the process drains and exits): routing tokens
        minted now would send the callers' checks to that node, so ICE restarts are refused from now on."""
        self.index_lost = True

    async def _reclaim(self) -> None:
        """Claim every live session again after the registry got a new lease (the old claims expired with the
        old one): each gets a new fencing revision. A session someone else claimed meanwhile ends."""
        for session in list(self.sessions.values()):
            if session.ended or self.record is None:
                continue
            try:
                session.claim = await self.registry.claim_session(session.id, self.record)
            except AlreadyClaimed:
                await self.end(session, "claimed_elsewhere")
            except RegistryUnavailable as exc:
                log.warning("session not claimed again: %s", exc, extra=session.log_extra())
        log.info("sessions claimed again", extra={"sessions": len(self.sessions)})

    def _admit(self, session_id: str) -> None:
        """Take one of the ``capacity`` places for the session ``session_id`` before the first await of its
        setup, so concurrent offers cannot all pass the check. The place is the session's once it joins
        ``sessions``; setup failures give it back (``end``, or the offer's rejection).

        Raises Capacity (``draining`` while closing or before ``start``, ``full`` at capacity).
        """
        if self.record is None or self.record.draining:
            raise Capacity("draining")
        if len(self.sessions) + len(self._admitting) >= self.config.capacity:
            raise Capacity("full")
        self._admitting.add(session_id)

    def _open_channel(self, session: Session, channel: RTCDataChannel) -> None:
        """The caller opened a data channel: ``oai-events`` (the first) carries the session's JSON events
        (core/realtime.py); any other is closed and counted."""
        events = session.events
        if not events.channel_opened(channel.label):
            channel.close()
            return

        def send(text: str) -> None:
            if channel.readyState == "open":
                channel.send(text)

        channel.on("message", events.from_caller)
        channel.on("close", events.caller_closed)
        if channel.readyState == "open":
            events.caller_open(send)
        else:
            channel.on("open", lambda: events.caller_open(send))

    def _bridge(self, session: Session) -> None:
        """Open the session's agent stream (when the caller connects), connect the caller's RTP to it and
        the agent's frames to the caller.

        Voice activity on the caller's audio (core/vad.py: the RFC 6464 audio level, else
        webrtcvad on the PCM16 sent to the agent) becomes speech started and stopped events for
        the agent. Speech that starts while the agent is responding interrupts it (barge-in): the
        agent gets EVENT_INTERRUPT and the agent audio still queued for the caller is dropped.
        """
        pcm = self.config.agent_codec == "pcm16"
        rate = self.config.agent_rate_hz if pcm else RTP_CLOCK_HZ
        barge_in = vad.BargeIn()

        def on_event(event: int, _timestamp: int) -> None:
            if event == agent_pb2.EVENT_RESPONSE_STARTED:
                barge_in.response_started()
            else:
                barge_in.response_done()

        metadata = {"region": self.config.region, "node_id": self.config.node_id, "edge_id": str(session.edge.edge_id)}
        if session.edge.client_ip:
            metadata["client_ip"] = session.edge.client_ip
        session.agent = self.agent_link.open_session(
            session.id,
            codec=CODECS[self.config.agent_codec],
            sample_rate_hz=rate,
            on_frame=self._downlink(session, pcm, rate, barge_in),
            on_event=on_event,
            on_end=lambda reason: self._end_later(session, f"agent:{reason}"),
            on_json=session.events.from_agent,
            metadata=metadata,
            traceparent=telemetry.inject(trace.set_span_in_context(session.span)).get("traceparent", ""),
            session_config=session.session_config,
        )
        agent = session.agent
        session.events.agent_open(agent.send_json)
        detector = vad.SpeechDetector(clock_hz=RTP_CLOCK_HZ)
        ratio = rate / RTP_CLOCK_HZ
        first_rtp: list[int] = []

        def hear(voiced: bool, rtp_timestamp: int) -> None:
            if not first_rtp:
                first_rtp.append(rtp_timestamp)
            speech = detector.update(voiced, rtp_timestamp)
            if speech is None:
                return
            timestamp = int(speech.timestamp * ratio)
            audio_ms = ((speech.timestamp - first_rtp[0]) & 0xFFFFFFFF) * 1000 // RTP_CLOCK_HZ
            session.events.speech(speech.started, audio_ms)
            if not speech.started:
                agent.send_event(agent_pb2.EVENT_SPEECH_STOPPED, timestamp)
                return
            agent.send_event(agent_pb2.EVENT_SPEECH_STARTED, timestamp)
            if barge_in.speech_started():
                agent.send_event(agent_pb2.EVENT_INTERRUPT, timestamp)
                if session.downlink is not None:
                    session.downlink.flush()

        if pcm:
            decoder = session.decoder = OpusDecoder(rate)
            voicing = vad.PcmVoicing(rate) if rate in vad.WEBRTCVAD_RATES_HZ else None

            def on_rtp(payload: bytes, timestamp: int, level: tuple[bool, int] | None) -> None:
                if not session.first_uplink_at:
                    self._first_audio(session, uplink=True)
                samples = decoder.decode(payload)
                if level is not None:
                    hear(vad.level_voiced(level), timestamp)
                elif voicing is not None:
                    hear(voicing(samples), timestamp)
                agent.send(samples, int(timestamp * ratio))
        else:
            def on_rtp(payload: bytes, timestamp: int, level: tuple[bool, int] | None) -> None:
                if not session.first_uplink_at:
                    self._first_audio(session, uplink=True)
                if level is not None:
                    hear(vad.level_voiced(level), timestamp)
                agent.send(payload, timestamp)

        audio = next(t for t in session.pc.getTransceivers() if t.kind == "audio")
        if self.config.media_path == "aiortc":
            hooks.tap_receiver(audio.receiver, lambda packet: on_rtp(packet.payload, packet.timestamp,
                                                                     packet.extensions.audio_level))
        else:
            self._take_media(session, audio, on_rtp)
        # aiortc starts the sender and receiver (without its decoder thread) right after it reports "connected".
        asyncio.get_running_loop().call_soon(self._started, session, audio)

    def _take_media(self, session: Session, audio: Any,
                    on_rtp: Callable[[bytes, int, tuple[bool, int] | None], None]) -> None:
        """The lean path takes the session's SRTP over as DTLS reports "connected" (the keys exist from then
        on), in the same step: the caller's first packets, held since the session registered with the mux
        (EarlyRtp), are read at once, and what the agent answers goes out without waiting for another turn
        of the event loop, which a burst of other sessions' handshakes can make tens of ms long. aiortc's
        sender and receiver start later in the same task; the lean path needs neither (its receiver
        statistics and sender report fields exist from their construction)."""
        mux_session = session.transport.session if session.transport is not None else None
        if self.mux is None or mux_session is None:
            return
        rx, tx = hooks.srtp_sessions(audio.receiver.transport)
        path = LeanPath(
            negotiated(session.answer), rx, tx,
            hooks.receiver_streams(audio.receiver), hooks.new_stream, on_rtp,
            partial(self.mux.send_media, mux_session), partial(hooks.set_sender_report, audio.sender),
            self.media_counters, sequence_number=secrets.randbits(16), timestamp_origin=secrets.randbits(32),
            last_sr=hooks.last_sender_reports(audio.receiver),
            on_report=partial(hooks.set_last_sender_report, audio.sender))
        session.lean = session.downlink = path
        if session.early is not None:
            session.early.replay(path)
            session.early = None
        mux_session.on_rtp = path.receive

    def _started(self, session: Session, audio: Any) -> None:
        """Once aiortc has started the session's sender and receiver, on the lean path: take the RTCP reports
        over from aiortc's per-session tasks before they run (LeanPath.tick, on the tick all sessions share)."""
        if session.ended:
            return
        path = session.lean
        if path is None or not hooks.stop_rtcp(audio.sender, audio.receiver):
            return
        path.cname = hooks.rtcp_cname(audio.sender)
        self._reporting.add(path)
        if self._rtcp_tick is None:
            self._rtcp_tick = asyncio.get_running_loop().call_later(RTCP_TICK_S, self._rtcp_reports)

    def _downlink(self, session: Session, pcm: bool, rate: int,
                  barge_in: vad.BargeIn) -> Callable[[bytes, int], None]:
        """The agent's frames to the caller (session.downlink), except while a barge-in mutes the agent.
        On the lean path, frames that come before it is in place are dropped (``downlink_not_ready``):
        aiortc's sender must never send on the session's SSRC."""
        counters = self.media_counters

        def push(payload: bytes) -> None:
            downlink = session.downlink
            if downlink is None:
                counters["downlink_not_ready"] += 1
            else:
                downlink.push(payload)

        if not pcm:
            def on_opus(payload: bytes, _timestamp: int) -> None:
                if not session.first_downlink_at:
                    self._first_audio(session, uplink=False)
                if not barge_in.muted:
                    push(payload)

            return on_opus
        encoder = _agent_encoder(self.config)

        def on_frame(payload: bytes, _timestamp: int) -> None:
            if not session.first_downlink_at:
                self._first_audio(session, uplink=False)
            if not barge_in.muted:
                for packet in encoder.encode(payload):
                    push(packet)

        return on_frame

    def _first_audio(self, session: Session, *, uplink: bool) -> None:
        """Mark the session's first audio to the agent (``uplink``) or back from it: a span event each,
        and the agent's latency (first audio up to first audio back) as a histogram."""
        now = time.monotonic()
        if uplink:
            session.first_uplink_at = now
            session.span.add_event("first audio to agent")
            return
        session.first_downlink_at = now
        self.setup_hold.release(session)
        session.span.add_event("first audio from agent")
        if session.first_uplink_at:
            self._agent_latency.record(now - session.first_uplink_at, self._attributes())

    def _watch(self, session: Session) -> None:
        loop = asyncio.get_running_loop()

        @session.pc.on("iceconnectionstatechange")
        def on_ice_state() -> None:
            if session.pc.iceConnectionState == "completed":
                session.span.add_event("ice connected")

        @session.pc.on("connectionstatechange")
        def on_state() -> None:
            state = session.pc.connectionState
            log.info("connection %s", state, extra=session.log_extra())
            if state == "connected":
                if session.media_in is not None and session.transport is not None and session.transport.session:
                    session.transport.session.on_media = session.media_in
                session.span.add_event("dtls connected")
                self._setup_duration.record(time.monotonic() - session.created_at, self._attributes())
                if session.agent is None and not session.ended:
                    self.setup_hold.hold(session)
                    self._bridge(session)
            if state in ("failed", "closed"):
                self._end_later(session, f"connection_{state}")

        def connect_deadline() -> None:
            if session.pc.connectionState != "connected":
                self._end_later(session, "connect_timeout")

        session.timers.append(loop.call_later(self.config.connect_timeout_s, connect_deadline))
        session.timers.append(loop.call_later(
            self.config.max_session_s, self._end_later, session, "max_duration"))

    def _end_later(self, session: Session, reason: str) -> None:
        """End ``session`` in a task of its own (from a callback that cannot await)."""
        spawn(self.end(session, reason), f"end session {session.id}", self._tasks)

    async def end(self, session: Session, reason: str) -> None:
        """End ``session`` once: close the peer connection, the agent stream and the claim."""
        if session.ended:
            return
        session.ended = True
        self.setup_hold.release(session)
        self._admitting.discard(session.id)
        self.sessions.pop(session.id, None)
        for timer in session.timers:
            timer.cancel()
        if session.agent is not None:
            session.agent.close(reason)
        if session.lean is not None:
            session.lean.close()
            self._reporting.discard(session.lean)
        if session.decoder is not None and session.decoder.bandwidth:
            self.media_counters["pcm_rx_" + session.decoder.bandwidth] += 1
        session.track.stop()
        await self._record_rtt(session)
        await session.pc.close()
        if session.claim is not None:
            try:
                await self.registry.release(session.claim)
            except Exception:
                log.warning("claim release failed; the lease will expire it",
                            extra=session.log_extra(), exc_info=True)
        self._schedule_load_update()
        if self._collect is None:
            self._collect = asyncio.get_running_loop().call_later(COLLECT_AFTER_END_S, self._collect_garbage)
        session.span.set_attribute("voicemesh.session.end_reason", reason)
        session.span.end()
        log.info("session ended", extra=session.log_extra(
            reason=reason, duration_s=round(time.monotonic() - session.created_at, 3)))

    async def _record_rtt(self, session: Session) -> None:
        if session.pc.connectionState != "connected":
            return
        for stats in (await session.pc.getStats()).values():
            if stats.type == "remote-inbound-rtp" and stats.roundTripTime is not None:
                self._network_rtt.record(stats.roundTripTime, self._attributes())

    def _rtcp_reports(self) -> None:
        """The lean paths' shared RTCP tick: each sends its report if due (LeanPath.tick)."""
        now = time.monotonic()
        for path in self._reporting:
            path.tick(now)
        self._rtcp_tick = (asyncio.get_running_loop().call_later(RTCP_TICK_S, self._rtcp_reports)
                           if self._reporting else None)

    def _collect_garbage(self) -> None:
        """Free the sessions that ended in the last COLLECT_AFTER_END_S (a full collection; see there)."""
        self._collect = None
        gc.collect()

    def _schedule_load_update(self) -> None:
        if self._load_update is None and self.record is not None:
            self._load_update = asyncio.get_running_loop().call_later(0.2, self._update_load)

    def _update_load(self) -> None:
        self._load_update = None
        if self.record is not None and self.record.load != len(self.sessions):
            self.record = replace(self.record, load=len(self.sessions))
            spawn(self.registry.register(self.record), "register load", self._tasks)
