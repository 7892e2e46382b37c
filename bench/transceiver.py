"""Benchmark: concurrent voice sessions per CPU core of the transceiver, agent link in Opus and in PCM16 mode.

For each agent codec and each N it starts a fresh mesh on loopback (etcd, then
``voicemesh agent``, ``voicemesh transceiver`` and ``voicemesh edge``, each in
its own process under uvloop), runs N calls from bench/load_client.py, and
reads the CPU time of every process and the loss over a window after a
settle time. Layout: the transceiver, the edge and the echo agent are pinned
to CPU 1 (the "server core"); the load client and etcd to CPU 0. The
transceiver's own CPU is read from its process alone, so the
``trx_*`` figures are the transceiver only (ICE, DTLS, SRTP, aiortc's RTP
path, the gRPC agent link and, in PCM16 mode, the Opus decode/encode);
``mesh_*`` adds the edge relay and the echo agent sharing its core.

``python bench/transceiver.py [--quick]`` prints a table and, as its last
line, one JSON object (see ``main``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SERVER_CPU = "1"
CLIENT_CPU = "0"
SWEEP = {"opus": [10, 20, 40, 60, 80], "pcm16": [4, 8, 12, 16, 24, 32]}
QUICK_SWEEP = {"opus": [10, 40], "pcm16": [4, 12]}
CORE_LIMIT_PCT = 90.0
"""A core busier than this (% of one core) counts as saturated; sessions per core are taken at this load."""
LOSS_LIMIT_PCT = 1.0
QUIET_PCT = 10.0
"""Before each run, wait (up to QUIET_WAIT_S) until both cores are below this busy %."""
QUIET_WAIT_S = 60.0
FOREIGN_LIMIT_PCT = 10.0
"""A run where other processes took more than this % of a core is disturbed: it is repeated (ATTEMPTS in all)
and the least disturbed attempt is kept."""
ATTEMPTS = 3
LOAD_CLIENT = Path(__file__).with_name("load_client.py")
SHORT = {"opus": "opus", "pcm16": "pcm"}


class BenchError(RuntimeError):
    """A mesh process failed to start or the load client failed; the message quotes its log."""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _cores_busy_s() -> dict[str, float]:
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values]
                busy[name[3:]] = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return busy


def wait_quiet(threshold_pct: float = QUIET_PCT, max_s: float = QUIET_WAIT_S) -> float:
    """Wait until every core was below ``threshold_pct`` busy for 1 s, or ``max_s``; returns seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        before = _cores_busy_s()
        time.sleep(1.0)
        after = _cores_busy_s()
        if all(100 * (after[k] - before[k]) < threshold_pct for k in after):
            break
    return time.monotonic() - start


