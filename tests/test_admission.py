"""WHIP admission's sans-IO core: token buckets per source, keyed by IPv4 address or IPv6 /64."""

from __future__ import annotations

import pytest

from voicemesh.edge.admission import SourceLimiter, retry_after_s, source_key
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
        SourceLimiter(rate, burst)


def test_sources_have_their_own_buckets() -> None:
    limiter = SourceLimiter(rate=1.0, burst=1)
    assert limiter.take("192.0.2.1", 0.0) == 0.0
    assert limiter.take("192.0.2.1", 0.0) > 0
    assert limiter.take("192.0.2.2", 0.0) == 0.0


def test_the_table_of_sources_is_bounded() -> None:
    limiter = SourceLimiter(rate=1.0, burst=1, max_sources=3)
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
    limiter = SourceLimiter(rate=1.0, burst=1)
    assert limiter.take(source_key("2001:db8:0:1::1"), 0.0) == 0.0
    assert limiter.take(source_key("2001:db8:0:1::2"), 0.0) > 0


@pytest.mark.parametrize("wait, seconds", [(0.01, 1), (1.0, 1), (1.2, 2), (30.0, 30)])
def test_retry_after_is_whole_seconds_and_at_least_one(wait: float, seconds: int) -> None:
    assert retry_after_s(wait) == seconds
