"""The etcd v3 registry: one kept-alive lease per process, node records and claims on it,
and a prefix watch that keeps the in-memory node view current.

Client: etcd3aio (the README's "Registry client: why etcd3aio"). It is native asyncio
``grpc.aio``, so it shares the event loop with our gRPC servers and OpenTelemetry; it takes
several endpoints (round-robin, retries on UNAVAILABLE), has a background lease keepalive,
and its watch resumes from its revision after a reconnect. ``etcd3`` needs process-wide
pure-Python protobuf, which slows the OTLP exporter down; ``aetcd`` takes a
single endpoint and leaves the keepalive to hand-written code.

etcd3aio behaviour this module relies on or works around:
- It retries Txn on UNAVAILABLE, so a claim can run twice; the second run fails its
  create-revision compare, and claim() counts "exists with my value" as a win.
- Its keepalive refreshes every max(1, ttl // 3) whole seconds, so a 1 s lease expires
  between refreshes: lease_ttl_s must be at least 2.
- Its keepalive only flags a lost lease (``alive`` turns False); we poll that flag,
  grant a new lease and register our node records again.
- On compaction etcd cancels the watch; we reload the view and watch again.
- Its keepalive waits on an unanswered request without a deadline, so a frozen etcd (or a
  partition that keeps TCP up) is noticed only when etcd answers again, by then with every
  lease that outlived its TTL revoked. A node deletion is therefore checked against our own
  lease (one LeaseTimeToLive): if ours is gone too, or was renewed within a lease TTL, the
  deletion comes from an outage and the record is held (Registry._hold) until its node
  registers again.
- After a new lease, an index claim another node holds is claimed again every second for INDEX_WAIT_LEASES
  lease TTLs, then given up (Registry.subscribe_index_lost). A lease restored from a snapshot does expire:
  etcd restores leases with their keys and, when a leader takes office, gives each its full TTL again, so a
  gone host's restored claim vanishes one TTL (plus an election) after the cluster is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

import grpc.aio
from etcd3aio import (
    Etcd3Client,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdUnauthenticatedError,
    prefix_range_end,
)
from etcd3aio._protobuf import Compare  # no public helper compares mod_revision
from etcd3aio.kv import KVService as KV

from .base import (
    NODES_PREFIX,
    AlreadyClaimed,
    Claim,
    NodeRecord,
    Registry,
    RegistryForbidden,
    RegistryTls,
    RegistryUnavailable,
)

log = logging.getLogger("voicemesh.registry")


def _log_failure(task: asyncio.Task[None]) -> None:
    """Log a background task that ended with an exception (as voicemesh.runtime.tasks.spawn does,
    which the registry may not import: it depends on nothing of ours but the wire layer)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed; the registry view or lease is no longer kept", task.get_name(), exc_info=exc)

def connect_client(endpoints: Sequence[str], tls: RegistryTls | None) -> Etcd3Client:
    """An etcd3aio client (not yet connected) for ``endpoints``, over TLS when ``tls`` is given."""
    if tls is None:
        return Etcd3Client(endpoints)
    return Etcd3Client(endpoints, ca_cert=tls.ca, cert_chain=tls.cert or None, cert_key=tls.key or None,
                       tls_server_name=tls.server_name or None)


@contextlib.contextmanager
def etcd_errors(endpoints: Sequence[str], operation: str, timeout_s: float) -> Iterator[None]:
    """Turn etcd3aio and gRPC failures inside the block into RegistryUnavailable, and etcd's refusals
    (permission denied, not authenticated) into RegistryForbidden; the message names ``operation``."""
    where = ",".join(endpoints)
    try:
        yield
    except TimeoutError as exc:
        raise RegistryUnavailable(f"etcd {operation} at {where} timed out after {timeout_s} s") from exc
    except grpc.aio.AioRpcError as exc:
        raise RegistryUnavailable(f"etcd {operation} at {where} failed: {exc.code().name} {exc.details()}") from exc
    except (EtcdPermissionDeniedError, EtcdUnauthenticatedError) as exc:
        raise RegistryForbidden(f"etcd {operation} at {where} refused: {exc}") from exc
    except EtcdError as exc:
        raise RegistryUnavailable(f"etcd {operation} at {where} failed: {exc}") from exc


