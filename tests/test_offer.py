"""Offer checks: what the transceiver refuses, and what it strips before answering."""

from __future__ import annotations

import pytest

from voicemesh.core.offer import OfferRejected, check_offer, strip_candidates

pytestmark = pytest.mark.unit

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    "a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\na=end-of-candidates\r\n"
)


def test_a_good_offer_loses_its_candidates_only() -> None:
    out = check_offer(OFFER)
    assert "a=candidate" not in out and "a=end-of-candidates" not in out
    assert out.count("\r\n") == OFFER.count("\r\n") - 2


@pytest.mark.parametrize(
    "offer, title",
    [
        ("", "malformed-sdp"),
        ("\x00\x01garbage", "malformed-sdp"),
        (OFFER.replace("m=audio", "m=video"), "no-audio"),
        (OFFER.replace("m=audio 9", "m=audio 0"), "no-audio"),
        (OFFER.replace("a=group:BUNDLE 0\r\n", ""), "no-bundle"),
        (OFFER.replace("opus/48000/2", "PCMU/8000"), "no-opus"),
        (OFFER.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", ""), "no-ice-credentials"),
    ],
)
def test_bad_offers_are_rejected_with_a_reason(offer: str, title: str) -> None:
    with pytest.raises(OfferRejected) as err:
        check_offer(offer)
    assert err.value.title == title and err.value.detail


def test_strip_keeps_unix_line_endings() -> None:
    assert strip_candidates("v=0\na=candidate:x\na=mid:0\n") == "v=0\na=mid:0\n"
