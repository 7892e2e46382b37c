"""A CPU quota for the server under test: a cgroup with a CFS bandwidth limit (cgroup v2 ``cpu.max``, or
``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` on a v1 ``cpu`` hierarchy), so a server's knee comes at a
number of sessions the load client can drive.

Every process moved into the group (``add``), with its threads and later children, shares ``pct`` % of
one core. The period is short (PERIOD_US) so that a server at its quota is held back in short slices
rather than stalled for most of a 100 ms default period, which would read as late packets well before
the server is out of CPU.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000
"""CFS period, µs (the kernel's default is 100 ms)."""


class QuotaError(RuntimeError):
    """No cgroup could be made here (not root, no cpu controller); the message says which path failed."""


class CpuQuota:
    """A cgroup ``name`` limited to ``pct`` % of one core (0 < pct). Use as a context manager: made on
    entry, removed on exit once its processes are gone (they are the caller's to stop). Raises QuotaError
    on entry if the cgroup cannot be made or limited. ``cpu_stat``: the group's ``cpu.stat`` file."""

    def __init__(self, name: str, pct: float) -> None:
        self.pct = pct
        self.v2 = (ROOT / "cgroup.controllers").exists()
        self.path = ROOT / name if self.v2 else ROOT / "cpu" / name
        self.cpu_stat = self.path / "cpu.stat"
        self._made = False

    def __enter__(self) -> CpuQuota:
        quota_us = max(1000, round(PERIOD_US * self.pct / 100))
        try:
            if self.v2:
                if "cpu" not in (ROOT / "cgroup.subtree_control").read_text().split():
                    (ROOT / "cgroup.subtree_control").write_text("+cpu")
                self.path.mkdir()
                self._made = True
                (self.path / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
            else:
                self.path.mkdir()
                self._made = True
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota_us))
        except OSError as exc:
            self.close()
            raise QuotaError(f"cannot make a cgroup with a CPU quota at {exc.filename or ROOT}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group. Raises QuotaError."""
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise QuotaError(f"cannot move pid {pid} into {self.path}: {exc}") from exc

    def throttled_s(self) -> float:
        """Seconds the group has been held back by its quota so far (``cpu.stat``)."""
        stat = dict(line.split() for line in self.cpu_stat.read_text().splitlines() if line.strip())
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def close(self) -> None:
        """Remove the group (waits up to 5 s for its processes to be gone)."""
        if not self._made:
            return
        self._made = False
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
