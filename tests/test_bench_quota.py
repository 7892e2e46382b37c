"""The server's CPU quota in ``make bench`` (bench/cpuquota.py, bench/transceiver.py): the cgroup holds the
limit it was given, counts the periods it held a busy process back, and is gone afterwards; a run held at
its quota is saturated and its CPU per session-second is not used."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str):
    # By path: bench/ on sys.path would let bench/dns.py shadow dnspython for the rest of the session.
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cpuquota = _load("cpuquota")
_load("janus")
transceiver = _load("transceiver")

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root")]


def _limit(quota) -> str:
    if quota.v2:
        return (quota.path / "cpu.max").read_text().strip()
    return f"{(quota.path / 'cpu.cfs_quota_us').read_text().strip()} {(quota.path / 'cpu.cfs_period_us').read_text().strip()}"


def test_a_busy_process_in_the_group_is_held_to_its_quota_and_the_group_is_removed() -> None:
    quota = cpuquota.CpuQuota(f"vmq-test-{os.getpid()}", 20)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with quota:
            assert _limit(quota) == f"2000 {cpuquota.PERIOD_US}"
            quota.add(busy.pid)
            assert str(busy.pid) in (quota.path / "cgroup.procs").read_text().split()
            deadline = time.monotonic() + 20
            while not quota.throttled_s():
                assert time.monotonic() < deadline, "the quota never held the busy process back"
                time.sleep(0.1)
            busy.kill()
            busy.wait()
    finally:
        busy.kill()
        busy.wait()
    assert not quota.path.exists()


def _row(server_pct: float, throttled_pct: float | None, quota_pct: float | None) -> dict:
    return {"n": 40, "connected": 40, "loss_pct": 0.0, "late_pct": 0.0, "server_pct": server_pct,
            "throttled_pct": throttled_pct, "quota_pct": quota_pct}


def test_a_run_held_at_its_quota_is_saturated_and_not_used_for_cpu_per_session() -> None:
    assert transceiver.usable(_row(10.0, 0.0, 25.0))
    assert not transceiver.usable(_row(23.0, 0.0, 25.0))
    assert not transceiver.usable(_row(15.0, 30.0, 25.0))
    assert transceiver.usable(_row(60.0, None, None))
    assert transceiver.passes(_row(23.0, 30.0, 25.0))
