"""Overload: a burst of offers at one edge in front of two transceivers of bounded capacity (issue 11 item 7).

A fresh mesh (etcd with TLS and auth, transceivers trx-1 and trx-2 with ``capacity`` sessions each and the echo
agent in their process, edge edge-1); ``offers`` lightweight aiortc callers (bench/faults/callers.py) make their
offers first, then POST them evenly over ``burst_s`` seconds, from ``sources`` loopback addresses
(127.60.0.0/16) so that the edge's per-source WHIP rate limit (default: 2 offers/s, a burst of 10) sees a crowd
and not one flooding address. Each accepted call waits to connect, holds ``hold_s`` carrying audio both ways,
then hangs up. Figures: statuses, ``Retry-After`` on every refusal, calls ICE- and DTLS-connected, setup times
(POST to DTLS connected) p50 and p95, offers answered per second, sessions per transceiver, parts that died.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

from bench.mesh import PartFailed, ProcessMesh
from bench.mesh.net import addresses

from .callers import Caller, Sources, encode_speech
from .faults import Outcome, _delta

NODES = ["edge/local/edge-1", "transceiver/local/trx-1", "transceiver/local/trx-2"]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``, None if empty (inclusive method)."""
    if len(values) < 2:
        return values[0] if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1], 1)


async def overload(workdir: Path, *, offers: int = 200, burst_s: float = 2.0, capacity: int = 50, sources: int = 40,
                   hold_s: float = 5.0, connect_timeout_s: float = 30.0, etcd_auth: bool = True) -> Outcome:
    """Run the burst; never raises for a mesh that could not start (``error`` says why)."""
    outcome = Outcome("overload", f"{offers} offers in {burst_s:g} s at one edge, two transceivers of capacity "
                                  f"{capacity}")
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = ProcessMesh(workdir, NODES, etcd_auth=etcd_auth)
    crowd = Sources(list(addresses("127.60.0.0/16", sources)))
    callers: list[Caller] = []
    try:
        await mesh.open()
        transceivers = [await mesh.start_transceiver(f"trx-{i}", capacity=capacity) for i in (1, 2)]
        edge = await mesh.start_edge("edge-1")
        parts = [edge, *transceivers]
        before = {part.name: await mesh.status(part) for part in parts}
        packets = encode_speech()
        callers = [await Caller.prepare(packets) for _ in range(offers)]
        url = f"{edge.http}/v1/sessions"
        start = time.monotonic()

        async def dial(i: int, caller: Caller) -> None:
            await asyncio.sleep(max(0.0, start + i * burst_s / offers - time.monotonic()))
            await caller.dial(crowd.next(), url, connect_timeout_s)

        dialling = [asyncio.ensure_future(dial(i, c)) for i, c in enumerate(callers)]
        await asyncio.wait(dialling)
        answered = max(c._posted + (c.answer_ms or 0) / 1000 for c in callers)
        await asyncio.sleep(hold_s)
        sessions = {t.name: (await mesh.status(t)).get("sessions") for t in transceivers}
        echoed = sum(1 for c in callers if c.status == 201 and c.received > 0)
        await asyncio.gather(*(c.hang_up() for c in callers))
        await asyncio.sleep(1.0)
        statuses = Counter(c.status for c in callers)
        refused = [c for c in callers if c.status != 201]
        setup = [c.connected_ms for c in callers if c.connected_ms is not None]
        outcome.calls = offers
        outcome.kept = sum(1 for c in callers if c.connected_ms is not None)
        after = [(await mesh.status(t)).get("sessions", 0) for t in transceivers]
        outcome.counters = {part.name: _delta(before[part.name], await mesh.status(part)) for part in parts}
        outcome.figures.update(
            accepted=statuses.get(201, 0), refused_503=statuses.get(503, 0),
            statuses={str(k): v for k, v in sorted(statuses.items())},
            refused_with_retry_after=sum(1 for c in refused if c.retry_after.isdigit() and int(c.retry_after) > 0),
            ice_connected=sum(1 for c in callers if c.ice_ms is not None), dtls_connected=outcome.kept,
            echoed=echoed, setup_ms_p50=percentile(setup, 50), setup_ms_p95=percentile(setup, 95),
            answer_ms_p50=percentile([c.answer_ms for c in callers if c.answer_ms is not None], 50),
            answer_ms_p95=percentile([c.answer_ms for c in callers if c.answer_ms is not None], 95),
            offers_per_s=round(offers / max(1e-3, answered - start), 1), sessions_at_peak=sessions,
            sessions_after=sum(after),
            crashed=[p.name for p in mesh.parts if p.process.poll() is not None],
            errors=dict(Counter(c.error for c in callers if c.error)))
    except (PartFailed, RuntimeError, OSError) as exc:
        outcome.error = str(exc)
    finally:
        for caller in callers:
            await caller.pc.close()
        await crowd.close()
        await mesh.close()
        mesh.cleanup()
    return outcome
