"""The geo DNS server process's I/O: one UDP socket drained into edge/geodns.py, edges taken from the registry.

Authoritative DNS over UDP (RFC 1035 4.2.1) and, on the same address, TCP
(edge/dns_tcp.py, RFC 7766). UDP answers never exceed what the query's payload
size allows, truncated with TC otherwise (edge/geodns.py) so the client retries
over TCP, and every UDP response passes the response rate limiter (edge/rrl.py)
before it is sent.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import time
from collections.abc import Callable

import maxminddb

from voicemesh.edge.config import DnsConfig
from voicemesh.edge.dns_tcp import DnsTcpServer, bind_tcp
from voicemesh.edge.geodns import GeoDNS, Locate, Zone, mmdb_locator, parse_nameservers
from voicemesh.edge.rrl import ResponseRateLimiter, RrlSettings
from voicemesh.registry import Registry
from voicemesh.runtime.udp import add_drain_reader, bind_udp, sockname
from voicemesh.wire.addr import format_hostport, parse_hostport

log = logging.getLogger("voicemesh.dns")


def topology_defaults(path: str) -> dict[str, str]:
    """``zone`` and ``mesh_name`` (``<mesh_name>.<zone>``) from infra/topology.json.

    Raises OSError if the file cannot be read, ValueError if it is not such a file.
    """
    with open(path, "rb") as fh:
        topology = json.load(fh)
    try:
        zone, name = str(topology["zone"]), str(topology["mesh_name"])
    except (KeyError, TypeError):
        raise ValueError(f"{path}: no zone and mesh_name") from None
    return {"zone": zone, "mesh_name": f"{name}.{zone}"}


def _bind_both(host: str, port: int, *, reuse_port: bool, tcp: bool) -> tuple[socket.socket, socket.socket | None]:
    """A UDP socket on host:port and, with ``tcp``, a listening TCP socket on the same port. Port 0 takes
    a port free for both (a few tries: the kernel picks the UDP port, which TCP may already use).

    Raises OSError, ValueError.
    """
    for _ in range(8 if port == 0 else 1):
        udp = bind_udp(host, port, reuse_port=reuse_port)
        if not tcp:
            return udp, None
        try:
            return udp, bind_tcp(host, sockname(udp)[1])
        except OSError as exc:
            udp.close()
            if port != 0 or exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")


class DnsServer:
    """Serves a GeoDNS on a bound UDP socket, each response through ``rrl`` at ``clock()``
    (seconds, monotonic); ``tx_errors`` counts responses whose sendto failed.

    ``reader`` (a maxminddb Reader or None) is closed with the server, and so is ``tcp`` (the
    TCP server on the same address, or None for UDP only).
    """

    def __init__(self, geodns: GeoDNS, sock: socket.socket, rrl: ResponseRateLimiter, reader=None, *,
                 clock: Callable[[], float] = time.monotonic, tcp: DnsTcpServer | None = None) -> None:
        self.geodns = geodns
        self.rrl = rrl
        self.clock = clock
        self.sock = sock
        self.address = sockname(sock)
        self.reader = reader
        self.tcp = tcp
        self.tx_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, cfg: DnsConfig, *, clock: Callable[[], float] = time.monotonic) -> DnsServer:
        """Open the GeoIP database, check the zone and the limits, bind the UDP socket and, with
        ``cfg.tcp``, a TCP socket on the same address and port (not yet reading).

        Raises BadZone, ValueError (``bind`` is not host:port, a bad rate or TCP limit), OSError (file or
        socket), maxminddb.InvalidDatabaseError.
        """
        zone = Zone(cfg.zone, cfg.mesh_name, ttl_s=cfg.ttl_s, nameservers=parse_nameservers(cfg.ns),
                    acme_challenge_zone=cfg.acme_challenge_zone)
        rrl = ResponseRateLimiter(RrlSettings(
            answers_per_s=cfg.rrl_answers_per_s, nodata_per_s=cfg.rrl_nodata_per_s,
            nxdomains_per_s=cfg.rrl_nxdomains_per_s, errors_per_s=cfg.rrl_errors_per_s, window_s=cfg.rrl_window_s,
            slip=cfg.rrl_slip, ipv4_prefix=cfg.rrl_ipv4_prefix, ipv6_prefix=cfg.rrl_ipv6_prefix,
            max_entries=cfg.rrl_max_entries))
        reader = maxminddb.open_database(cfg.geoip_db) if cfg.geoip_db else None
        locate: Locate = mmdb_locator(reader) if reader is not None else (lambda address: None)
        geodns = GeoDNS(zone, locate, default_edge=cfg.default_edge, cache_entries=cfg.cache_entries,
                        cache_bytes=cfg.cache_bytes)
        sock = tcp = None
        try:
            host, port = parse_hostport(cfg.bind)
            sock, tcp_sock = _bind_both(host, port, reuse_port=cfg.reuse_port, tcp=cfg.tcp)
            if tcp_sock is not None:
                tcp = DnsTcpServer(geodns, tcp_sock, idle_timeout_s=cfg.tcp_idle_timeout_s,
                                   max_connections=cfg.tcp_max_connections, max_per_source=cfg.tcp_max_per_source,
                                   max_query_bytes=cfg.tcp_max_query_bytes)
        except (OSError, ValueError):
            for held in (sock, tcp.sock if tcp is not None else None, reader):
                if held is not None:
                    held.close()
            raise
        if reader is None:
            log.warning("no GeoIP database: every client gets the default edge")
        return cls(geodns, sock, rrl, reader, clock=clock, tcp=tcp)

    def start(self, registry: Registry) -> None:
        """Follow the registry's edges and start answering (inside the running loop)."""

        def edges_changed() -> None:
            if self.geodns.set_edges(registry.nodes("edge")):
                log.info("edges changed", extra={"edges": [edge.node_id for edge in self.geodns.edges],
                                                 "generation": self.geodns.generation})

        registry.subscribe(edges_changed)
        edges_changed()
        self._loop = asyncio.get_running_loop()
        add_drain_reader(self._loop, self.sock, self.on_datagram)
        if self.tcp is not None:
            self.tcp.start()
        zone = self.geodns.zone
        log.info("dns up", extra={"zone": zone.origin.to_text(), "mesh_name": zone.mesh_name.to_text(),
                                  "bind": format_hostport(self.address), "tcp": self.tcp is not None})

    def on_datagram(self, data: bytes, addr: tuple) -> None:
        """One query datagram (the per-packet path)."""
        response = self.geodns.respond(data, addr[0])
        if response is None:
            return
        response = self.rrl.limit(response, addr[0], self.clock())
        if response is None:
            return
        try:
            self.sock.sendto(response, addr)
        except OSError:
            self.tx_errors += 1

    def stats(self) -> dict:
        """Counters: ``cache_hits``, ``cache_misses``, ``cache_entries``, ``cache_bytes``, ``generation``,
        ``edges``, ``rcodes`` (rendered responses by rcode), ``formerr`` and ``drops`` by reason,
        ``rrl`` (ResponseRateLimiter.stats: responses sent, slipped and dropped by category), ``tx_errors``,
        ``tcp`` (DnsTcpServer.stats, or None without TCP)."""
        geodns = self.geodns
        return {"cache_hits": geodns.cache_hits, "cache_misses": geodns.cache_misses,
                "cache_entries": len(geodns.cache), "cache_bytes": geodns.cache.bytes, "rrl": self.rrl.stats(),
                "generation": geodns.generation, "edges": len(geodns.edges), "rcodes": dict(geodns.rcodes),
                "formerr": dict(geodns.formerr), "drops": dict(geodns.drops), "tx_errors": self.tx_errors,
                "tcp": self.tcp.stats() if self.tcp is not None else None}

    def close(self) -> None:
        """Stop reading, close the sockets (and TCP connections) and the GeoIP database."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.reader is not None:
            self.reader.close()
