"""`make faults`: inject each fault of issue 11 into a mesh of real processes on loopback during a call.

    .venv/bin/python -m bench.faults [--quick] [--only NAME[,NAME...]] [--keep-logs DIR]

Each fault gets a fresh mesh (etcd with TLS and auth, transceiver, agents, an edge behind a hop that
timestamps every RTP packet) and one call of about 24 s (10 s with --quick) carrying speech both ways, the
fault injected about 6 s in (3 s). Prints a table, then one JSON object as the last line: per fault
``calls``, ``kept``, ``longest_audio_gap_ms`` (the longest stretch without echo off the wire),
``recovery_s`` (from the faulted part being back to the echo resuming; for etcd, to the live session being
claimed again), the ``counters`` that explain it, and the fault's own figures. The harness measures; it
never fails on a goal (tests/test_faults.py asserts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from .faults import FAULTS, Outcome, run_fault, to_json
from .overload import overload

RUNS = [*FAULTS, "overload"]
"""Every run's name: the faults of one call, then the overload burst (bench/faults/overload.py)."""


def _fmt(value: object, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def table(outcomes: list[Outcome]) -> str:
    """A Markdown table, one row per fault."""
    rows = ["| fault | calls | kept | longest audio gap | recovery | counters |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for o in outcomes:
        if o.error:
            rows.append(f"| {o.name} | {o.calls} | {o.kept} | error: {o.error.splitlines()[0][:80]} | | |")
            continue
        counters = ", ".join(f"{part}.{k} {v}" for part, found in o.counters.items() for k, v in found.items()
                             if not k.endswith(("packets_in", "bytes_in", "packets_out", "bytes_out", ".rx", ".tx"))
                             and k not in ("rx", "tx"))
        rows.append(f"| {o.name} | {o.calls} | {o.kept} | {_fmt(o.longest_audio_gap_ms, ' ms')} "
                    f"| {_fmt(o.recovery_s, ' s')} | {counters or '-'} |")
    return "\n".join(rows)


async def run(names: list[str], quick: bool, workdir: Path, etcd_auth: bool) -> list[Outcome]:
    outcomes = []
    for name in names:
        print(f"fault: {name} ...", file=sys.stderr, flush=True)
        if name == "overload":
            outcomes.append(await overload(workdir / name, hold_s=3.0 if quick else 10.0, etcd_auth=etcd_auth))
        else:
            outcomes.append(await run_fault(FAULTS[name], quick, workdir / name, etcd_auth))
    return outcomes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter calls (the system tests)")
    parser.add_argument("--only", help="comma-separated fault names: " + ", ".join(RUNS))
    parser.add_argument("--keep-logs", help="directory to keep the parts' logs in")
    parser.add_argument("--no-etcd-auth", action="store_true", help="run etcd in plaintext with auth off")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else RUNS
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown faults: {', '.join(unknown)}")
    workdir = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="voicemesh-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = asyncio.run(run(names, args.quick, workdir, not args.no_etcd_auth))
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(outcomes))
    line = to_json(outcomes, args.quick)
    print(line)
    return json.loads(line)


if __name__ == "__main__":
    main()
