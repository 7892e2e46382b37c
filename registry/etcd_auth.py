"""Sets up etcd's users and roles for voicemesh (registry/access.py) and turns etcd's auth on, through
etcd's Auth API (etcd3aio's AuthService): ``voicemesh registry init`` and ``voicemesh registry add-node``; and
takes a retired node's user and role away again (``voicemesh registry remove-node``).

Run it with the root user's client certificate (CN ``root``) against an etcd started with
``--client-cert-auth --trusted-ca-file``: before auth is on, etcd lets any client with a certificate
from that CA do this; after, only root may. Every step is idempotent: roles, users and grants that
exist are kept, a role's permissions are made exactly its grants (extra ones are revoked), users not
in the list are left alone (other nodes added one by one), and enabling auth again is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field

import grpc
from etcd3aio import Etcd3Client
from etcd3aio.auth import PermissionType

from .access import NODE_ROLES, READER_GRANTS, READER_ROLE, ROOT, Grant, Identity
from .base import RegistryTls
from .etcd import connect_client, etcd_errors


@dataclass
class AccessReport:
    """What ensure_access changed: names of the users and roles it created, and the roles whose
    permissions it changed (all empty on a second run with the same identities)."""

    users_created: list[str] = field(default_factory=list)
    roles_created: list[str] = field(default_factory=list)
    roles_updated: list[str] = field(default_factory=list)


class _Setup:
    """One root session on etcd's Auth API: ``users`` and ``roles`` as listed when it opened."""

    def __init__(self, client: Etcd3Client, endpoints: Sequence[str], timeout_s: float) -> None:
        assert client.auth is not None
        self.auth = client.auth
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.report = AccessReport()
        self.users: set[str] = set()
        self.roles: set[str] = set()

    def errors(self, operation: str):
        return etcd_errors(self.endpoints, operation, self.timeout_s)

    async def role(self, name: str, grants: Sequence[Grant]) -> None:
        """Create role ``name`` if missing and make its permissions exactly ``grants``."""
        if name not in self.roles:
            with self.errors(f"Auth.RoleAdd {name}"):
                if await _changed(self.auth.role_add(name, timeout=self.timeout_s), "already exists"):
                    self.report.roles_created.append(name)
        with self.errors(f"Auth.RoleGet {name}"):
            current = (await self.auth.role_get(name, timeout=self.timeout_s)).perm
        have = {(p.key.decode(), p.range_end.decode()): int(p.permType) for p in current}
        want = {(g.key, g.range_end): int(g.permission) for g in grants}
        changed = False
        for key, range_end in have.keys() - want.keys():
            with self.errors(f"Auth.RoleRevokePermission {name} {key}"):
                changed |= await _changed(self.auth.role_revoke_permission(name, key, range_end or None,
                                                                           timeout=self.timeout_s), "not granted")
        for (key, range_end), permission in want.items():
            if have.get((key, range_end)) != permission:
                with self.errors(f"Auth.RoleGrantPermission {name} {key}"):
                    await self.auth.role_grant_permission(name, key, range_end or None,
                                                          perm_type=PermissionType(permission),
                                                          timeout=self.timeout_s)
                changed = True
        if changed and name not in self.report.roles_created:
            self.report.roles_updated.append(name)

    async def user(self, name: str, roles: Sequence[str]) -> None:
        """Create user ``name`` (no password: it authenticates with its certificate) if missing; grant ``roles``."""
        if name not in self.users:
            with self.errors(f"Auth.UserAdd {name}"):
                if await _changed(self.auth.user_add(name, no_password=True, timeout=self.timeout_s), "already exists"):
                    self.report.users_created.append(name)
        with self.errors(f"Auth.UserGet {name}"):
            has = set((await self.auth.user_get(name, timeout=self.timeout_s)).roles)
        for role in roles:
            if role not in has:
                with self.errors(f"Auth.UserGrantRole {name} {role}"):
                    await self.auth.user_grant_role(name, role, timeout=self.timeout_s)


