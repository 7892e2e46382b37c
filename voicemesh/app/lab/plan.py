"""The lab's plan, sans-IO: which namespaces it builds, their addresses, and the modelled network path
between any two of them, all read from infra/topology.json.

A namespace per core region (its transceiver and that region's etcd), per edge PoP, per client city,
and one control namespace ("ctl": the geo DNS server) at the central region's site. Node ``i`` has the
address ``10.77.i.2`` in its own /24, so the geo DNS server (which steers by /24) can place each
client city on its own.

Paths. Between two nodes that are not clients: the backbone, ``rtt_ms`` between their sites (or
``lab.intra_site_rtt_ms`` at the same site), with no jitter and no loss. Between a client city and a
node at site ``s``: the public internet (``public_internet``): the city's ``access_rtt_ms`` to the site
it sits near, plus ``rtt_inflation`` times the backbone round trip from there to ``s``; jitter and
loss each way grow with that round trip. Clients never talk to each other.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath

from voicemesh.wire.geo import distance_km

DEFAULT_TOPOLOGY = FilePath(__file__).resolve().parents[3] / "infra" / "topology.json"
"""infra/topology.json of the checkout this package runs from."""
LAB_NETWORK = ipaddress.IPv4Network("10.77.0.0/16")
"""Every lab address is in here: node ``i`` is ``10.77.i.2/24``."""
PREFIX = os.environ.get("VOICEMESH_LAB_PREFIX", "vmlab-")
"""Namespaces, TUN links and work directories of the lab start with this (``voicemesh lab down`` finds them by it).
``VOICEMESH_LAB_PREFIX`` (a lowercase letter, then up to 9 of ``[a-z0-9-]``, so TUN link names fit in 15
characters) runs a lab beside another one on the same machine: each lab sees, and removes, only its own."""
PREFIX_SHAPE = re.compile(r"[a-z][a-z0-9-]{0,9}")
WHIP_HTTP_PORT = 80
"""The edges' WHIP front in the lab: plain HTTP (``http://rtc.voicemesh.test/``), no TLS."""


class LabError(ValueError):
    """The lab cannot be planned or built.

    ``reason``: "bad_topology" (a field is missing or has the wrong type), "bad_region_count",
    "unknown_city", "central_region_not_kept", "no_central_edge", "no_rtt" (two sites without an
    ``rtt_ms`` entry), "too_many_nodes", "bad_prefix", "unknown_region" (``--fail-region``), "not_root", "no_iproute2",
    "lab_exists", "ip_failed", "start_failed".
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Region:
    """A core region: ``name`` (e.g. "eu-central"), the ``region_id`` in routing tokens, its ``site``."""

    name: str
    region_id: int
    site: str


@dataclass(frozen=True)
class City:
    """A client city: ``key`` (e.g. "berlin"), its display ``name``, coordinates in degrees, the ``site``
    it sits near and its round trip there, ``access_rtt_ms``."""

    key: str
    name: str
    lat: float
    lon: float
    site: str
    access_rtt_ms: float


@dataclass(frozen=True)
class Node:
    """One namespace of the lab.

    ``name`` is "ctl", "core-<region>", the edge id ("edge-fra") or "city-<key>"; ``role`` is "ctl",
    "core", "edge" or "city"; ``site`` is where it is (a city: the site it sits near); ``lat``/``lon``
    in degrees; ``index`` numbers the node in the plan and gives its address and TUN link.
    """

    name: str
    role: str
    site: str
    lat: float
    lon: float
    index: int

    @property
    def namespace(self) -> str:
        return PREFIX + self.name

    @property
    def link(self) -> str:
        """The node's TUN link (at most 15 characters, as Linux wants)."""
        return f"{PREFIX.rstrip('-')}{self.index}"

    @property
    def address(self) -> ipaddress.IPv4Address:
        return LAB_NETWORK[self.index * 256 + 2]

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The node's /24: the granularity at which the geo DNS server steers."""
        return ipaddress.IPv4Network(f"{self.address}/24", strict=False)


@dataclass(frozen=True)
class Path:
    """A modelled path: round trip ``rtt_ms``; each way, delay ``rtt_ms / 2`` varied uniformly by up to
    ``jitter_ms`` either side, and ``loss_pct`` percent of packets dropped."""

    rtt_ms: float
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def one_way_ms(self) -> float:
        return self.rtt_ms / 2


