"""WHIP admission's sans-IO core: token buckets per source, keyed by IPv4 address or IPv6 /64, and per session
for its PATCHes; and the edge's settings for them."""

from __future__ import annotations

import pytest

from voicemesh.edge.admission import KeyedLimiter, PatchLimiter, retry_after_s, source_key
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import whip_limits
from voicemesh.runtime.config import ConfigError
from voicemesh.wire.ratelimit import TokenBucket

pytestmark = pytest.mark.unit


def test_a_bucket_allows_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25), "a refused request takes nothing"
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) == pytest.approx(0.5)


def test_a_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert bucket.take(3600.0) == 0.0 and bucket.take(3600.0) == 0.0
    assert bucket.take(3600.0) == pytest.approx(1.0)


def test_a_clock_going_backwards_gives_no_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) == pytest.approx(1.0)


@pytest.mark.parametrize("rate, burst", [(0.0, 1), (-1.0, 5), (1.0, 0)])
def test_a_bucket_needs_a_positive_rate_and_a_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)
    with pytest.raises(ValueError):
        KeyedLimiter(rate, burst)


def test_sources_have_their_own_buckets() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1)
    assert limiter.take("192.0.2.1", 0.0) == 0.0
    assert limiter.take("192.0.2.1", 0.0) > 0
    assert limiter.take("192.0.2.2", 0.0) == 0.0


def test_the_table_of_sources_is_bounded() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1, max_keys=3)
    for i in range(10):
        limiter.take(f"198.51.100.{i}", 0.0)
    assert len(limiter) == 3
    limiter.take("198.51.100.7", 0.0)
    limiter.take("203.0.113.1", 0.0)
    assert limiter.take("198.51.100.7", 0.0) > 0, "the recently used source was kept; the oldest went"


@pytest.mark.parametrize(
    "ip, key",
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_an_ipv6_source_is_its_slash_64(ip: str, key: str) -> None:
    assert source_key(ip) == key


def test_one_ipv6_subscriber_shares_one_bucket() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1)
    assert limiter.take(source_key("2001:db8:0:1::1"), 0.0) == 0.0
    assert limiter.take(source_key("2001:db8:0:1::2"), 0.0) > 0


@pytest.mark.parametrize("wait, seconds", [(0.01, 1), (1.0, 1), (1.2, 2), (30.0, 30)])
def test_retry_after_is_whole_seconds_and_at_least_one(wait: float, seconds: int) -> None:
    assert retry_after_s(wait) == seconds


def test_a_session_makes_its_burst_of_ice_restarts_then_one_per_period() -> None:
    limiter = PatchLimiter(patches_per_min=60, restarts_per_min=2)
    assert [limiter.take("s1", True, 0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("s1", True, 0.0) == pytest.approx(30.0), "two a minute: the next in 30 s"
    assert limiter.take("s1", True, 29.0) == pytest.approx(1.0)
    assert limiter.take("s1", True, 30.0) == 0.0
    assert limiter.take("s2", True, 30.0) == 0.0, "each session has its own allowance"


def test_trickle_never_uses_up_a_sessions_restarts() -> None:
    limiter = PatchLimiter(patches_per_min=3, restarts_per_min=1)
    assert [limiter.take("s1", False, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("s1", False, 0.0) == pytest.approx(20.0)
    assert limiter.take("s1", True, 0.0) == 0.0, "the restart has its own bucket"
    assert limiter.take("s1", True, 0.0) == pytest.approx(60.0)
    assert limiter.take("s1", False, 20.0) == 0.0


@pytest.mark.parametrize("patches, restarts", [(0, 6), (60, 0)])
def test_a_session_allowance_needs_at_least_one(patches: int, restarts: int) -> None:
    with pytest.raises(ValueError):
        PatchLimiter(patches, restarts)


@pytest.mark.parametrize("setting, value", [("whip_rate_per_s", 0.0), ("whip_request_rate_per_s", 0.0),
                                            ("whip_request_burst", 0), ("whip_session_patches_per_min", 0),
                                            ("whip_session_restarts_per_min", -1)])
def test_a_bad_limit_setting_is_a_config_error_naming_it(setting: str, value: float) -> None:
    with pytest.raises(ConfigError, match=setting):
        whip_limits(EdgeConfig(**{setting: value}))


def test_the_default_limits() -> None:
    offers, requests, patches = whip_limits(EdgeConfig())
    assert (offers.rate, offers.burst) == (2.0, 10)
    assert (requests.rate, requests.burst) == (10.0, 100)
    assert (patches.patches.burst, patches.restarts.burst) == (60, 6)
