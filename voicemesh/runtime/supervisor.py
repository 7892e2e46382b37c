"""Run N worker processes under one supervisor: start them, pin them to cores, restart one that exits on
its own, give up on one that cannot start, forward SIGTERM so they drain, and exit with a status that tells
what happened.

A worker tells the supervisor it started (``report_ready``) through a pipe whose write end it inherits
(READY_FD_ENV): one line, ``READY=1``, as systemd's sd_notify(3) says it. ``RestartPolicy`` is the sans-IO part
(starts, readiness, exit codes and times in, a decision out); ``Supervisor`` is its asyncio adapter and owns
the processes and pipes.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("voicemesh.supervisor")

USAGE_EXIT = 2
"""A worker exiting with this status refused its settings: every worker would, so none is restarted."""
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies."""


SUPERVISOR_PID_ENV = "VOICEMESH_SUPERVISOR_PID"
"""Set in each worker's environment: the supervisor's pid (see ``watch_supervisor``)."""
READY_FD_ENV = "VOICEMESH_READY_FD"
"""Set in each worker's environment: the file descriptor to write READY once it serves (``report_ready``)."""
READY = b"READY=1\n"
"""What a worker writes to READY_FD_ENV once it serves (sd_notify(3)'s readiness line)."""


def _term_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies (even by SIGKILL), so a worker never
    outlives it and serves on unsupervised; it drains as on any SIGTERM."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def watch_supervisor(interval_s: float = 1.0) -> None:
    """In a worker, once its SIGTERM handler is installed: send itself SIGTERM when its supervisor (pid in
    SUPERVISOR_PID_ENV) is no longer its parent. The parent-death signal alone can arrive while the worker
    is still starting, before it acts on SIGTERM, and be lost. Returns at once outside a supervisor."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor:
        return
    while os.getppid() == int(supervisor):
        await asyncio.sleep(interval_s)
    log.warning("the supervisor is gone: draining")
    os.kill(os.getpid(), signal.SIGTERM)


def report_ready() -> None:
    """In a worker, once it serves: tell its supervisor (write READY to the descriptor in READY_FD_ENV, then
    close it). Does nothing outside a supervisor; a supervisor that went away is not an error here
    (``watch_supervisor`` acts on that)."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if not fd.isdigit():
        return
    try:
        os.write(int(fd), READY)
        os.close(int(fd))
    except OSError as exc:
        log.warning("cannot tell the supervisor this worker is ready", extra={"error": str(exc)})


@dataclass(frozen=True)
class Restart:
    """Start the worker again after ``delay_s`` seconds."""

    delay_s: float


@dataclass(frozen=True)
class GiveUp:
    """Do not start the worker again: stop every worker and exit non-zero. ``reason`` says why, for people."""

    reason: str


