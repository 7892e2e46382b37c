"""Benchmark of the geo DNS server: queries/s per CPU core for cached and uncached answers, beside a
trivial static responder on the same socket path, with dnsperf (Debian) as the load generator.

Each measurement starts a fresh server process pinned to CPU1 under uvloop: ``cached`` is the real
DnsServer (edge/dns_server.py) with its cache of rendered answers and its response rate limiter off
(one client from one prefix would be limited), ``uncached`` the same with the cache off (every query
parsed, located and rendered by dnspython), ``static`` a responder that patches the ID into one
precomputed response (the floor: bind_udp + the drain reader + sendto). The nine topology
edges are registered in an in-memory registry and located with MaxMind's GeoIP2-City-Test.mmdb.
dnsperf, pinned to CPU0, asks ``rtc.voicemesh.test A`` with an ECS option for 175.16.199.0/24 for the
run's duration, 100 queries outstanding. Queries/s per core is queries completed divided by the
server's CPU seconds (/proc/PID/task/*/schedstat) over the run, so it does not depend on whether
dnsperf or the server was the bottleneck. Rounds alternate the modes; figures are medians.

``python bench/dns.py [--quick] [--repeat N] [--duration S]`` prints a table and, as its last line,
one JSON object (see ``main``). The driver imports no dnspython, and the server subprocess drops this
file's folder from sys.path first: this file's name would otherwise shadow dnspython's ``dns`` package.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GEOIP_DB = REPO / "tests" / "data" / "GeoIP2-City-Test.mmdb"
TOPOLOGY = REPO / "infra" / "topology.json"
MODES = ("static", "cached", "uncached")
SERVER_CPU, LOAD_CPU = "1", "0"
QUERY = "rtc.voicemesh.test A"
ECS_SUBNET = ("175.16.199.0", 24)
ECS_OPTION = "8:00011800af10c7"
"""dnsperf -E value: ECS (option 8), family 1, source /24, scope 0, address 175.16.199 (Changchun)."""
OUTSTANDING = 100
START_TIMEOUT_S = 20.0


class BenchError(RuntimeError):
    """A server or dnsperf failed; the message quotes its output."""


def cpu_ns(pid: int) -> int:
    """Nanoseconds on CPU of all threads of a process (first field of /proc/PID/task/*/schedstat)."""
    return sum(int(path.read_text().split()[0]) for path in Path(f"/proc/{pid}/task").glob("*/schedstat"))


def dnsperf(port: int, queries: Path, duration_s: float) -> dict:
    """Run dnsperf on CPU0 against 127.0.0.1:port; returns ``completed``, ``lost``, ``qps``."""
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
         "-l", str(duration_s), "-q", str(OUTSTANDING), "-E", ECS_OPTION],
        capture_output=True, text=True, timeout=duration_s + 30)
    figures = {key: re.search(rf"{label}:\s+([\d.]+)", out.stdout)
               for key, label in [("completed", "Queries completed"), ("lost", "Queries lost"),
                                  ("qps", "Queries per second")]}
    if out.returncode != 0 or None in figures.values():
        raise BenchError(f"dnsperf failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return {key: float(match.group(1)) for key, match in figures.items()}


def measure(mode: str, queries: Path, duration_s: float) -> dict:
    """One run of ``mode`` in a fresh server process: dnsperf's figures, the server's CPU and counters."""
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, sys.executable, __file__, "--serve", mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("port "):
            raise BenchError(f"{mode} server did not start: {line}{server.stderr.read()}")
        before = cpu_ns(server.pid)
        load = dnsperf(int(line.split()[1]), queries, duration_s)
        cpu_s = (cpu_ns(server.pid) - before) / 1e9
        server.send_signal(signal.SIGTERM)
        stats = json.loads(server.stdout.readline() or "{}")
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return {**load, "cpu_s": cpu_s, "qps_per_core": load["completed"] / cpu_s if cpu_s else 0.0, "server": stats}


def main(argv: Sequence[str] | None = None) -> dict:
    """Measure every mode; returns and prints (last line) ``dns_{static,cached,uncached}_qps_per_core``
    (queries per CPU-second of the server), ``dns_*_qps`` (dnsperf's queries/s), ``dns_*_lost``
    (queries dnsperf saw no answer to), and ``dns_cached_vs_uncached`` (ratio of the per-core figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 2 s runs")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all modes (median kept)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    args = parser.parse_args(argv)
    rounds, duration_s = (1, 2.0) if args.quick else (args.repeat, args.duration)
    for tool in ("dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found: apt-get install dnsperf util-linux")
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="voicemesh-bench-dns-") as tmp:
        queries = Path(tmp) / "queries.txt"
        queries.write_text(QUERY + "\n")
        for n in range(rounds):
            for mode in MODES:
                run = measure(mode, queries, duration_s)
                runs[mode].append(run)
                print(f"round {n + 1}/{rounds} {mode}: {run['qps_per_core']:.0f} q/s per core, "
                      f"{run['qps']:.0f} q/s, {run['cpu_s'] / duration_s:.0%} CPU", file=sys.stderr)
    figures: dict[str, float] = {}
    print(f"{'server':10} {'q/s per core':>13} {'q/s':>9} {'CPU %':>6} {'lost':>6}")
    for mode in MODES:
        per_core = statistics.median(run["qps_per_core"] for run in runs[mode])
        qps = statistics.median(run["qps"] for run in runs[mode])
        cpu = statistics.median(run["cpu_s"] for run in runs[mode]) / duration_s * 100
        lost = sum(run["lost"] for run in runs[mode])
        print(f"{mode:10} {per_core:13.0f} {qps:9.0f} {cpu:6.0f} {lost:6.0f}")
        figures.update({f"dns_{mode}_qps_per_core": round(per_core), f"dns_{mode}_qps": round(qps),
                        f"dns_{mode}_lost": int(lost)})
    figures["dns_cached_vs_uncached"] = round(figures["dns_cached_qps_per_core"]
                                              / max(figures["dns_uncached_qps_per_core"], 1), 1)
    print(json.dumps(figures))
    return figures


def serve(mode: str) -> None:
    """The server process: answer on 127.0.0.1 (port printed as ``port N``) until SIGTERM, then print
    its counters as JSON."""
    import asyncio

    import uvloop

    async def run() -> None:
        from voicemesh.edge.config import DnsConfig
        from voicemesh.edge.dns_server import DnsServer
        from voicemesh.registry import MemoryRegistry, NodeRecord
        from voicemesh.runtime.udp import add_drain_reader, bind_udp, sockname

        topology = json.loads(TOPOLOGY.read_text())
        registry = MemoryRegistry()
        await registry.start()
        for n, edge in enumerate(topology["edges"], 1):
            site = topology["sites"][edge["site"]]
            await registry.register(NodeRecord("edge", edge["site"], edge["id"], public_relay=f"192.0.2.{n}:3478",
                                               lat=site["lat"], lon=site["lon"]))
        # One client floods from one prefix: response rate limiting is off, so what is measured is answering.
        server = DnsServer.from_config(DnsConfig(
            bind="127.0.0.1:0", geoip_db=str(GEOIP_DB), default_edge="edge-fra",
            cache_entries=0 if mode == "uncached" else DnsConfig.cache_entries, rrl_answers_per_s=0,
            rrl_nodata_per_s=0, rrl_nxdomains_per_s=0, rrl_errors_per_s=0))
        server.geodns.set_edges(registry.nodes("edge"))
        loop = asyncio.get_running_loop()
        if mode == "static":
            import dns.edns
            import dns.message

            query = dns.message.make_query(*QUERY.split(), use_edns=0, options=[dns.edns.ECSOption(*ECS_SUBNET)])
            body = server.geodns.respond(query.to_wire(), "127.0.0.1")[2:]
            sock = bind_udp("127.0.0.1", 0)

            def on_datagram(data: bytes, addr: tuple) -> None:
                try:
                    sock.sendto(data[:2] + body, addr)
                except OSError:
                    pass

            add_drain_reader(loop, sock, on_datagram)
            port, stats = sockname(sock)[1], dict
        else:
            server.start(registry)
            port, stats = server.address[1], server.stats
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, done.set)
        print(f"port {port}", flush=True)
        await done.wait()
        print(json.dumps(stats()), flush=True)

    uvloop.run(run())


if __name__ == "__main__":
    if "--serve" in sys.argv:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
        serve(sys.argv[sys.argv.index("--serve") + 1])
    else:
        main()