_NODES_END = prefix_range_end(NODES_PREFIX)
_EVENT_PUT = 0  # mvccpb.Event.EventType: PUT = 0, DELETE = 1
_RETRY_S = 1.0
_LEASE_POLL_S = 0.2
"""How often the lease task reads etcd3aio's keepalive flag (a local read): a lost lease is renewed,
and our nodes registered again, within this of etcd3aio noticing."""
INDEX_WAIT_LEASES = 3
"""Lease TTLs during which an index claim another node holds after a new lease is claimed again (every
_RETRY_S) before it is given up: a claim restored from a snapshot lives one TTL after etcd is back."""


class EtcdRegistry(Registry):
    """Registry on an etcd v3 cluster reached at ``endpoints`` ("host:port" each).

    ``lease_ttl_s`` (>= 2, rounded up to whole seconds as etcd leases are) is how long our
    keys survive a dead process; ``timeout_s`` bounds each etcd call including its retries;
    ``tls`` turns on TLS (and this client's certificate, its etcd user when auth is on).
    Errors from etcd surface as RegistryUnavailable, a refused permission as RegistryForbidden.
    """

    def __init__(self, endpoints: Sequence[str], *, lease_ttl_s: float = 5.0, timeout_s: float = 2.0,
                 tls: RegistryTls | None = None) -> None:
        if not endpoints:
            raise ValueError("EtcdRegistry needs at least one endpoint")
        if lease_ttl_s < 2:
            raise ValueError(f"lease_ttl_s={lease_ttl_s}: etcd3aio refreshes leases every >= 1 s, use >= 2 s")
        super().__init__(lease_ttl_s=float(math.ceil(lease_ttl_s)))
        self._endpoints = list(endpoints)
        self._tls = tls
        self._ttl = math.ceil(lease_ttl_s)
        self._timeout_s = timeout_s
        self._client: Etcd3Client | None = None
        self._lease_id = 0
        self._registered: dict[str, NodeRecord] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._renewed_at = float("-inf")
        self._contested: dict[str, bytes] = {}  # index key -> owner, while another node holds our index
        self._contested_until = 0.0
        self._index_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client = connect_client(self._endpoints, self._tls)
        await self._client.connect()
        try:
            self._lease_id = await self._grant()
            revision = await self._load_view()
        except RegistryUnavailable:
            await self._client.close()
            self._client = None
            raise
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="registry-lease"),
            asyncio.create_task(self._watch_nodes(revision), name="registry-watch"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_failure)

    async def close(self) -> None:
        if self._client is None:
            return
        if self._index_task is not None:
            self._tasks.append(self._index_task)
            self._index_task = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._cancel_holds()
        assert self._client.lease is not None
        try:
            with self._errors("Lease.Revoke"):
                await self._client.lease.revoke(self._lease_id, timeout=self._timeout_s)
        except RegistryUnavailable as exc:
            log.warning("%s; our keys vanish when the lease expires (%d s)", exc, self._ttl)
        await self._client.close()
        self._client = None

    async def register(self, node: NodeRecord) -> None:
        self._registered[node.key] = node
        await self._put_node(node)

    async def claim(self, key: str, value: bytes) -> Claim:
        kv = self._kv()
        with self._errors(f"claim {key}"):
            response = await kv.txn(
                [KV.txn_compare_create_revision(key, 0)],
                [KV.txn_op_put(key, value, lease=self._lease_id)],
                [KV.txn_op_get(key)],
                timeout=self._timeout_s,
            )
        if response.succeeded:
            return Claim(key, value, response.header.revision)
        current = response.responses[0].response_range.kvs[0]
        if current.value == value:
            return Claim(key, value, current.mod_revision)
        raise AlreadyClaimed(key, current.value)

    async def get(self, key: str) -> bytes | None:
        kv = self._kv()
        with self._errors(f"get {key}"):
            response = await kv.get(key, timeout=self._timeout_s)
        return response.kvs[0].value if response.kvs else None

    async def release(self, claim: Claim) -> bool:
        """See Registry.release. A Txn that etcd3aio retried after it had already deleted
        the key reports False; the key is gone either way.
        """
        kv = self._kv()
        fence = Compare(result=Compare.EQUAL, target=Compare.MOD, key=claim.key.encode(), mod_revision=claim.revision)
        with self._errors(f"release {claim.key}"):
            response = await kv.txn([fence], [KV.txn_op_delete(claim.key)], timeout=self._timeout_s)
        return response.succeeded

    def _kv(self) -> KV:
        if self._client is None or self._client.kv is None:
            raise RuntimeError("EtcdRegistry.start() was not called")
        return self._client.kv

    def _errors(self, operation: str) -> contextlib.AbstractContextManager[None]:
        return etcd_errors(self._endpoints, operation, self._timeout_s)

    async def _grant(self) -> int:
        assert self._client is not None and self._client.lease is not None
        with self._errors("Lease.Grant"):
            response = await self._client.lease.grant(self._ttl, timeout=self._timeout_s)
        return response.ID

    async def _put_node(self, node: NodeRecord) -> None:
        kv = self._kv()
        with self._errors(f"register {node.key}"):
            await kv.put(node.key, node.to_json(), lease=self._lease_id, timeout=self._timeout_s)

    async def _load_view(self, *, hold_missing: bool = False) -> int:
        """Replace the view with a range read of all node keys; return that read's revision.
        ``hold_missing`` (a reload after the watch failed): records not read are held, not removed."""
        kv = self._kv()
        with self._errors(f"Range {NODES_PREFIX}"):
            response = await kv.get(NODES_PREFIX, range_end=_NODES_END, timeout=self._timeout_s)
        self._replace_view({kv.key.decode(): kv.value for kv in response.kvs}, hold_missing=hold_missing)
        return response.header.revision

    async def _outage_suspected(self) -> bool:
        """Whether node deletions seen now come from an outage that expired every lease: ours is gone too
        (LeaseTimeToLive answers a TTL <= 0, or etcd does not answer), or we renewed it within one TTL."""
        if asyncio.get_running_loop().time() - self._renewed_at < self._ttl:
            return True
        assert self._client is not None and self._client.lease is not None
        try:
            with self._errors("Lease.TimeToLive"):
                response = await self._client.lease.time_to_live(self._lease_id, timeout=self._timeout_s)
        except RegistryUnavailable:
            return True
        return response.TTL <= 0

    async def _watch_nodes(self, revision: int) -> None:
        """Follow node key events from ``revision`` + 1, so none is missed after the range read.

        etcd3aio reconnects the stream by itself; after a cancel (compaction) or any other
        failure we reload the view and watch from the new revision.
        """
        assert self._client is not None and self._client.watch is not None
        start: int | None = revision
        while True:
            try:
                if start is None:
                    start = await self._load_view(hold_missing=True)
                watch = self._client.watch.watch(NODES_PREFIX, range_end=_NODES_END, start_revision=start + 1)
                # etcd3aio annotates watch() as an AsyncIterator; it is an async generator (it has aclose).
                async with contextlib.aclosing(watch) as responses:  # type: ignore[type-var]
                    async for response in responses:
                        if response.canceled:
                            log.warning(
                                "node watch cancelled by etcd (compact revision %d, %s); reloading the view",
                                response.compact_revision,
                                response.cancel_reason,
                            )
                            break
                        outage = (any(event.type != _EVENT_PUT for event in response.events)
                                  and await self._outage_suspected())
                        changed = False
                        for event in response.events:
                            key = event.kv.key.decode()
                            if event.type == _EVENT_PUT:
                                changed |= self._apply(key, event.kv.value)
                            elif outage:
                                self._hold(key)
                            else:
                                changed |= self._apply(key, None)
                        if changed:
                            self._notify()
                start = None
            except (RegistryUnavailable, EtcdError, grpc.aio.AioRpcError) as exc:
                log.warning("node watch failed (%s); reloading in %.0f s", exc, _RETRY_S)
                start = None
                await asyncio.sleep(_RETRY_S)

    async def _keep_lease(self) -> None:
        """Keep our lease alive; if etcd reports it lost, get a new one and re-register."""
        assert self._client is not None and self._client.lease is not None
        while True:
            async with self._client.lease.keep_alive_context(self._lease_id, self._ttl) as keepalive:
                while keepalive.alive:
                    await asyncio.sleep(_LEASE_POLL_S)
            log.error(
                "lease %x is gone (revoked, or etcd unreachable for more than %d s): our keys vanished; re-registering",
                self._lease_id,
                self._ttl,
            )
            await self._renew_lease()

    async def _renew_lease(self) -> None:
        """Grant a new lease, put our node records and index claims on it; retry until it works.

        Session claims are not renewed here: they died with the old lease and their owners'
        fencing revisions are stale; lease subscribers (subscribe_lease) claim them again. An index claim
        another node holds is left to _reclaim_indexes (our records stay registered meanwhile).
        """
        while True:
            try:
                self._lease_id = await self._grant()
                for node in list(self._registered.values()):
                    await self._put_node(node)
                for key, token in list(self._indexes.items()):
                    try:
                        await self.claim(key, token)
                    except AlreadyClaimed as exc:
                        self._contest(key, exc.owner)
                    else:
                        self._contested.pop(key, None)
                log.info("new lease %x; re-registered %d node records", self._lease_id, len(self._registered))
                self._renewed_at = asyncio.get_running_loop().time()
                self._lease_renewed()
                return
            except RegistryUnavailable as exc:
                log.warning("lease renewal failed (%s); retrying in %.0f s", exc, _RETRY_S)
                await asyncio.sleep(_RETRY_S)

    def _contest(self, key: str, owner: bytes) -> None:
        """Another node holds our index ``key``: claim it again in the background until INDEX_WAIT_LEASES lease
        TTLs after it was first found held (a renewal meanwhile does not extend that)."""
        if not self._contested:
            self._contested_until = asyncio.get_running_loop().time() + INDEX_WAIT_LEASES * self._ttl
        self._contested[key] = owner
        log.warning("index %s is held by another node (%r) after our lease was renewed; claiming it again for "
                    "up to %d s", key, owner, INDEX_WAIT_LEASES * self._ttl)
        if self._index_task is None or self._index_task.done():
            self._index_task = asyncio.create_task(self._reclaim_indexes(), name="registry-index")
            self._index_task.add_done_callback(_log_failure)

    async def _reclaim_indexes(self) -> None:
        """Claim every contested index again each _RETRY_S; at the deadline give up those still held: drop them
        from our indexes (never claimed again) and tell the index-lost subscribers."""
        loop = asyncio.get_running_loop()
        while self._contested:
            await asyncio.sleep(_RETRY_S)
            for key in sorted(self._contested):
                try:
                    await self.claim(key, self._indexes[key])
                except AlreadyClaimed as exc:
                    self._contested[key] = exc.owner
                    continue
                except RegistryUnavailable as exc:
                    log.warning("index %s not claimed again: %s", key, exc)
                    continue
                del self._contested[key]
                log.info("index %s claimed again", key)
            if self._contested and loop.time() >= self._contested_until:
                for key, owner in sorted(self._contested.items()):
                    del self._indexes[key]
                    log.error("lost index %s: another node (%r) has held it for %d s since our lease was renewed; "
                              "this node must not go on with it", key, owner, INDEX_WAIT_LEASES * self._ttl)
                    self._index_lost(key)
                self._contested.clear()