async def ensure_access(endpoints: Sequence[str], tls: RegistryTls, identities: Sequence[Identity], *,
                        cluster: str | None = None, timeout_s: float = 5.0) -> AccessReport:
    """Make sure etcd at ``endpoints`` has the root user, READER_ROLE, and a role and user per identity
    with exactly its grants, then enable auth. ``cluster``: the core region this etcd is the cluster of,
    where only the nodes homed there write (Identity.grants); None for a registry of one cluster. ``tls``
    must carry root's client certificate (once auth is on). Raises ValueError (an edge without its home,
    with ``cluster``) before any change, RegistryForbidden (not root, once auth is on), RegistryUnavailable.
    """
    grants = {identity.user: identity.grants(cluster) for identity in identities}
    async with _session(endpoints, tls, timeout_s) as setup:
        await setup.user(ROOT, [ROOT])
        await setup.role(READER_ROLE, READER_GRANTS)
        for identity in identities:
            own = grants[identity.user]
            if own:
                await setup.role(identity.user, own)
            await setup.user(identity.user, [identity.user, READER_ROLE] if own else [READER_ROLE])
        with setup.errors("Auth.AuthEnable"):
            await setup.auth.auth_enable(timeout=timeout_s)
        return setup.report


@contextlib.asynccontextmanager
async def _session(endpoints: Sequence[str], tls: RegistryTls, timeout_s: float) -> AsyncIterator[_Setup]:
    """A connected _Setup with etcd's users and roles listed; the client is closed on the way out."""
    client = connect_client(endpoints, tls)
    await client.connect()
    try:
        setup = _Setup(client, endpoints, timeout_s)
        with setup.errors("Auth.UserList"):
            setup.users = set((await setup.auth.user_list(timeout=timeout_s)).users)
        with setup.errors("Auth.RoleList"):
            setup.roles = set((await setup.auth.role_list(timeout=timeout_s)).roles)
        yield setup
    finally:
        await client.close()


async def _changed(change: Awaitable[object], already: str) -> bool:
    """Await one Auth change: False if etcd refused it as done already (its FAILED_PRECONDITION message
    contains ``already``: another member's registrar, run at the same time, made it first), True once made."""
    try:
        await change
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and already in (exc.details() or ""):
            return False
        raise
    return True


@dataclass
class RemovalReport:
    """What remove_access deleted: names of the users and roles (both empty on a second run)."""

    users_deleted: list[str] = field(default_factory=list)
    roles_deleted: list[str] = field(default_factory=list)


async def remove_access(endpoints: Sequence[str], tls: RegistryTls, identities: Sequence[Identity], *,
                        timeout_s: float = 5.0) -> RemovalReport:
    """Delete each node identity's etcd user and its own role from etcd at ``endpoints``, where they exist
    (idempotent): a retired node's certificate, valid until it expires, then reads and writes nothing, not
    even its own node key or, for a transceiver, its region's session claims. Its keys are left to their
    leases. ``tls`` must carry root's client certificate once auth is on. Raises ValueError for an identity
    that is not a node's (the DNS servers share one user) before any change, RegistryForbidden (not root),
    RegistryUnavailable."""
    for identity in identities:
        if identity.role not in NODE_ROLES:
            raise ValueError(f"only a node's user can be removed, not {identity.user!r} (shared by every "
                             f"{identity.role} server)")
    report = RemovalReport()
    async with _session(endpoints, tls, timeout_s) as setup:
        for name in (identity.user for identity in identities):
            if name in setup.users:
                with setup.errors(f"Auth.UserDelete {name}"):
                    if await _changed(setup.auth.user_delete(name, timeout=timeout_s), "not found"):
                        report.users_deleted.append(name)
            if name in setup.roles:
                with setup.errors(f"Auth.RoleDelete {name}"):
                    if await _changed(setup.auth.role_delete(name, timeout=timeout_s), "not found"):
                        report.roles_deleted.append(name)
    return report
