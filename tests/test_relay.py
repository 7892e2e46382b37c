"""Integration tests of the edge relay's socket adapter (edge/relay.py) on real UDP sockets on loopback:
its fast path agrees with the core's rules, and a replayed token cannot crowd out a live call.

The relay cannot tell a replayed check from a forged one (it has no pwd), so "replayed" here is the
caller's own first Binding request, captured on its way to the relay and sent again from many addresses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time

import pytest
from aioice import stun as aioice_stun
from stun_messages import binding

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.edge.flows import Flow, FlowState
from voicemesh.edge.relay import Relay
from voicemesh.registry import NodeRecord
from voicemesh.runtime.udp import bind_udp
from voicemesh.wire import frame
from voicemesh.wire.addr import format_hostport
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration

SRTP = b"\x80\x6f" + bytes(98)



async def recv(sock: socket.socket, timeout_s: float = 2.0) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), timeout_s)


async def nothing_arrives(sock: socket.socket) -> bool:
    try:
        await recv(sock, 0.3)
    except TimeoutError:
        return True
    return False


async def prove(relay: Relay, client: socket.socket, transceiver: socket.socket, ufrag: str) -> bytes:
    """Open ``client``'s flow the way a pending one opens (ICE checks both ways, no media before); returns
    its frame header."""
    client.sendto(binding(aioice_stun.Class.REQUEST, f"{ufrag}:abcd"), relay.public_address)
    header = (await recv(transceiver))[:12]
    client.sendto(SRTP, relay.public_address)
    assert await nothing_arrives(transceiver), "pending: no media upstream"
    check = binding(aioice_stun.Class.REQUEST, f"abcd:{ufrag}")
    transceiver.sendto(header + check, relay.backbone_address)
    assert await recv(client) == check
    txid = aioice_stun.parse_message(check).transaction_id
    client.sendto(binding(aioice_stun.Class.RESPONSE, transaction_id=txid), relay.public_address)
    await recv(transceiver)
    assert relay.flows.by_client[client.getsockname()].state is FlowState.OPEN
    return header


async def test_the_fast_path_follows_the_cores_rules() -> None:
    """A proven flow takes the adapter's fast path both ways; an empty datagram from its client still goes
    nowhere, and an empty frame from its transceiver closes it and revokes the token."""
    tokens = TokenCodec({1: os.urandom(32)}, 1)
    transceiver = bind_udp(LOOPBACK, 0)
    relay = Relay(bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0, reuse_port=True), 7, tokens,
                  open_window_s=0.0)  # every flow pending: only proof opens it
    relay.directory = {(1, 1): transceiver.getsockname()}
    relay.start()
    ufrag = tokens.mint(region=1, transceiver=1, nonce=1, issued_at=int(time.time()), lifetime_s=60)
    client = bind_udp(LOOPBACK, 0)
    try:
        header = await prove(relay, client, transceiver, ufrag)

        client.sendto(SRTP, relay.public_address)
        assert await recv(transceiver) == header + SRTP
        transceiver.sendto(header + b"back", relay.backbone_address)
        assert await recv(client) == b"back"

        client.sendto(b"", relay.public_address)
        assert await nothing_arrives(transceiver)
        assert relay.stats()["drops"] == {"empty": 1, "pending_not_stun": 1}

        transceiver.sendto(header, relay.backbone_address)  # the session ended
        await asyncio.sleep(0.2)
        assert relay.stats()["flows"] == 0
        client.sendto(binding(aioice_stun.Class.REQUEST, f"{ufrag}:abcd"), relay.public_address)
        assert await nothing_arrives(transceiver)
        assert relay.stats()["drops"]["revoked"] == 1
    finally:
        relay.close()
        transceiver.close()
        client.close()


async def test_a_batch_from_the_flows_transceiver_reaches_its_clients_and_one_from_a_stranger_nothing() -> None:
    """A BATCH frame's frames each take the path they would take alone: to the client of a flow of the
    transceiver that sent it, in order; from an unregistered source, or from another registered transceiver
    (frames for flows it does not own), nowhere."""
    tokens = TokenCodec({1: os.urandom(32)}, 1)
    transceiver, other, stranger = bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0)
    relay = Relay(bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0, reuse_port=True), 7, tokens, open_window_s=0.0)
    relay.directory = {(1, 1): transceiver.getsockname(), (1, 2): other.getsockname()}
    relay.start()
    clients = [bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0)]
    try:
        headers = [await prove(relay, client, transceiver, tokens.mint(
            region=1, transceiver=1, nonce=n, issued_at=int(time.time()), lifetime_s=60)) for n, client in enumerate(clients)]
        (batch,) = frame.encode_batches([headers[0] + b"one", headers[1] + b"two", headers[0] + b"three"])

        stranger.sendto(batch, relay.backbone_address)
        assert await nothing_arrives(clients[0]) and await nothing_arrives(clients[1])
        assert relay.stats()["drops"]["vouch_unknown_transceiver"] == 1
        other.sendto(batch, relay.backbone_address)
        assert await nothing_arrives(clients[0]) and await nothing_arrives(clients[1])
        assert relay.stats()["drops"]["frame_wrong_transceiver"] == 3

        transceiver.sendto(batch, relay.backbone_address)
        assert [await recv(clients[0]), await recv(clients[0]), await recv(clients[1])] == [b"one", b"three", b"two"]
    finally:
        relay.close()
        for sock in (transceiver, other, stranger, *clients):
            sock.close()


async def test_live_flows_survive_their_transceiver_leaving_and_reentering_the_view() -> None:
    """An etcd blip takes the transceiver out of the edge's registry view and back: its connected backbone
    socket is closed and a new one opened. The live flow keeps forwarding through it all (issue 11: it
    used to keep the closed socket's send and lose every later uplink packet as tx_error)."""
    tokens = TokenCodec({1: os.urandom(32)}, 1)
    transceiver = bind_udp(LOOPBACK, 0)
    record = NodeRecord("transceiver", "local", "trx-1", index=1, region_id=1,
                        backbone=format_hostport(transceiver.getsockname()))
    relay = Relay(bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0, reuse_port=True), 7, tokens)
    relay.set_transceivers([record])
    relay.start()
    ufrag = tokens.mint(region=1, transceiver=1, nonce=1, issued_at=int(time.time()), lifetime_s=60)
    client = bind_udp(LOOPBACK, 0)
    try:
        client.sendto(binding(aioice_stun.Class.REQUEST, f"{ufrag}:abcd"), relay.public_address)
        header = (await recv(transceiver))[:12]
        for view in ([], [record]):
            relay.set_transceivers(view)
            client.sendto(SRTP, relay.public_address)
            assert await recv(transceiver) == header + SRTP
        assert "tx_error" not in relay.stats()["drops"]
    finally:
        relay.close()
        transceiver.close()
        client.close()


