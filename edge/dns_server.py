"""The geo DNS server process's I/O: one UDP socket drained into edge/geodns.py, edges taken from the registry.

Authoritative DNS over UDP only (RFC 1035 4.2.1); answers never exceed what the
query's payload size allows, truncated with TC otherwise (edge/geodns.py), and
every response passes the response rate limiter (edge/rrl.py) before it is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable

import maxminddb

from voicemesh.edge.config import DnsConfig
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


class DnsServer:
    """Serves a GeoDNS on a bound UDP socket, each response through ``rrl`` at ``clock()``
    (seconds, monotonic); ``tx_errors`` counts responses whose sendto failed.

    ``reader`` (a maxminddb Reader or None) is closed with the server.
    """

    def __init__(self, geodns: GeoDNS, sock: socket.socket, rrl: ResponseRateLimiter, reader=None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.geodns = geodns
        self.rrl = rrl
        self.clock = clock
        self.sock = sock
        self.address = sockname(sock)
        self.reader = reader
        self.tx_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, cfg: DnsConfig, *, clock: Callable[[], float] = time.monotonic) -> DnsServer:
        """Open the GeoIP database, check the zone and the rate limits, bind the socket (not yet reading).

        Raises BadZone, ValueError (``bind`` is not host:port, a bad rate limit), OSError (file or
        socket), maxminddb.InvalidDatabaseError.
        """
        zone = Zone(cfg.zone, cfg.mesh_name, ttl_s=cfg.ttl_s, nameservers=parse_nameservers(cfg.ns))
        rrl = ResponseRateLimiter(RrlSettings(
            answers_per_s=cfg.rrl_answers_per_s, nodata_per_s=cfg.rrl_nodata_per_s,
            nxdomains_per_s=cfg.rrl_nxdomains_per_s, errors_per_s=cfg.rrl_errors_per_s, window_s=cfg.rrl_window_s,
            slip=cfg.rrl_slip, ipv4_prefix=cfg.rrl_ipv4_prefix, ipv6_prefix=cfg.rrl_ipv6_prefix,
            max_entries=cfg.rrl_max_entries))
        reader = maxminddb.open_database(cfg.geoip_db) if cfg.geoip_db else None
        locate: Locate = mmdb_locator(reader) if reader is not None else (lambda address: None)
        try:
            sock = bind_udp(*parse_hostport(cfg.bind), reuse_port=cfg.reuse_port)
        except (OSError, ValueError):
            if reader is not None:
                reader.close()
            raise
        if reader is None:
            log.warning("no GeoIP database: every client gets the default edge")
        geodns = GeoDNS(zone, locate, default_edge=cfg.default_edge, cache_entries=cfg.cache_entries,
                        cache_bytes=cfg.cache_bytes)
        return cls(geodns, sock, rrl, reader, clock=clock)

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
        zone = self.geodns.zone
        log.info("dns up", extra={"zone": zone.origin.to_text(), "mesh_name": zone.mesh_name.to_text(),
                                  "bind": format_hostport(self.address)})

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
        ``rrl`` (ResponseRateLimiter.stats: responses sent, slipped and dropped by category), ``tx_errors``."""
        geodns = self.geodns
        return {"cache_hits": geodns.cache_hits, "cache_misses": geodns.cache_misses,
                "cache_entries": len(geodns.cache), "cache_bytes": geodns.cache.bytes, "rrl": self.rrl.stats(),
                "generation": geodns.generation, "edges": len(geodns.edges), "rcodes": dict(geodns.rcodes),
                "formerr": dict(geodns.formerr), "drops": dict(geodns.drops), "tx_errors": self.tx_errors}

    def close(self) -> None:
        """Stop reading, close the socket and the GeoIP database."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.reader is not None:
            self.reader.close()
