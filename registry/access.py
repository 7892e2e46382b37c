"""Who may write what in the registry: one etcd user per node, with a role granting exactly that node's keys.

Identity: client certificates. etcd started with ``--client-cert-auth`` takes the user name from the
common name (CN) of the client's certificate when auth is enabled, so a node's certificate is its
credential: no password sits in a config file or crosses the wire, a certificate expires by itself, and
rotation is a re-issue from the CA (same CN) with no change in etcd. Users with passwords would need a
secret per node in config and a token refresh in every client (etcd's Authenticate RPC; its tokens
expire after 5 minutes by default).

Users and what their role grants (etcd key-range permissions, etcd's "Role-based access control"):

| user (= certificate CN) | read | read and write |
| --- | --- | --- |
| ``edge/<region>/<node-id>`` | nodes, sessions | its node key; ``index/edge/<region>/`` |
| ``transceiver/<region>/<node-id>`` | nodes | its node key; ``index/transceiver/<region>/``; ``sessions/<region>/`` |
| ``agent/<region>/<node-id>`` | nodes | its node key |
| ``dns`` | nodes | nothing |
| ``root`` | everything (etcd's root role: sets up the rest, registry/etcd_auth.py) | everything |

Every key above is under ``/voicemesh/v1/``. The read of every node record comes from one shared role,
READER_ROLE.

One cluster per core region (registry/regions.py): every node has its user in every region's cluster, since
it reads them all, but writes only in its home region's: set up with ``cluster=<region>``, a cluster gives the
users of nodes homed elsewhere their role's grants as reads only. A transceiver's and an agent's home is their
region; an edge's is the core region it registers in (its ``home``: ``edge/<pop>/<node-id>@<home>``, from the
topology: the core region nearest its site by backbone RTT). So a stolen certificate writes in one cluster only.

What a stolen certificate still allows: rewriting that node's own record, and taking or
freeing index numbers of its own role and region (allocate_index needs the whole range of them); an
edge's also reads session claims (WHIP DELETE finds a session's owner there).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .base import NODES_PREFIX, SESSIONS_PREFIX, check_name, index_prefix, node_key, session_prefix

ROOT = "root"
"""The etcd user and role with every permission (etcd requires both before it enables auth)."""
READER_ROLE = "voicemesh-reader"
"""The role every voicemesh user has: read the node records (the view every part keeps)."""
DNS_USER = "dns"
"""The geo DNS servers' user: READER_ROLE and nothing else (they share it: they write nothing)."""
NODE_ROLES = ("edge", "transceiver", "agent")
"""Roles of nodes that register, each with a user per node."""


class Permission(enum.IntEnum):
    """etcd's authpb.Permission.Type."""

    READ = 0
    WRITE = 1
    READWRITE = 2


