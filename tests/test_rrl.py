"""Response rate limiting (edge/rrl.py): per-prefix buckets by category, the one-second burst, the debt
window, slips (TC=1, header and question only) and drops, and the bounded table. Bytes and time in,
decisions out."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.edge.rrl import ResponseRateLimiter, RrlSettings, category, slip

pytestmark = pytest.mark.unit


def response(rcode: int = dns.rcode.NOERROR, *, records: int = 1, name: str = "rtc.voicemesh.test.") -> bytes:
    """A rendered response of ``rcode`` with ``records`` A records, to a query with EDNS."""
    query = dns.message.make_query(name, "A", use_edns=0, payload=1232)
    message = dns.message.make_response(query)
    message.set_rcode(rcode)
    for n in range(records):
        message.answer.append(dns.rrset.from_text(name, 30, "IN", "A", f"10.9.0.{n + 1}"))
    return message.to_wire()


ANSWER = response()


def run(limiter: ResponseRateLimiter, wire: bytes, source: str, now: float, count: int) -> list[bytes | None]:
    return [limiter.limit(wire, source, now) for _ in range(count)]


def test_within_the_rate_responses_are_sent_then_every_second_slips_and_the_rest_drop():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=5, slip=2))
    out = run(limiter, ANSWER, "192.0.2.1", 100.0, 11)
    assert out[:5] == [ANSWER] * 5
    assert out[5:] == [None, slip(ANSWER), None, slip(ANSWER), None, slip(ANSWER)]
    assert limiter.stats() == {"sent": {"answer": 5}, "slipped": {"answer": 3}, "dropped": {"answer": 3},
                               "buckets": 1, "evicted": 0}


@pytest.mark.parametrize("every, slipped", [(0, 0), (1, 6), (3, 2)])
def test_slip_zero_drops_all_and_one_truncates_all(every, slipped):
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=2, slip=every))
    out = run(limiter, ANSWER, "192.0.2.1", 0.0, 8)
    assert out.count(slip(ANSWER)) == slipped
    assert out.count(None) == 6 - slipped


def test_a_slip_is_the_header_with_tc_and_the_question_only():
    truncated = dns.message.from_wire(slip(ANSWER))
    full = dns.message.from_wire(ANSWER)
    assert truncated.flags & dns.flags.TC and truncated.flags & dns.flags.QR
    assert (truncated.id, truncated.question, truncated.rcode()) == (full.id, full.question, full.rcode())
    assert truncated.answer == truncated.authority == truncated.additional == []
    query = dns.message.make_query("rtc.voicemesh.test", "A").to_wire()
    assert len(slip(ANSWER)) == len(query)  # header and question: the query without EDNS
    formerr = bytes.fromhex("abcd 8101 0000 0000 0000 0000")
    assert slip(formerr) == bytes.fromhex("abcd 8301 0000 0000 0000 0000")


def test_credit_comes_back_at_the_rate_and_never_above_one_second():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=4, slip=0))
    assert run(limiter, ANSWER, "192.0.2.1", 0.0, 4) == [ANSWER] * 4
    assert run(limiter, ANSWER, "192.0.2.1", 0.5, 3) == [ANSWER, ANSWER, None]  # half a second: 2 credits
    assert run(limiter, ANSWER, "192.0.2.1", 3600.0, 5) == [ANSWER] * 4 + [None]  # idle an hour: still 4


def test_a_flooding_prefix_pays_its_debt_for_up_to_the_window():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=2, window_s=3, slip=0))
    run(limiter, ANSWER, "192.0.2.1", 0.0, 1000)  # deep in debt, floored at -window * rate
    assert limiter.limit(ANSWER, "192.0.2.1", 3.0) is None  # 3 s of credit paid 6 of the 6 owed
    assert limiter.limit(ANSWER, "192.0.2.1", 4.0) == ANSWER


def test_one_slash_24_shares_a_bucket_and_other_prefixes_do_not():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=3, slip=0))
    sources = ["192.0.2.1", "192.0.2.200", "::ffff:192.0.2.77"]
    assert [limiter.limit(ANSWER, source, 0.0) for source in sources] == [ANSWER] * 3
    assert limiter.limit(ANSWER, "192.0.2.9", 0.0) is None
    assert limiter.limit(ANSWER, "192.0.3.9", 0.0) == ANSWER
    assert run(limiter, ANSWER, "2001:db8:0:ab01::1", 0.0, 2) + run(limiter, ANSWER, "2001:db8:0:abff::2", 0.0, 1) \
        == [ANSWER] * 3  # one /56
    assert limiter.limit(ANSWER, "2001:db8:0:ac00::1", 0.0) == ANSWER


def test_prefix_lengths_are_settings():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=1, slip=0, ipv4_prefix=32, ipv6_prefix=128))
    assert limiter.limit(ANSWER, "192.0.2.1", 0.0) == limiter.limit(ANSWER, "192.0.2.2", 0.0) == ANSWER
    assert limiter.limit(ANSWER, "192.0.2.1", 0.0) is None


@pytest.mark.parametrize("wire, kind", [
    (response(), "answer"),
    (response(records=0), "nodata"),
    (response(dns.rcode.NXDOMAIN, records=0), "nxdomain"),
    (response(dns.rcode.REFUSED, records=0), "error"),
    (response(dns.rcode.SERVFAIL, records=0), "error"),
    (bytes.fromhex("abcd 8101 0000 0000 0000 0000"), "error"),  # FORMERR header
])
def test_responses_fall_into_categories(wire, kind):
    assert category(wire) == kind


def test_each_category_has_its_own_bucket_and_errors_are_stricter_by_default():
    defaults = RrlSettings()
    assert defaults.errors_per_s < defaults.answers_per_s and defaults.nxdomains_per_s < defaults.answers_per_s
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=3, errors_per_s=1, slip=0))
    refused = response(dns.rcode.REFUSED, records=0)
    assert run(limiter, refused, "192.0.2.1", 0.0, 2) == [refused, None]
    assert run(limiter, ANSWER, "192.0.2.1", 0.0, 3) == [ANSWER] * 3


def test_a_zero_rate_does_not_limit_its_category():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=0, nxdomains_per_s=1, slip=0))
    assert run(limiter, ANSWER, "192.0.2.1", 0.0, 500) == [ANSWER] * 500
    assert len(limiter) == 0


def test_the_table_of_buckets_is_bounded():
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=1, slip=0, max_entries=100))
    for n in range(5000):
        limiter.limit(ANSWER, f"10.{n >> 8}.{n & 0xFF}.1", 0.0)
        assert len(limiter) <= 100
    assert limiter.evicted == 4900  # each pushed out before its credit came back


@pytest.mark.parametrize("field, value", [("answers_per_s", -1), ("slip", -1), ("window_s", 0),
                                          ("ipv4_prefix", 33), ("ipv6_prefix", 129), ("max_entries", 0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError):
        RrlSettings(**{field: value})


@given(st.lists(st.tuples(st.floats(0, 10, allow_nan=False), st.integers(0, 3)), max_size=400),
       st.integers(1, 20), st.integers(0, 4))
def test_no_prefix_ever_gets_more_full_responses_than_the_rate_allows(arrivals, rate, every):
    """Over any schedule of queries from four /24s, each /24 gets at most rate * (1 + elapsed seconds) full
    responses, and one slip per ``slip`` responses over that."""
    limiter = ResponseRateLimiter(RrlSettings(answers_per_s=rate, slip=every))
    arrivals.sort()
    sent, slipped, seen = [0] * 4, [0] * 4, [0] * 4
    for now, client in arrivals:
        out = limiter.limit(ANSWER, f"192.0.{client}.1", now)
        seen[client] += 1
        sent[client] += out == ANSWER
        slipped[client] += out is not None and out != ANSWER
    span = arrivals[-1][0] - arrivals[0][0] if arrivals else 0.0
    for client in range(4):
        assert sent[client] <= rate * (1 + span)
        assert slipped[client] <= ((seen[client] - sent[client]) // every if every else 0)
