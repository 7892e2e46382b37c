"""Benchmark: concurrent voice sessions per CPU core of the transceiver, beside Janus EchoTest in the same run.

Three servers take the same calls from bench/load_client.py (aiortc callers sending pre-encoded Opus
at 50 packets/s, counting the echo), each on CPU 1, the "server core", with the load client on CPU 0:

- ``janus``: Janus EchoTest (bench/janus.py: Debian's janus in a network namespace of its own).
- ``trx``: the transceiver alone on the server core; edge, echo agent and etcd on the client's core.
- ``mesh``: transceiver, edge and echo agent on the server core; etcd on the client's.

For each N, every server still in the sweep gets a fresh set of processes, N calls and one window
after a settle time (CPU time of every process, loss, late packets, RSS). The sweep rises until the
knee: the first N where a call fails to connect or loss or late packets reach 1 %. Janus takes Opus
only (it forwards, it does not transcode); the transceiver and the mesh also run with the agent link
in PCM16. ``trx_*`` figures are the transceiver process alone (ICE, DTLS, SRTP, its RTP path, the
gRPC agent link and, in PCM16 mode, the Opus decode/encode); ``mesh_*`` add the edge relay and the
echo agent. Then ``voicemesh transceiver --workers 1`` and ``--workers 2`` take the same load, each worker
under the servers' quota: setups per second, and PCM16 at the transceiver's knee (past one worker's).

``python bench/transceiver.py [--quick]`` prints a table and, as its last line, one JSON object (see
``main``). Janus needs root and ``janus``; without them its figures are None and ``janus_skipped``
says why.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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

import cpuquota
import janus

SERVER_CPU = "1"
CLIENT_CPU = "0"
SWEEP = {"opus": [10, 20, 40, 60, 80, 100, 120, 160, 200, 240, 320], "pcm16": [4, 8, 12, 16, 24, 32, 40, 48, 64, 80]}
QUICK_SWEEP = {"opus": [10, 40], "pcm16": [4, 12]}
TARGETS = {"opus": ("janus", "trx", "mesh"), "pcm16": ("trx", "mesh")}
SERVER_PROCS = {"janus": ("janus",), "trx": ("trx",), "mesh": ("trx", "edge", "agent")}
"""The processes on the server core, whose CPU is the server's, per target."""
CORE_LIMIT_PCT = 90.0
"""A core busier than this (% of one core) counts as saturated; extrapolated sessions per core are taken at
this load. Under a quota (``--server-quota``), the server counts as saturated at this % of its quota."""
THROTTLED_LIMIT_PCT = 10.0
"""Under a quota, the server also counts as saturated when the quota held it back in this % of the CFS
periods of the window (bench/cpuquota.py)."""
SERVER_QUOTA_PCT = 25.0
"""The server processes' CPU quota by default, % of one core (bench/cpuquota.py): the knee then comes at a
quarter of the sessions a whole core would take, which the one-core load client can drive."""
LOSS_LIMIT_PCT = 1.0
LATE_LIMIT_PCT = 1.0
"""The knee: loss or late packets (inter-arrival above 60 ms) at or above these %."""
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


LAYOUTS = {
    "trx": {"etcd": CLIENT_CPU, "agent": CLIENT_CPU, "edge": CLIENT_CPU, "trx": SERVER_CPU},
    "mesh": {"etcd": CLIENT_CPU, "agent": SERVER_CPU, "edge": SERVER_CPU, "trx": SERVER_CPU},
    "workers": {},
}
"""CPU each mesh process is pinned to, per target ("workers": none; the supervisor pins its workers)."""


def _free_port_run(count: int) -> int:
    """A TCP port ``p`` such that ``p`` .. ``p + count - 1`` were all free a moment ago."""
    while True:
        base = _free_ports(1)[0]
        sockets = [socket.socket() for _ in range(count)]
        try:
            for i, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


def _worker_pids(supervisor: int, node_id: str) -> dict[str, int]:
    """``trx<i>`` -> pid of worker ``<node_id>-w<i>``, from the supervisor's children's command lines."""
    pids = {}
    for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        names = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--node-id"]
        if names and names[-1].startswith(f"{node_id}-w"):
            pids[f"trx{names[-1].rsplit('-w', 1)[1]}"] = int(pid)
    return pids


