"""The voicemesh registry: node membership on leases, session ownership claimed in
transactions, and an in-memory view of all nodes kept by a watch (DESIGN.md "Registry (etcd v3)").

The etcd client (``voicemesh.registry.etcd``, grpc and etcd3aio) loads only when an ``etcd://`` registry is
opened, so parts that only read records (the relay, the geo DNS answer choice) stay light.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    INDEX_PREFIX,
    NODES_PREFIX,
    SESSIONS_PREFIX,
    AlreadyClaimed,
    Claim,
    InvalidName,
    MalformedRecord,
    NodeRecord,
    NoFreeIndex,
    Registry,
    RegistryForbidden,
    RegistryTls,
    RegistryUnavailable,
    session_key,
)
from .memory import MemoryRegistry, MemoryStore, named_store

__all__ = [
    "INDEX_PREFIX",
    "NODES_PREFIX",
    "SESSIONS_PREFIX",
    "AlreadyClaimed",
    "BadRegistryUrl",
    "Claim",
    "InvalidName",
    "MalformedRecord",
    "MemoryRegistry",
    "MemoryStore",
    "NoFreeIndex",
    "NodeRecord",
    "Registry",
    "RegistryForbidden",
    "RegistryTls",
    "RegistryUnavailable",
    "named_store",
    "open_registry",
    "session_key",
]


class BadRegistryUrl(ValueError):
    """open_registry() got a URL it cannot use; ``reason`` is "scheme", "endpoints", "regions" (a per-region
    URL with an empty or repeated region, or without the home region) or "tls" (TLS settings for an in-memory
    registry)."""

    def __init__(self, reason: str, url: str) -> None:
        super().__init__(f"bad registry URL {url!r} ({reason}): use memory://[name], etcd://host:port[,host:port...]"
                         " or etcd://region=host:port[,...][;region=...]")
        self.reason = reason


def open_registry(url: str, *, lease_ttl_s: float = 5.0, tls: RegistryTls | None = None,
                  region: str = "") -> Registry:
    """A registry (not yet started) for ``url``.

    ``memory://`` is a private in-memory store; ``memory://name`` the process-wide store
    called name, shared by every registry opened with that URL; ``etcd://h1:p1,h2:p2``
    an etcd cluster, over TLS (with this client's certificate if it has one) when ``tls``
    is given. ``etcd://eu-central=h1:p1,h2:p2;us-east=h3:p3`` is one cluster per core region
    (registry/regions.py), ``region`` this node's home region among them ("" = the first named). Raises
    BadRegistryUrl (reason "regions" for a per-region URL with an empty or repeated region or a ``region``
    it does not name; also for ``tls`` with a memory URL).
    """
    scheme, _, rest = url.partition("://")
    if scheme == "etcd" and "=" in rest:
        from .regions import RegionalRegistry

        clusters: dict[str, Registry] = {}
        for part in rest.rstrip("/").split(";"):
            name, _, hosts = part.partition("=")
            if not name or name in clusters:
                raise BadRegistryUrl("regions", url)
            clusters[name] = open_registry(f"etcd://{hosts}", lease_ttl_s=lease_ttl_s, tls=tls)
        home = region or next(iter(clusters))
        if home not in clusters:
            raise BadRegistryUrl("regions", url)
        return RegionalRegistry(home, clusters)
    if scheme == "memory":
        if tls is not None:
            raise BadRegistryUrl("tls", url)
        return MemoryRegistry(named_store(rest) if rest else None, lease_ttl_s=lease_ttl_s)
    if scheme == "etcd":
        endpoints = [endpoint for endpoint in rest.rstrip("/").split(",") if endpoint]
        for endpoint in endpoints:
            parts = urlsplit("//" + endpoint)
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None or parts.path:
                raise BadRegistryUrl("endpoints", url)
        if not endpoints:
            raise BadRegistryUrl("endpoints", url)
        from .etcd import EtcdRegistry  # grpc and etcd3aio load only for an etcd URL

        return EtcdRegistry(endpoints, lease_ttl_s=lease_ttl_s, tls=tls)
    raise BadRegistryUrl("scheme", url)
