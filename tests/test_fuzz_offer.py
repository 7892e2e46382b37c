"""Fuzzing the offer check (voicemesh/core/offer.py) with hypothesis: check_offer on arbitrary text and on
mutations of a browser-like offer returns an offer without candidates or raises OfferRejected, nothing else;
so does parse_sdpfrag on a PATCH's fragments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.core.offer import OfferRejected, check_offer, parse_sdpfrag

pytestmark = pytest.mark.unit

OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "a=msid-semantic: WMS stream\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\n"
    "a=candidate:2 1 udp 1694498815 203.0.113.7 50000 typ srflx raddr 192.168.1.5 rport 50000\r\n"
    "a=end-of-candidates\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=mid:0\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\na=msid:stream track\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n"
    "a=ssrc:1001 cname:abc\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n"
    "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
    "a=setup:actpass\r\na=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
)
LINES = OFFER.split("\r\n")[:-1]
TOKENS = ["0", "9", "-1", "65536", "99999999999999999999", "", " ", ":", "/", "a=", "m=audio", "IN", "IP6", "x" * 300,
          "opus", "\x00", "é", "\t", "sha-256", "UDP/TLS/RTP/SAVPF", "BUNDLE", "=", "0 0 0"]
fragments = st.one_of(st.sampled_from(TOKENS), st.text(max_size=12))


@st.composite
def mutated_offers(draw) -> str:
    """The offer with a few lines dropped, repeated, moved or rewritten (a token replaced, a piece inserted),
    then joined with CRLF or LF, perhaps cut short."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "repeat", "move", "token", "insert", "line"]))
        if action == "drop" and len(lines) > 1:
            del lines[i]
        elif action == "repeat":
            lines.insert(i, lines[i])
        elif action == "move":
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(i))
        elif action == "token":
            words = lines[i].replace(":", " ").split(" ")
            j = draw(st.integers(0, len(words) - 1))
            lines[i] = lines[i].replace(words[j], draw(fragments), 1) if words[j] else lines[i]
        elif action == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(fragments) + lines[i][at:]
        else:
            lines.insert(i, draw(st.sampled_from("vosctmab")) + "=" + draw(fragments))
    text = draw(st.sampled_from(["\r\n", "\n"])).join(lines) + "\r\n"
    return text[: draw(st.integers(0, len(text)))] if draw(st.integers(0, 9)) == 0 else text


def checked(offer: str) -> str | None:
    """check_offer(offer), or None when it raises OfferRejected (any other exception fails the test)."""
    try:
        out = check_offer(offer).sdp
    except OfferRejected as exc:
        assert exc.title and exc.detail
        return None
    assert not any(line.startswith(("a=candidate:", "a=end-of-candidates")) for line in out.splitlines())
    return out


@given(st.one_of(st.text(max_size=300), st.text(max_size=300).map(lambda text: "v=0\r\n" + text)))
def test_arbitrary_text_is_rejected_with_a_reason(offer):
    checked(offer)


@given(mutated_offers())
def test_mutated_offers_are_accepted_or_rejected_with_a_reason(offer):
    checked(offer)


def test_the_unmutated_offer_is_accepted():
    assert checked(OFFER) is not None


FRAGMENT = ("a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            "a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\na=end-of-candidates\r\n")


@given(st.one_of(st.text(max_size=300), st.text(max_size=300).map(lambda text: FRAGMENT + text),
                 st.integers(0, len(FRAGMENT)).flatmap(
                     lambda cut: st.text(max_size=20).map(lambda text: FRAGMENT[:cut] + text + FRAGMENT[cut:]))))
def test_patch_fragments_are_read_or_rejected_with_a_reason(fragment):
    try:
        frag = parse_sdpfrag(fragment)
    except OfferRejected as exc:
        assert exc.title and exc.detail
        return
    assert frag.ufrag and frag.pwd
