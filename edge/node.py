"""One edge PoP process: the UDP relay (with its ICE-TCP listener, if configured) and the WHIP front,
registered in the registry."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import replace
from typing import Any

from aiohttp import web

from voicemesh.edge.admission import KeyedLimiter, PatchLimiter
from voicemesh.edge.apikeys import ApiKeys
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.cors import Cors
from voicemesh.edge.observe import FlowTracer, observe_relay
from voicemesh.edge.relay import Relay
from voicemesh.edge.relay_tcp import TcpRelay, bind_tcp
from voicemesh.edge.whip import WhipFront
from voicemesh.registry import NodeRecord, Registry, RegistryUnavailable
from voicemesh.runtime import telemetry
from voicemesh.runtime.config import ConfigError
from voicemesh.runtime.http import HttpLimits, serve_app
from voicemesh.runtime.udp import bind_udp
from voicemesh.wire.addr import format_hostport, parse_hostport
from voicemesh.wire.clienttoken import ClientTokenCodec
from voicemesh.wire.hopauth import HopSigner
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.sessionid import SessionIds
from voicemesh.wire.token import TokenCodec

log = logging.getLogger("voicemesh.edge")

DRAIN_POLL_S = 0.1
"""How often a draining edge looks at its flows and at the registry view for a successor (seconds)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or name) is a loopback address; other names count as not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def whip_limits(config: EdgeConfig) -> tuple[KeyedLimiter, KeyedLimiter, PatchLimiter]:
    """The WHIP front's rate limits from ``config`` (edge/admission.py), WhipFront's ``limiter`` (offers per
    source), ``request_limiter`` (PATCH, DELETE, OPTIONS per source) and ``patch_limiter`` (PATCHes and ICE
    restarts per session). Raises ConfigError naming a setting whose
    rate is not above 0 or whose burst or count is below 1."""
    try:
        offers = KeyedLimiter(config.whip_rate_per_s, config.whip_burst)
    except ValueError as exc:
        raise ConfigError(f"whip_rate_per_s, whip_burst: {exc}") from None
    try:
        requests = KeyedLimiter(config.whip_request_rate_per_s, config.whip_request_burst)
    except ValueError as exc:
        raise ConfigError(f"whip_request_rate_per_s, whip_request_burst: {exc}") from None
    try:
        patches = PatchLimiter(config.whip_session_patches_per_min, config.whip_session_restarts_per_min)
    except ValueError as exc:
        raise ConfigError(f"whip_session_patches_per_min, whip_session_restarts_per_min: {exc}") from None
    return offers, requests, patches


