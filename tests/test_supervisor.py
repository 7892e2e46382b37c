"""The worker supervisor's restart rule and exit status (voicemesh/runtime/supervisor.py), and the command
line each transceiver worker gets (voicemesh/app/cli.py)."""

from __future__ import annotations

import sys

import pytest

from voicemesh.app.cli import worker_argvs
from voicemesh.runtime.config import ConfigError
from voicemesh.runtime.supervisor import USAGE_EXIT, GiveUp, Restart, RestartPolicy, exit_status

pytestmark = pytest.mark.unit


def crash_after_ready(policy: RestartPolicy, worker: int, status: int, now: float) -> Restart | GiveUp:
    """Worker ``worker`` started, reported ready, then exited with ``status`` at ``now``."""
    policy.on_start(worker)
    policy.on_ready(worker)
    return policy.on_exit(worker, status, now)


def test_a_crashing_worker_backs_off_and_one_that_crashed_long_ago_comes_back_at_once() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=4.0, window_s=60.0)
    assert [crash_after_ready(policy, 0, -9, t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [
        Restart(0.5), Restart(1.0), Restart(2.0), Restart(4.0), Restart(4.0)]
    assert crash_after_ready(policy, 1, 1, 4.0) == Restart(0.5), "each worker has its own history"
    assert crash_after_ready(policy, 0, 1, 200.0) == Restart(0.5), "exits older than the window are forgotten"


def test_a_worker_that_refuses_its_settings_is_not_restarted() -> None:
    decision = RestartPolicy().on_exit(0, USAGE_EXIT, 0.0)
    assert isinstance(decision, GiveUp) and "refused its settings" in decision.reason


def test_a_worker_that_never_gets_ready_is_given_up_after_the_cap_with_backoff_in_between() -> None:
    """Exit status 1 from a bad setting (an address in use, a file it cannot read): without the cap the
    supervisor restarted it forever."""
    policy = RestartPolicy(first_delay_s=0.5, max_failed_starts=3)
    policy.on_start(0)
    assert policy.on_exit(0, 1, 0.0) == Restart(0.5)
    policy.on_start(0)
    assert policy.on_exit(0, 1, 1.0) == Restart(1.0)
    policy.on_start(0)
    decision = policy.on_exit(0, 1, 3.0)
    assert isinstance(decision, GiveUp)
    assert "worker 0" in decision.reason and "3 times in a row" in decision.reason and "status 1" in decision.reason


def test_a_worker_that_got_ready_again_starts_a_new_count_of_failed_starts() -> None:
    policy = RestartPolicy(max_failed_starts=2)
    policy.on_start(0)
    assert isinstance(policy.on_exit(0, 1, 0.0), Restart)
    policy.on_start(0)
    policy.on_ready(0)
    assert isinstance(policy.on_exit(0, -9, 100.0), Restart), "it died after it was ready: a crash, restarted"
    policy.on_start(0)
    assert isinstance(policy.on_exit(0, 1, 200.0), Restart), "one failed start since it was last ready"
    policy.on_start(1)
    assert isinstance(policy.on_exit(1, 1, 200.0), Restart), "each worker has its own count"
    policy.on_start(0)
    assert isinstance(policy.on_exit(0, 1, 201.0), GiveUp)


def test_a_worker_that_dies_under_load_is_restarted_however_often() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=30.0, window_s=60.0, max_failed_starts=3)
    decisions = [crash_after_ready(policy, 0, -9, t) for t in range(0, 600, 5)]
    assert all(isinstance(d, Restart) for d in decisions)
    assert decisions[-1] == Restart(30.0), "but backs off to the cap"


@pytest.mark.parametrize(("statuses", "expected"), [
    ([0, 0], 0), ([0, None], 0), ([0, 1], 1), ([-9, 0], 1), ([1, USAGE_EXIT], USAGE_EXIT)])
def test_exit_status(statuses: list[int | None], expected: int) -> None:
    assert exit_status(statuses) == expected


def test_giving_up_is_a_failure_even_on_a_worker_that_exited_0() -> None:
    """A worker that exits 0 at once, three times, was given up on: the supervisor must not say success."""
    assert exit_status([0, 0], gave_up=True) == 1
    assert exit_status([USAGE_EXIT, 0], gave_up=True) == USAGE_EXIT


def test_each_worker_gets_its_own_node_id_api_port_and_backbone_port_which_win_over_the_flags() -> None:
    argv = ["transceiver", "--workers", "2", "--http", "127.0.0.1:9000", "--node-id", "trx"]
    first, second = worker_argvs(argv, "trx", ("127.0.0.1", 9000), ("10.0.0.1", 0), 2)
    assert first[:4] == [sys.executable, "-P", "-m", "voicemesh"] and first[4:4 + len(argv)] == argv
    assert first[4 + len(argv):] == ["--workers", "1", "--node-id", "trx-w0", "--http", "127.0.0.1:9000",
                                     "--backbone", "10.0.0.1:0"]
    assert second[4 + len(argv):] == ["--workers", "1", "--node-id", "trx-w1", "--http", "127.0.0.1:9001",
                                      "--backbone", "10.0.0.1:0"]
    fixed = worker_argvs(["transceiver"], "trx", ("127.0.0.1", 0), ("10.0.0.1", 7000), 2)
    assert [a[-1] for a in fixed] == ["10.0.0.1:7000", "10.0.0.1:7001"]
    assert [a[a.index("--http") + 1] for a in fixed] == ["127.0.0.1:0", "127.0.0.1:0"]


def test_worker_ports_past_65535_are_refused() -> None:
    with pytest.raises(ConfigError, match="65535"):
        worker_argvs(["transceiver"], "trx", ("127.0.0.1", 65535), ("127.0.0.1", 0), 2)