class Mesh:
    """etcd, echo agent, transceiver and edge as separate processes; ``url`` is the WHIP endpoint.

    Use as a context manager: every process is stopped on exit (SIGTERM, SIGKILL after 5 s),
    whatever happened. Raises BenchError if a process does not come up within ``timeout_s``.
    """

    def __init__(self, agent_codec: str, workdir: Path, timeout_s: float = 30.0) -> None:
        self.agent_codec = agent_codec
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.pids: dict[str, int] = {}
        self.url = ""
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def __enter__(self) -> Mesh:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, cpu: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        self._procs.append((name, proc))
        self.pids[name] = proc.pid

    def _wait(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not _http_ok(url):
            for proc_name, proc in self._procs:
                if proc.poll() is not None:
                    raise BenchError(f"{proc_name} exited with {proc.returncode}: {self.log_tail(proc_name)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not up at {url} after {self.timeout_s:g} s: {self.log_tail(name)}")
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last ``lines`` lines of process ``name``'s log."""
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _start(self) -> None:
        etcd_client, etcd_peer, agent, trx_http, edge_http = _free_ports(5)
        etcd = shutil.which("etcd")
        if etcd is None:
            raise BenchError("etcd not found: apt-get install etcd-server")
        client_url, peer_url = f"http://127.0.0.1:{etcd_client}", f"http://127.0.0.1:{etcd_peer}"
        self._spawn("etcd", CLIENT_CPU, [
            etcd, "--name", "bench", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"bench={peer_url}", "--log-level", "error"])
        self._wait("etcd", f"{client_url}/health")
        cli = str(Path(sys.executable).with_name("voicemesh"))
        env = {**os.environ, "VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}",
               "VOICEMESH_REGISTRY": f"etcd://127.0.0.1:{etcd_client}",
               "VOICEMESH_LOG_LEVEL": "warning", "VOICEMESH_LOG_FORMAT": "text"}
        self._spawn("agent", SERVER_CPU, [cli, "agent", "--bind", f"127.0.0.1:{agent}"], env)
        self._spawn("trx", SERVER_CPU, [
            cli, "transceiver", "--http", f"127.0.0.1:{trx_http}", "--agent", f"127.0.0.1:{agent}",
            "--agent-codec", self.agent_codec, "--capacity", "10000"], env)
        self._spawn("edge", SERVER_CPU, [
            cli, "edge", "--public", "127.0.0.1:0", "--http", f"127.0.0.1:{edge_http}"], env)
        self._wait("trx", f"http://127.0.0.1:{trx_http}/v1/status")
        self._wait("edge", f"http://127.0.0.1:{edge_http}/v1/status")
        self.url = f"http://127.0.0.1:{edge_http}/v1/sessions"

    def close(self) -> None:
        """Stop every process: the mesh first, then etcd (which the mesh deregisters from)."""
        mesh = [proc for name, proc in self._procs if name != "etcd"]
        etcd = [proc for name, proc in self._procs if name == "etcd"]
        for group in (mesh, etcd):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()


def run_point(agent_codec: str, n: int, settle_s: float, window_s: float, workdir: Path) -> dict:
    """One measurement: a fresh mesh, ``n`` calls, one window. Returns the load client's Window fields plus
    ``server_pct`` (trx + edge + agent, % of one core), ``trx_ms_per_session_s``, ``mesh_ms_per_session_s``
    (CPU ms per session-second) and ``foreign_pct`` (core busy % not explained by the measured processes).
    Raises BenchError."""
    with Mesh(agent_codec, workdir) as mesh:
        # -P: keep bench/ off sys.path, where bench/dns.py would shadow dnspython (imported by aioice).
        argv = ["taskset", "-c", CLIENT_CPU, sys.executable, "-P", str(LOAD_CLIENT), "--url", mesh.url, "--n", str(n),
                "--settle", str(settle_s), "--window", str(window_s)]
        for name in ("trx", "edge", "agent", "etcd"):
            argv += ["--pid", f"{name}={mesh.pids[name]}"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=settle_s + window_s + 120)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"load client timed out at N={n}: {mesh.log_tail('trx')}") from exc
        lines = done.stdout.strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise BenchError(f"load client failed at N={n} (exit {done.returncode}): {done.stderr[-2000:]}")
    row = json.loads(lines[-1])
    cpu, busy, live = row["cpu_pct"], row["core_busy_pct"], max(row["connected"], 1)
    row["agent_codec"] = agent_codec
    row["server_pct"] = round(cpu["trx"] + cpu["edge"] + cpu["agent"], 2)
    row["trx_ms_per_session_s"] = round(cpu["trx"] * 10 / live, 2)
    row["mesh_ms_per_session_s"] = round(row["server_pct"] * 10 / live, 2)
    row["foreign_pct"] = {SERVER_CPU: round(busy[SERVER_CPU] - row["server_pct"], 2),
                          CLIENT_CPU: round(busy[CLIENT_CPU] - cpu["client"] - cpu["etcd"], 2)}
    return row


def _passes(row: dict) -> bool:
    """All calls connected, loss under 1 % and the server core under 90 %."""
    return (row["connected"] == row["n"] and row["loss_pct"] < LOSS_LIMIT_PCT
            and row["server_pct"] < CORE_LIMIT_PCT)


def summarize(agent_codec: str, rows: list[dict]) -> dict:
    """Per codec: CPU per session and sessions per core from one sweep (rows in rising N).

    The CPU figures come from the most loaded passing run (all connected, loss < 1 %, server core < 90 %).
    ``trx_*_sessions_per_core`` is the transceiver alone: 90 % of a core / its ms per session-second.
    ``mesh_*_sessions_per_core`` (transceiver + edge + agent on one core) is the largest passing N when a
    run failed on the server core; otherwise (the client core saturated first, or the sweep ended
    before saturation) the same extrapolation with the mesh's CPU; ``mesh_*_basis`` says which.
    """
    key = SHORT[agent_codec]
    passing = [r for r in rows if _passes(r)]
    if not passing:
        return {f"trx_{key}_ms_per_session_s": None, f"trx_{key}_sessions_per_core": None,
                f"mesh_{key}_ms_per_session_s": None, f"mesh_{key}_sessions_per_core": None,
                f"mesh_{key}_basis": "no run passed"}
    best = max(passing, key=lambda r: r["n"])
    failed = next((r for r in rows if r["n"] > best["n"] and not _passes(r)), None)
    if failed is None:
        basis = "extrapolated: the sweep ended before saturation"
    elif failed["core_busy_pct"][CLIENT_CPU] >= CORE_LIMIT_PCT and failed["server_pct"] < CORE_LIMIT_PCT:
        basis = "extrapolated: the client core saturated first"
    else:
        basis = "measured" + (" (the failing run was disturbed by other load)" if failed["disturbed"] else "")
    mesh_per_core = best["n"] if basis.startswith("measured") else math.floor(CORE_LIMIT_PCT * 10 / best["mesh_ms_per_session_s"])
    return {
        f"trx_{key}_ms_per_session_s": best["trx_ms_per_session_s"],
        f"trx_{key}_sessions_per_core": math.floor(CORE_LIMIT_PCT * 10 / best["trx_ms_per_session_s"]),
        f"mesh_{key}_ms_per_session_s": best["mesh_ms_per_session_s"],
        f"mesh_{key}_sessions_per_core": mesh_per_core,
        f"mesh_{key}_basis": basis,
    }