def prefix_end(prefix: str) -> str:
    """The exclusive end of the key range of every key starting with ``prefix`` (etcd's ``--prefix``):
    the prefix with its last character incremented (all prefixes here end in '/', so no carry)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class Grant:
    """One key-range permission: ``key`` alone when ``range_end`` is "", else [key, range_end)."""

    key: str
    range_end: str
    permission: Permission


@dataclass(frozen=True)
class Identity:
    """One etcd user: a node (role, region, node_id) or the shared DNS reader (role "dns", no region or id).

    ``user`` is the user name, the role name of its own grants, and the CN of its client certificate.
    ``home`` is, for an edge, the core region whose cluster it writes in ("" if not known; the other roles'
    home is their region, the dns reader writes nowhere). Raises InvalidName for a bad segment, ValueError
    for an unknown role or a ``home`` on another role than edge.
    """

    role: str
    region: str = ""
    node_id: str = ""
    home: str = ""

    def __post_init__(self) -> None:
        if self.home and self.role != "edge":
            raise ValueError(f"only an edge names its home region (a {self.role}'s is its region)")
        if self.home:
            check_name("region", self.home)
        if self.role == DNS_USER:
            if self.region or self.node_id:
                raise ValueError("the dns identity has no region or node id")
            return
        if self.role not in NODE_ROLES:
            raise ValueError(f"unknown role {self.role!r}: one of {', '.join((*NODE_ROLES, DNS_USER))}")
        check_name("region", self.region)
        check_name("node_id", self.node_id)

    def writes_in(self, cluster: str | None) -> bool:
        """Whether this node writes in the cluster of core region ``cluster`` (None: a single cluster, which
        every node writes in). Raises ValueError for an edge without ``home`` and a ``cluster``."""
        if cluster is None or self.role == DNS_USER:
            return True
        if self.role != "edge":
            return self.region == cluster
        if not self.home:
            raise ValueError(f"{self.user}: with one cluster per core region an edge needs its home region "
                             "(edge/<pop>/<node-id>@<home>)")
        return self.home == cluster

    @property
    def user(self) -> str:
        """``<role>/<region>/<node-id>``, or ``dns``."""
        return DNS_USER if self.role == DNS_USER else f"{self.role}/{self.region}/{self.node_id}"

    @classmethod
    def parse(cls, spec: str) -> Identity:
        """``<role>/<region>/<node-id>`` (any node role; an edge may add ``@<home>``) or ``dns``. Raises
        ValueError."""
        if spec == DNS_USER:
            return cls(DNS_USER)
        spec, _, home = spec.partition("@")
        parts = spec.split("/")
        if len(parts) != 3:
            raise ValueError(f"{spec!r}: expected <role>/<region>/<node-id>[@<home>] or dns")
        role, region, node_id = parts
        return cls(role, region, node_id, home)

    def grants(self, cluster: str | None = None) -> list[Grant]:
        """The permissions of this identity's own role (READER_ROLE's come on top) in the cluster of core
        region ``cluster`` (None: the one cluster), sorted by key: reads only where it does not write
        (``writes_in``). Raises ValueError as ``writes_in``."""
        if self.role == DNS_USER:
            return []
        if not self.writes_in(cluster):
            return [Grant(g.key, g.range_end, Permission.READ) for g in self.grants()]
        own = [Grant(node_key(self.role, self.region, self.node_id), "", Permission.READWRITE)]
        if self.role in ("edge", "transceiver"):
            prefix = index_prefix(self.role, self.region)
            own.append(Grant(prefix, prefix_end(prefix), Permission.READWRITE))
        if self.role == "edge":
            own.append(Grant(SESSIONS_PREFIX, prefix_end(SESSIONS_PREFIX), Permission.READ))
        if self.role == "transceiver":
            prefix = session_prefix(self.region)
            own.append(Grant(prefix, prefix_end(prefix), Permission.READWRITE))
        return sorted(own, key=lambda grant: grant.key)


READER_GRANTS = [Grant(NODES_PREFIX, prefix_end(NODES_PREFIX), Permission.READ)]
"""What READER_ROLE grants."""


def identities_from_topology(path: str) -> list[Identity]:
    """The identities of the nodes named in a topology file (infra/topology.json): an edge per
    ``edges[]`` entry (region = its site, node id = its id, home = the core region nearest its site by
    ``rtt_ms``, then by name, as the deploy and the lab home it), a transceiver ``trx-<region>`` per
    ``core_regions[]`` entry (the lab's naming), and the DNS reader. Raises OSError, ValueError."""
    with open(path, encoding="utf-8") as fh:
        topology = json.load(fh)
    try:
        cores = [(str(r["name"]), str(r["site"])) for r in topology.get("core_regions", [])]
        rtts = topology.get("rtt_ms", {})

        def home(site: str) -> str:
            def rtt(core_site: str) -> float:
                return 0.0 if core_site == site else float(rtts.get(f"{site}-{core_site}", rtts.get(f"{core_site}-{site}",
                                                                                                  "inf")))
            return min(cores, key=lambda core: (rtt(core[1]), core[0]))[0] if cores else ""

        edges = [Identity("edge", e["site"], e["id"], home(e["site"])) for e in topology.get("edges", [])]
        trxs = [Identity("transceiver", name, f"trx-{name}") for name, _ in cores]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: edges need id and site, core_regions need name and site ({exc})") from None
    return [*edges, *trxs, Identity(DNS_USER)]