class EdgeNode:
    """Starts and stops an edge: allocate an edge id, bind, pick up live flows, serve, register.

    Restart and hitless upgrade: a new process of the same node (same config, ``reuse_port`` on for a
    process that runs beside the old one) binds the same ports and, before it serves or registers, asks the
    transceivers to vouch for the live flows (Relay.start with pick_up). Its record replaces the old
    process's under the same key, with its own edge id; the old process, told to drain, sees that record
    and hands over (see drain).

    ``keys`` is the mesh key set: the relay checks routing tokens with it, the WHIP front issues and checks
    client tokens and signs its requests to transceivers with keys derived from it. Raises ConfigError for
    bad API keys, CORS origins or WHIP rate limits, or for a WHIP front on a non-loopback address with no API
    keys and no ``insecure_open``.
    """

    def __init__(self, config: EdgeConfig, registry: Registry, keys: MeshKeys) -> None:
        try:
            self.api_keys = ApiKeys.from_spec(config.api_keys)
        except ValueError as exc:
            raise ConfigError(f"api_keys: {exc}") from None
        try:
            self.cors = Cors.from_spec(config.cors_origins)
        except ValueError as exc:
            raise ConfigError(f"cors_origins: {exc}") from None
        self.whip_limits = whip_limits(config)
        host = parse_hostport(config.http)[0]
        if not self.api_keys and not config.insecure_open and not is_loopback(host):
            raise ConfigError(f"the WHIP front would serve {config.http} with no authorization: set api_keys "
                              "(VOICEMESH_API_KEYS=\"<id>:<secret>,...\"), bind a loopback address, or start with "
                              "--insecure-open to serve WHIP to anyone")
        self.config = config
        self.registry = registry
        self.keys = keys
        self.tokens = TokenCodec.from_mesh_keys(keys)
        self.relay: Relay | None = None
        self.tcp: TcpRelay | None = None
        self.record: NodeRecord | None = None
        self.url = ""
        self._whip: WhipFront | None = None
        self._runner: web.AppRunner | None = None
        self._metrics: telemetry.Snapshot[dict[str, Any]] | None = None

    async def start(self) -> None:
        """Raises OSError if a socket cannot be bound, RegistryUnavailable if the registry is down."""
        cfg = self.config
        index = await self.registry.allocate_index("edge", cfg.region)
        self.relay = Relay(
            bind_udp(*parse_hostport(cfg.public), reuse_port=cfg.reuse_port),
            bind_udp(*parse_hostport(cfg.backbone), reuse_port=True),
            index,
            self.tokens,
            idle_timeout_s=cfg.idle_timeout_s,
            max_flows=cfg.max_flows,
            max_flows_per_token=cfg.max_flows_per_token,
            open_window_s=cfg.open_window_s,
            pending_timeout_s=cfg.pending_timeout_s,
        )
        relay = self.relay
        if cfg.relay_tcp:
            self.tcp = TcpRelay(relay, bind_tcp(*parse_hostport(cfg.relay_tcp), reuse_port=cfg.reuse_port),
                                max_connections=cfg.tcp_max_connections, max_per_source=cfg.tcp_max_per_source,
                                first_packet_timeout_s=cfg.tcp_first_packet_timeout_s)
        self.registry.subscribe(lambda: relay.set_transceivers(self.registry.nodes("transceiver")))
        relay.set_transceivers(self.registry.nodes("transceiver"))
        relay.start(pick_up=self._predecessor())
        await relay.ready.wait()
        if self.tcp is not None:
            await self.tcp.start()
        flows = FlowTracer(index)
        relay.on_flow = flows.on_flow
        self._metrics = observe_relay(relay, {telemetry.EDGE_ID: str(index), telemetry.REGION: cfg.region})

        def record() -> NodeRecord:
            # Built below as soon as serve_app returns, with no await in between: before any request is read.
            if self.record is None:
                raise RuntimeError("the edge's record is read before start() built it")
            return self.record

        self._whip = WhipFront(self.registry, record, relay.stats, hop=HopSigner(self.keys),
                               client_tokens=ClientTokenCodec(self.keys), on_answer=flows.expect,
                               api_keys=self.api_keys, cors=self.cors, session_ids=SessionIds(self.keys),
                               limiter=self.whip_limits[0], request_limiter=self.whip_limits[1],
                               patch_limiter=self.whip_limits[2],
                               max_pending=cfg.whip_max_pending, region_rtt_ms=cfg.region_rtts())
        limits = HttpLimits(header_timeout_s=cfg.http_header_timeout_s, body_timeout_s=cfg.http_body_timeout_s,
                            idle_timeout_s=cfg.http_idle_timeout_s, max_requests=cfg.http_max_requests,
                            max_connections=cfg.http_max_connections)
        self._runner, self.url = await serve_app(self._whip.app(), *parse_hostport(cfg.http), limits,
                                                 reuse_port=cfg.reuse_port)
        public_relay = cfg.advertise or format_hostport(relay.public_address)
        self.record = NodeRecord(
            role="edge",
            region=cfg.region,
            node_id=cfg.node_id,
            index=index,
            http=self.url,
            backbone=format_hostport(relay.backbone_address),
            public_relay=public_relay,
            public_relay_tcp=self._public_relay_tcp(public_relay),
            backbone_batch=True,
            lat=cfg.lat,
            lon=cfg.lon,
        )
        await self.registry.register(self.record)
        log.info("edge up", extra={"node": cfg.node_id, "edge_id": index, "whip": self.url,
                                   "relay": self.record.public_relay, "relay_tcp": self.record.public_relay_tcp,
                                   "whip_auth": bool(self.api_keys)})
        if not self.api_keys and not is_loopback(parse_hostport(cfg.http)[0]):
            log.warning("the WHIP front is open to anyone (--insecure-open)", extra={"whip": self.url})

    async def drain(self) -> None:
        """Leave gracefully; returns when this process can close.

        - **Hand over**: if a newer process of this node is up (``successor``), it has the live flows (an
          edge registers only after its relay picked them up), so return at once: when this process closes
          its sockets the kernel gives their traffic to the new process.
        - **Drain**: otherwise register as draining (the geo DNS stops answering with this edge within one
          TTL; the WHIP front refuses new offers with 503) and keep relaying until no flow is left (a call's
          end removes its flows with the transceiver's close frames), a successor comes up (then hand over),
          or ``drain_timeout_s`` passes, which cuts the calls still up: set it to the longest call to wait
          for.
        """
        if self.record is None or self.relay is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout_s
        successor = self.successor()
        if successor is None:
            self.record = replace(self.record, draining=True)
            try:
                await self.registry.register(self.record)
            except RegistryUnavailable:
                log.warning("cannot mark this edge draining; its lease will expire the record")
        while successor is None and len(self.relay.flows) and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
            successor = self.successor()
        if successor is not None:
            log.info("edge handed over", extra={"flows": len(self.relay.flows), "edge_id": self.record.index,
                                                "successor_edge_id": successor.index})
        else:
            log.info("edge drained", extra={"flows": len(self.relay.flows)})

    def _public_relay_tcp(self, public_relay: str) -> str:
        """The ICE-TCP address put in answers: ``advertise_tcp``, else the public relay's host with the bound
        TCP port; "" without ICE-TCP."""
        if self.tcp is None:
            return ""
        return self.config.advertise_tcp or format_hostport((parse_hostport(public_relay)[0], self.tcp.address[1]))

    def _predecessor(self) -> bool:
        """Whether a record of this node is in the view (an earlier process, running or crashed within a lease
        TTL): only then can transceivers vouch for flows, since they answer registered edges only. A process
        started after the record expired picks flows up when the transceivers' frames prompt its hellos."""
        cfg = self.config
        return any(n.node_id == cfg.node_id and n.region == cfg.region for n in self.registry.nodes("edge"))

    def successor(self) -> NodeRecord | None:
        """The record of a newer process of this node in the registry view: under this edge's key, with
        another edge id (a live process's id is its own). None if there is none, or before start."""
        if self.record is None:
            return None
        for node in self.registry.nodes("edge"):
            if node.key == self.record.key and node.index != self.record.index:
                return node
        return None

    async def close(self) -> None:
        """Stop taking offers, then close the relay (call ``drain`` first to let calls finish)."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._whip is not None:
            await self._whip.close()
        if self._metrics is not None:
            self._metrics.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.relay is not None:
            self.relay.close()
