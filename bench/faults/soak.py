"""`make soak`: churning calls through a mesh of real processes for a long time, then a count of what is left.

    .venv/bin/python -m bench.faults.soak [--duration-s 1800] [--concurrent 20] [--call-s 30,60] [--quick]

A fresh mesh (etcd with TLS and auth, transceivers trx-1 and trx-2 with the echo agent in their process, edge
edge-1). ``concurrent`` lightweight aiortc callers (bench/faults/callers.py), each placing one call after
another of a random length in ``call_s`` (seconds) until ``duration_s`` is over, carrying audio both ways.
Before the soak, ``warmup_s`` of the same churn brings every part to its working set (the modules and caches
its first sessions load, the allocator's arenas); after it and after the
soak every call is hung up and the mesh left idle for ``SETTLE_S`` (longer than aiohttp's keep-alive of idle
connections and gRPC's reclaiming of idle worker threads) and until its flows, sessions and claims are gone
(``drained_s``, at most ``DRAIN_MAX_S``), and
each part is read: RSS, threads and file descriptors from ``/proc/<pid>/``, asyncio tasks,
flows and sessions from its ``GET /v1/status``, and the session claims in etcd. The last line is JSON: calls
placed, connected and echoed, ``rss_growth_pct`` per part (the reading at the end against the one after the
warm-up; ``rss_kb_during`` is its RSS sampled 30 times over the soak, and ``rss_floor_kb`` the lowest sample in
each third of it: memory freed in bursts makes RSS a sawtooth, where one idle reading lands anywhere in a tooth
and a leak shows as floors that keep rising), and
``left_over``: each count at the end minus the
same count after the warm-up (0 everywhere: nothing leaked), with both readings. The harness measures and
never fails on a goal (tests/test_faults.py asserts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.mesh import Part, PartFailed, ProcessMesh
from bench.mesh.net import addresses
from voicemesh.registry.base import session_prefix

from .callers import Caller, Sources, encode_speech
from .overload import NODES

SETTLE_S = 22.0
"""Idle seconds at least before a reading: the edge's pooled connections to transceivers close after 15 s idle,
and gRPC ends a worker thread that its event engine added while busy (a transceiver under a loaded CPU) after
20 s idle."""
DRAIN_MAX_S = 90.0
"""Most seconds to wait for the edge's flows, the sessions and the claims to reach 0 before a reading: a flow
whose session ended goes at once with the mux's close frames, else when idle (60 to 75 s)."""
CONNECT_TIMEOUT_S = 15.0


def proc_counts(pid: int) -> dict[str, int]:
    """``rss_kb``, ``threads`` and ``fds`` of process ``pid`` from /proc/<pid>/status and /proc/<pid>/fd."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                found["rss_kb"] = int(value.split()[0])
            elif key == "Threads":
                found["threads"] = int(value)
    found["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return found


class Soak:
    """The mesh, the callers and the readings."""

    def __init__(self, workdir: Path, *, concurrent: int, call_s: tuple[float, float], etcd_auth: bool) -> None:
        self.mesh = ProcessMesh(workdir, NODES, etcd_auth=etcd_auth)
        self.concurrent = concurrent
        self.call_s = call_s
        self.crowd = Sources(list(addresses("127.61.0.0/16", concurrent)))
        self.parts: list[Part] = []
        self.edge: Part | None = None
        self.url = ""
        self.packets: list[bytes] = []
        self.placed = self.connected = self.echoed = 0
        self.failures: dict[str, int] = {}
        self.rss_series: dict[str, list[int]] = {}

    async def start(self) -> None:
        await self.mesh.open()
        transceivers = [await self.mesh.start_transceiver(f"trx-{i}", capacity=self.concurrent) for i in (1, 2)]
        self.edge = await self.mesh.start_edge("edge-1")
        self.parts = [self.edge, *transceivers]
        self.url = f"{self.edge.http}/v1/sessions"
        self.packets = encode_speech()

    async def one_call(self, http, hold_s: float) -> None:
        caller = await Caller.prepare(self.packets)
        self.placed += 1
        try:
            await caller.dial(http, self.url, CONNECT_TIMEOUT_S)
            if caller.connected_ms is None:
                reason = caller.error or f"status {caller.status}"
                self.failures[reason] = self.failures.get(reason, 0) + 1
                return
            self.connected += 1
            await asyncio.sleep(hold_s)
            self.echoed += caller.received > 0
        finally:
            await caller.hang_up()

    async def sample_rss(self, every_s: float) -> None:
        """Append each part's RSS (kB) to ``rss_series`` every ``every_s``, until cancelled."""
        while True:
            for part in self.parts:
                self.rss_series.setdefault(part.name, []).append(proc_counts(part.process.pid)["rss_kb"])
            await asyncio.sleep(every_s)

    async def churn(self, until: float) -> None:
        """``concurrent`` callers, each calling again as soon as its call ends, until ``until`` (monotonic)."""

        async def caller_loop(http) -> None:
            await asyncio.sleep(random.uniform(0, 2.0))
            while (left := until - time.monotonic()) > 1.0:
                await self.one_call(http, min(left, random.uniform(*self.call_s)))

        await asyncio.gather(*(caller_loop(self.crowd.next()) for _ in range(self.concurrent)))

    async def drained(self) -> float:
        """Wait SETTLE_S, and until no flow, session or claim is left (at most DRAIN_MAX_S); the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < DRAIN_MAX_S:
            statuses = [await self.mesh.status(part) for part in self.parts]
            busy = sum(s.get("flows", 0) + s.get("sessions", 0) for s in statuses) + await self.claims()
            if not busy and time.monotonic() - start >= SETTLE_S:
                break
            await asyncio.sleep(1.0)
        return round(time.monotonic() - start, 1)

    async def reading(self) -> dict[str, dict[str, int]]:
        """Each part's counts now, and the claims in etcd."""
        found: dict[str, dict[str, int]] = {}
        for part in self.parts:
            status = await self.mesh.status(part)
            found[part.name] = {**proc_counts(part.process.pid), "tasks": status.get("tasks", -1),
                                **({"flows": status.get("flows", -1)} if part is self.edge else
                                   {"sessions": status.get("sessions", -1)})}
        found["etcd"] = {"claims": await self.claims()}
        return found

    async def claims(self) -> int:
        return len(await self.mesh.etcd_get(session_prefix("local")))

    async def close(self) -> None:
        await self.crowd.close()
        await self.mesh.close()
        self.mesh.cleanup()


