"""Run N worker processes under one supervisor: start them, pin them to cores, restart one that exits on
its own, forward SIGTERM so they drain, and exit with a status that tells what happened.

``RestartPolicy`` is the sans-IO part (exit codes and times in, a decision out); ``Supervisor`` is its
asyncio adapter and owns the processes.
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


@dataclass
class RestartPolicy:
    """When to start a worker again after it exited on its own (crash, kill, unexpected exit).

    A worker is restarted after ``first_delay_s``, doubled for each earlier exit of the same worker within
    ``window_s`` seconds, at most ``max_delay_s``: a worker that crashes at start-up backs off instead of
    spinning, and one that crashed once a day comes back at once. It never gives up on a crash (the other
    workers keep serving meanwhile). Exit status USAGE_EXIT (bad settings) is never restarted.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    window_s: float = 60.0
    _exits: dict[int, list[float]] = field(default_factory=dict)

    def on_exit(self, worker: int, status: int, now: float) -> float | None:
        """Worker ``worker`` exited with ``status`` at ``now`` (monotonic s) while no stop was asked.
        Returns the delay (s) before starting it again, or None: do not restart (bad settings)."""
        if status == USAGE_EXIT:
            return None
        recent = [t for t in self._exits.get(worker, []) if now - t < self.window_s]
        recent.append(now)
        self._exits[worker] = recent
        return min(self.first_delay_s * 2 ** (len(recent) - 1), self.max_delay_s)


def exit_status(statuses: Sequence[int | None]) -> int:
    """The supervisor's exit status from its workers' last ones: 0 if every worker exited 0, USAGE_EXIT if
    one refused its settings, else 1. A status killed by signal N (``-N`` from asyncio) counts as a failure;
    None (never started) counts as 0."""
    failed = [s for s in statuses if s]
    if not failed:
        return 0
    return USAGE_EXIT if USAGE_EXIT in failed else 1


class Supervisor:
    """Runs ``argvs[i]`` as worker i, pinned to ``cpus[i]`` (a set of CPU numbers; None or an empty set:
    inherit), with ``env``.

    ``run(stop)`` returns when every worker has exited: after ``stop`` is set (each live worker gets
    SIGTERM and drains; after ``kill_after_s`` more it gets SIGKILL), or when one exits with USAGE_EXIT
    (the others are stopped the same way). Returns ``exit_status`` of the last statuses.
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

    async def _start(self, worker: int) -> asyncio.subprocess.Process:
        env = {**(self.env if self.env is not None else os.environ), SUPERVISOR_PID_ENV: str(os.getpid())}
        proc = await asyncio.create_subprocess_exec(*self.argvs[worker], env=env, preexec_fn=_term_with_parent)
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

    async def run(self, stop: asyncio.Event) -> int:
        """Start every worker and supervise them until ``stop`` is set or a worker refuses its settings."""
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
                        self.restarts[worker] += 1
                        waits[asyncio.ensure_future((await self._start(worker)).wait())] = worker
                    elif task in waits:
                        worker = waits.pop(task)
                        self.statuses[worker] = status = task.result()
                        delay = self.policy.on_exit(worker, status, loop.time())
                        if delay is None:
                            log.error("worker refused its settings: stopping", extra={"worker": worker,
                                                                                       "status": status})
                            stop.set()
                            continue
                        log.warning("worker exited: restarting", extra={"worker": worker, "status": status,
                                                                         "delay_s": delay})
                        restarts[asyncio.ensure_future(asyncio.sleep(delay))] = worker
        finally:
            stopping.cancel()
            for task in restarts:
                task.cancel()
            await self._stop_all(waits)
        return exit_status(self.statuses)

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
