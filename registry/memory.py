"""An embedded, in-process registry for the single-process quick start and for unit tests.

MemoryStore mimics the part of etcd the registry uses: a key space with monotonically
increasing revisions, leases (revoking one deletes its keys) and watchers. Several
MemoryRegistry instances sharing one store see each other, like processes sharing etcd.
Leases never expire here: a store lives and dies with its process.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from .base import NODES_PREFIX, AlreadyClaimed, Claim, NodeRecord, Registry

Watcher = Callable[[str, "bytes | None"], None]


@dataclass(frozen=True)
class _Entry:
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


class MemoryStore:
    """An etcd-like key space in memory: every write bumps ``revision`` (starting at 1),
    keys carry the lease they were written with, watchers see every put and delete.
    """

    def __init__(self) -> None:
        self.revision = 0
        self._entries: dict[str, _Entry] = {}
        self._lease_ids = itertools.count(1)
        self._watchers: list[Watcher] = []

    def grant(self) -> int:
        """A new lease id."""
        return next(self._lease_ids)

    def revoke(self, lease: int) -> None:
        """Delete every key attached to ``lease``."""
        for key in [key for key, entry in self._entries.items() if entry.lease == lease]:
            self.delete(key)

    def get(self, key: str) -> _Entry | None:
        return self._entries.get(key)

    def range(self, prefix: str) -> dict[str, bytes]:
        """Values of all keys starting with ``prefix``."""
        return {key: entry.value for key, entry in self._entries.items() if key.startswith(prefix)}

    def put(self, key: str, value: bytes, lease: int) -> int:
        """Write ``key`` and return the new revision (its mod revision)."""
        self.revision += 1
        old = self._entries.get(key)
        create_revision = old.create_revision if old is not None else self.revision
        self._entries[key] = _Entry(value, create_revision, self.revision, lease)
        self._emit(key, value)
        return self.revision

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        if self._entries.pop(key, None) is None:
            return False
        self.revision += 1
        self._emit(key, None)
        return True

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher(key, value)`` after each put, ``watcher(key, None)`` after each delete."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.remove(watcher)

    def _emit(self, key: str, value: bytes | None) -> None:
        for watcher in list(self._watchers):
            watcher(key, value)


_named_stores: dict[str, MemoryStore] = {}


def named_store(name: str) -> MemoryStore:
    """The process-wide MemoryStore called ``name``, created on first use."""
    return _named_stores.setdefault(name, MemoryStore())


class MemoryRegistry(Registry):
    """Registry on a MemoryStore (a private one unless ``store`` is given).

    Same semantics as EtcdRegistry, except that writes are visible to every instance on
    the store at once and the lease never expires (close() revokes it).
    """

    def __init__(self, store: MemoryStore | None = None, *, lease_ttl_s: float = 5.0) -> None:
        super().__init__(lease_ttl_s=lease_ttl_s)
        self.store = store if store is not None else MemoryStore()
        self._lease = 0

    async def start(self) -> None:
        self._lease = self.store.grant()
        self.store.watch(self._on_change)
        self._replace_view(self.store.range(NODES_PREFIX))

    async def close(self) -> None:
        if not self._lease:
            return
        self.store.unwatch(self._on_change)
        self.store.revoke(self._lease)
        self._lease = 0

    async def register(self, node: NodeRecord) -> None:
        self.store.put(node.key, node.to_json(), self._started_lease())

    async def claim(self, key: str, value: bytes) -> Claim:
        lease = self._started_lease()
        entry = self.store.get(key)
        if entry is None:
            return Claim(key, value, self.store.put(key, value, lease))
        if entry.value == value:
            return Claim(key, value, entry.mod_revision)
        raise AlreadyClaimed(key, entry.value)

    async def get(self, key: str) -> bytes | None:
        entry = self.store.get(key)
        return None if entry is None else entry.value

    async def release(self, claim: Claim) -> bool:
        self._started_lease()
        entry = self.store.get(claim.key)
        if entry is None or entry.mod_revision != claim.revision:
            return False
        return self.store.delete(claim.key)

    def _started_lease(self) -> int:
        if not self._lease:
            raise RuntimeError("MemoryRegistry.start() was not called")
        return self._lease

    def _on_change(self, key: str, value: bytes | None) -> None:
        if key.startswith(NODES_PREFIX) and self._apply(key, value):
            self._notify()