HEADER = (f"{'codec':6} {'N':>4} {'conn':>4} {'loss%':>6} {'late%':>6} {'trx%':>6} {'edge%':>6} {'agent%':>6} "
          f"{'core1%':>6} {'client%':>7} {'core0%':>6} {'trx ms/s':>8} {'mesh ms/s':>9} {'setup p50':>9}  note")


def format_row(row: dict) -> str:
    """One table line for a run."""
    cpu, busy = row["cpu_pct"], row["core_busy_pct"]
    notes = row["errors"] + (["disturbed"] if row["disturbed"] else [])
    return (f"{row['agent_codec']:6} {row['n']:>4} {row['connected']:>4} {row['loss_pct']:>6.2f} {row['late_pct']:>6.2f} "
            f"{cpu['trx']:>6.1f} {cpu['edge']:>6.1f} {cpu['agent']:>6.1f} {busy[SERVER_CPU]:>6.1f} "
            f"{cpu['client']:>7.1f} {busy[CLIENT_CPU]:>6.1f} {row['trx_ms_per_session_s']:>8.2f} "
            f"{row['mesh_ms_per_session_s']:>9.2f} {row['setup_ms_p50'] or 0:>9.1f}  {'; '.join(notes)}")


def sweep(agent_codec: str, counts: list[int], settle_s: float, window_s: float, root: Path,
          attempts_max: int = ATTEMPTS, quiet_wait_s: float = QUIET_WAIT_S) -> Iterator[dict]:
    """Run rising N until a run fails on loss or server CPU; a run disturbed by other load is repeated
    (``attempts_max`` runs in all) and the least disturbed one kept."""
    for n in counts:
        attempts = []
        for attempt in range(attempts_max):
            wait_quiet(max_s=quiet_wait_s)
            workdir = root / f"{agent_codec}-{n}-{attempt}"
            workdir.mkdir()
            row = run_point(agent_codec, n, settle_s, window_s, workdir)
            row["disturbed"] = max(row["foreign_pct"].values()) > FOREIGN_LIMIT_PCT
            attempts.append(row)
            if not row["disturbed"]:
                break
        row = min(attempts, key=lambda r: max(r["foreign_pct"].values()))
        print(format_row(row), flush=True)
        yield row
        if not _passes(row):
            return


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table and, last, the JSON summary; return the summary.

    The summary has ``trx_opus_ms_per_session_s``, ``trx_pcm_ms_per_session_s`` (transceiver process CPU ms
    per session-second), ``trx_opus_sessions_per_core``, ``trx_pcm_sessions_per_core``, the ``mesh_*``
    counterparts (see ``summarize``), ``layout`` and ``runs`` (every run's measurements).
    Raises BenchError if the mesh or the load client fails.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer N, shorter settle and window, no repeat of disturbed runs")
    parser.add_argument("--opus-n", type=lambda s: [int(x) for x in s.split(",")], help="N to step through, e.g. 10,20,40")
    parser.add_argument("--pcm-n", type=lambda s: [int(x) for x in s.split(",")], help="N to step through, e.g. 4,8,12")
    parser.add_argument("--settle", type=float, help="seconds after all calls connected (default 3, quick 2)")
    parser.add_argument("--window", type=float, help="measured seconds (default 10, quick 5)")
    args = parser.parse_args(argv)
    counts = dict(QUICK_SWEEP if args.quick else SWEEP)
    counts["opus"] = args.opus_n or counts["opus"]
    counts["pcm16"] = args.pcm_n or counts["pcm16"]
    settle_s = args.settle if args.settle is not None else (2.0 if args.quick else 3.0)
    window_s = args.window if args.window is not None else (5.0 if args.quick else 10.0)
    summary: dict = {"layout": f"transceiver, edge, echo agent on CPU {SERVER_CPU} (separate processes); "
                               f"load client and etcd on CPU {CLIENT_CPU}",
                     "trx_basis": "transceiver process alone: 90 % of a core / its CPU ms per session-second "
                                  "in the most loaded passing run",
                     "settle_s": settle_s, "window_s": window_s, "runs": []}
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="voicemesh-bench-trx-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for agent_codec in ("opus", "pcm16"):
            rows = list(sweep(agent_codec, counts[agent_codec], settle_s, window_s, Path(tmp),
                              attempts_max=1 if args.quick else ATTEMPTS,
                              quiet_wait_s=10.0 if args.quick else QUIET_WAIT_S))
            summary.update(summarize(agent_codec, rows))
            summary["runs"].extend(rows)
    for key in ("opus", "pcm"):
        print(f"{key}: transceiver {summary[f'trx_{key}_ms_per_session_s']} ms CPU per session-second, "
              f"{summary[f'trx_{key}_sessions_per_core']} sessions per core alone; with edge + agent on its core "
              f"{summary[f'mesh_{key}_sessions_per_core']} ({summary[f'mesh_{key}_basis']})")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(KeyboardInterrupt):
        main()
