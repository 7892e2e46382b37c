"""Benchmark of the edge relay's cost per forwarded packet and added latency, against coturn and the direct
path, on loopback (method and how to run: bench/README.md).

Every measurement starts fresh processes: the receiver `rcv` (standing in for the transceiver or the TURN
peer) and the blaster `gen` pinned to CPU0, the relay under test pinned to CPU1. CPU µs per packet is the
relay's utime+stime (/proc/PID/stat) over the run divided by the packets `rcv` received. The last line
printed is one JSON object (see `main`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import turn

from voicemesh.wire import stun
from voicemesh.wire.token import TokenCodec

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
LOADGEN = HERE / "loadgen"
RAW_RESULTS = OUT / "relay_runs.jsonl"

PAYLOAD_BYTES = 200
CLIENT_HOST = "127.0.0.1"
PEER_HOST = "127.0.0.2"
LOAD_CPU = 0
RELAY_CPU = 1
FRAME_HEADER_BYTES = 12
"""The edge relay's IPv4 backbone frame header (voicemesh/wire/frame.py) that `rcv` skips."""

TOKEN_KEY = b"voicemesh-bench-relay-token-key!"
TURN_USER, TURN_PASSWORD, TURN_REALM = "bench", "benchpass", "bench.local"
TURN_CHANNEL = 0x4000

TARGETS = ("direct", "relay", "coturn", "relay-tcp", "coturn-tcp")
"""Paths measured: the direct path, the edge relay and coturn with the client on UDP, then both with the
client on TCP (the edge's ICE-TCP listener with RFC 4571 framing; coturn's TURN over TCP with ChannelData,
RFC 8656 12.5), the peer side UDP throughout."""
RFC4571 = 1
"""gen's CHANNEL value for RFC 4571 framing."""
LOADS = {"sat": 0, "10k": 10_000, "1k": 1_000}
"""Load name -> packets/s offered (0: blast as fast as gen can)."""
DURATIONS_S = {"sat": 4.0, "10k": 3.0, "1k": 5.0}
QUICK_DURATIONS_S = {"sat": 1.5, "10k": 1.5, "1k": 2.0}

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 10.0


class BenchError(RuntimeError):
    """A measurement could not be made (a process did not start, or nothing arrived)."""


