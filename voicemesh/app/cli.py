"""The ``voicemesh`` command: the quick-start demo, a test call, and each part as its own process."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import uvloop

from voicemesh import __version__
from voicemesh.runtime import config, logs, telemetry

if TYPE_CHECKING:
    from voicemesh.registry import Registry

log = logging.getLogger("voicemesh")

EDGE_HELP = {
    "node_id": "this edge's name in the registry",
    "region": "the region (PoP) this edge serves",
    "public": "UDP address the relay binds for clients (host:port)",
    "advertise": "relay address put in answers, if not the bound one (host:port)",
    "relay_tcp": "TCP address the relay binds for ICE-TCP clients whose UDP is blocked (host:port, 443 in "
                 "deployment; RFC 6544 passive candidate, RFC 4571 framing); empty: no ICE-TCP",
    "advertise_tcp": "ICE-TCP address put in answers, if not the advertised host with the bound port (host:port)",
    "tcp_max_connections": "ICE-TCP connections the relay holds at most",
    "tcp_max_per_source": "ICE-TCP connections one source (IPv4 address or IPv6 /64) may hold",
    "tcp_first_packet_timeout_s": "seconds an ICE-TCP connection has to send a STUN Binding request with a "
                                  "valid routing token before it is closed",
    "backbone": "UDP address facing transceivers (host:port; a fixed port lets a restarted or upgraded edge "
                "pick its calls up)",
    "http": "WHIP front address (host:port)",
    "idle_timeout_s": "seconds before an idle flow is forgotten (above ICE consent's 30 s)",
    "max_flows": "flows the relay keeps at most",
    "max_flows_per_token": "flows one routing token may hold (addresses of one session); at the cap the "
                           "oldest unproven one is evicted, never one whose client answered a check",
    "open_window_s": "seconds after a token is minted during which its new flows forward media at once; "
                     "later (NAT rebinding, edge restart) only STUN, within a byte budget, until the client "
                     "answers one of the transceiver's checks",
    "pending_timeout_s": "seconds an unproven flow has to answer a check before it is dropped",
    "reuse_port": "share the relay and WHIP ports with other edge processes (SO_REUSEPORT), such as a new "
                  "release taking over (hitless upgrade)",
    "lat": "latitude of this PoP (degrees)",
    "lon": "longitude of this PoP (degrees)",
    "drain_timeout_s": "on SIGTERM, seconds to keep relaying live calls while draining",
    "api_keys": "API keys as id:secret,... (secrets: use the env or file): app backends exchange one for client "
                "tokens at POST /v1/client_secrets, or use it as the WHIP bearer; empty: WHIP open (loopback only)",
    "insecure_open": "serve WHIP without authorization on a non-loopback address (no API keys)",
    "cors_origins": "origins of web pages that may call WHIP from the browser, as https://app.example.com,... "
                    "(* for any; none by default)",
    "whip_rate_per_s": "WHIP offers per second one source (IPv4 address or IPv6 /64) may POST on average; "
                       "over it: 429 with Retry-After",
    "whip_burst": "WHIP offers one source may POST at once before the rate applies",
    "whip_max_pending": "WHIP offers forwarded to transceivers at once; over it: 503 with Retry-After",
    "whip_request_rate_per_s": "WHIP PATCH, DELETE and OPTIONS requests per second one source (IPv4 address or "
                               "IPv6 /64) may send on average; over it: 429 with Retry-After",
    "whip_request_burst": "WHIP PATCH, DELETE and OPTIONS requests one source may send at once before the rate "
                          "applies",
    "whip_session_patches_per_min": "PATCHes (trickle ICE) one WHIP session may send through this edge per minute, "
                                    "all at once at most; over it: 429 with Retry-After",
    "whip_session_restarts_per_min": "ICE restarts (PATCH with If-Match: *) one WHIP session may ask this edge for "
                                     "per minute, all at once at most; over it: 429 with Retry-After",
    "http_header_timeout_s": "seconds a client has to send a request's head (from connecting or its first byte)",
    "http_body_timeout_s": "seconds a client has to send a request's body after its head",
    "http_idle_timeout_s": "seconds an idle keep-alive connection stays open",
    "http_max_requests": "requests on one connection before the edge closes it",
    "http_max_connections": "open HTTP connections at most; over it a new one gets 503 and is closed",
    "region_rtt_ms": "core regions in failover order: region=ms,... the backbone round trip from this PoP "
                     "(the topology's rtt_ms); regions not named come after, nearest first",
}
TRANSCEIVER_HELP = {
    "node_id": "this transceiver's name in the registry",
    "region": "the core region this transceiver belongs to",
    "region_id": "numeric id of the region carried in routing tokens (1-255)",
    "backbone": "UDP address of the mux socket that edges send to (host:port)",
    "capacity": "sessions this transceiver takes at most",
    "agent": "agent gRPC endpoint (host:port); 'registry' to use the agents registered in the registry "
             "(own region first); empty runs a built-in agent in-process (--agent-kind)",
    "agent_kind": "the built-in agent run in-process when --agent is empty: echo, turn or realtime (see "
                  "voicemesh agent --kind)",
    "agent_codec": "audio format on the agent link: opus (as received) or pcm16",
    "agent_rate_hz": "PCM16 sample rate for the agent (8000, 12000, 16000, 24000, 48000)",
    "agent_batch_ms": "least ms between two messages to the agent: a caller's frame waits at most this long, and "
                      "the link sends at most 1000/ms messages a second whatever the number of calls",
    "media_path": "lean: SRTP straight between the backbone socket and the agent link once DTLS is up; "
                  "aiortc: aiortc's own RTP path (the reference, for comparison)",
    "opus_application": "libopus encoder application for the agent's PCM16 audio: voip (SILK, the default: "
                        "speech in the least bitrate), lowdelay (CELT: a sixth of the CPU at twice the bitrate "
                        "for the same quality; README 'Media path'), or audio",
    "opus_bitrate": "libopus encoder bitrate for the agent's PCM16 audio (bit/s, 6000-510000, variable)",
    "opus_complexity": "libopus encoder complexity (0-10) for the agent's PCM16 audio",
    "setup_hold_ms": "longest a session that just connected holds other sessions' set-up back while it waits "
                     "for its first audio from the agent (ms; 0: never hold). An agent that does not speak "
                     "first holds for the whole of it",
    "connect_timeout_s": "seconds a session may take to connect before it is closed",
    "max_session_s": "longest session in seconds (also the routing token's lifetime)",
    "lat": "latitude of this core region (degrees), for edges choosing the nearest region",
    "lon": "longitude of this core region (degrees)",
    "drain_timeout_s": "on SIGTERM, seconds live sessions get to end before they are closed",
    "agent_ca": "PEM CA of the agents' server certificates: turns TLS on the agent link on",
    "agent_cert": "PEM client certificate presented to agents that require one (mutual TLS)",
    "agent_key": "PEM key of --agent-cert",
}
DNS_HELP = {
    "zone": "the zone this server is authoritative for",
    "mesh_name": "the name answered with the nearest healthy edge (in the zone)",
    "bind": "UDP and TCP address to answer on (host:port; [::]:port for IPv4 and IPv6); a deploy binds the "
            "host's own address, never 0.0.0.0, which would take the port from a local stub resolver",
    "geoip_db": "GeoIP2/GeoLite2 City .mmdb file; empty sends every client to the default edge",
    "default_edge": "node id of the edge for clients with no location",
    "ttl_s": "TTL of every answer and of negative answers (seconds)",
    "ns": "name servers as name[=address],... (addresses of in-zone names are served)",
    "reuse_port": "share the port with other DNS workers (SO_REUSEPORT)",
    "cache_entries": "most rendered answers kept (least recently used evicted; 0 disables the cache)",
    "cache_bytes": "most bytes the answer cache may hold, with per-entry overhead",
    "rrl_answers_per_s": "response rate limit per client prefix: answers with records per second (0: no limit)",
    "rrl_nodata_per_s": "response rate limit per client prefix: NOERROR without records per second (0: no limit)",
    "rrl_nxdomains_per_s": "response rate limit per client prefix: NXDOMAIN per second (0: no limit)",
    "rrl_errors_per_s": "response rate limit per client prefix: REFUSED, FORMERR, SERVFAIL, NOTIMP per second "
                        "(0: no limit)",
    "rrl_window_s": "seconds a prefix over its limit keeps paying its debt (RRL window)",
    "rrl_slip": "send every Nth response over the limit as a truncated TC=1 answer and drop the rest "
                "(0: drop all; 1: truncate all)",
    "rrl_ipv4_prefix": "IPv4 prefix length that names one client for rate limiting",
    "rrl_ipv6_prefix": "IPv6 prefix length that names one client for rate limiting",
    "rrl_max_entries": "most rate-limit buckets kept (least recently used evicted)",
    "tcp": "answer over TCP as well as UDP (RFC 7766)",
    "tcp_idle_timeout_s": "close a TCP connection with no whole query, or an unread response, for this long (s)",
    "tcp_max_connections": "most TCP connections open at once; more are closed as accepted",
    "tcp_max_per_source": "most TCP connections open from one address; more are closed as accepted",
    "tcp_max_query_bytes": "a longer query over TCP closes its connection (bytes)",
    "acme_challenge_zone": "answer _acme-challenge.<mesh name> and _acme-challenge.<zone> with a CNAME into this "
                           "zone, where an ACME client writes the DNS-01 TXT records (empty: no CNAME)",
}


def _registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="memory://, etcd://host:port[,host:port], or one etcd cluster per core "
                                           "region: etcd://region=host:port[,...][;region=...] (env VOICEMESH_REGISTRY)")
    parser.add_argument("--registry-home", help="with a per-region --registry: the core region whose cluster this "
                                                "node registers in (default: the first one named; env "
                                                "VOICEMESH_REGISTRY_HOME)")
    parser.add_argument("--registry-ca", help="PEM CA of the etcd servers' certificates: turns TLS to etcd on "
                                              "(env VOICEMESH_REGISTRY_CA)")
    parser.add_argument("--registry-cert", help="PEM client certificate for etcd; its CN is this node's etcd user "
                                                "(env VOICEMESH_REGISTRY_CERT)")
    parser.add_argument("--registry-key", help="PEM key of --registry-cert (env VOICEMESH_REGISTRY_KEY)")
    parser.add_argument("--registry-server-name", help="name to check etcd's certificates against instead of the "
                                                       "endpoint address (env VOICEMESH_REGISTRY_SERVER_NAME)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with [edge], [transceiver], [agent] and [dns] tables")
    _registry_flags(parser)
    parser.add_argument("--log-level", help="debug, info, warning, error (env VOICEMESH_LOG_LEVEL)")
    parser.add_argument("--log-format", help="json or text (env VOICEMESH_LOG_FORMAT)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``voicemesh``."""
    from voicemesh.core.config import TransceiverConfig
    from voicemesh.edge.config import DnsConfig, EdgeConfig

    top = argparse.ArgumentParser(
        prog="voicemesh",
        description="voicemesh: a global relay mesh for real-time voice AI over plain WebRTC.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a whole mesh in this process and place one real call through it")
    demo.add_argument("--wav", help="speech to send (default: the bundled speech.wav)")
    demo.add_argument("--out", help="write the audio that came back to this WAV file")
    demo.add_argument("--agent-codec", default="opus", choices=["opus", "pcm16"], help="agent link format")
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    call = sub.add_parser("call", help="call a WHIP URL with an aiortc client and measure the echo")
    call.add_argument("url", help="WHIP endpoint, e.g. http://edge:8080/v1/sessions")
    call.add_argument("--wav", required=True, help="speech to send")
    call.add_argument("--out", help="write the audio that came back to this WAV file")
    call.add_argument("--bind", help="gather ICE candidates only on this local address")
    call.add_argument("--duration", type=float, help="call length in seconds (default: the WAV plus 1 s)")
    call.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    call.add_argument("--redial", action="store_true",
                      help="when the far end falls silent or ICE fails mid-call, hang up and POST a new offer to the "
                           "same URL (same bearer: an API key or open WHIP, not a one-session client token)")
    call.add_argument("--redial-silence-s", type=float,
                      help="with --redial: seconds without a packet from the far end that count as lost "
                           "(default 1.5, voicemesh.app.client.SILENCE_S)")
    call.add_argument("--token", help="WHIP bearer: a client token or an API key (env VOICEMESH_CALL_TOKEN, which "
                                      "keeps it off the process list)")

    edge = sub.add_parser("edge", help="run an edge: UDP relay and WHIP front")
    _common(edge)
    config.add_flags(edge, EdgeConfig, EDGE_HELP)

    trx = sub.add_parser("transceiver", help="run a transceiver: aiortc sessions, backbone mux, agent bridge")
    _common(trx)
    trx.add_argument("--http", help="transceiver API address (host:port) (env VOICEMESH_HTTP)")
    trx.add_argument("--workers", type=int,
                     help="worker processes under one supervisor, each pinned to its own core when there are "
                          "enough, with its own registry index, backbone socket (--backbone port + i; port 0: "
                          "each a free one) and API (--http port + i), named <node-id>-w<i>; --capacity is per "
                          "worker. The supervisor restarts a worker that dies, gives up (stops all, exits non-zero) "
                          "on one that exits before it is ready 3 times in a row, and forwards SIGTERM so every "
                          "worker drains (default 1; env VOICEMESH_WORKERS)")
    config.add_flags(trx, TransceiverConfig, TRANSCEIVER_HELP)

    agent = sub.add_parser("agent", help="run a built-in agent as a gRPC server")
    _common(agent)
    agent.add_argument("--bind", help="gRPC address (host:port) (default 127.0.0.1:50051; env VOICEMESH_BIND)")
    agent.add_argument("--advertise", help="address transceivers use, if not --bind (host:port); with --registry "
                                           "the agent registers itself so transceivers with --agent registry find it")
    agent.add_argument("--node-id", help="this agent's name in the registry (default agent-1; env VOICEMESH_NODE_ID)")
    agent.add_argument("--region", help="the region this agent serves (default local; env VOICEMESH_REGION)")
    agent.add_argument("--kind", help="echo (plays every frame back), turn (says back each utterance when the "
                                      "caller stops, until interrupted) or realtime (answers OpenAI Realtime events: "
                                      "speaks for each response.create) (default echo; env VOICEMESH_KIND)")
    agent.add_argument("--tls-cert", help="PEM server certificate: serve TLS (env VOICEMESH_TLS_CERT)")
    agent.add_argument("--tls-key", help="PEM key of --tls-cert (env VOICEMESH_TLS_KEY)")
    agent.add_argument("--tls-client-ca", help="PEM CA: require a client certificate it signed, mutual TLS "
                                               "(env VOICEMESH_TLS_CLIENT_CA)")

    dns = sub.add_parser("dns", help="run the geo DNS server: the nearest healthy edge for each client")
    _common(dns)
    dns.add_argument("--topology", help="infra/topology.json to take the zone and mesh name defaults from"
                                        " (env VOICEMESH_TOPOLOGY)")
    config.add_flags(dns, DnsConfig, DNS_HELP)

    registry = sub.add_parser("registry", help="set up etcd's TLS users and roles, or make certificates for a "
                                                "local run")
    reg = registry.add_subparsers(dest="registry_command", required=True)
    init = reg.add_parser("init", help="create the root user, a role and user per node, then enable etcd auth "
                                       "(idempotent; run with root's certificate)")
    add_node = reg.add_parser("add-node", help="create (or fix) one node's role and user")
    remove_node = reg.add_parser("remove-node", help="delete a retired node's user and role: its certificate "
                                                     "then reads and writes nothing (idempotent)")
    certs = reg.add_parser("certs", help="make a local CA (or reuse DIR's) and certificates for etcd and each node")
    for command in (init, add_node, remove_node):
        command.add_argument("--config", help="TOML file (its top-level registry keys are read)")
        _registry_flags(command)
    for command in (init, add_node):
        command.add_argument("--cluster-region", default=None,
                             help="the core region this etcd is the cluster of, with one cluster per core region: "
                                  "only nodes homed there write in it, the others get their reads (default: one "
                                  "cluster, every node writes its keys)")
    for command in (init, certs):
        command.add_argument("--topology", help="infra/topology.json: an edge per edges[] (region = site), "
                                                "transceiver trx-<name> per core_regions[], and dns")
        command.add_argument("--node", action="append", default=[], metavar="ROLE/REGION/NODE_ID[@HOME]",
                             help="one more node (repeatable; an edge's @HOME is the core region it registers "
                                  "in); 'dns' for the geo DNS servers' read-only user")
    add_node.add_argument("--role", required=True, choices=["edge", "transceiver", "agent", "dns"])
    add_node.add_argument("--region", default="", help="the node's region (not for dns)")
    add_node.add_argument("--node-id", default="", help="the node's id (not for dns)")
    add_node.add_argument("--home", default="", help="an edge's home: the core region whose cluster it registers "
                                                     "in (with --cluster-region)")
    remove_node.add_argument("--role", required=True, choices=["edge", "transceiver", "agent"])
    remove_node.add_argument("--region", required=True, help="the node's region")
    remove_node.add_argument("--node-id", required=True, help="the node's id")
    remove_node.set_defaults(home="")
    certs.add_argument("--out", required=True, help="directory for ca.pem, etcd.pem, root.pem and <role>_<region>_"
                                                    "<node-id>.pem (with -key.pem each)")
    certs.add_argument("--host", action="append", default=[], help="name or address in the etcd and agent "
                                                                   "server certificates (repeatable; default "
                                                                   "127.0.0.1 and localhost)")

    from voicemesh.app.lab import cli as lab_cli

    lab_cli.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return uvloop.run(_dispatch(args))
    except config.ConfigError as exc:
        print(f"voicemesh: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return await _demo(args)
    if args.command == "call":
        return await _call(args)
    if args.command == "lab":
        from voicemesh.app.lab import cli as lab_cli

        return await lab_cli.command(args)
    if args.command == "registry":
        return await _registry(args)
    file = config.load_file(args.config)
    table = file.get(args.command, {})
    level = config.setting("log_level", args, file) or ("info", "")
    fmt = config.setting("log_format", args, file) or ("json", "")
    logs.setup(str(level[0]), str(fmt[0]))
    if args.command == "transceiver":
        workers = config.setting("workers", args, table)
        count = _positive_int(workers) if workers else 1
        if count > 1:
            return await _supervise(args, table, count)
    telemetry.setup(f"voicemesh-{args.command}")
    try:
        return await {"edge": _edge, "transceiver": _transceiver, "agent": _agent, "dns": _dns}[args.command](
            args, file, table)
    finally:
        telemetry.shutdown()


async def _demo(args: argparse.Namespace) -> int:
    from voicemesh.app import demo
    from voicemesh.app.client import format_report

    logs.setup("warning", "text")
    report, relay = await demo.run(args.wav, args.out, args.agent_codec)
    if args.json:
        print(json.dumps({**report.to_dict(), "relay": relay}))
    else:
        print(format_report(report))
        drops = ", ".join(f"{k} {v}" for k, v in relay["drops"].items()) or "none"
        print(f"relay: {relay['packets_in']} packets in, {relay['packets_out']} out, drops: {drops}")
    return 0 if report.ok else 1


async def _call(args: argparse.Namespace) -> int:
    from voicemesh.app.client import SILENCE_S, call, format_report

    logs.setup("warning", "text")
    token = args.token or os.environ.get("VOICEMESH_CALL_TOKEN", "")
    report = await call(args.url, args.wav, out=args.out, bind=args.bind, duration_s=args.duration,
                        headers={"Authorization": f"Bearer {token}"} if token else None, redial=args.redial,
                        silence_s=args.redial_silence_s or SILENCE_S)
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    return 0 if report.ok else 1


def _registry_tls(args: argparse.Namespace, file: dict):
    """The registry's TLS settings (None without --registry-ca). Raises ConfigError."""
    from voicemesh.registry import RegistryTls

    found = {name: config.setting(f"registry_{name}", args, file) for name in ("ca", "cert", "key", "server_name")}
    values = {name: str(value[0]) if value else "" for name, value in found.items()}
    if not values["ca"]:
        if values["cert"] or values["key"]:
            raise config.ConfigError("--registry-cert and --registry-key need --registry-ca (TLS to etcd)")
        return None
    try:
        return RegistryTls.from_files(values["ca"], values["cert"], values["key"], values["server_name"])
    except (OSError, ValueError) as exc:
        raise config.ConfigError(f"registry TLS: {exc}") from None


def _open_registry(args: argparse.Namespace, file: dict, default: str | None = "etcd://127.0.0.1:2379"):
    """The registry of --registry (``default`` if unset; None if that is None too). Raises ConfigError."""
    from voicemesh.registry import open_registry

    url = config.setting("registry", args, file)
    if url is None and default is None:
        return None
    try:
        home = config.setting("registry_home", args, file)
        return open_registry(str(url[0]) if url else str(default), tls=_registry_tls(args, file),
                             region=str(home[0]) if home else "")
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None


def _registry_and_keys(args: argparse.Namespace, file: dict):
    from voicemesh.wire.meshkeys import MeshKeys

    keys = config.setting("token_keys", args, file)
    if keys is None:
        raise config.ConfigError("no routing token keys: set VOICEMESH_TOKEN_KEYS (\"id:hexkey,...\", current first)"
                                 " or token_keys in the config file")
    registry = _open_registry(args, file)
    try:
        return registry, MeshKeys.from_spec(str(keys[0]))
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None


EXIT_INDEX_LOST = 75
"""Exit status (EX_TEMPFAIL) of an edge or transceiver that drained and stopped because another node holds its
registry index: the service manager (Restart=always) starts it again, and the new process claims a free index."""


async def _until_signalled(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]],
                           registry: Registry | None = None) -> int:
    """Run ``start``, wait for SIGINT or SIGTERM, then run ``stop`` (graceful shutdown: the node drains) and
    return 0. With ``registry`` (a node that allocated an index), its index-lost signal stops the node the same
    way and returns EXIT_INDEX_LOST: routing tokens of its live calls carry the index, so it cannot change it
    under them; it drains them and exits rather than go on with an index another node holds."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    status = 0

    def index_lost(key: str) -> None:
        nonlocal status
        status = EXIT_INDEX_LOST
        log.error("another node holds this node's registry index: draining, then exiting to start again with a "
                  "free index", extra={"index_key": key, "exit_status": EXIT_INDEX_LOST})
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    if registry is not None:
        registry.subscribe_index_lost(index_lost)
    try:
        await start()
        await done.wait()
        log.info("shutting down", extra={"exit_status": status})
    finally:
        await stop()
    return status


async def _edge(args: argparse.Namespace, file: dict, table: dict) -> int:
    from voicemesh.edge.config import EdgeConfig
    from voicemesh.edge.node import EdgeNode

    registry, keys = _registry_and_keys(args, file)
    node = EdgeNode(config.build(EdgeConfig, args, table), registry, keys)

    async def start() -> None:
        await registry.start()
        await node.start()

    async def stop() -> None:
        await node.drain()
        await node.close()
        await registry.close()

    return await _until_signalled(start, stop, registry)


async def _transceiver(args: argparse.Namespace, file: dict, table: dict) -> int:
    from voicemesh.app.agents import KINDS, builtin_agent
    from voicemesh.core import api, echo_agent
    from voicemesh.core.config import TransceiverConfig
    from voicemesh.core.transceiver import Transceiver
    from voicemesh.runtime import supervisor
    from voicemesh.runtime.tasks import spawn
    from voicemesh.wire.addr import parse_hostport
    from voicemesh.wire.hopauth import HopVerifier
    from voicemesh.wire.token import TokenCodec

    registry, keys = _registry_and_keys(args, file)
    cfg = config.build(TransceiverConfig, args, table)
    http = config.setting("http", args, table) or ("127.0.0.1:8081", "")
    if not cfg.agent and cfg.agent_kind not in KINDS:
        raise config.ConfigError(f"agent kind must be one of {sorted(KINDS)}, got {cfg.agent_kind!r}")
    resources: list = []
    watching: set[asyncio.Task] = set()
    credentials = None
    if cfg.agent and (cfg.agent_ca or cfg.agent_cert or cfg.agent_key):
        from voicemesh.agent import tls

        try:
            credentials = tls.client_credentials(cfg.agent_ca, cfg.agent_cert, cfg.agent_key)
        except (OSError, ValueError) as exc:
            raise config.ConfigError(f"agent link TLS: {exc}") from None

    async def start() -> None:
        if not cfg.agent:
            server, port = await echo_agent.serve("127.0.0.1:0", builtin_agent(cfg.agent_kind))
            resources.append(server)
            cfg.agent = f"127.0.0.1:{port}"
        await registry.start()
        transceiver = Transceiver(cfg, registry, TokenCodec.from_mesh_keys(keys),
                                  agent_credentials=credentials)
        resources.append(transceiver)
        spawn(supervisor.watch_supervisor(), "watch supervisor", watching)
        resources.append(await api.serve(transceiver, HopVerifier(keys), *parse_hostport(str(http[0]))))
        # Started: what exists now (modules, the registry, the agent link) lives as long as the process.
        # Frozen, the collector never scans it again, so the full collection the transceiver runs after
        # sessions end (COLLECT_AFTER_END_S) costs only what the live sessions hold.
        gc.collect()
        gc.freeze()
        supervisor.report_ready()

    async def stop() -> None:
        # Drain first, while the API still serves: edges' DELETEs reach the sessions as they end and new
        # offers get 503 draining; then the API, then the in-process agent.
        for task in watching:
            task.cancel()
        drained = [res for res in resources if isinstance(res, Transceiver)]
        for res in drained + [res for res in reversed(resources) if res not in drained]:
            if hasattr(res, "cleanup"):
                await res.cleanup()
            elif hasattr(res, "stop"):
                await res.stop(1.0)
            else:
                await res.close()
        await registry.close()

    return await _until_signalled(start, stop, registry)


def _positive_int(found: tuple) -> int:
    """The value of a setting (value, source) as a positive int. Raises ConfigError."""
    value, source = found
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise config.ConfigError(f"{source}: must be a positive whole number, got {value!r}")
    return number


def worker_argvs(argv: list[str], node_id: str, http: tuple[str, int], backbone: tuple[str, int],
                 count: int) -> list[list[str]]:
    """The command line of each of ``count`` transceiver workers: ``argv`` (this process's arguments) with
    ``--workers 1`` and worker i's own node id (``<node_id>-w<i>``), API address and backbone address
    (port + i, or 0 for a free one each) appended, so they win over the flags, environment and file.

    Each worker has its own API port rather than one shared with SO_REUSEPORT: the kernel spreads
    connections over the sockets sharing a port, so an edge's DELETE for a session would reach a worker
    that does not hold it; with one port each, the URL a worker registers reaches that worker.
    Raises ConfigError if a port would pass 65535."""
    from voicemesh.wire.addr import format_hostport

    def nth(address: tuple[str, int], i: int, flag: str) -> str:
        host, port = address
        if port and port + i > 65535:
            raise config.ConfigError(f"{flag}: port {port} + {count - 1} workers passes 65535")
        return format_hostport((host, port + i if port else 0))

    # -P: the working directory stays off sys.path (a dns.py there would shadow dnspython in the workers).
    return [[sys.executable, "-P", "-m", "voicemesh", *argv, "--workers", "1", "--node-id", f"{node_id}-w{i}",
             "--http", nth(http, i, "--http"), "--backbone", nth(backbone, i, "--backbone")]
            for i in range(count)]


async def _supervise(args: argparse.Namespace, table: dict, count: int) -> int:
    """``voicemesh transceiver --workers N``: N transceiver processes under a Supervisor, worker i pinned to
    the i-th CPU this process may use when there are at least N; SIGTERM or SIGINT drains them all."""
    from voicemesh.core.config import TransceiverConfig
    from voicemesh.runtime.supervisor import Supervisor
    from voicemesh.wire.addr import parse_hostport

    cfg = config.build(TransceiverConfig, args, table)
    http = config.setting("http", args, table) or ("127.0.0.1:8081", "")
    try:
        argvs = worker_argvs(args.argv, cfg.node_id, parse_hostport(str(http[0])), parse_hostport(cfg.backbone),
                             count)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    allowed = sorted(os.sched_getaffinity(0))
    cpus = [{allowed[i]} for i in range(count)] if count <= len(allowed) else None
    supervisor = Supervisor(argvs, cpus=cpus, kill_after_s=cfg.drain_timeout_s + 15.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("supervising transceiver workers", extra={"workers": count, "node": cfg.node_id})
    status = await supervisor.run(stop)
    log.info("workers stopped", extra={"status": status, "restarts": supervisor.restarts})
    return status


async def _agent(args: argparse.Namespace, file: dict, table: dict) -> int:
    from voicemesh.app.agents import KINDS, builtin_agent
    from voicemesh.core import echo_agent
    from voicemesh.registry import NodeRecord
    from voicemesh.wire.addr import format_hostport, parse_hostport

    bind = config.setting("bind", args, table) or ("127.0.0.1:50051", "")
    kind, source = config.setting("kind", args, table) or ("echo", "")
    if kind not in KINDS:
        raise config.ConfigError(f"{source}: agent kind must be one of {sorted(KINDS)}, got {kind!r}")
    servers: list = []
    registry = _open_registry(args, file, default=None)
    tls_files = [str(found[0]) if (found := config.setting(name, args, table)) else ""
                 for name in ("tls_cert", "tls_key", "tls_client_ca")]
    credentials = None
    if any(tls_files):
        from voicemesh.agent import tls

        try:
            credentials = tls.server_credentials(*tls_files)
        except (OSError, ValueError) as exc:
            raise config.ConfigError(f"agent TLS: {exc}") from None

    async def start() -> None:
        server, port = await echo_agent.serve(str(bind[0]), builtin_agent(str(kind)), credentials=credentials)
        servers.append(server)
        advertise = config.setting("advertise", args, table)
        host = parse_hostport(str(bind[0]))[0]
        endpoint = str(advertise[0]) if advertise else format_hostport((host, port))
        if registry is not None:
            await registry.start()
            await registry.register(NodeRecord(
                role="agent", region=str((config.setting("region", args, table) or ("local",))[0]),
                node_id=str((config.setting("node_id", args, table) or ("agent-1",))[0]), grpc=endpoint))
        log.info("%s agent up", kind, extra={"grpc": endpoint})

    async def stop() -> None:
        if registry is not None:
            await registry.close()
        for server in servers:
            await server.stop(1.0)

    return await _until_signalled(start, stop)


async def _dns(args: argparse.Namespace, file: dict, table: dict) -> int:
    import maxminddb

    from voicemesh.edge.config import DnsConfig
    from voicemesh.edge.dns_server import DnsServer, topology_defaults

    topology = config.setting("topology", args, table)
    registry = _open_registry(args, file)
    try:
        defaults = topology_defaults(str(topology[0])) if topology else {}
        server = DnsServer.from_config(config.build(DnsConfig, args, {**defaults, **table}))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise config.ConfigError(str(exc)) from None

    async def start() -> None:
        await registry.start()
        server.start(registry)

    async def stop() -> None:
        server.close()
        await registry.close()

    return await _until_signalled(start, stop)


async def _registry(args: argparse.Namespace) -> int:
    """``voicemesh registry init|add-node|remove-node|certs``."""
    from voicemesh.registry.access import Identity, identities_from_topology

    logs.setup("warning", "text")
    try:
        if args.registry_command in ("add-node", "remove-node"):
            identities = [Identity(args.role, args.region, args.node_id, args.home)]
        else:
            identities = identities_from_topology(args.topology) if args.topology else []
            identities += [Identity.parse(spec) for spec in args.node]
    except (OSError, ValueError) as exc:
        raise config.ConfigError(str(exc)) from None
    if args.registry_command == "certs":
        return _certs(args.out, identities, args.host or ["127.0.0.1", "localhost"])
    from voicemesh.registry import BadRegistryUrl, RegistryUnavailable
    from voicemesh.registry.etcd_auth import ensure_access, remove_access

    file = config.load_file(args.config)
    url = str((config.setting("registry", args, file) or ("etcd://127.0.0.1:2379",))[0])
    tls = _registry_tls(args, file)
    if tls is None or not tls.cert:
        raise config.ConfigError("registry init, add-node and remove-node need TLS with root's certificate: "
                                 "--registry-ca, --registry-cert and --registry-key")
    scheme, _, rest = url.partition("://")
    if scheme != "etcd":
        raise config.ConfigError(str(BadRegistryUrl("scheme", url)))
    endpoints = [e for e in rest.rstrip("/").split(",") if e]
    try:
        report = (await remove_access(endpoints, tls, identities) if args.registry_command == "remove-node"
                  else await ensure_access(endpoints, tls, identities, cluster=args.cluster_region))
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    except RegistryUnavailable as exc:
        print(f"voicemesh registry: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"users": [i.user for i in identities], **vars(report)}))
    return 0


def _certs(out: str, identities: list, hosts: list[str]) -> int:
    """Write a local CA (reusing ``out``'s ca.pem and ca-key.pem if present), a server certificate for
    ``hosts`` (etcd.pem), root's client certificate and one per identity; print what it wrote."""
    from pathlib import Path

    from voicemesh.app.pki import CertificateAuthority

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.load(directory) if (directory / "ca-key.pem").exists() else CertificateAuthority()
    ca.save(directory)
    written = {"ca": str(directory / "ca.pem"), "server": str(ca.server(hosts).write(directory, "etcd")[0])}
    for user in ["root", *(identity.user for identity in identities)]:
        written[user] = str(ca.client(user).write(directory, user.replace("/", "_"))[0])
    print(json.dumps(written))
    return 0
