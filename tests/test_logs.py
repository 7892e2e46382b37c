"""The log throttle (voicemesh/runtime/logs.py): a flood of like lines writes one per interval."""

from __future__ import annotations

import pytest

from voicemesh.runtime.logs import LogThrottle

pytestmark = pytest.mark.unit


def test_one_line_per_interval_per_key_with_the_count_left_unwritten() -> None:
    throttle = LogThrottle(interval_s=10.0)
    assert throttle.allow("rate_limited", 0.0) == 0
    assert [throttle.allow("rate_limited", t) for t in (0.0, 1.0, 9.9)] == [None, None, None]
    assert throttle.allow("pending_full", 5.0) == 0, "each key has its own interval"
    assert throttle.allow("rate_limited", 10.0) == 3, "the three left unwritten are counted in the next line"
    assert throttle.allow("rate_limited", 10.5) is None
    assert throttle.allow("rate_limited", 60.0) == 1


def test_a_throttle_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError):
        LogThrottle(0.0)