def build() -> None:
    """Compile gen and rcv with gcc -O2 into bench/out/ if a binary is missing or older than its source."""
    OUT.mkdir(exist_ok=True)
    for name in ("gen", "rcv"):
        source, binary = LOADGEN / f"{name}.c", OUT / name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the driver dies without cleaning up (prctl(2))."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Processes:
    """Child processes started pinned to one CPU (stdout piped unless given), all stopped by PID when the
    `running()` block exits: SIGTERM, then SIGKILL after 3 s. Children also get SIGKILL if the driver
    itself is killed."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, argv: Sequence[str], cpu: int, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *map(str, argv)], text=True, preexec_fn=_die_with_parent, **kwargs
        )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@contextmanager
def running() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.stop_all()


def read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The next stdout line of `proc`, or BenchError if none comes within `timeout_s` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise BenchError(f"{proc.args} printed nothing within {timeout_s} s (exit code {proc.poll()})")
    return line


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a process, all threads, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


def schedstat_ns(pid: int) -> int:
    """Nanoseconds on CPU of all threads of a process (first field of /proc/PID/task/*/schedstat)."""
    return sum(int(p.read_text().split()[0]) for p in Path(f"/proc/{pid}/task").glob("*/schedstat"))


def steal_ticks() -> dict[int, int]:
    """Steal time per CPU in clock ticks (/proc/stat, 8th value of each cpuN line)."""
    steal = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            steal[int(name[3:])] = int(values[7])
    return steal


def free_port(host: str) -> int:
    """A port that is free for both UDP and TCP on `host` right now (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port


def binding_request(username: str) -> bytes:
    """A STUN Binding request carrying only USERNAME, which is all the edge relay reads of a client's check."""
    return turn.encode_request(stun.BINDING_REQUEST, turn.attribute(stun.USERNAME, username.encode()))[0]


def _send(client: socket.socket, data: bytes) -> None:
    """Send one packet to the relay: a datagram, or an RFC 4571 frame on a TCP socket."""
    client.sendall(data if client.type == socket.SOCK_DGRAM else len(data).to_bytes(2, "big") + data)


def _recv(client: socket.socket) -> bytes:
    """One packet from the relay: a datagram, or an RFC 4571 frame on a TCP socket."""
    if client.type == socket.SOCK_DGRAM:
        return client.recv(2048)
    length = int.from_bytes(_recv_exactly(client, 2), "big")
    return _recv_exactly(client, length)


def _recv_exactly(client: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = client.recv(n - len(data))
        if not chunk:
            raise BenchError("the relay closed the TCP connection")
        data += chunk
    return data


def start_relay(processes: Processes, client: socket.socket) -> tuple[subprocess.Popen, tuple[str, int]]:
    """Start bench/relay_server.py on RELAY_CPU and open a proven flow for `client` (UDP, or TCP to the
    relay's ICE-TCP listener); returns the server and the transceiver address the relay forwards to, free
    again for `rcv` to bind.

    Until `rcv` starts, a socket of ours plays the transceiver: the client's Binding request (USERNAME
    <token>:bench) goes up, the transceiver's Binding request comes down, and the client's success response
    with its transaction id proves the flow (edge/relay_core.py), so the run measures the open flow's path.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as transceiver:
        transceiver.bind((PEER_HOST, 0))
        transceiver.settimeout(START_TIMEOUT_S)
        peer = transceiver.getsockname()
        tcp = client.type == socket.SOCK_STREAM
        server = processes.start(
            [sys.executable, HERE / "relay_server.py", TOKEN_KEY.hex(), f"{peer[0]}:{peer[1]}", *(["tcp"] if tcp else [])],
            RELAY_CPU,
        )
        addresses = json.loads(read_line(server, START_TIMEOUT_S))
        token = TokenCodec({1: TOKEN_KEY}, 1).mint(
            region=1, transceiver=1, nonce=secrets.randbits(32), issued_at=int(time.time()), lifetime_s=3600
        )
        client.settimeout(START_TIMEOUT_S)
        client.connect(tuple(addresses["tcp" if tcp else "public"]))
        try:
            _send(client, binding_request(f"{token}:bench"))
            header = transceiver.recv(2048)[:FRAME_HEADER_BYTES]
            check, txid = turn.encode_request(stun.BINDING_REQUEST, turn.attribute(stun.USERNAME, b"bench"))
            transceiver.sendto(header + check, tuple(addresses["backbone"]))
            if _recv(client) != check:
                raise BenchError("the relay did not pass the transceiver's check to the client")
            _send(client, struct.pack("!HH", stun.BINDING_SUCCESS, 0) + stun.MAGIC_COOKIE + txid)
            transceiver.recv(2048)
        except TimeoutError as exc:
            raise BenchError(f"the relay did not open a flow for the client: {exc}") from exc
        client.settimeout(None)
    return server, peer


def start_coturn(processes: Processes, peer: tuple[str, int], client: socket.socket) -> subprocess.Popen:
    """Start a fresh turnserver on RELAY_CPU (flags of bench-relay.md) and bind a channel from `client` (UDP, or
    TCP: TURN over TCP, RFC 8656 12.5, the peer side staying UDP) to `peer`."""
    logs = OUT / "coturn"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    port = free_port(CLIENT_HOST)
    server = processes.start(
        [
            "turnserver", "-n", f"--listening-ip={CLIENT_HOST}", f"--listening-port={port}",
            f"--relay-ip={CLIENT_HOST}", "--lt-cred-mech", f"--user={TURN_USER}:{TURN_PASSWORD}",
            f"--realm={TURN_REALM}", "--no-tls", "--no-dtls", "--no-cli", "--relay-threads=1",
            "--allow-loopback-peers", "--min-port=49152", "--max-port=49999",
            f"--log-file={logs / 'turn.log'}", "--simple-log", f"--pidfile={logs / 'turn.pid'}",
        ],
        RELAY_CPU,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    connected = False
    while True:
        try:
            if not connected:  # TCP (TURN over TCP): until coturn listens; UDP: at once
                client.connect((CLIENT_HOST, port))
                connected = True
            turn.TurnClient(client, TURN_USER, TURN_PASSWORD, timeout_s=0.2).channel_to(peer, TURN_CHANNEL)
            break
        except (turn.TurnError, ConnectionRefusedError) as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"coturn did not bind a channel: {exc} (exit code {server.poll()})") from exc
            time.sleep(0.1)
    client.settimeout(None)
    return server


def measure(target: str, load: str, duration_s: float) -> dict:
    """One run: fresh rcv, relay (unless `target` is "direct") and gen; returns the raw figures.

    Keys: target, load, rate_pps (0 = blast), duration_s, sent, received, loss (fraction), offered_pps,
    delivered_pps, lat_p50_us/p90/p99/max, rxq_ovfl, steal_cpu0_ms, steal_cpu1_ms, and for the relays
    cpu_s, us_per_packet, us_per_packet_schedstat, user_share, util (fraction of CPU1), plus relay_stats
    (Relay.stats()) for our relay. Raises BenchError if a process fails or no packet arrives.
    """
    rate = LOADS[load]
    relay = target.startswith("relay")
    offset = FRAME_HEADER_BYTES if relay else 0
    tcp = target.endswith("-tcp")
    with running() as processes, socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as client:
        client.bind((CLIENT_HOST, 0))
        if tcp:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = None
        if relay:
            server, (_, port) = start_relay(processes, client)
            rcv = processes.start([OUT / "rcv", PEER_HOST, port, offset, duration_s + 10], LOAD_CPU)
            read_line(rcv, START_TIMEOUT_S)
        else:
            rcv = processes.start([OUT / "rcv", PEER_HOST, 0, offset, duration_s + 10], LOAD_CPU)
            peer = (PEER_HOST, int(read_line(rcv, START_TIMEOUT_S).split()[1]))
            if target == "direct":
                client.connect(peer)
            else:
                server = start_coturn(processes, peer, client)
        channel = TURN_CHANNEL if target.startswith("coturn") else RFC4571 if tcp else 0

        steal0 = steal_ticks()
        if server is not None:
            ticks0, sched0 = cpu_ticks(server.pid), schedstat_ns(server.pid)
        wall0 = time.monotonic()
        gen = processes.start(
            [OUT / "gen", client.fileno(), rate, duration_s, PAYLOAD_BYTES, channel],
            LOAD_CPU,
            pass_fds=(client.fileno(),),
        )
        received = json.loads(read_line(rcv, duration_s + 15))
        if server is not None:
            ticks1, sched1 = cpu_ticks(server.pid), schedstat_ns(server.pid)
        wall1 = time.monotonic()
        steal1 = steal_ticks()
        sent = json.loads(read_line(gen, 5))
        relay_stats = None
        if relay:
            server.terminate()
            relay_stats = json.loads(read_line(server, 5))
            server.wait(timeout=5)

    n = received["received"]
    if n == 0:
        raise BenchError(f"{target} at {load}: nothing arrived (gen {sent}, relay {relay_stats})")
    span_s = (received["last_ns"] - received["first_ns"]) / 1e9
    result = {
        "target": target,
        "load": load,
        "rate_pps": rate,
        "duration_s": duration_s,
        "sent": sent["sent"],
        "received": n,
        "loss": 1 - n / sent["sent"],
        "offered_pps": sent["sent"] / sent["seconds"],
        "delivered_pps": n / span_s if span_s > 0 else None,
        **{k: received[k] for k in ("lat_p50_us", "lat_p90_us", "lat_p99_us", "lat_max_us", "rxq_ovfl")},
        **{f"steal_cpu{cpu}_ms": (steal1[cpu] - steal0[cpu]) * 1000 / CLK_TCK for cpu in (LOAD_CPU, RELAY_CPU)},
    }
    if server is not None:
        user, system = ticks1[0] - ticks0[0], ticks1[1] - ticks0[1]
        cpu_s = (user + system) / CLK_TCK
        result |= {
            "cpu_s": cpu_s,
            "us_per_packet": cpu_s * 1e6 / n,
            "us_per_packet_schedstat": (sched1 - sched0) / 1e3 / n,
            "user_share": user / (user + system) if user + system else None,
            "util": cpu_s / (wall1 - wall0),
        }
    if relay_stats is not None:
        if relay_stats["flows"] != 1 or relay_stats["flows_open"] != 1 or relay_stats["drops"]:
            raise BenchError(f"relay did not forward one open flow cleanly: {relay_stats}")
        result["relay_stats"] = relay_stats
    return result


def median_runs(runs: list[dict]) -> dict:
    """Median of every numeric field over runs of the same target and load (None when no run has it)."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if r.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
    merged["runs"] = len(runs)
    return merged


def summarize(cells: dict[tuple[str, str], dict]) -> dict:
    """The flat JSON summary (µs, packets/s, fractions) from the median cell of each (target, load)."""

    def get(target: str, load: str, key: str) -> float | None:
        return cells[target, load].get(key)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def diff(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    summary: dict[str, float | None] = {
        "direct_p50_us": get("direct", "1k", "lat_p50_us"),
        "direct_p99_us": get("direct", "1k", "lat_p99_us"),
        "direct_sat_pps": get("direct", "sat", "delivered_pps"),
    }
    for path in TARGETS[1:]:
        target = path.replace("-", "_")
        sat = get(path, "sat", "us_per_packet")
        summary |= {
            f"{target}_us_per_packet": sat,
            f"{target}_us_per_packet_10k": get(path, "10k", "us_per_packet"),
            f"{target}_us_per_packet_1k": get(path, "1k", "us_per_packet"),
            f"{target}_pps_per_core": 1e6 / sat if sat else None,
            f"{target}_user_share": get(path, "sat", "user_share"),
            f"{target}_util_sat": get(path, "sat", "util"),
            f"{target}_loss_sat": get(path, "sat", "loss"),
            f"{target}_loss_10k": get(path, "10k", "loss"),
            f"{target}_delivered_pps_sat": get(path, "sat", "delivered_pps"),
            f"{target}_p50_us": get(path, "1k", "lat_p50_us"),
            f"{target}_p99_us": get(path, "1k", "lat_p99_us"),
            f"{target}_added_p50_us": diff(get(path, "1k", "lat_p50_us"), summary["direct_p50_us"]),
            f"{target}_added_p99_us": diff(get(path, "1k", "lat_p99_us"), summary["direct_p99_us"]),
        }
    summary["relay_vs_coturn_cpu_ratio"] = ratio(summary["relay_us_per_packet"], summary["coturn_us_per_packet"])
    summary["relay_vs_coturn_cpu_ratio_10k"] = ratio(
        summary["relay_us_per_packet_10k"], summary["coturn_us_per_packet_10k"]
    )
    summary["relay_vs_coturn_added_p50_ratio"] = ratio(summary["relay_added_p50_us"], summary["coturn_added_p50_us"])
    summary["relay_tcp_vs_coturn_tcp_cpu_ratio"] = ratio(summary["relay_tcp_us_per_packet"],
                                                         summary["coturn_tcp_us_per_packet"])
    summary["relay_tcp_vs_coturn_tcp_cpu_ratio_10k"] = ratio(summary["relay_tcp_us_per_packet_10k"],
                                                             summary["coturn_tcp_us_per_packet_10k"])
    summary["relay_tcp_vs_relay_cpu_ratio"] = ratio(summary["relay_tcp_us_per_packet"], summary["relay_us_per_packet"])
    summary["relay_tcp_vs_relay_cpu_ratio_10k"] = ratio(summary["relay_tcp_us_per_packet_10k"],
                                                        summary["relay_us_per_packet_10k"])
    summary["relay_tcp_over_udp_added_p50_us"] = diff(summary["relay_tcp_p50_us"], summary["relay_p50_us"])
    summary["relay_tcp_over_udp_added_p99_us"] = diff(summary["relay_tcp_p99_us"], summary["relay_p99_us"])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table(cells: dict[tuple[str, str], dict], summary: dict) -> str:
    """A human-readable table of the median figures, with ratios to coturn and to the direct path."""
    lines = [
        f"{'path':<7} {'µs/pkt sat':>10} {'pkt/s/core':>10} {'µs/pkt 10k':>10} {'µs/pkt 1k':>9} {'user':>5} "
        f"{'util':>5} {'loss sat':>8} {'dlvd/s sat':>10} {'p50 1k':>7} {'p99 1k':>7} {'+p50':>6} {'+p99':>7} "
        f"{'CPU ×coturn sat/10k':>19} {'p50 ×direct':>11}",
    ]
    direct_p50 = summary["direct_p50_us"]
    for target in TARGETS:
        sat, k10, k1 = cells[target, "sat"], cells[target, "10k"], cells[target, "1k"]
        relayed = target != "direct"
        key = target.replace("-", "_")
        vs_coturn = "-"
        if relayed:
            anchor = "coturn-tcp" if target.endswith("-tcp") else "coturn"
            a = sat["us_per_packet"] / cells[anchor, "sat"]["us_per_packet"]
            b = k10["us_per_packet"] / cells[anchor, "10k"]["us_per_packet"]
            vs_coturn = f"{a:.2f} / {b:.2f}"
        lines.append(
            f"{target:<7} {_fmt(sat.get('us_per_packet'), '.2f'):>10} "
            f"{_fmt(summary.get(f'{key}_pps_per_core'), ',.0f'):>10} "
            f"{_fmt(k10.get('us_per_packet'), '.2f'):>10} {_fmt(k1.get('us_per_packet')):>9} "
            f"{_fmt(sat.get('user_share'), '.0%'):>5} {_fmt(sat.get('util'), '.0%'):>5} {sat['loss']:>8.1%} "
            f"{_fmt(sat['delivered_pps'], ',.0f'):>10} {k1['lat_p50_us']:>7.0f} {k1['lat_p99_us']:>7.0f} "
            f"{_fmt(summary.get(f'{key}_added_p50_us'), '+.0f'):>6} "
            f"{_fmt(summary.get(f'{key}_added_p99_us'), '+.0f'):>7} {vs_coturn:>19} "
            f"{k1['lat_p50_us'] / direct_p50:>11.2f}"
        )
    lines.append(
        "µs/pkt: relay CPU (utime+stime) per packet received; pkt/s/core = 1e6 / µs/pkt at saturation; "
        "latency one-way at 1,000 packets/s (µs); +p50/+p99: minus the direct path; the -tcp paths' CPU ratio is to "
        "coturn-tcp (client on TCP, peer on UDP)."
    )
    steal = [c.get("steal_cpu1_ms", 0) for c in cells.values()]
    lines.append(f"steal on CPU1 per run (median cell): max {max(steal):.0f} ms; raw runs in {RAW_RESULTS}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the whole benchmark and return the summary dict (also printed by the script as the last line).

    Options: --quick (durations 1.5/1.5/2 s instead of 4/3/5 s), --repeat N (N alternating rounds, medians).
    Summary keys (µs, packets/s, fractions): relay_/coturn_ us_per_packet (saturation), us_per_packet_10k,
    us_per_packet_1k, pps_per_core, user_share, util_sat, loss_sat, loss_10k, delivered_pps_sat, p50_us,
    p99_us, added_p50_us, added_p99_us; direct_p50_us, direct_p99_us, direct_sat_pps;
    relay_vs_coturn_cpu_ratio (saturation), relay_vs_coturn_cpu_ratio_10k, relay_vs_coturn_added_p50_ratio.
    The same per-path keys for relay_tcp_ and coturn_tcp_ (client over TCP), and the TCP path's cost:
    relay_tcp_vs_relay_cpu_ratio (and _10k), relay_tcp_vs_coturn_tcp_cpu_ratio (and _10k),
    relay_tcp_over_udp_added_p50_us and _p99_us (its latency minus the UDP relay's, at 1,000 packets/s).
    Raises BenchError if a run fails, after killing its processes.
    """
    parser = argparse.ArgumentParser(prog="bench/relay.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="alternating rounds (medians)")
    args = parser.parse_args(argv)
    durations = QUICK_DURATIONS_S if args.quick else DURATIONS_S
    build()
    runs: list[dict] = []
    with RAW_RESULTS.open("w") as raw:
        for round_number in range(1, args.repeat + 1):
            for load in LOADS:
                for target in TARGETS:
                    result = measure(target, load, durations[load]) | {"round": round_number}
                    runs.append(result)
                    raw.write(json.dumps(result) + "\n")
                    print(
                        f"round {round_number} {target:<6} {load:<3}: {result['received']} packets, "
                        f"{_fmt(result.get('us_per_packet'), '.2f')} µs/pkt, p50 {result['lat_p50_us']:.0f} µs, "
                        f"loss {result['loss']:.1%}",
                        file=sys.stderr,
                    )
    cells = {
        (t, load): median_runs([r for r in runs if r["target"] == t and r["load"] == load])
        for t in TARGETS
        for load in LOADS
    }
    summary = summarize(cells)
    print(table(cells, summary))
    return summary


if __name__ == "__main__":
    print(json.dumps(main()))
