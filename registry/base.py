"""The registry contract: node records, session claims and the abstract Registry that the
etcd and in-memory stores implement (DESIGN.md "Registry (etcd v3)").

Key space (all under one version prefix so a v2 layout can live beside it):
``/voicemesh/v1/nodes/<role>/<region>/<node_id>`` holds a NodeRecord as JSON,
``/voicemesh/v1/sessions/<region>/<session_id>`` a session claim (the owner's region in the key, so
etcd's key-range permissions can give each region's transceivers its own claims, registry/access.py), and
``/voicemesh/v1/index/<role>/<region>/<n>`` a claimed small node index.
Every key a registry writes is attached to its one lease, so it vanishes with the process.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("voicemesh.registry")

PREFIX = "/voicemesh/v1/"
NODES_PREFIX = PREFIX + "nodes/"
SESSIONS_PREFIX = PREFIX + "sessions/"
INDEX_PREFIX = PREFIX + "index/"


class InvalidName(ValueError):
    """A key segment (role, region, node_id, session_id) is empty or contains '/'.

    ``reason`` is "empty_name" or "slash_in_name", usable as a counter label.
    """

    def __init__(self, reason: str, field: str, value: str) -> None:
        super().__init__(f"{field}={value!r}: {reason.replace('_', ' ')}")
        self.reason = reason


class MalformedRecord(ValueError):
    """A stored node record is not a JSON object with the NodeRecord fields.

    ``reason`` is "json" (not a JSON object) or "fields" (missing or mistyped fields).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"malformed node record ({reason}): {detail}")
        self.reason = reason


class AlreadyClaimed(Exception):
    """The key is held by someone else; ``owner`` is its current value (bytes)."""

    def __init__(self, key: str, owner: bytes) -> None:
        super().__init__(f"{key} is already claimed by {owner!r}")
        self.key = key
        self.owner = owner


class RegistryUnavailable(Exception):
    """The registry's store could not be reached or refused the request; the message says which call failed."""


class RegistryForbidden(RegistryUnavailable):
    """The store refused the request for this client's credentials (etcd auth: permission denied or not
    authenticated): a wrong key for this node's role, or a certificate the store does not know. Not transient."""


class NoFreeIndex(Exception):
    """Every index 1..limit of (role, region) is claimed."""

    def __init__(self, role: str, region: str, limit: int) -> None:
        super().__init__(f"no free index in 1..{limit} for {role}/{region}")


def check_name(field: str, value: str) -> str:
    """Return ``value`` if it can be one segment of a registry key, else raise InvalidName."""
    if not value:
        raise InvalidName("empty_name", field, value)
    if "/" in value:
        raise InvalidName("slash_in_name", field, value)
    return value


def node_key(role: str, region: str, node_id: str) -> str:
    """``/voicemesh/v1/nodes/<role>/<region>/<node_id>``. Raises InvalidName."""
    return f"{NODES_PREFIX}{check_name('role', role)}/{check_name('region', region)}/{check_name('node_id', node_id)}"


def index_prefix(role: str, region: str) -> str:
    """``/voicemesh/v1/index/<role>/<region>/``: the keys allocate_index claims under. Raises InvalidName."""
    return f"{INDEX_PREFIX}{check_name('role', role)}/{check_name('region', region)}/"


def session_prefix(region: str) -> str:
    """``/voicemesh/v1/sessions/<region>/``: the claims of one region's sessions. Raises InvalidName."""
    return f"{SESSIONS_PREFIX}{check_name('region', region)}/"


def session_key(region: str, session_id: str) -> str:
    """``/voicemesh/v1/sessions/<region>/<session_id>``. Raises InvalidName."""
    return session_prefix(region) + check_name("session_id", session_id)


