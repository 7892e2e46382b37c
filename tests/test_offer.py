"""Offer checks: what the transceiver refuses, and what it strips before answering."""

from __future__ import annotations

import pytest
from aiortc import sdp

from voicemesh.core.offer import (
    MAX_ATTRIBUTES,
    MAX_LINE_CHARS,
    MAX_LINES,
    TCP_PASSIVE_PRIORITY,
    OfferRejected,
    SdpFrag,
    add_tcp_candidate,
    check_limits,
    check_offer,
    limit_opus_rates,
    parse_sdpfrag,
    restart_answer,
    strip_candidates,
)

pytestmark = pytest.mark.unit

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    "a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\na=end-of-candidates\r\n"
)


DATA_CHANNEL = ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
                "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=sctp-port:5000\r\n")
VIDEO = DATA_CHANNEL.replace("application 9 UDP/DTLS/SCTP webrtc-datachannel", "video 9 UDP/TLS/RTP/SAVPF 96")


def audio_m_lines(count: int) -> str:
    """The issue's offer: ``count`` BUNDLEd audio m-lines (180 made 180 transceivers before the limits)."""
    head, _, audio = OFFER.partition("m=audio")
    sections = ["m=audio" + audio.replace("a=mid:0", f"a=mid:{i}") for i in range(count)]
    return head.replace("a=group:BUNDLE 0", "a=group:BUNDLE " + " ".join(map(str, range(count)))) + "".join(sections)


def test_a_good_offer_loses_its_candidates_only() -> None:
    out = check_offer(OFFER).sdp
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
        (OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1") + VIDEO, "unsupported-m-line"),
    ],
)
def test_bad_offers_are_rejected_with_a_reason(offer: str, title: str) -> None:
    with pytest.raises(OfferRejected) as err:
        check_offer(offer)
    assert err.value.title == title and err.value.detail


def test_strip_keeps_unix_line_endings() -> None:
    assert strip_candidates("v=0\na=candidate:x\na=mid:0\n") == "v=0\na=mid:0\n"


def test_one_data_channel_m_line_is_allowed_beside_the_audio() -> None:
    offer = OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1") + DATA_CHANNEL
    assert "m=application" in check_offer(offer).sdp


@pytest.mark.parametrize(
    "offer, title",
    [
        (audio_m_lines(180), "too-many-m-lines"),
        (audio_m_lines(2), "too-many-m-lines"),
        (OFFER + DATA_CHANNEL + DATA_CHANNEL, "too-many-m-lines"),
        (OFFER + DATA_CHANNEL.replace("a=mid:1", "a=mid:2").replace("application", "audio"), "too-many-m-lines"),
        (OFFER + "a=x\r\n" * MAX_LINES, "too-many-lines"),
        (OFFER + "a=" + "x" * MAX_LINE_CHARS + "\r\n", "line-too-long"),
        (OFFER + "a=ssrc:1 cname:x\r\n" * (MAX_ATTRIBUTES + 1), "too-many-attributes"),
        ("v=0\r\n" + "a=x\r\n" * (MAX_ATTRIBUTES + 1) + OFFER[5:], "too-many-attributes"),
        (OFFER + "0a=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n", "malformed-sdp"),
        (OFFER + "A=x\r\n", "malformed-sdp"),
        (OFFER + "no equals sign\r\n", "malformed-sdp"),
    ],
)
def test_offers_over_the_limits_are_rejected_before_parsing(offer: str, title: str) -> None:
    with pytest.raises(OfferRejected) as err:
        check_limits(offer)
    assert err.value.title == title and err.value.detail
    with pytest.raises(OfferRejected) as err:
        check_offer(offer)
    assert err.value.title == title


def test_the_limits_hold_at_their_edges() -> None:
    """An offer at every limit passes: only over them is rejected."""
    section = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" + "a=x\r\n" * (MAX_ATTRIBUTES - 1) + "a=" + "y" * (MAX_LINE_CHARS - 2)
    check_limits("v=0\r\n" + section)
    check_limits("v=0\n" + "b=AS:64\n" * (MAX_LINES - 2) + "m=audio 9 x")


ANSWER = (OFFER.replace("192.168.1.5 50000", "203.0.113.5 3478")
          + DATA_CHANNEL + "a=candidate:1 1 udp 2130706431 203.0.113.5 3478 typ host\r\na=end-of-candidates\r\n")


def test_the_tcp_candidate_follows_the_udp_one_in_every_section_with_candidates() -> None:
    answer = add_tcp_candidate(ANSWER, ("203.0.113.5", 443))

    lines = answer.split("\r\n")
    tcp = [i for i, line in enumerate(lines) if " tcp " in line]
    assert len(tcp) == 2 and all(lines[i - 1].startswith("a=candidate:1 1 udp ") for i in tcp)
    assert all(lines[i + 1] == "a=end-of-candidates" for i in tcp)
    foundation, component, transport, priority, host, port, *rest = lines[tcp[0]][len("a=candidate:"):].split(" ")
    assert (component, transport, int(priority), host, port, rest) == (
        "1", "tcp", TCP_PASSIVE_PRIORITY, "203.0.113.5", "443", ["typ", "host", "tcptype", "passive"])
    assert foundation != "1" and TCP_PASSIVE_PRIORITY < 2130706431, "its own foundation, below UDP"
    assert answer.replace(lines[tcp[0]] + "\r\n", "") == ANSWER


