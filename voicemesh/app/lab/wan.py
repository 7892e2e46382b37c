"""The lab's wide-area network: every namespace's TUN link ends here, and each IPv4 packet is delivered
to the namespace that owns its destination after its path's delay, jitter and loss.

A userspace link emulator in the style of Mahimahi (Netravali et al., USENIX ATC 2015), because the
kernel this project's CI runs on has no qdisc that delays (built without ``sch_netem``, and without
``fq`` for delaying by timestamp): ``Wan`` decides, sans-IO, when (or whether) a packet arrives;
``TunWan`` moves the bytes.
Nothing leaves the lab: a packet for an address outside it is dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
from collections import Counter
from collections.abc import Mapping

from voicemesh.app.lab.plan import Node, Plan

MAX_PACKET = 65535


class Wan:
    """Forwarding decisions for the lab's packets, with ``rng`` as the source of jitter and loss.

    ``drops`` counts dropped packets by reason: "not_ipv4", "unknown_source", "unknown_destination",
    "no_path" (between two cities, or to itself), "loss" (the path's modelled loss).
    """

    def __init__(self, plan: Plan, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng
        self.forwarded = 0
        self.drops: Counter[str] = Counter()
        self._last: dict[tuple[str, str], float] = {}

    def forward(self, packet: bytes, now: float) -> tuple[Node, float] | None:
        """Where and when to deliver ``packet`` (an IPv4 datagram read from a node at time ``now``, in s):
        ``(destination node, delivery time in s)``, or None to drop it.

        Delivery is ``now`` plus the path's one-way delay plus a uniform draw in ±jitter, never earlier
        than the previous packet on the same path and direction (no reordering, as on a real queue).
        """
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.drops["not_ipv4"] += 1
            return None
        source = self.plan.by_address(ipaddress.IPv4Address(packet[12:16]))
        if source is None:
            self.drops["unknown_source"] += 1
            return None
        destination = self.plan.by_address(ipaddress.IPv4Address(packet[16:20]))
        if destination is None:
            self.drops["unknown_destination"] += 1
            return None
        path = self.plan.path(source, destination)
        if path is None:
            self.drops["no_path"] += 1
            return None
        if path.loss_pct and self.rng.random() * 100 < path.loss_pct:
            self.drops["loss"] += 1
            return None
        delay_ms = path.one_way_ms + (self.rng.uniform(-path.jitter_ms, path.jitter_ms) if path.jitter_ms else 0.0)
        key = (source.name, destination.name)
        at = max(now + max(delay_ms, 0.0) / 1000, self._last.get(key, 0.0))
        self._last[key] = at
        self.forwarded += 1
        return destination, at


class TunWan:
    """Runs a ``Wan`` over the nodes' TUN file descriptors (``fds``: node name -> fd, non-blocking,
    packets without the packet-information header) on the running event loop."""

    def __init__(self, wan: Wan, fds: Mapping[str, int]) -> None:
        self.wan = wan
        self.fds = dict(fds)
        self.tx_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        for fd in self.fds.values():
            self._loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        loop = self._loop
        assert loop is not None, "start() first"
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            decision = self.wan.forward(packet, loop.time())
            if decision is not None:
                node, at = decision
                loop.call_at(at, self._deliver, self.fds[node.name], packet)

    def _deliver(self, fd: int, packet: bytes) -> None:
        if not self._running:
            return
        try:
            os.write(fd, packet)
        except OSError:
            self.tx_errors += 1

    def stats(self) -> dict:
        """``forwarded`` packets, ``drops`` by reason, ``tx_errors`` (writes to a TUN link that failed)."""
        return {"forwarded": self.wan.forwarded, "drops": dict(self.wan.drops), "tx_errors": self.tx_errors}

    def stop(self) -> None:
        """Stop reading and delivering (the caller closes the fds, which removes the links)."""
        self._running = False
        if self._loop is not None:
            for fd in self.fds.values():
                self._loop.remove_reader(fd)