@dataclass(frozen=True)
class RegistryTls:
    """TLS to etcd: ``ca`` the PEM CA certificate(s) that signed the etcd servers' certificates; ``cert`` and
    ``key`` this client's PEM certificate and private key (both or neither; with etcd auth on, the
    certificate's common name is the etcd user, registry/access.py); ``server_name`` the name to check the
    servers' certificates against instead of the endpoint address (needed with several endpoints whose
    certificates share one DNS name).
    """

    ca: bytes
    cert: bytes = b""
    key: bytes = b""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("a registry client certificate needs its key, and a key its certificate")

    @classmethod
    def from_files(cls, ca: str, cert: str = "", key: str = "", server_name: str = "") -> RegistryTls:
        """Read the PEM files at the given paths ("" = none). Raises OSError, ValueError."""

        def read(path: str) -> bytes:
            if not path:
                return b""
            with open(path, "rb") as fh:
                return fh.read()

        return cls(read(ca), read(cert), read(key), server_name)


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float), "bool": bool}


@dataclass(frozen=True)
class NodeRecord:
    """One node's membership record, stored as JSON under ``key`` and attached to the node's lease.

    ``index`` is a small id unique per (role, region) (u16, 0 = not yet allocated, see
    Registry.allocate_index); ``region_id`` the u8 region carried in routing tokens;
    ``http`` the base URL of its HTTP API; ``backbone`` the "ip:port" of its backbone UDP
    socket; ``public_relay`` (edges) the "ip:port" of the public relay socket and ``public_relay_tcp``
    its ICE-TCP one ("" if none), ``backbone_batch`` (edges) whether it reads BATCH backbone frames
    (voicemesh/wire/frame.py; transceivers send them only to an edge that says so); ``grpc``
    (agents) the "host:port" transceivers connect to; ``capacity``
    and ``load`` count sessions; ``lat``/``lon`` are degrees. Raises InvalidName if role,
    region or node_id cannot be a key segment.
    """

    role: str
    region: str
    node_id: str
    index: int = 0
    region_id: int = 0
    http: str = ""
    backbone: str = ""
    public_relay: str = ""
    public_relay_tcp: str = ""
    backbone_batch: bool = False
    grpc: str = ""
    capacity: int = 0
    load: int = 0
    draining: bool = False
    lat: float = 0.0
    lon: float = 0.0

    def __post_init__(self) -> None:
        check_name("role", self.role)
        check_name("region", self.region)
        check_name("node_id", self.node_id)

    @property
    def key(self) -> str:
        """``/voicemesh/v1/nodes/<role>/<region>/<node_id>``."""
        return node_key(self.role, self.region, self.node_id)

    def to_json(self) -> bytes:
        """The record as compact UTF-8 JSON, one key per field."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeRecord:
        """Parse a record written by to_json. Unknown keys are ignored (records may grow);
        missing optional fields take their defaults. Raises MalformedRecord or InvalidName.
        """
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise MalformedRecord("json", str(exc)) from None
        if not isinstance(obj, dict):
            raise MalformedRecord("json", f"expected an object, got {type(obj).__name__}")
        known: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in obj:
                value = obj[field.name]
                if not isinstance(value, _JSON_TYPES[str(field.type)]):  # annotations are strings (PEP 563)
                    raise MalformedRecord("fields", f"{field.name} must be {field.type}, got {value!r}")
                known[field.name] = value
        try:
            return cls(**known)
        except TypeError as exc:
            raise MalformedRecord("fields", str(exc)) from None


@dataclass(frozen=True)
class Claim:
    """A key held by this registry: ``revision`` is the key's mod revision, the fencing token
    (a later claim of the same key always has a higher revision).
    """

    key: str
    value: bytes
    revision: int


class Registry(abc.ABC):
    """Node membership and ownership claims, with an in-memory view of all node records.

    One lease per registry (per process): register() and claim() attach their keys to it,
    so they vanish when the process dies (after lease_ttl_s) or closes (at once).
    nodes() reads the view that a watch keeps current; it never does I/O.

    When the store was out of reach for longer than the lease TTL, every lease expires at once, its
    own too, and the nodes (alive all along) register again within a lease TTL. A record deleted then
    is *held*: it stays in the view for ``lease_ttl_s`` (counted in ``held_records``), and leaves only
    if its node has not registered again by then. So an outage of the store never empties the view of
    edges, DNS servers and transceivers, while a node that dies alone leaves at once.

    An index this registry allocated is claimed again on the new lease. If another node holds it then (it took
    the index while our lease was gone, or a restored etcd snapshot brought back the claim of a host gone
    since, alive again for one lease TTL), the registry keeps trying for a few lease TTLs; if it still cannot,
    the index is lost: index-lost subscribers (subscribe_index_lost) are called and the node must stop using
    it (the CLI drains and exits, so the service manager starts it again with a free index).
    """

    def __init__(self, *, lease_ttl_s: float) -> None:
        self._lease_ttl_s = lease_ttl_s
        self._view: dict[str, NodeRecord] = {}
        self._subscribers: list[Callable[[], None]] = []
        self._lease_subscribers: list[Callable[[], None]] = []
        self._index_lost_subscribers: list[Callable[[str], None]] = []
        self._indexes: dict[str, bytes] = {}
        self._held: dict[str, asyncio.TimerHandle] = {}
        self.held_records = 0

    @property
    def lease_ttl_s(self) -> float:
        """Seconds our keys outlive this process if it dies without close()."""
        return self._lease_ttl_s

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, grant the lease, keep it alive and load the node view (populated on return).

        Raises RegistryUnavailable.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the keepalive and the watch and revoke the lease, so our keys vanish at once."""

    @abc.abstractmethod
    async def register(self, node: NodeRecord) -> None:
        """Put ``node`` under node.key on our lease; call again to update it (load, draining).

        Raises RegistryUnavailable.
        """

    @abc.abstractmethod
    async def claim(self, key: str, value: bytes) -> Claim:
        """Create ``key`` = ``value`` on our lease if the key does not exist (create revision 0).

        If it exists with exactly ``value`` (a retried request already won), that is a win
        too: make ``value`` unique per claimant. Raises AlreadyClaimed with the current
        value otherwise, RegistryUnavailable if the store cannot be reached.
        """

    @abc.abstractmethod
    async def release(self, claim: Claim) -> bool:
        """Delete claim.key only if its mod revision is still claim.revision (fencing).

        Returns whether it deleted the key. Raises RegistryUnavailable.
        """

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The current value of ``key``, or None if it does not exist. Raises RegistryUnavailable."""

    async def session_owner(self, session_id: str) -> str | None:
        """The node id that holds the claim on ``session_id``, or None if no one does.

        Claims are keyed by the owner's region, which a session id does not carry: this reads the
        claim key of every region that has a transceiver in the view (one get per region, concurrently).
        A region whose store does not answer does not hide a claim found in another: RegistryUnavailable
        is raised only when no claim was found and some region did not answer.
        Raises InvalidName, MalformedRecord, RegistryUnavailable.
        """
        check_name("session_id", session_id)
        regions = sorted({node.region for node in self.nodes("transceiver")})
        results = await asyncio.gather(*(self.get(session_key(region, session_id)) for region in regions),
                                       return_exceptions=True)
        value = next((v for v in results if isinstance(v, bytes)), None)
        if value is None:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return None
        try:
            return str(json.loads(value)["owner"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedRecord("json", f"session claim {session_id}: {exc}") from None

    async def claim_session(self, session_id: str, owner: NodeRecord) -> Claim:
        """Claim ``/voicemesh/v1/sessions/<owner.region>/<session_id>`` for ``owner``.

        The value is JSON ``{"owner": node_id, "region": region, "claim": <64 random bits hex>}``;
        the random claim token makes each claimant's value unique. Raises InvalidName,
        AlreadyClaimed (``owner`` attribute = the holder's JSON), RegistryUnavailable.
        """
        key = session_key(owner.region, session_id)
        value = {"owner": owner.node_id, "region": owner.region, "claim": secrets.token_hex(8)}
        return await self.claim(key, json.dumps(value, separators=(",", ":")).encode())

    async def allocate_index(self, role: str, region: str, limit: int = 65535) -> int:
        """Claim the lowest free ``/voicemesh/v1/index/<role>/<region>/<n>``, n in 1..limit, and return n.

        The claim lives on our lease. Raises NoFreeIndex, InvalidName, RegistryUnavailable.
        """
        prefix = index_prefix(role, region)
        token = secrets.token_hex(8).encode()
        for n in range(1, limit + 1):
            try:
                await self.claim(prefix + str(n), token)
            except AlreadyClaimed:
                continue
            self._indexes[prefix + str(n)] = token
            return n
        raise NoFreeIndex(role, region, limit)

    def nodes(self, role: str | None = None) -> list[NodeRecord]:
        """All node records in the view (of ``role`` if given), sorted by key. No I/O."""
        return [node for key, node in sorted(self._view.items()) if role is None or node.role == role]

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously, in the event loop) after each change of the view."""
        self._subscribers.append(callback)

    def subscribe_lease(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously, in the event loop) after the registry lost its lease (the store
        was out of reach longer than ``lease_ttl_s``), got a new one and registered its nodes again. Every
        claim made before is gone: claim again what is still held (a new claim has a new fencing revision)."""
        self._lease_subscribers.append(callback)

    def subscribe_index_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` (synchronously, in the event loop) once this registry gave up claiming again,
        after a lost lease, the index key ``key`` it had allocated (``/voicemesh/v1/index/<role>/<region>/<n>``):
        another node holds it. The node must not go on with that index (routing tokens and frames carry it, and
        the holder's records carry it too): stop taking new sessions, drain and exit."""
        self._index_lost_subscribers.append(callback)

    def _index_lost(self, key: str) -> None:
        for callback in list(self._index_lost_subscribers):
            try:
                callback(key)
            except Exception:
                log.exception("registry index-lost subscriber %r failed", callback)

    def _lease_renewed(self) -> None:
        for callback in list(self._lease_subscribers):
            try:
                callback()
            except Exception:
                log.exception("registry lease subscriber %r failed", callback)

    def _hold(self, key: str) -> None:
        """Keep the record under ``key`` in the view for ``lease_ttl_s`` though the store deleted it (an outage
        expired its lease); it leaves then unless a put refreshed it. Call from the event loop."""
        if key not in self._view or key in self._held:
            return
        self.held_records += 1
        log.warning("holding node record %s for %.0f s: its lease expired in a registry outage", key,
                    self._lease_ttl_s)
        self._held[key] = asyncio.get_running_loop().call_later(self._lease_ttl_s, self._release_held, key)

    def _release_held(self, key: str) -> None:
        self._held.pop(key, None)
        if self._view.pop(key, None) is not None:
            log.warning("node record %s did not come back after a registry outage; removed", key)
            self._notify()

    def _apply(self, key: str, value: bytes | None) -> bool:
        """Apply one put (``value``) or delete (None) of a node key to the view; return whether it changed.
        A put ends a hold on the key."""
        if (held := self._held.pop(key, None)) is not None:
            held.cancel()
        if value is None:
            return self._view.pop(key, None) is not None
        try:
            node = NodeRecord.from_json(value)
        except ValueError as exc:
            log.warning("ignoring node record %s: %s", key, exc)
            return self._view.pop(key, None) is not None
        if self._view.get(key) == node:
            return False
        self._view[key] = node
        return True

    def _replace_view(self, items: dict[str, bytes], *, hold_missing: bool = False) -> None:
        """Rebuild the view from a full listing of node keys; notify subscribers if it changed.
        ``hold_missing``: records not in the listing are held (``_hold``) rather than removed."""
        before = dict(self._view)
        for key in set(self._view) - set(items):
            if hold_missing:
                self._hold(key)
            elif (held := self._held.pop(key, None)) is not None:
                held.cancel()
        self._view = {key: node for key, node in self._view.items() if key in self._held}
        for key, value in items.items():
            self._apply(key, value)
        if self._view != before:
            self._notify()

    def _cancel_holds(self) -> None:
        for handle in self._held.values():
            handle.cancel()
        self._held.clear()

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                log.exception("registry subscriber %r failed", callback)
