"""EtcdRegistry on a real 3-member etcd cluster: killing the leader during a storm of session claims loses and
doubles none (each claim retried with the same value until etcd answers, as registry/etcd.py's claim allows)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from etcd3aio import Etcd3Client, prefix_range_end

from voicemesh.registry import AlreadyClaimed, RegistryUnavailable
from voicemesh.registry.base import session_key, session_prefix
from voicemesh.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.integration

SESSIONS = 300
"""Session ids claimed by both claimants."""


async def claim_until_answered(registry: EtcdRegistry, session_id: str, value: bytes) -> bool:
    """Claim ``session_id`` with ``value``, retrying while etcd is unavailable; whether this claimant won."""
    while True:
        try:
            await registry.claim(session_key("eu", session_id), value)
            return True
        except AlreadyClaimed:
            return False
        except RegistryUnavailable:
            await asyncio.sleep(0.05)


async def test_killing_the_leader_during_a_claim_storm_loses_and_doubles_no_claim(etcd_cluster) -> None:
    claimants = [EtcdRegistry(etcd_cluster.endpoints, timeout_s=1.0) for _ in range(2)]
    for registry in claimants:
        await registry.start()
    leader = etcd_cluster.leader()
    assert leader >= 0
    a_third_done = asyncio.Event()
    try:
        async def storm(n: int) -> list[bool]:
            won = []
            for i in range(SESSIONS):
                won.append(await claim_until_answered(claimants[n], f"s{i}", f"claimant-{n}".encode()))
                if i == SESSIONS // 3:
                    a_third_done.set()
            return won

        async def kill_leader() -> None:
            await a_third_done.wait()
            etcd_cluster.processes[leader].send_signal(signal.SIGKILL)

        won_by_0, won_by_1, _ = await asyncio.gather(storm(0), storm(1), kill_leader())
        assert etcd_cluster.processes[leader].wait() == -signal.SIGKILL
        survivors = [e for i, e in enumerate(etcd_cluster.endpoints) if i != leader]
        async with Etcd3Client(survivors) as raw:
            prefix = session_prefix("eu")
            stored = {kv.key.decode().removeprefix(prefix): kv.value
                      for kv in (await raw.kv.get(prefix, range_end=prefix_range_end(prefix))).kvs}
    finally:
        for registry in claimants:
            await registry.close()

    assert [a + b for a, b in zip(won_by_0, won_by_1, strict=True)] == [1] * SESSIONS, "exactly one winner each"
    winners = {f"s{i}": b"claimant-0" if won else b"claimant-1" for i, won in enumerate(won_by_0)}
    assert stored == winners, "etcd holds every won claim with its winner's value"