async def test_a_transceiver_draining_on_an_index_another_holds_keeps_its_calls_and_new_calls_reach_the_holder():
    """A transceiver lost its registry index to another while its lease was gone: it drains, still registered with
    the index, before it exits. Both records carry index 1; its key sorts last. Its live flow keeps forwarding
    to it, while a new call's first packet, whose token names index 1, goes to the index's holder."""
    tokens = TokenCodec({1: os.urandom(32)}, 1)
    loser, holder = bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0)
    losing = NodeRecord("transceiver", "local", "trx-z", index=1, region_id=1,
                        backbone=format_hostport(loser.getsockname()))
    holding = NodeRecord("transceiver", "local", "trx-b", index=1, region_id=1,
                         backbone=format_hostport(holder.getsockname()))
    relay = Relay(bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0, reuse_port=True), 7, tokens)
    relay.set_transceivers([losing])
    relay.start()
    live, new = bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0)
    try:
        ufrag = tokens.mint(region=1, transceiver=1, nonce=1, issued_at=int(time.time()), lifetime_s=60)
        live.sendto(binding(aioice_stun.Class.REQUEST, f"{ufrag}:abcd"), relay.public_address)
        header = (await recv(loser))[:12]

        relay.set_transceivers([holding, dataclasses.replace(losing, draining=True)])  # the view's order: by key
        live.sendto(SRTP, relay.public_address)
        assert await recv(loser) == header + SRTP, "the live call goes on"
        second = tokens.mint(region=1, transceiver=1, nonce=2, issued_at=int(time.time()), lifetime_s=60)
        check = binding(aioice_stun.Class.REQUEST, f"{second}:abcd")
        new.sendto(check, relay.public_address)
        assert (await recv(holder)).endswith(check), "the new call reaches the index's holder"
    finally:
        relay.close()
        for sock in (loser, holder, live, new):
            sock.close()