class Mesh:
    """etcd, echo agent, transceiver and edge as separate processes; ``url`` is the WHIP endpoint.

    ``cpus`` maps a process name (etcd, agent, trx, edge) to the CPU list it is pinned to (absent:
    unpinned). ``workers`` > 1 runs ``voicemesh transceiver --workers N``: its supervisor pins the
    workers, whose pids are ``trx0``, ``trx1``... in ``pids``. Use as a context manager: every process is
    stopped on exit (SIGTERM, SIGKILL after 5 s), whatever happened. Raises BenchError if a process does
    not come up within ``timeout_s``.
    """

    def __init__(self, agent_codec: str, workdir: Path, cpus: dict[str, str], workers: int = 1,
                 timeout_s: float = 30.0) -> None:
        self.agent_codec = agent_codec
        self.workdir = workdir
        self.cpus = cpus
        self.workers = workers
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

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        cpu = self.cpus.get(name)
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([*(["taskset", "-c", cpu] if cpu else []), *argv], stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
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
        etcd_client, etcd_peer, agent, edge_http = _free_ports(4)
        trx_http = _free_port_run(self.workers)
        etcd = shutil.which("etcd")
        if etcd is None:
            raise BenchError("etcd not found: apt-get install etcd-server")
        client_url, peer_url = f"http://127.0.0.1:{etcd_client}", f"http://127.0.0.1:{etcd_peer}"
        self._spawn("etcd", [
            etcd, "--name", "bench", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"bench={peer_url}", "--log-level", "error"])
        self._wait("etcd", f"{client_url}/health")
        cli = str(Path(sys.executable).with_name("voicemesh"))
        env = {**os.environ, "VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}",
               "VOICEMESH_REGISTRY": f"etcd://127.0.0.1:{etcd_client}",
               "VOICEMESH_LOG_LEVEL": "warning", "VOICEMESH_LOG_FORMAT": "text"}
        self._spawn("agent", [cli, "agent", "--bind", f"127.0.0.1:{agent}"], env)
        self._spawn("trx", [
            cli, "transceiver", "--http", f"127.0.0.1:{trx_http}", "--agent", f"127.0.0.1:{agent}",
            "--agent-codec", self.agent_codec, "--capacity", "10000", "--node-id", "trx",
            *(["--workers", str(self.workers)] if self.workers > 1 else [])], env)
        # The load client is one source opening calls many at a time: lift the edge's per-source WHIP rate.
        self._spawn("edge", [cli, "edge", "--public", "127.0.0.1:0", "--http", f"127.0.0.1:{edge_http}",
                             "--whip-rate-per-s", "10000", "--whip-burst", "10000"], env)
        for i in range(self.workers):
            self._wait("trx", f"http://127.0.0.1:{trx_http + i}/v1/status")
        self._wait("edge", f"http://127.0.0.1:{edge_http}/v1/status")
        if self.workers > 1:
            supervisor = self.pids.pop("trx")
            self.pids.update(_worker_pids(supervisor, "trx"))
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


def _load(argv: list[str], n: int, settle_s: float, window_s: float, log_tail) -> dict:
    """Run the load client (``argv``) and return its Window; raises BenchError quoting ``log_tail()``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=settle_s + window_s + 180)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"load client timed out at N={n}: {log_tail()}") from exc
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise BenchError(f"load client failed at N={n} (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def run_point(target: str, agent_codec: str, n: int, settle_s: float, window_s: float, workdir: Path,
              netns: janus.JanusNetns | None = None, workers: int = 1, parallel: int = 8,
              quota_pct: float | None = None) -> dict:
    """One measurement of ``target`` (janus, trx, mesh or workers; see the module): fresh processes, ``n``
    calls opened ``parallel`` at a time, one window. Returns the load client's Window fields plus
    ``target``, ``agent_codec``, ``workers``, ``server_pct`` (the server processes' CPU, % of one core),
    ``ms_per_session_s`` (their CPU ms per session-second), ``trx_ms_per_session_s`` (the transceiver
    processes alone; None for Janus), ``rss_mb_per_session`` (the main process' RSS growth per session,
    MB), ``client_side_pct`` (our processes on the client's core, % of one core), ``foreign_pct`` (per core:
    busy % not explained by the processes placed on it), ``quota_pct`` (the server processes' CPU quota, %
    of one core, None without; for ``workers``, each worker's own quota), ``throttled_s`` (seconds the quota held
    them back, from their start to the
    window's end) and ``throttled_pct`` (the % of the window's CFS periods in which it did).
    Raises BenchError, cpuquota.QuotaError (and janus.JanusError for Janus)."""
    client = [sys.executable, "-P", str(LOAD_CLIENT), "--n", str(n), "--settle", str(settle_s),
              "--window", str(window_s), "--parallel", str(parallel)]
    # -P: keep bench/ off sys.path, where bench/dns.py would shadow dnspython (imported by aioice).
    placed: dict[str, str] = {"client": CLIENT_CPU}
    # --workers: a quota of its own for each worker (below), as each would have a core of its own.
    quota = (cpuquota.CpuQuota(f"voicemesh-bench-{os.getpid()}-{workdir.name}", quota_pct)
             if quota_pct and target != "workers" else None)
    quota_args = ["--cpu-stat", str(quota.cpu_stat)] if quota else []
    if target == "janus":
        assert netns is not None
        # ip netns exec mounts a sysfs of its own, without the cgroup file systems: the client reads the
        # group's cpu.stat through our mount namespace.
        quota_args = ["--cpu-stat", f"/proc/{os.getpid()}/root{quota.cpu_stat}"] if quota else []
        with quota or contextlib.nullcontext(), janus.Janus(netns, workdir, SERVER_CPU) as server:
            if quota:
                quota.add(server.pid)
            argv = netns.exec(["taskset", "-c", CLIENT_CPU, *client, "--janus", janus.URL, "--bind",
                               janus.CLIENT_IP, "--pid", f"janus={server.pid}", *quota_args])
            row = _load(argv, n, settle_s, window_s, server.log_tail)
            row["throttled_s"] = round(quota.throttled_s(), 2) if quota else 0.0
            if not server.running():
                raise BenchError(f"janus exited during the run: {server.log_tail()}")
        placed["janus"] = SERVER_CPU
        server_procs, main_procs = ["janus"], ["janus"]
    else:
        layout = LAYOUTS[target]
        with (contextlib.ExitStack() as groups, quota or contextlib.nullcontext(),
              Mesh(agent_codec, workdir, layout, workers) as mesh):
            if quota:
                for name in SERVER_PROCS[target]:
                    quota.add(mesh.pids[name])
            worker_quotas = []
            for name in [name for name in mesh.pids if name.startswith("trx")] if target == "workers" and quota_pct else []:
                group = groups.enter_context(cpuquota.CpuQuota(f"voicemesh-bench-{os.getpid()}-{workdir.name}-{name}",
                                                               quota_pct))
                group.add(mesh.pids[name])
                worker_quotas.append(group)
            pins = ["taskset", "-c", CLIENT_CPU] if layout else []
            argv = [*pins, *client, "--url", mesh.url, *quota_args]
            for name, pid in mesh.pids.items():
                argv += ["--pid", f"{name}={pid}"]
            row = _load(argv, n, settle_s, window_s, lambda: mesh.log_tail("trx"))
            row["throttled_s"] = round(sum(group.throttled_s() for group in [*([quota] if quota else []),
                                                                             *worker_quotas]), 2)
        placed = {**placed, **layout} if layout else {}
        main_procs = [name for name in row["cpu_pct"] if name.startswith("trx")]
        server_procs = [*main_procs, *([] if target == "trx" else ["edge", "agent"])]
    cpu, busy, live = row["cpu_pct"], row["core_busy_pct"], max(row["connected"], 1)
    row.update(target=target, agent_codec=agent_codec, workers=workers, quota_pct=quota_pct)
    row["server_pct"] = round(sum(cpu[p] for p in server_procs), 2)
    row["ms_per_session_s"] = round(row["server_pct"] * 10 / live, 2)
    row["trx_ms_per_session_s"] = None if target == "janus" else round(sum(cpu[p] for p in main_procs) * 10 / live, 2)
    row["rss_mb_per_session"] = round(sum(row["rss_mb"][p] - row["rss_mb_idle"][p] for p in main_procs) / live, 3)
    row["client_side_pct"] = round(sum(cpu[p] for p, c in placed.items() if c == CLIENT_CPU and p in cpu), 2)
    row["foreign_pct"] = {core: round(busy[core] - sum(cpu[p] for p, c in placed.items() if c == core and p in cpu), 2)
                          for core in (SERVER_CPU, CLIENT_CPU)} if placed else {}
    return row


def passes(row: dict) -> bool:
    """Below the knee: every call connected, loss and late packets under 1 %."""
    return ("error" not in row and row["connected"] == row["n"] and row["loss_pct"] < LOSS_LIMIT_PCT
            and row["late_pct"] < LATE_LIMIT_PCT)


def saturated(row: dict) -> bool:
    """Our server processes used CORE_LIMIT_PCT of their core or quota, or the quota held them back in
    THROTTLED_LIMIT_PCT of the window's periods."""
    return (row["server_pct"] >= CORE_LIMIT_PCT * (row.get("quota_pct") or 100.0) / 100
            or (row.get("throttled_pct") or 0.0) >= THROTTLED_LIMIT_PCT)


def knee_cause(row: dict) -> str | None:
    """Why a run that does not pass is the knee, or None if it is not: a run disturbed by other load
    (``disturbed``) whose calls all connected, with neither our server processes nor our processes on the
    client's core near a full core, failed on late packets or loss from that load, not its own."""
    if "error" in row:
        return f"the run failed: {row['error'][:200]}"
    if saturated(row):
        return "server core saturated"
    if row.get("client_side_pct", 0.0) >= CORE_LIMIT_PCT:
        return "client core saturated"
    if row["connected"] < row["n"]:
        return "calls did not connect"
    if row.get("disturbed"):
        return None
    return "neither core saturated"


def is_knee(row: dict) -> bool:
    """The run ends its target's sweep (see ``knee_cause``)."""
    return not passes(row) and knee_cause(row) is not None


def usable(row: dict) -> bool:
    """A run whose CPU per session-second counts: every call connected, loss under 1 % (late packets from
    other load do not change what the server spent per session) and the server not saturated (a server
    held at its quota spends the quota whatever N is: its CPU per session-second would be quota / N)."""
    return ("error" not in row and row["connected"] == row["n"] and row["loss_pct"] < LOSS_LIMIT_PCT
            and not saturated(row))


HEADER = (f"{'target':6} {'codec':6} {'N':>4} {'conn':>4} {'loss%':>6} {'late%':>6} {'server%':>7} {'core1%':>6} "
          f"{'client%':>7} {'core0%':>6} {'ms/s':>6} {'trx ms/s':>8} {'MB/sess':>7} {'setup p50':>9} "
          f"{'1st audio':>9}  note")


def format_row(row: dict) -> str:
    """One table line for a run."""
    if "error" in row:
        return f"{row['target']:6} {row['agent_codec']:6} {row['n']:>4}  failed: {row['error'][:300]}"
    cpu, busy = row["cpu_pct"], row["core_busy_pct"]
    notes = row["errors"] + (["disturbed"] if row.get("disturbed") else [])
    if row.get("quota_pct"):
        notes.append(f"throttled {row['throttled_pct']} % of the window's periods, {row['throttled_s']:g} s in all")
    if not passes(row):
        notes.append(f"knee: {knee_cause(row)}" if is_knee(row) else "fails from other load: not the knee")
    trx = row["trx_ms_per_session_s"]
    return (f"{row['target']:6} {row['agent_codec']:6} {row['n']:>4} {row['connected']:>4} {row['loss_pct']:>6.2f} "
            f"{row['late_pct']:>6.2f} {row['server_pct']:>7.1f} {busy[SERVER_CPU]:>6.1f} {cpu['client']:>7.1f} "
            f"{busy[CLIENT_CPU]:>6.1f} {row['ms_per_session_s']:>6.2f} {'-' if trx is None else f'{trx:.2f}':>8} "
            f"{row['rss_mb_per_session']:>7.2f} {row['setup_ms_p50'] or 0:>9.1f} "
            f"{row['first_audio_minus_dtls_ms_p50'] or 0:>9.1f}  {'; '.join(notes)}")


def foreign_limit(core: str, quota_pct: float | None) -> float:
    """The most other load (% of a core) a run on ``core`` takes before it counts as disturbed: under a quota
    the server core may carry what the quota leaves free, less FOREIGN_LIMIT_PCT."""
    if core != SERVER_CPU or not quota_pct:
        return FOREIGN_LIMIT_PCT
    return max(FOREIGN_LIMIT_PCT, 100.0 - quota_pct - FOREIGN_LIMIT_PCT)


def measure(target: str, agent_codec: str, n: int, settle_s: float, window_s: float, root: Path,
            netns: janus.JanusNetns | None, attempts_max: int, quiet_wait_s: float,
            quota_pct: float | None = None) -> dict:
    """One point of a sweep: a run disturbed by other load is repeated (``attempts_max`` runs in all) and
    the least disturbed one kept. A run that fails outright (a process or the load client) gives a row with
    ``error``, which counts as the knee."""
    attempts = []
    for attempt in range(attempts_max):
        wait_quiet(max_s=quiet_wait_s)
        workdir = root / f"{target}-{agent_codec}-{n}-{attempt}"
        workdir.mkdir()
        try:
            row = run_point(target, agent_codec, n, settle_s, window_s, workdir, netns, quota_pct=quota_pct)
        except (BenchError, janus.JanusError, cpuquota.QuotaError) as exc:
            return {"target": target, "agent_codec": agent_codec, "n": n, "error": str(exc)}
        row["disturbed"] = any(pct > foreign_limit(core, quota_pct) for core, pct in row["foreign_pct"].items())
        attempts.append(row)
        if not row["disturbed"]:
            break
    return min(attempts, key=lambda r: max(r["foreign_pct"].values()))


def sweep(agent_codec: str, counts: list[int], targets: list[str], settle_s: float, window_s: float, root: Path,
          netns: janus.JanusNetns | None = None, attempts_max: int = ATTEMPTS,
          quiet_wait_s: float = QUIET_WAIT_S, quota_pct: float | None = None) -> dict[str, list[dict]]:
    """Rising N, the targets side by side at each N, each until its knee (``is_knee``), the server processes
    under ``quota_pct`` % of one core (None: the whole core). Returns each target's rows in rising N."""
    rows: dict[str, list[dict]] = {t: [] for t in targets}
    active = list(targets)
    for n in counts:
        for target in list(active):
            row = measure(target, agent_codec, n, settle_s, window_s, root, netns, attempts_max, quiet_wait_s,
                          quota_pct)
            print(format_row(row), flush=True)
            rows[target].append(row)
            if is_knee(row):
                active.remove(target)
        if not active:
            break
    return rows


def prefix(target: str, agent_codec: str) -> str:
    """The summary keys' prefix of a target: ``janus``, ``trx_opus``, ``mesh_pcm``..."""
    return "janus" if target == "janus" else f"{target}_{SHORT[agent_codec]}"


def summarize(target: str, agent_codec: str, rows: list[dict]) -> dict:
    """One target's sweep (rows in rising N): ``<prefix>_ms_per_session_s`` (the server processes' CPU per
    session-second in the most loaded usable run below the knee), ``_max_sessions`` (that run's N; clean:
    also under 1 % late packets, ``_max_sessions_clean``), ``_knee_n`` (the first N that ended the sweep;
    None if it ended first), ``_knee`` (why), ``_sessions_per_core`` with ``_basis``: measured (the largest
    clean N below the knee, divided by the quota's share of a core) when our server processes saturated their
    core or quota, else extrapolated (90 % of a core / ms per session-second), and ``_rss_mb_per_session``,
    ``_first_audio_minus_dtls_ms`` (p50 at the lowest N)."""
    key = prefix(target, agent_codec)
    knee = next((r for r in rows if is_knee(r)), None)
    below = rows[:rows.index(knee)] if knee else rows
    counted = [r for r in below if usable(r)]
    clean = [r for r in below if passes(r)]
    out: dict = {f"{key}_knee_n": knee["n"] if knee else None,
                 f"{key}_knee": knee_cause(knee) if knee else "no knee: the sweep ended first",
                 f"{key}_max_sessions_clean": max((r["n"] for r in clean), default=0)}
    if not counted:
        return {**out, f"{key}_ms_per_session_s": None, f"{key}_max_sessions": 0, f"{key}_sessions_per_core": None,
                f"{key}_basis": "no usable run", f"{key}_rss_mb_per_session": None,
                f"{key}_first_audio_minus_dtls_ms": None}
    best = max(counted, key=lambda r: r["n"])
    measured = knee is not None and knee_cause(knee) == "server core saturated" and bool(clean)
    share = (best.get("quota_pct") or 100.0) / 100
    if measured:
        basis = ("measured: the largest clean N below the knee" if share == 1 else
                 f"measured: the largest clean N below the knee under a {share * 100:g} % quota, / {share:g}")
    elif knee:
        basis = (f"extrapolated from N={best['n']} (90 % of a core / ms per session-second): the knee came from "
                 f"{out[f'{key}_knee']}")
    else:
        basis = f"extrapolated from N={best['n']}: the sweep ended before the knee"
    return {
        **out,
        f"{key}_ms_per_session_s": best["ms_per_session_s"],
        f"{key}_max_sessions": best["n"],
        f"{key}_sessions_per_core": (math.floor(out[f"{key}_max_sessions_clean"] / share) if measured
                                     else math.floor(CORE_LIMIT_PCT * 10 / best["ms_per_session_s"])),
        f"{key}_basis": basis,
        f"{key}_rss_mb_per_session": best["rss_mb_per_session"],
        f"{key}_first_audio_minus_dtls_ms": counted[0]["first_audio_minus_dtls_ms_p50"],
    }


def ratio(ours: list[dict], janus_rows: list[dict]) -> tuple[float | None, int | None]:
    """Our CPU per session-second ÷ Janus', at the largest N both have a usable run below their knees (the
    same sessions); (None, None) if there is none."""
    def below(rows: list[dict]) -> list[dict]:
        knee = next((r for r in rows if is_knee(r)), None)
        return [r for r in (rows[:rows.index(knee)] if knee else rows) if usable(r)]

    theirs = {r["n"]: r for r in below(janus_rows) if r["ms_per_session_s"]}
    common = [r for r in below(ours) if r["n"] in theirs]
    if not common:
        return None, None
    best = max(common, key=lambda r: r["n"])
    return round(best["ms_per_session_s"] / theirs[best["n"]]["ms_per_session_s"], 2), best["n"]


def workers_bench(pcm_n: int, setup_n: int, settle_s: float, window_s: float, root: Path,
                  quota_pct: float | None = None) -> dict:
    """``--workers 1`` against ``--workers 2``, nothing else pinned (the load client and the mesh share the
    two cores with the workers; the supervisor pins each worker to a core), each worker under a CPU quota of
    its own of ``quota_pct`` % of one core (None: none), as the sweep's servers are, so that ``pcm_n`` (the
    sweep's PCM16 knee) is past one worker's capacity as it was past the transceiver's:
    ``workers<W>_setups_per_s`` (``setup_n`` Opus calls opened 16 at a time: calls connected / seconds from
    the first offer to the last connected) and PCM16 at ``pcm_n`` sessions (``workers<W>_pcm_loss_pct``,
    ``_late_pct``, ``_trx_pct``: all workers' CPU, % of one core)."""
    out: dict = {"workers_pcm_n": pcm_n, "workers_setup_n": setup_n, "workers_runs": []}
    for workers in (1, 2):
        for agent_codec, n, parallel in (("opus", setup_n, 16), ("pcm16", pcm_n, 8)):
            wait_quiet(max_s=10.0)
            workdir = root / f"workers{workers}-{agent_codec}-{n}"
            workdir.mkdir()
            try:
                row = run_point("workers", agent_codec, n, settle_s, window_s, workdir, workers=workers,
                                parallel=parallel, quota_pct=quota_pct)
            except BenchError as exc:
                row = {"target": "workers", "agent_codec": agent_codec, "n": n, "workers": workers, "error": str(exc)}
            print(f"workers={workers} " + format_row(row), flush=True)
            out["workers_runs"].append(row)
            if "error" in row:
                continue
            if agent_codec == "opus":
                out[f"workers{workers}_setups_per_s"] = round(row["connected"] / row["setup_wall_s"], 1)
            else:
                out[f"workers{workers}_pcm_loss_pct"] = row["loss_pct"]
                out[f"workers{workers}_pcm_late_pct"] = row["late_pct"]
                out[f"workers{workers}_trx_pct"] = {p: v for p, v in row["cpu_pct"].items() if p.startswith("trx")}
    return out


@contextlib.contextmanager
def janus_netns() -> Iterator[tuple[janus.JanusNetns | None, str]]:
    """Janus' network namespace, unique to this process, removed on exit; (None, why) if Janus cannot run."""
    if os.geteuid() != 0:
        yield None, "Janus runs in a network namespace: needs root"
        return
    if shutil.which("janus") is None:
        yield None, "janus not installed (apt-get install janus; make apt-bench)"
        return
    try:
        netns = janus.JanusNetns(f"voicemesh-janus-{os.getpid()}", f"vmj{os.getpid()}")
        with netns:
            yield netns, ""
    except janus.JanusError as exc:
        yield None, str(exc)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table and, last, the JSON summary; return the summary.

    The summary has, per target (see ``summarize``): ``janus_*``, ``trx_opus_*``, ``mesh_opus_*``,
    ``trx_pcm_*``, ``mesh_pcm_*``; the ratios ``trx_opus_vs_janus`` and ``mesh_opus_vs_janus`` (CPU per
    session-second at the largest N both passed, in ``*_vs_janus_n``); ``first_audio_minus_dtls_ms``
    (through the mesh, Opus, p50 at its lowest N); ``trx_rss_mb_per_session`` (the transceiver's RSS growth
    per session, Opus); the ``workers*`` figures (see ``workers_bench``); ``layout`` and ``runs`` (every
    run's measurements).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer N, shorter settle and window, no repeat of disturbed runs")
    parser.add_argument("--opus-n", type=lambda s: [int(x) for x in s.split(",")], help="N to step through, e.g. 10,20,40")
    parser.add_argument("--pcm-n", type=lambda s: [int(x) for x in s.split(",")], help="N to step through, e.g. 4,8,12")
    parser.add_argument("--settle", type=float, help="seconds after all calls connected (default 3, quick 2)")
    parser.add_argument("--window", type=float, help="measured seconds (default 10, quick 5)")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 1 vs 2 runs")
    parser.add_argument("--targets", type=lambda s: s.split(","), default=["janus", "trx", "mesh"],
                        help="servers to run, of janus, trx, mesh (default all; a ratio needs janus beside)")
    parser.add_argument("--codecs", type=lambda s: s.split(","), default=["opus", "pcm16"],
                        help="agent link formats to sweep, of opus, pcm16 (default both; --workers needs pcm16)")
    parser.add_argument("--server-quota", type=float, default=SERVER_QUOTA_PCT,
                        help=f"CPU quota of the server processes, %% of one core (default {SERVER_QUOTA_PCT:g}; 0: none, "
                             "the whole server core)")
    parser.add_argument("--media-path", choices=("lean", "aiortc"), default="lean",
                        help="the transceiver's media path (default lean; aiortc: the reference path)")
    parser.add_argument("--attempts", type=int, help=f"runs of a point disturbed by other load (default {ATTEMPTS}, "
                                                     "quick 1)")
    parser.add_argument("--quiet-wait", type=float, help=f"seconds to wait for quiet cores before a run (default "
                                                         f"{QUIET_WAIT_S:g}, quick 10)")
    args = parser.parse_args(argv)
    os.environ["VOICEMESH_MEDIA_PATH"] = args.media_path
    counts = dict(QUICK_SWEEP if args.quick else SWEEP)
    counts["opus"] = args.opus_n or counts["opus"]
    counts["pcm16"] = args.pcm_n or counts["pcm16"]
    settle_s = args.settle if args.settle is not None else (2.0 if args.quick else 3.0)
    window_s = args.window if args.window is not None else (5.0 if args.quick else 10.0)
    summary: dict = {"layout": f"server on CPU {SERVER_CPU}: janus, or the transceiver alone (trx), or transceiver, "
                               f"edge and echo agent (mesh); load client and etcd on CPU {CLIENT_CPU} (with the "
                               f"edge and agent for trx)",
                     "knee": f"first N with a call not connected, loss >= {LOSS_LIMIT_PCT:g} % or late packets >= "
                             f"{LATE_LIMIT_PCT:g} %",
                     "server_quota_pct": args.server_quota or None,
                     "media_path": args.media_path, "settle_s": settle_s, "window_s": window_s, "runs": []}
    print(HEADER, flush=True)
    attempts, quiet = (1, 10.0) if args.quick else (ATTEMPTS, QUIET_WAIT_S)
    attempts = args.attempts or attempts
    quiet = args.quiet_wait if args.quiet_wait is not None else quiet
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="voicemesh-bench-trx-", dir=shm) as tmp, janus_netns() as (netns, janus_skipped):
        rows: dict[tuple[str, str], list[dict]] = {}
        for agent_codec in ("opus", "pcm16"):
            targets = [t for t in TARGETS[agent_codec] if t in args.targets and (t != "janus" or netns is not None)]
            if agent_codec not in args.codecs or not targets:
                continue
            found = sweep(agent_codec, counts[agent_codec], targets, settle_s, window_s, Path(tmp), netns, attempts, quiet,
                          args.server_quota or None)
            for target, target_rows in found.items():
                rows[target, agent_codec] = target_rows
                summary.update(summarize(target, agent_codec, target_rows))
                summary["runs"].extend(target_rows)
        if not args.no_workers and ("trx", "pcm16") in rows:
            pcm_rows = rows["trx", "pcm16"]
            knee = next((r["n"] for r in pcm_rows if is_knee(r)), math.ceil(pcm_rows[-1]["n"] * 1.5))
            summary.update(workers_bench(knee, 20 if args.quick else 40, settle_s, window_s, Path(tmp),
                                         args.server_quota or None))
    if netns is None:
        summary["janus_skipped"] = janus_skipped
    janus_rows = rows.get(("janus", "opus"), [])
    for target in ("trx", "mesh"):
        summary[f"{target}_opus_vs_janus"], summary[f"{target}_opus_vs_janus_n"] = ratio(rows.get((target, "opus"), []),
                                                                                               janus_rows)
    summary["first_audio_minus_dtls_ms"] = summary.get("mesh_opus_first_audio_minus_dtls_ms")
    summary["trx_rss_mb_per_session"] = summary.get("trx_opus_rss_mb_per_session")
    for target, agent_codec in itertools.product(("janus", "trx", "mesh"), ("opus", "pcm16")):
        key = prefix(target, agent_codec)
        if f"{key}_ms_per_session_s" in summary and (target != "janus" or agent_codec == "opus"):
            print(f"{key}: {summary[f'{key}_ms_per_session_s']} ms CPU per session-second at N="
                  f"{summary[f'{key}_max_sessions']}; knee at N={summary[f'{key}_knee_n']} "
                  f"({summary[f'{key}_knee']}); {summary[f'{key}_sessions_per_core']} sessions per core "
                  f"({summary[f'{key}_basis']})")
    print(f"transceiver / Janus: {summary['trx_opus_vs_janus']} (N={summary['trx_opus_vs_janus_n']}); "
          f"mesh / Janus: {summary['mesh_opus_vs_janus']} (N={summary['mesh_opus_vs_janus_n']}); first audio "
          f"after DTLS p50 {summary['first_audio_minus_dtls_ms']} ms", flush=True)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(KeyboardInterrupt):
        main()
