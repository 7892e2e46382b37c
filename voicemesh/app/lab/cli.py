"""``voicemesh lab run`` and ``voicemesh lab down``: the command line of the lab."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from voicemesh.app.lab.plan import DEFAULT_TOPOLOGY, LabError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``lab`` with its ``run`` and ``down`` commands to the ``voicemesh`` subcommands ``sub``."""
    lab = sub.add_parser("lab", help="the multi-region mesh in network namespaces on this machine (as root)")
    commands = lab.add_subparsers(dest="lab_command", required=True)
    run = commands.add_parser(
        "run", help="build the lab, call from each client city through the mesh and straight to the central "
                    "region, print the table, tear the lab down")
    run.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    run.add_argument("--regions", type=int,
                     help="keep the first N core regions, only the edges at their sites and the cities near those "
                          "(2 is the smoke lab; default: everything in the topology)")
    run.add_argument("--cities", help="client cities to call from, comma-separated keys of the topology's clients")
    run.add_argument("--duration", type=float, default=10.0, help="length of each call in seconds (default 10)")
    run.add_argument("--wav", help="speech to send (default: the bundled speech.wav)")
    run.add_argument("--fail-region", help="after the calls, kill this core region's transceiver and etcd and call "
                                           "again from the cities whose calls went there (the report's failover)")
    run.add_argument("--plot", help="also draw the report to this file (.svg, .png): RTT per city, and cities, "
                                    "edges and regions on longitude/latitude (needs matplotlib)")
    run.add_argument("--topology", default=str(DEFAULT_TOPOLOGY), help="infra/topology.json (default: %(default)s)")
    commands.add_parser("down", help="remove whatever a lab left behind: namespaces named vmlab-* (or "
                                     "$VOICEMESH_LAB_PREFIX*), what runs in them, and work directories")


async def command(args: argparse.Namespace) -> int:
    """Run ``voicemesh lab <command>``; returns the exit status (2 if the lab cannot be built, 1 if a
    city was not steered to its nearest edge or a call failed, 130 if interrupted)."""
    from voicemesh.app.lab import netns, report, runner
    from voicemesh.app.lab.plan import load_topology, plan

    task = asyncio.current_task()
    assert task is not None, "runs as a task"
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        if args.lab_command == "down":
            netns.check_host()
            removed = runner.down()
            print(f"removed {len(removed)} lab namespaces" + (f": {', '.join(removed)}" if removed else ""))
            return 0
        cities = [c.strip() for c in args.cities.split(",") if c.strip()] if args.cities else None
        lab = plan(load_topology(args.topology), args.regions, cities)
        result = await runner.run(lab, args.duration, args.wav, progress=lambda line: print(line, file=sys.stderr),
                                  fail_region=args.fail_region)
    except LabError as exc:
        print(f"voicemesh lab: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print("voicemesh lab: interrupted; the lab is torn down", file=sys.stderr)
        return 130
    if args.plot:
        from voicemesh.app.lab import plot

        try:
            plot.draw(lab, result, args.plot)
        except (ImportError, OSError, ValueError) as exc:
            print(f"voicemesh lab: --plot {args.plot}: {exc}", file=sys.stderr)
    print(json.dumps(result) if args.json else report.format_table(result))
    return 0 if result["ok"] else 1