async def soak(workdir: Path, *, duration_s: float, warmup_s: float, concurrent: int, call_s: tuple[float, float],
               etcd_auth: bool = True) -> dict:
    """Run the soak; the result as the last line's object (``error`` set if the mesh could not run)."""
    run = Soak(workdir, concurrent=concurrent, call_s=call_s, etcd_auth=etcd_auth)
    result: dict = {"duration_s": duration_s, "warmup_s": warmup_s, "concurrent": concurrent, "call_s": list(call_s),
                    "error": None}
    try:
        await run.start()
        await run.churn(time.monotonic() + warmup_s)
        result["warmup_drained_s"] = await run.drained()
        before = await run.reading()
        run.placed = run.connected = run.echoed = 0
        started = time.monotonic()
        sampler = asyncio.ensure_future(run.sample_rss(max(5.0, duration_s / 30)))
        try:
            await run.churn(started + duration_s)
        finally:
            sampler.cancel()
        result["soak_s"] = round(time.monotonic() - started, 1)
        result["rss_kb_during"] = run.rss_series
        result["rss_floor_kb"] = {name: [min(kb[i * len(kb) // 3:(i + 1) * len(kb) // 3] or kb) for i in range(3)]
                                  for name, kb in run.rss_series.items()}
        result["drained_s"] = await run.drained()
        after = await run.reading()
        result.update(
            calls=run.placed, connected=run.connected, echoed=run.echoed, failures=run.failures,
            rss_growth_pct={name: round(100 * (after[name]["rss_kb"] / before[name]["rss_kb"] - 1), 2)
                            for name in after if "rss_kb" in after[name]},
            left_over={name: {k: after[name][k] - before[name].get(k, 0) for k in after[name] if k != "rss_kb"}
                       for name in after},
            before=before, after=after,
            crashed=[p.name for p in run.mesh.parts if p.process.poll() is not None])
    except (PartFailed, RuntimeError, OSError) as exc:
        result["error"] = str(exc)
    finally:
        await run.close()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.faults.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=1800.0, help="how long to churn calls (default 1800)")
    parser.add_argument("--warmup-s", type=float, default=120.0,
                        help="churn this long first, then take the readings the end is compared with (default 120)")
    parser.add_argument("--concurrent", type=int, default=20, help="calls up at a time (default 20)")
    parser.add_argument("--call-s", default="30,60", help="each call's length, seconds: MIN,MAX (default 30,60)")
    parser.add_argument("--quick", action="store_true",
                        help="60 s of warm-up and 60 s of soak, calls of 10-20 s (the system test)")
    parser.add_argument("--keep-logs", help="directory to keep the parts' logs in")
    parser.add_argument("--no-etcd-auth", action="store_true", help="run etcd in plaintext with auth off")
    args = parser.parse_args(argv)
    low, _, high = args.call_s.partition(",")
    call_s = (10.0, 20.0) if args.quick else (float(low), float(high or low))
    duration_s, warmup_s = (60.0, 60.0) if args.quick else (args.duration_s, args.warmup_s)
    workdir = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="voicemesh-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(soak(workdir, duration_s=duration_s, warmup_s=warmup_s, concurrent=args.concurrent, call_s=call_s,
                                  etcd_auth=not args.no_etcd_auth))
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    for name, growth in result.get("rss_growth_pct", {}).items():
        print(f"{name}: RSS {growth:+.2f} %, left over {result['left_over'][name]}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