def test_an_answer_without_candidates_is_unchanged_and_a_last_line_keeps_its_own() -> None:
    bare = strip_candidates(ANSWER)
    assert add_tcp_candidate(bare, ("203.0.113.5", 443)) == bare
    ending = "a=candidate:1 1 udp 2130706431 203.0.113.5 3478 typ host"
    assert add_tcp_candidate("v=0\r\n" + ending, ("203.0.113.5", 443)).split("\r\n")[1:] == [
        ending, add_tcp_candidate(ending + "\r\n", ("203.0.113.5", 443)).split("\r\n")[1]]
    with pytest.raises(ValueError):
        add_tcp_candidate(ANSWER, ("203.0.113.5", 0))


PWD = "abcdefghijklmnopqrstuvwx"


def test_a_trickle_fragment_as_the_reference_client_writes_it() -> None:
    frag = (f"a=ice-ufrag:abcd\r\na=ice-pwd:{PWD}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            "a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\n"
            "a=candidate:2 1 udp 1694498815 203.0.113.5 50000 typ srflx raddr 0.0.0.0 rport 0\r\n"
            "a=end-of-candidates\r\n")
    assert parse_sdpfrag(frag) == SdpFrag("abcd", PWD, ("0",), 2, True)


def test_an_ice_restart_fragment_has_credentials_only_and_may_set_them_per_media() -> None:
    assert parse_sdpfrag(f"a=ice-ufrag:wxyz\na=ice-pwd:{PWD}\n") == SdpFrag("wxyz", PWD, (), 0, False)
    per_media = f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=ice-ufrag:wxyz\r\na=ice-pwd:{PWD}\r\n"
    assert parse_sdpfrag(per_media).ufrag == "wxyz"


@pytest.mark.parametrize(("frag", "title"), [
    (f"a=ice-pwd:{PWD}\r\n", "no-ice-credentials"),
    ("a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n", "no-ice-credentials"),
    (f"a=ice-ufrag:ab:cd\r\na=ice-pwd:{PWD}\r\n", "no-ice-credentials"),
    (f"a=ice-ufrag:abcd\r\na=ice-pwd:{PWD}\r\nm=audio 9 X 0\r\na=ice-ufrag:efgh\r\n",
     "inconsistent-ice-credentials"),
    (f"a=ice-ufrag:abcd\r\na=ice-pwd:{PWD}\r\na=mid:0\r\n", "malformed-sdpfrag"),
    (f"a=ice-ufrag:abcd\r\na=ice-pwd:{PWD}\r\nnot sdp\r\n", "malformed-sdpfrag"),
    ("a=x\n" * (MAX_LINES + 1), "malformed-sdpfrag"),
    ("a=" + "x" * MAX_LINE_CHARS + "\n", "malformed-sdpfrag"),
])
def test_a_bad_fragment_is_refused_with_a_title(frag: str, title: str) -> None:
    with pytest.raises(OfferRejected) as refused:
        parse_sdpfrag(frag)
    assert refused.value.title == title


def test_the_restart_answer_reads_back_and_ends_lines_in_crlf() -> None:
    answer = restart_answer("Tok+en/0123", PWD, "audio", "0", "1 1 udp 2130706431 192.0.2.9 3478 typ host")
    assert answer.endswith("a=end-of-candidates\r\n") and "\n" not in answer.replace("\r\n", "")
    assert parse_sdpfrag(answer) == SdpFrag("Tok+en/0123", PWD, ("0",), 1, True)


AIORTC_ANSWER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\na=mid:0\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=ice-ufrag:abcd\r\n" + DATA_CHANNEL
)


def test_the_answer_tells_the_caller_the_agent_rate_in_a_new_opus_fmtp() -> None:
    """aiortc's answer has no fmtp for Opus: one follows its rtpmap, and nothing else changes."""
    answer = limit_opus_rates(AIORTC_ANSWER, 16000)

    assert answer == AIORTC_ANSWER.replace(
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 maxplaybackrate=16000;sprop-maxcapturerate=16000\r\n")
    codec = sdp.SessionDescription.parse(answer).media[0].rtp.codecs[0]
    assert (codec.mimeType, codec.parameters) == ("audio/opus", {"maxplaybackrate": 16000, "sprop-maxcapturerate": "16000"})


def test_an_existing_opus_fmtp_keeps_its_other_parameters_and_loses_its_old_rates() -> None:
    before = ("v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 109 96\na=fmtp:109 minptime=10; useinbandfec=1;maxplaybackrate=48000\n"
              "a=rtpmap:109 OPUS/48000/2\na=rtpmap:96 telephone-event/8000\na=fmtp:96 0-15")

    assert limit_opus_rates(before, 8000) == before.replace(
        "useinbandfec=1;maxplaybackrate=48000", "useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000")


def test_an_opus_rtpmap_on_the_last_line_gets_its_fmtp_after_it() -> None:
    before = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2"

    assert limit_opus_rates(before, 24000) == before + (
        "\r\na=fmtp:111 maxplaybackrate=24000;sprop-maxcapturerate=24000")


def test_an_answer_without_opus_is_unchanged_and_rates_outside_rfc7587_are_refused() -> None:
    no_opus = AIORTC_ANSWER.replace("a=rtpmap:111 opus/48000/2\r\n", "")
    assert limit_opus_rates(no_opus, 16000) == no_opus
    for rate in (7999, 48001):
        with pytest.raises(ValueError):
            limit_opus_rates(AIORTC_ANSWER, rate)
