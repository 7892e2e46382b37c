"""`make attack`: run each attack of issue 9 against a mesh of real processes on loopback.

    .venv/bin/python -m bench.attack [--quick] [--only NAME[,NAME...]] [--keep-logs DIR]

Prints one table row per attack, then one JSON object as the last line: ``attacks`` (per attack: what was
sent and what reached the target or the attacker, in packets and bytes, whether a legitimate call placed
during it succeeded, drop counters, and its own figures) and the goals ``amplification_max`` (bytes out /
bytes in towards unproven addresses: the largest of one spoofed victim address's ratio at the edge and one
victim prefix's ratio at the geo DNS server; goal <= 1.0), ``hijacked_packets`` (goal 0) and
``over_admitted`` (goal 0) and ``compromised_edge_writes_accepted`` (writes to etcd that a stolen edge
certificate got in; goal 0). The harness measures; it never fails on a goal (tests/test_attack.py asserts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from .attacks import ATTACKS, Result
from .mesh import Mesh, PartFailed


def _raise_fd_limit() -> None:
    """1,200 spoofed sources and hundreds of slow connections need more than the usual 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))


def _figure(result: Result) -> str:
    f = result.figures
    if result.error:
        return "error: " + result.error.splitlines()[0][:60]
    return {
        "baseline": lambda: f"received {f.get('packets_received')} packets",
        "replay_hijack": lambda: f"hijacked_packets {f['hijacked_packets']}",
        "reflection": lambda: f"amplification {f['amplification']}, per victim up to "
                              f"{f['amplification_per_victim_max']} ({f['victims']} victims)",
        "token_flood": lambda: f"flows held {f['flows_held']} of {f['max_flows']}, table_full {f['table_full']}",
        "admission": lambda: f"accepted {f['accepted']} of {f['offers']}, capacity {f['capacity']}, "
                             f"over_admitted {f['over_admitted']}",
        "whip_flood": lambda: f"{f['requests']} requests: {f['accepted']} accepted, {f['rate_limited_429']} x 429",
        "patch_flood": lambda: f"{f['requests']} PATCHes: {f['forwarded_own']} of the own session's and "
                               f"{f['forwarded_made_up']} made-up ids' forwarded, {f['rate_limited_429']} x 429",
        "slowloris": lambda: f"{f['still_open']} of {f['connections']} still open after {f['wait_s']:g} s",
        "oversized_sdp": lambda: f"{f['m_lines']} m-lines -> {f['status']}",
        "dns_amplification": lambda: f"amplification {f['amplification']} (single answer {f['answer_ratio']})",
        "compromised_edge": lambda: f"{f['writes_accepted']} of {len(f['writes'])} writes accepted "
                                    f"(etcd auth {'on' if f['etcd_auth'] else 'off'})",
    }[result.name]()


def table(results: list[Result]) -> str:
    """A Markdown table, one row per attack."""
    rows = ["| attack | sent pkts / bytes | reached pkts / bytes | figure | legit call | drops |",
            "| --- | ---: | ---: | --- | --- | --- |"]
    for r in results:
        call = {None: "-", True: "ok", False: "FAILED"}[r.legit_call_ok]
        drops = ", ".join(f"{side}.{k} {v}" for side, counts in r.drops.items() for k, v in counts.items()) or "-"
        rows.append(f"| {r.name} | {r.sent_packets} / {r.sent_bytes} | {r.reached_packets} / {r.reached_bytes} "
                    f"| {_figure(r)} | {call} | {drops} |")
    return "\n".join(rows)


def summary(results: list[Result], quick: bool) -> dict:
    """The last line's JSON object."""
    by_name = {r.name: r for r in results}

    def figure(name: str, key: str):
        result = by_name.get(name)
        return None if result is None or result.error else result.figures.get(key)

    amplifications = [a for a in (figure("reflection", "amplification_per_victim_max"),
                                  figure("dns_amplification", "amplification")) if a is not None]
    return {"quick": quick, "attacks": {r.name: r.to_dict() for r in results},
            "amplification_max": max(amplifications) if amplifications else None,
            "hijacked_packets": figure("replay_hijack", "hijacked_packets"),
            "over_admitted": figure("admission", "over_admitted"),
            "compromised_edge_writes_accepted": figure("compromised_edge", "writes_accepted")}


async def run(names: list[str], quick: bool, workdir: Path, etcd_auth: bool = True) -> list[Result]:
    """Start the mesh, run the named attacks in order, stop the mesh."""
    mesh = Mesh(workdir, clip_s=3.0 if quick else None, etcd_auth=etcd_auth)
    results = []
    try:
        await mesh.start()
        for name in names:
            print(f"attack: {name} ...", file=sys.stderr, flush=True)
            try:
                result = await ATTACKS[name](mesh, quick)
            except (PartFailed, RuntimeError, OSError) as exc:
                traceback.print_exc(file=sys.stderr)
                result = Result(name, "", error=str(exc))
            results.append(result)
    finally:
        await mesh.close()
        mesh.cleanup()
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter attacks and calls (the system tests)")
    parser.add_argument("--only", help="comma-separated attack names: " + ", ".join(ATTACKS))
    parser.add_argument("--keep-logs", help="directory to keep the parts' logs in")
    parser.add_argument("--no-etcd-auth", action="store_true", help="run etcd in plaintext with auth off "
                                                                     "(every client may write every key)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        parser.error(f"unknown attacks: {', '.join(unknown)}")
    _raise_fd_limit()
    workdir = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="voicemesh-attack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = asyncio.run(run(names, args.quick, workdir, etcd_auth=not args.no_etcd_auth))
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    figures = summary(results, args.quick)
    print(table(results))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