class Plan:
    """A lab over ``regions``, ``edges`` (edge id -> site) and ``cities`` of ``topology``
    (the decoded infra/topology.json); build one with ``plan()``.

    Raises LabError("bad_topology") if the topology lacks a field the lab reads, ("bad_prefix") for a bad PREFIX.
    """

    def __init__(self, topology: Mapping, regions: Sequence[Region], edges: Mapping[str, str],
                 cities: Sequence[City]) -> None:
        if not PREFIX_SHAPE.fullmatch(PREFIX):
            raise LabError("bad_prefix", f"VOICEMESH_LAB_PREFIX={PREFIX!r}: a lowercase letter, then up to 9 of "
                                         "[a-z0-9-]")
        try:
            self.sites: dict[str, dict] = dict(topology["sites"])
            self.rtt: dict[str, float] = dict(topology["rtt_ms"])
            lab, public = topology["lab"], topology["public_internet"]
            self.intra_site_rtt_ms = float(lab["intra_site_rtt_ms"])
            self.distant_km = float(lab["distant_km"])
            self.inflation = float(public["rtt_inflation"])
            self.jitter = (float(public["jitter_ms"]["base"]), float(public["jitter_ms"]["per_100ms_rtt"]))
            self.loss = (float(public["loss_pct"]["base"]), float(public["loss_pct"]["per_100ms_rtt"]))
            self.zone = str(topology["zone"])
            self.mesh_name = f"{topology['mesh_name']}.{self.zone}"
            self.ports: dict[str, int] = dict(topology["ports"])
            central = str(lab["central_region"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError("bad_topology", f"topology lacks a field the lab reads: {exc!r}") from None
        self.regions = tuple(regions)
        self.edges = dict(edges)
        self.cities = tuple(cities)
        central_region = next((r for r in self.regions if r.name == central), None)
        if central_region is None:
            raise LabError("central_region_not_kept", f"the central region {central} is not among the lab's regions")
        self.central: Region = central_region
        central_edge = next((e for e, site in sorted(self.edges.items()) if site == self.central.site), None)
        if central_edge is None:
            raise LabError("no_central_edge", f"no edge at the central region's site {self.central.site}")
        self.central_edge: str = central_edge
        ctl = self._site_node("ctl", "ctl", self.central.site, 0)
        nodes = [ctl]
        nodes += [self._site_node(f"core-{r.name}", "core", r.site, len(nodes) + i) for i, r in enumerate(self.regions)]
        nodes += [self._site_node(e, "edge", site, len(nodes) + i) for i, (e, site) in enumerate(self.edges.items())]
        nodes += [Node(f"city-{c.key}", "city", c.site, c.lat, c.lon, len(nodes) + i) for i, c in enumerate(self.cities)]
        if len(nodes) > 256:
            raise LabError("too_many_nodes", f"{len(nodes)} nodes do not fit in {LAB_NETWORK} at one /24 each")
        self.nodes = tuple(nodes)
        self._by_name = {node.name: node for node in nodes}
        self._by_address = {node.address: node for node in nodes}
        self._cities = {f"city-{c.key}": c for c in self.cities}
        for a in self.nodes:
            if a.site not in self.sites:
                raise LabError("bad_topology", f"{a.name} sits near {a.site!r}, which is not a site")
            for b in self.nodes:
                self.backbone_rtt_ms(a.site, b.site)

    def _site_node(self, name: str, role: str, site: str, index: int) -> Node:
        try:
            where = self.sites[site]
            return Node(name, role, site, float(where["lat"]), float(where["lon"]), index)
        except (KeyError, TypeError, ValueError):
            raise LabError("bad_topology", f"site {site!r} of {name} has no lat/lon in the topology") from None

    def node(self, name: str) -> Node:
        """The node called ``name``; raises KeyError."""
        return self._by_name[name]

    def city_node(self, city: City) -> Node:
        return self._by_name[f"city-{city.key}"]

    def region_node(self, region: Region) -> Node:
        return self._by_name[f"core-{region.name}"]

    def by_address(self, address: ipaddress.IPv4Address) -> Node | None:
        """The node with this address, or None."""
        return self._by_address.get(address)

    def backbone_rtt_ms(self, a: str, b: str) -> float:
        """Round trip between sites ``a`` and ``b`` in ms; raises LabError("no_rtt")."""
        if a == b:
            return self.intra_site_rtt_ms
        rtt = self.rtt.get(f"{a}-{b}", self.rtt.get(f"{b}-{a}"))
        if rtt is None:
            raise LabError("no_rtt", f"the topology has no rtt_ms between {a} and {b}")
        return float(rtt)

    def public(self, city: City, site: str) -> Path:
        """The public-internet path from ``city`` to ``site``."""
        rtt = city.access_rtt_ms
        if site != city.site:
            rtt += self.inflation * self.backbone_rtt_ms(city.site, site)
        return Path(rtt, self.jitter[0] + self.jitter[1] * rtt / 100, self.loss[0] + self.loss[1] * rtt / 100)

    def path(self, a: Node, b: Node) -> Path | None:
        """The path from node ``a`` to node ``b`` (the same both ways), or None (between cities, or a node to itself)."""
        if a == b or (a.role == "city" and b.role == "city"):
            return None
        if a.role == "city" or b.role == "city":
            city, other = (a, b) if a.role == "city" else (b, a)
            return self.public(self._cities[city.name], other.site)
        return Path(self.backbone_rtt_ms(a.site, b.site))

    def nearest_edge(self, city: City) -> str:
        """The lab's edge nearest to ``city`` by great-circle distance (ties: the lower edge id)."""
        return min(self.edges, key=lambda e: (self._km(city.lat, city.lon, self.edges[e]), e))

    def regions_for_edge(self, edge: str, without: str = "") -> list[Region]:
        """The core regions in the order an edge tries them (edge/whip.py with ``region_rtts``): by backbone
        round trip from the edge's site, then by great-circle distance, then name; ``without`` left out."""
        site = self.edges[edge]
        where = self.sites[site]
        return sorted((r for r in self.regions if r.name != without),
                      key=lambda r: (self.backbone_rtt_ms(site, r.site),
                                     round(self._km(where["lat"], where["lon"], r.site)), r.name))

    def region_for_edge(self, edge: str) -> Region:
        """The core region an edge sends offers to while every region is up: the first of regions_for_edge."""
        return self.regions_for_edge(edge)[0]

    def region_rtts(self, edge: str) -> str:
        """The edge's ``region_rtt_ms`` setting: "region=ms,..." of the backbone round trip from its site to
        every core region's."""
        return ",".join(f"{r.name}={self.backbone_rtt_ms(self.edges[edge], r.site):g}" for r in self.regions)

    def registry_url(self, client_port: int) -> str:
        """The per-region registry URL (registry/regions.py): each core region's etcd at its core node."""
        return "etcd://" + ";".join(f"{r.name}={self.region_node(r).address}:{client_port}" for r in self.regions)

    def mesh_rtt_ms(self, city: City, edge: str | None = None, region: Region | None = None) -> float:
        """Modelled network round trip of a mesh call through ``edge`` (default: the nearest) to ``region``
        (default: the edge's): public to the edge, backbone on to the region."""
        edge = edge or self.nearest_edge(city)
        site = self.edges[edge]
        return self.public(city, site).rtt_ms + self.backbone_rtt_ms(site, (region or self.region_for_edge(edge)).site)

    def direct_rtt_ms(self, city: City) -> float:
        """Modelled network round trip of a baseline call: public to the central region's site."""
        return self.public(city, self.central.site).rtt_ms + self.intra_site_rtt_ms

    def distant(self, city: City) -> bool:
        """Whether ``city`` is more than ``lab.distant_km`` from the central region's site."""
        return self._km(city.lat, city.lon, self.central.site) > self.distant_km

    def _km(self, lat: float, lon: float, site: str) -> float:
        return distance_km(lat, lon, float(self.sites[site]["lat"]), float(self.sites[site]["lon"]))


def load_topology(path: str | FilePath = DEFAULT_TOPOLOGY) -> dict:
    """Read infra/topology.json; raises LabError("bad_topology") if it cannot be read or is not JSON."""
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise LabError("bad_topology", f"cannot read the topology {path}: {exc}") from None


def plan(topology: Mapping, regions: int | None = None, cities: Sequence[str] | None = None) -> Plan:
    """The lab for ``topology``.

    ``regions`` None keeps every core region, edge and client city; ``regions=N`` keeps the first
    N core regions, only the edges at their sites and the cities that sit near those sites (the smoke
    lab is ``regions=2``). ``cities`` (keys of ``clients``) picks the cities instead. Raises LabError
    ("bad_region_count", "unknown_city", "bad_topology", "central_region_not_kept", "no_central_edge",
    "no_rtt", "too_many_nodes", "bad_prefix").
    """
    try:
        all_regions = [Region(str(r["name"]), int(r["region_id"]), str(r["site"])) for r in topology["core_regions"]]
        all_edges = {str(e["id"]): str(e["site"]) for e in topology["edges"]}
        all_cities = {key: City(key, str(c["city"]), float(c["lat"]), float(c["lon"]), str(c["site"]),
                                float(c["access_rtt_ms"])) for key, c in topology["clients"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise LabError("bad_topology", f"topology lacks a field the lab reads: {exc!r}") from None
    if regions is None:
        kept, edges = all_regions, all_edges
    elif 1 <= regions <= len(all_regions):
        kept = all_regions[:regions]
        edges = {e: site for e, site in all_edges.items() if site in {r.site for r in kept}}
    else:
        raise LabError("bad_region_count", f"regions must be 1 to {len(all_regions)}, got {regions}")
    if cities is None:
        chosen = [c for c in all_cities.values() if c.site in edges.values()]
    else:
        unknown = sorted(set(cities) - set(all_cities))
        if unknown:
            raise LabError("unknown_city", f"unknown cities {unknown}; the topology has {sorted(all_cities)}")
        chosen = [all_cities[key] for key in cities]
    return Plan(topology, kept, edges, chosen)
