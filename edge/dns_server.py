"""The geo DNS server process's I/O: one UDP socket drained into edge/geodns.py, edges taken from the registry.

Authoritative DNS over UDP only (RFC 1035 4.2.1); answers never exceed what the
query's payload size allows, truncated with TC otherwise (edge/geodns.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import maxminddb

from voicemesh.edge.config import DnsConfig
from voicemesh.edge.geodns import GeoDNS, Locate, Zone, mmdb_locator, parse_nameservers
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
    """Serves a GeoDNS on a bound UDP socket; ``tx_errors`` counts responses whose sendto failed.

    ``reader`` (a maxminddb Reader or None) is closed with the server.
    """

    def __init__(self, geodns: GeoDNS, sock: socket.socket, reader=None) -> None:
        self.geodns = geodns
        self.sock = sock
        self.address = sockname(sock)
        self.reader = reader
        self.tx_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, cfg: DnsConfig) -> DnsServer:
        """Open the GeoIP database, check the zone, bind the socket (not yet reading).

        Raises BadZone, ValueError (``bind`` is not host:port), OSError (file or socket),
        maxminddb.InvalidDatabaseError.
        """
        zone = Zone(cfg.zone, cfg.mesh_name, ttl_s=cfg.ttl_s, nameservers=parse_nameservers(cfg.ns))
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
        return cls(GeoDNS(zone, locate, default_edge=cfg.default_edge), sock, reader)

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
        try:
            self.sock.sendto(response, addr)
        except OSError:
            self.tx_errors += 1

    def stats(self) -> dict:
        """Counters: ``cache_hits``, ``cache_misses``, ``generation``, ``edges``,
        ``rcodes`` (rendered responses by rcode), ``formerr`` and ``drops`` by reason, ``tx_errors``."""
        geodns = self.geodns
        return {"cache_hits": geodns.cache_hits, "cache_misses": geodns.cache_misses,
                "generation": geodns.generation, "edges": len(geodns.edges), "rcodes": dict(geodns.rcodes),
                "formerr": dict(geodns.formerr), "drops": dict(geodns.drops), "tx_errors": self.tx_errors}

    def close(self) -> None:
        """Stop reading, close the socket and the GeoIP database."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.reader is not None:
            self.reader.close()
