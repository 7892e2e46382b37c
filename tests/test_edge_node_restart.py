"""An edge process restarted, or upgraded without a gap, in the middle of a real call (edge/node.py, the relay's
vouching): the new process binds the same relay ports and picks the live flow up from the transceiver's vouch,
so the caller's media never waits for its next consent check. Real aiortc caller, transceiver, gRPC agent and
UDP sockets on loopback; a second EdgeNode on its own registry connection plays the new process.
"""

from __future__ import annotations

import asyncio

import pytest

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, Mesh, bundled_speech, embedded_mesh
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import EdgeNode
from voicemesh.registry import MemoryRegistry
from voicemesh.wire import frame
from voicemesh.wire.addr import format_hostport

pytestmark = pytest.mark.integration

CALL_S = 8.0


async def new_process(mesh: Mesh, **options: object) -> tuple[EdgeNode, MemoryRegistry]:
    """Start another edge process of the same node on the old relay's ports (its own registry lease)."""
    assert mesh.edge.relay is not None
    registry = MemoryRegistry(mesh.edge.registry.store)  # type: ignore[attr-defined]
    await registry.start()
    node = EdgeNode(EdgeConfig(public=format_hostport(mesh.edge.relay.public_address),
                               backbone=format_hostport(mesh.edge.relay.backbone_address),
                               http=f"{LOOPBACK}:0", **options), registry, mesh.keys)  # type: ignore[arg-type]
    await node.start()
    return node, registry


async def until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_restarted_edge_picks_up_the_live_call_from_the_transceivers_vouch() -> None:
    async with embedded_mesh() as mesh:
        placed = asyncio.ensure_future(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=CALL_S))
        await until(lambda: mesh.relay.flows.open_by_client)
        [old_flow] = mesh.relay.flows.open_by_client.values()
        await asyncio.sleep(1.0)
        mesh.relay.close()  # the relay dies: no close frames, its flows are gone with it
        await asyncio.sleep(0.3)
        node, registry = await new_process(mesh)
        try:
            relay = node.relay
            assert relay is not None
            [flow] = relay.flows.open_by_client.values()
            assert (flow.client, flow.header) == (old_flow.client, old_flow.header), "the route's own header"
            assert frame.decode(flow.header)[1] == mesh.edge.record.index != node.record.index
            report = await placed
            await until(lambda: not mesh.transceiver.sessions)
            stats = relay.stats()
            assert mesh.transceiver.mux is not None and mesh.transceiver.mux.core.events["vouched"] == 1
        finally:
            placed.cancel()
            await node.close()
            await registry.close()
    assert report.ok, report.error
    assert stats["flows_vouched"] == 1 and stats["flows"] == 0, "vouched, then closed by the session's end"
    assert "not_stun" not in stats["drops"], "no media waited for a consent check"
    assert stats["packets_in"] > 100 and stats["packets_out"] > 100


async def test_an_edge_restarted_after_its_record_expired_picks_the_call_up_when_the_transceiver_sends() -> None:
    """Started after the old record left the registry, the new process asks no transceiver at start (the
    mux answers registered edges only): the transceiver's next frame for the call finds no flow and prompts
    a hello, answered once the new record is in the transceiver's view."""
    async with embedded_mesh() as mesh:
        placed = asyncio.ensure_future(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=CALL_S))
        await until(lambda: mesh.relay.flows.open_by_client)
        await asyncio.sleep(1.0)
        mesh.relay.close()
        await mesh.edge.registry.close()  # the old lease is gone: so is the record
        await until(lambda: not mesh.transceiver.registry.nodes("edge"))
        node, registry = await new_process(mesh)
        try:
            assert node.relay is not None
            await until(lambda: node.relay.flows.open_by_client)
            stats = node.relay.stats()
            report = await placed
        finally:
            placed.cancel()
            await node.close()
            await registry.close()
    assert report.ok, report.error
    assert stats["flows_vouched"] == 1 and stats["drops"]["no_flow"] >= 1 and stats["hellos_sent"] >= 1


async def test_a_new_process_takes_over_the_ports_and_the_old_one_hands_over_its_call() -> None:
    async with embedded_mesh(edge_options={"reuse_port": True, "drain_timeout_s": 60.0}) as mesh:
        old = mesh.edge
        placed = asyncio.ensure_future(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=CALL_S))
        await until(lambda: mesh.relay.flows.open_by_client)
        await asyncio.sleep(1.0)
        node, registry = await new_process(mesh, reuse_port=True)
        try:
            assert old.successor() == node.record
            async with asyncio.timeout(1.0):
                await old.drain()  # hands over at once: the new process holds the flow
            assert not old.record.draining, "a handover leaves the new process's record as it is"
            old_relay = mesh.relay
            old_relay.close()
            report = await placed
            stats = node.relay.stats()
        finally:
            placed.cancel()
            await node.close()
            await registry.close()
    assert report.ok, report.error
    assert stats["flows_vouched"] == 1 and "not_stun" not in stats["drops"]
    assert stats["packets_in"] > 100 and stats["packets_out"] > 100
    assert [n.index for n in mesh.transceiver.registry.nodes("edge")] in ([], [node.record.index])
