"""Two tiers of the registry: one store per core region, one merged view for every node.

Each core region runs its own etcd cluster. It holds that region's node records, its session claims and its
index claims, so a transceiver's claim is a write to the cluster next to it and never crosses the backbone.
A RegionalRegistry keeps one client (a Registry) per region and routes by the region a key names:

- ``register`` and ``allocate_index`` go to the home cluster: a transceiver's home is its core region, an
  edge's (whose record's region is its PoP) the core region it is closest to, given by its configuration;
- ``claim``, ``get`` and ``release`` of a session claim (``sessions/<region>/<id>``) go to that region's
  cluster; of any other key to the home cluster;
- ``nodes()`` is the union of every cluster's view, each cluster speaking only for its own core region's
  transceivers and agents: such a record of region B found in region A's cluster is ignored (and counted in
  ``foreign_records``), so a node certificate accepted by every cluster cannot plant a transceiver into
  another region's view. Edges and other records are taken from any cluster.

Failure isolation: the home cluster must answer at start (a node cannot register without it); every other
cluster is joined in the background and retried every ``RETRY_S`` while it is down, so one region's etcd
being down at start or later stops nothing but claims in that region. A cluster that goes away keeps its
last view (the etcd client's outage hold, Registry._hold), so live calls routed through its nodes go on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

from .base import SESSIONS_PREFIX, Claim, NodeRecord, Registry, RegistryUnavailable

log = logging.getLogger("voicemesh.registry")

CORE_ROLES = ("transceiver", "agent")
"""Roles whose record's region is the core region of the cluster that holds it."""
RETRY_S = 1.0
"""Seconds between attempts to join a region's cluster that did not answer."""


def claim_region(key: str) -> str | None:
    """The region whose cluster holds ``key``: the segment after ``sessions/`` for a session claim;
    None for any other key (node records and index claims live in the writer's home cluster)."""
    if not key.startswith(SESSIONS_PREFIX):
        return None
    region, sep, rest = key[len(SESSIONS_PREFIX):].partition("/")
    return region if region and sep and rest else None


class RegionalRegistry(Registry):
    """A registry over one cluster per core region: ``clusters`` maps region name to a Registry (not yet
    started) on that region's store; ``home`` is this node's region and must be one of them.

    ``up(region)`` says whether that region's cluster has been joined; ``foreign_records`` counts the node
    records ignored because a cluster held another region's transceiver or agent. Raises ValueError for a ``home``
    not in ``clusters``. Calls for a region without a cluster raise RegistryUnavailable.
    """

    def __init__(self, home: str, clusters: Mapping[str, Registry]) -> None:
        if home not in clusters:
            raise ValueError(f"home region {home!r} has no cluster (regions: {', '.join(sorted(clusters))})")
        super().__init__(lease_ttl_s=clusters[home].lease_ttl_s)
        self.home = home
        self.clusters = dict(clusters)
        self._foreign: set[tuple[str, str]] = set()
        self._source: dict[str, str] = {}
        self._joined: set[str] = set()
        self._joining: list[asyncio.Task[None]] = []
        for region, cluster in self.clusters.items():
            cluster.subscribe(functools.partial(self._merge, region))
        self.clusters[home].subscribe_lease(self._lease_renewed)
        self.clusters[home].subscribe_index_lost(self._index_lost)

    @property
    def foreign_records(self) -> int:
        """Distinct (record key, cluster) pairs ignored because the cluster held another region's transceiver
        or agent."""
        return len(self._foreign)

    def up(self, region: str) -> bool:
        """Whether ``region``'s cluster has been joined (started and not closed)."""
        return region in self._joined

    async def start(self) -> None:
        """Start the home cluster's client (raises RegistryUnavailable if it does not answer), then join
        every other region's cluster in the background; the view grows as they answer."""
        await self.clusters[self.home].start()
        self._joined.add(self.home)
        self._merge(self.home)
        self._joining = [asyncio.create_task(self._join(region), name=f"registry-join-{region}")
                         for region in sorted(self.clusters) if region != self.home]

    async def _join(self, region: str) -> None:
        cluster = self.clusters[region]
        while True:
            try:
                await cluster.start()
            except RegistryUnavailable as exc:
                log.warning("region %s registry not reachable, retrying in %.0f s: %s", region, RETRY_S, exc)
                await asyncio.sleep(RETRY_S)
                continue
            self._joined.add(region)
            log.info("joined region %s registry", region)
            self._merge(region)
            return

    async def close(self) -> None:
        for task in self._joining:
            task.cancel()
        await asyncio.gather(*self._joining, return_exceptions=True)
        self._joining = []
        await asyncio.gather(*(self.clusters[region].close() for region in sorted(self._joined)))
        self._joined.clear()

    def _merge(self, region: str) -> None:
        """Rebuild this region's share of the view from its cluster's view; notify if anything changed."""
        before = dict(self._view)
        own: dict[str, NodeRecord] = {}
        for node in self.clusters[region].nodes():
            if node.region == region or node.role not in CORE_ROLES:
                own[node.key] = node
            elif (node.key, region) not in self._foreign:
                self._foreign.add((node.key, region))
                log.warning("ignoring node record %s in region %s's registry: it belongs to region %s",
                            node.key, region, node.region)
        self._view = {key: node for key, node in self._view.items() if self._source.get(key) != region} | own
        self._source = {key: source for key, source in self._source.items() if source != region} | dict.fromkeys(
            own, region)
        if self._view != before:
            self._notify()

    def _cluster(self, key: str) -> Registry:
        region = claim_region(key) or self.home
        cluster = self.clusters.get(region)
        if cluster is None:
            raise RegistryUnavailable(f"no registry cluster for region {region!r} (key {key})")
        if region not in self._joined:
            raise RegistryUnavailable(f"region {region} registry not reachable yet (key {key})")
        return cluster

    async def register(self, node: NodeRecord) -> None:
        """Register ``node`` in the home region's cluster. Raises RegistryUnavailable, ValueError for a
        transceiver or agent of another core region (its record would be ignored there)."""
        if node.role in CORE_ROLES and node.region != self.home:
            raise ValueError(f"node {node.key} is not in this registry's home region {self.home}")
        await self.clusters[self.home].register(node)

    async def allocate_index(self, role: str, region: str, limit: int = 65535) -> int:
        """Allocate in the home region's cluster, whose client claims it again after a lost lease.
        Raises as Registry.allocate_index."""
        return await self.clusters[self.home].allocate_index(role, region, limit)

    async def claim(self, key: str, value: bytes) -> Claim:
        return await self._cluster(key).claim(key, value)

    async def release(self, claim: Claim) -> bool:
        return await self._cluster(claim.key).release(claim)

    async def get(self, key: str) -> bytes | None:
        return await self._cluster(key).get(key)