@dataclass
class RestartPolicy:
    """What to do when a worker exited on its own (crash, kill, bad settings, unexpected exit).

    A start fails when the worker exits before it reported ready (``on_ready``): bad settings every restart
    would meet again (an address in use, a certificate it cannot read, a value it refuses), or a crash in
    start-up. After ``max_failed_starts`` failed starts in a row the policy gives up; a worker that gets
    ready again starts a new count. Exit status USAGE_EXIT (settings refused) gives up at once.

    A worker that was ready and then died (a crash under load, the OOM killer) is always restarted (the other
    workers keep serving meanwhile). Each restart, after a failed start or a death, waits ``first_delay_s``,
    doubled for each earlier exit of the same worker within ``window_s`` seconds, at most ``max_delay_s``: a
    worker that keeps dying backs off instead of spinning, and one that died once a day comes back at once.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    window_s: float = 60.0
    max_failed_starts: int = 3
    _exits: dict[int, list[float]] = field(default_factory=dict)
    _ready: set[int] = field(default_factory=set)
    _failed_starts: dict[int, int] = field(default_factory=dict)

    def on_start(self, worker: int) -> None:
        """Worker ``worker`` was started (again): not ready until ``on_ready``."""
        self._ready.discard(worker)

    def on_ready(self, worker: int) -> None:
        """Worker ``worker`` reported ready: its start succeeded."""
        self._ready.add(worker)
        self._failed_starts[worker] = 0

    def on_exit(self, worker: int, status: int, now: float) -> Restart | GiveUp:
        """Worker ``worker`` exited with ``status`` (``-N``: killed by signal N) at ``now`` (monotonic s) while
        no stop was asked: restart it after a delay, or give up."""
        if status == USAGE_EXIT:
            return GiveUp(f"worker {worker} refused its settings (exit status {USAGE_EXIT})")
        if worker not in self._ready:
            failed = self._failed_starts[worker] = self._failed_starts.get(worker, 0) + 1
            if failed >= self.max_failed_starts:
                return GiveUp(f"worker {worker} exited before it was ready {failed} times in a row (last exit "
                              f"status {status}): its settings or its host stop it from starting; its own log "
                              "lines above say why")
        self._ready.discard(worker)
        recent = [t for t in self._exits.get(worker, []) if now - t < self.window_s]
        recent.append(now)
        self._exits[worker] = recent
        return Restart(min(self.first_delay_s * 2 ** (len(recent) - 1), self.max_delay_s))


def exit_status(statuses: Sequence[int | None], gave_up: bool = False) -> int:
    """The supervisor's exit status from its workers' last ones: 0 if every worker exited 0 (and the policy
    did not give up on one: ``gave_up``, then 1), USAGE_EXIT if one refused its settings, else 1. A status
    killed by signal N (``-N`` from asyncio) counts as a failure; None (never started) counts as 0."""
    failed = [s for s in statuses if s]
    if not failed:
        return 1 if gave_up else 0
    return USAGE_EXIT if USAGE_EXIT in failed else 1


class Supervisor:
    """Runs ``argvs[i]`` as worker i, pinned to ``cpus[i]`` (a set of CPU numbers; None or an empty set:
    inherit), with ``env``.

    ``run(stop)`` returns when every worker has exited: after ``stop`` is set (each live worker gets
    SIGTERM and drains; after ``kill_after_s`` more it gets SIGKILL), or when the policy gives up on one (the
    others are stopped the same way). Returns ``exit_status`` of the last statuses; ``gave_up`` holds the
    policy's reason, if it gave up.
    """

    def __init__(self, argvs: Sequence[Sequence[str]], *, cpus: Sequence[set[int] | None] | None = None,
                 env: Mapping[str, str] | None = None, policy: RestartPolicy | None = None,
                 kill_after_s: float = 60.0) -> None:
        self.argvs = [list(argv) for argv in argvs]
        self.cpus = list(cpus) if cpus is not None else [None] * len(self.argvs)
        self.env = dict(env) if env is not None else None
        self.policy = policy or RestartPolicy()
        self.kill_after_s = kill_after_s
        self.procs: list[asyncio.subprocess.Process | None] = [None] * len(self.argvs)
        self.statuses: list[int | None] = [None] * len(self.argvs)
        self.restarts = [0] * len(self.argvs)
        self.gave_up = ""
        self._ready_pipes: dict[int, int] = {}  # worker -> read end of its readiness pipe, until READY or EOF

    async def _start(self, worker: int) -> asyncio.subprocess.Process:
        self._close_ready_pipe(worker)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        env = {**(self.env if self.env is not None else os.environ), SUPERVISOR_PID_ENV: str(os.getpid()),
               READY_FD_ENV: str(write_end)}
        try:
            proc = await asyncio.create_subprocess_exec(*self.argvs[worker], env=env, preexec_fn=_term_with_parent,
                                                        pass_fds=(write_end,))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._ready_pipes[worker] = read_end
        self.policy.on_start(worker)
        asyncio.get_running_loop().add_reader(read_end, self._read_ready, worker)
        cpus = self.cpus[worker]
        if cpus:
            # The interpreter is still starting: its threads, created later, inherit this mask.
            try:
                os.sched_setaffinity(proc.pid, cpus)
            except OSError as exc:
                log.warning("cannot pin worker", extra={"worker": worker, "cpus": sorted(cpus), "error": str(exc)})
        self.procs[worker] = proc
        log.info("worker started", extra={"worker": worker, "pid": proc.pid, "cpus": sorted(cpus or ())})
        return proc

    def _read_ready(self, worker: int) -> None:
        """Read worker ``worker``'s readiness pipe: READY marks it ready; READY or end of file closes the pipe."""
        read_end = self._ready_pipes.get(worker)
        if read_end is None:
            return
        try:
            line = os.read(read_end, len(READY))
        except BlockingIOError:
            return
        except OSError:
            line = b""
        if line == READY:
            self.policy.on_ready(worker)
            proc = self.procs[worker]
            log.info("worker ready", extra={"worker": worker, "pid": proc.pid if proc is not None else None})
        self._close_ready_pipe(worker)

    def _close_ready_pipe(self, worker: int) -> None:
        read_end = self._ready_pipes.pop(worker, None)
        if read_end is not None:
            asyncio.get_running_loop().remove_reader(read_end)
            os.close(read_end)

    async def run(self, stop: asyncio.Event) -> int:
        """Start every worker and supervise them until ``stop`` is set or the policy gives up on one."""
        loop = asyncio.get_running_loop()
        waits: dict[asyncio.Future[Any], int] = {}
        restarts: dict[asyncio.Future[Any], int] = {}
        for worker in range(len(self.argvs)):
            waits[asyncio.ensure_future((await self._start(worker)).wait())] = worker
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                done, _ = await asyncio.wait([*waits, *restarts, stopping], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in restarts:
                        worker = restarts.pop(task)
                        if stop.is_set():  # the policy gave up on another worker in this same round
                            continue
                        self.restarts[worker] += 1
                        waits[asyncio.ensure_future((await self._start(worker)).wait())] = worker
                    elif task in waits:
                        worker = waits.pop(task)
                        self.statuses[worker] = status = task.result()
                        self._read_ready(worker)  # a READY written just before the exit counts
                        decision = self.policy.on_exit(worker, status, loop.time())
                        if isinstance(decision, GiveUp):
                            self.gave_up = decision.reason
                            log.error("giving up on worker %d, stopping all: %s", worker, decision.reason,
                                      extra={"worker": worker, "status": status})
                            stop.set()
                            continue
                        log.warning("worker exited: restarting", extra={"worker": worker, "status": status,
                                                                         "delay_s": decision.delay_s})
                        restarts[asyncio.ensure_future(asyncio.sleep(decision.delay_s))] = worker
        finally:
            stopping.cancel()
            for task in restarts:
                task.cancel()
            await self._stop_all(waits)
            for worker in list(self._ready_pipes):
                self._close_ready_pipe(worker)
        return exit_status(self.statuses, bool(self.gave_up))

    async def _stop_all(self, waits: dict[asyncio.Future[Any], int]) -> None:
        """SIGTERM every live worker, wait for them to drain, SIGKILL what is left after ``kill_after_s``."""
        for worker in waits.values():
            proc = self.procs[worker]
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        if not waits:
            return
        done, pending = await asyncio.wait(waits, timeout=self.kill_after_s)
        for task in pending:
            proc = self.procs[waits[task]]
            if proc is not None and proc.returncode is None:
                log.error("worker did not stop: killing", extra={"worker": waits[task], "pid": proc.pid})
                proc.kill()
        if pending:
            await asyncio.wait(pending)
        for task, worker in waits.items():
            self.statuses[worker] = task.result()