class Nat:
    """A UDP hop between the caller and the relay, as the caller's NAT: ``rebind()`` moves it to a new
    outside port (the mapping expired). It keeps the caller's first datagram, as an observer on the
    caller's path would capture it."""

    def __init__(self) -> None:
        self.inside = bind_udp(LOOPBACK, 0)
        self.address = self.inside.getsockname()
        self.outside: list[socket.socket] = []
        self.first: bytes | None = None
        self.captured = asyncio.Event()
        self._client: tuple[str, int] | None = None
        self._relay: tuple[str, int] | None = None

    @property
    def mapped(self) -> tuple[str, int]:
        """The caller's address as the relay sees it now."""
        return self.outside[-1].getsockname()

    def start(self, relay: tuple[str, int]) -> None:
        self._relay = relay
        asyncio.get_running_loop().add_reader(self.inside.fileno(), self._from_client)
        self.rebind()

    def rebind(self) -> None:
        loop = asyncio.get_running_loop()
        if self.outside:
            loop.remove_reader(self.outside[-1].fileno())
        sock = bind_udp(LOOPBACK, 0)
        self.outside.append(sock)
        loop.add_reader(sock.fileno(), self._from_relay, sock)

    def _from_client(self) -> None:
        data, self._client = self.inside.recvfrom(2048)
        if self.first is None:
            self.first = data
            self.captured.set()
        self.outside[-1].sendto(data, self._relay)

    def _from_relay(self, sock: socket.socket) -> None:
        self.inside.sendto(sock.recv(2048), self._client)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.inside.fileno())
        if self.outside:
            loop.remove_reader(self.outside[-1].fileno())
        for sock in (self.inside, *self.outside):
            sock.close()


async def test_a_call_survives_a_nat_rebinding_after_the_open_window_through_proof() -> None:
    nat = Nat()
    try:
        async with embedded_mesh(advertise=f"{nat.address[0]}:{nat.address[1]}") as mesh:
            relay = mesh.relay
            relay.core.open_window_s = 3.0  # long over when the NAT rebinds
            learned: dict[tuple[str, int], FlowState] = {}
            trace_flow = relay.on_flow
            assert trace_flow is not None

            def on_flow(flow: Flow) -> None:
                learned[flow.client] = flow.state
                trace_flow(flow)

            relay.on_flow = on_flow
            nat.start(relay.public_address)

            def proven() -> bool:
                flow = relay.flows.by_client.get(nat.mapped)
                return flow is not None and flow.state is FlowState.OPEN

            async def rebind_after_the_clip() -> int:
                """Rebind at 7 s; once the new flow is proven (the caller's next consent check opens it,
                4 to 6 s later, and the caller answers the transceiver's check), return its packets out
                3 s on."""
                await asyncio.sleep(7.0)
                nat.rebind()
                for _ in range(1000):
                    if proven():
                        break
                    await asyncio.sleep(0.01)
                assert proven(), "the caller answered the transceiver's check through the new mapping"
                await asyncio.sleep(3.0)
                return relay.flows.by_client[nat.mapped].packets_out

            report, packets_out = await asyncio.gather(
                call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=20.0), rebind_after_the_clip())

            assert report.ok, report.error
            assert learned == {nat.outside[0].getsockname(): FlowState.PROVISIONAL, nat.mapped: FlowState.PENDING}
            assert packets_out > 100, "media went back through the new mapping"
            stats = relay.stats()
            assert 0 < stats["unproven_bytes_out"] <= stats["unproven_bytes_in"]
    finally:
        nat.close()


async def test_a_replayed_token_from_many_addresses_stays_within_its_cap_while_the_call_goes_on() -> None:
    nat = Nat()
    attackers = [bind_udp(f"127.0.{1 + i // 200}.{1 + i % 200}", 0) for i in range(400)]
    try:
        async with embedded_mesh(advertise=f"{nat.address[0]}:{nat.address[1]}") as mesh:
            relay = mesh.relay
            cap = relay.flows.max_flows_per_token
            nat.start(relay.public_address)
            largest = 0

            async def attack() -> tuple[int, int]:
                """Replay the caller's first check from every attacker address, 5 rounds; returns the packets
                the relay sent the caller before and after."""
                nonlocal largest
                await nat.captured.wait()
                replay = nat.first
                assert replay is not None and replay[:2] == b"\x00\x01", "the caller's first check"
                await asyncio.sleep(1.0)
                caller = relay.flows.by_client[nat.mapped]
                assert caller.state is FlowState.OPEN
                before = caller.packets_out
                for _ in range(5):
                    for sock in attackers:
                        sock.sendto(replay, relay.public_address)
                        largest = max(largest, len(relay.flows.of_token(caller.token)), relay.stats()["flows"])
                        await asyncio.sleep(0)
                    await asyncio.sleep(0.5)
                assert relay.flows.by_client.get(caller.client) is caller, "the caller's proven flow stayed"
                return before, caller.packets_out

            report, (before, after) = await asyncio.gather(
                call(mesh.whip_url, bundled_speech(), bind=LOOPBACK), attack())

            assert report.ok, report.error
            assert report.correlation is not None and report.correlation > 0.5
            assert after - before > 50, "the caller's media kept flowing during the attack"
            assert 0 < largest <= cap, f"the token held {largest} flows (cap {cap})"
            assert relay.stats()["flows_evicted"] >= 1000
    finally:
        nat.close()
        for sock in attackers:
            sock.close()
