"""The lean media path's RTP reading and both directions of a LeanPath, with real libsrtp keys (pylibsrtp)
and aiortc's RTP serializer on the caller's side: bytes in, bytes out, no sockets."""

from __future__ import annotations

import os
from collections import Counter

import pylibsrtp
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpByePacket, RtcpPacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket
from aiortc.rtp import RtpPacket as AiortcPacket

from voicemesh.core import hooks, lean

pytestmark = pytest.mark.unit

KEY = os.urandom(30)  # AES_CM_128_HMAC_SHA1_80: 16-byte key, 14-byte salt (RFC 3711 8.2)
OPUS = 111
LEVEL_ID = 2
EXTENSIONS = HeaderExtensionsMap()
EXTENSIONS.configure(RTCRtpParameters(headerExtensions=[
    RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
    RTCRtpHeaderExtensionParameters(id=LEVEL_ID, uri=lean.AUDIO_LEVEL_URI),
    RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
]))


def srtp(direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=direction,
                                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


def caller_rtp(seq: int, payload: bytes = b"opus!", ssrc: int = 4242, level: tuple[bool, int] | None = (True, 30),
               payload_type: int = OPUS) -> bytes:
    """An RTP packet as aiortc's sender builds it: MID, audio level and abs-send-time extensions."""
    packet = AiortcPacket(payload_type=payload_type, sequence_number=seq, timestamp=960 * seq, ssrc=ssrc,
                          payload=payload)
    packet.extensions.mid = "0"
    packet.extensions.audio_level = level
    packet.extensions.abs_send_time = 1234
    return packet.serialize(EXTENSIONS)


class Harness:
    """A LeanPath between a caller's SRTP sessions and lists of what it delivered and sent."""

    def __init__(self) -> None:
        self.caller_tx = srtp(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.caller_rx = srtp(pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.delivered: list[tuple[bytes, int, tuple[bool, int] | None]] = []
        self.sent: list[bytes] = []
        self.reports: list[tuple[int, int, int, int]] = []
        self.streams: dict = {}
        self.counters: Counter[str] = Counter()
        self.now = 100.0
        self.wall = 1_000_000.0
        self.last_sr: tuple[dict[int, int], dict[int, float]] = ({}, {})
        self.sender_reports: list[tuple[int, float]] = []
        self._rtcp: list[list] = []
        self._read = 0
        self.path = lean.LeanPath(
            lean.RtpParameters(OPUS, 0x01020304, LEVEL_ID), srtp(pylibsrtp.Policy.SSRC_ANY_INBOUND),
            srtp(pylibsrtp.Policy.SSRC_ANY_OUTBOUND), self.streams, hooks.new_stream,
            lambda *args: self.delivered.append(args), self.sent.append,
            lambda *args: self.reports.append(args), self.counters,
            sequence_number=0xFFFE, timestamp_origin=0xFFFFFF00, cname="us", last_sr=self.last_sr,
            on_report=lambda *args: self.sender_reports.append(args), now=lambda: self.now,
            ntp_now=lambda: 7 << 32, wall_now=lambda: self.wall, jitter=lambda: 0.5)

    def rtcp(self) -> list[list]:
        """Each RTCP compound packet sent so far, unprotected (each once: SRTCP's replay check) and parsed."""
        for sent in self.sent[self._read:]:
            if 191 < sent[1] < 224:
                self._rtcp.append(RtcpPacket.parse(self.caller_rx.unprotect_rtcp(sent)))
        self._read = len(self.sent)
        return self._rtcp


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_parse_reads_the_header_the_audio_level_and_the_payload() -> None:
    packet = lean.parse(caller_rtp(5, b"hello"), LEVEL_ID)
    assert packet == lean.RtpPacket(OPUS, 5, 4800, 4242, b"hello", (True, 30))
    assert lean.parse(caller_rtp(5, b"hello"), None).audio_level is None
    assert lean.parse(caller_rtp(5, b"hello", level=None), LEVEL_ID).audio_level is None


def test_parse_skips_csrcs_and_padding_and_reads_two_byte_extensions() -> None:
    header = bytes([0xB1, OPUS]) + (7).to_bytes(2, "big") + (960).to_bytes(4, "big") + (9).to_bytes(4, "big")
    csrc = (77).to_bytes(4, "big")
    extension = b"\x10\x00\x00\x01" + bytes([LEVEL_ID, 1, 0x05, 0])  # RFC 8285 4.3: id, length, data, padding
    padded = header + csrc + extension + b"pay" + b"\x00\x00\x03"
    assert lean.parse(padded, LEVEL_ID) == lean.RtpPacket(OPUS, 7, 960, 9, b"pay", (False, 5))


@pytest.mark.parametrize("packet, reason", [
    (b"\x80\x6f\x00\x01", "short"),
    (b"\x40" + bytes(11), "version"),
    (b"\x90\x6f" + bytes(10) + b"\xbe\xde\x00\x09" + bytes(8), "extension"),
    (b"\x90\x6f" + bytes(10) + b"\xbe", "extension"),
    (b"\xa0\x6f" + bytes(10) + b"ab\x09", "padding"),
    (b"\xa0\x6f" + bytes(10) + b"ab\x00", "padding"),
    (b"\x8f\x6f" + bytes(10) + bytes(8), "short"),
])
def test_parse_refuses_malformed_packets_with_a_reason(packet: bytes, reason: str) -> None:
    with pytest.raises(lean.MalformedRtp) as refused:
        lean.parse(packet, LEVEL_ID)
    assert refused.value.reason == reason


def test_received_srtp_reaches_the_agent_and_feeds_aiortcs_receiver_statistics(harness: Harness) -> None:
    for seq in (65534, 65535, 0, 1):
        harness.path.receive(harness.caller_tx.protect(caller_rtp(seq, bytes([seq & 0xFF]))))
    assert harness.delivered == [(bytes([seq & 0xFF]), (960 * seq) & 0xFFFFFFFF, (True, 30)) for seq in (65534, 65535, 0, 1)]
    stream = harness.streams[4242]
    assert (stream.packets_received, stream.max_seq, stream.cycles, stream.packets_lost) == (4, 1, 1 << 16, 0)
    assert harness.counters == Counter(lean_rx=4)


def test_bad_srtp_replays_and_other_payload_types_are_dropped_and_counted(harness: Harness) -> None:
    good = harness.caller_tx.protect(caller_rtp(1))
    harness.path.receive(good)
    harness.path.receive(good)  # replay (RFC 3711 3.3.2)
    harness.path.receive(good[:-1] + bytes([good[-1] ^ 1]))  # authentication tag broken
    harness.path.receive(b"\x80\x6f" + os.urandom(40))  # not ours at all
    harness.path.receive(harness.caller_tx.protect(caller_rtp(2, payload_type=0)))
    harness.path.receive(b"\x80\x6f" + bytes(2000))  # longer than libsrtp's buffer: refused before the copy
    assert len(harness.delivered) == 1
    assert harness.counters == Counter(lean_rx=1, srtp_error=4, rtp_payload_type=1)
    harness.path.push(bytes(2000))  # an agent frame too long to protect
    assert harness.counters["srtp_protect_error"] == 1 and harness.sent == []


def test_agent_frames_go_out_as_srtp_with_one_sequence_space_and_talkspurt_timestamps(harness: Harness) -> None:
    for step in (0.0, 0.02, 0.02, 0.5, 0.02):
        harness.now += step
        harness.path.push(b"frame")
    plain = [harness.caller_rx.unprotect(sent) for sent in harness.sent]
    packets = [lean.parse(rtp, None) for rtp in plain]
    assert [p.sequence_number for p in packets] == [0xFFFE, 0xFFFF, 0, 1, 2]
    assert {(p.payload_type & 0x7F, p.ssrc, p.payload) for p in packets} == {(OPUS, 0x01020304, b"frame")}
    assert [(p.timestamp - 0xFFFFFF00) & 0xFFFFFFFF for p in packets] == [0, 960, 1920, 1920 + 25 * 960, 1920 + 26 * 960]
    markers = [rtp[1] >> 7 for rtp in plain]
    assert markers == [1, 0, 0, 1, 0], "the marker bit starts each talkspurt (RFC 3551 4.1)"
    assert harness.reports == [(7 << 32, 0xFFFFFF00, 1, 5)], "the sender report follows what was sent"
    for _ in range(10):
        harness.path.push(b"frame")
    assert harness.reports[-1][2:] == (11, 55)


def test_a_closed_path_says_bye_and_carries_nothing_more(harness: Harness) -> None:
    harness.path.close()
    harness.path.close()
    harness.path.receive(harness.caller_tx.protect(caller_rtp(1)))
    harness.path.push(b"frame")
    harness.now += 60
    harness.path.tick(harness.now)
    [[bye]] = harness.rtcp()
    assert isinstance(bye, RtcpByePacket) and bye.sources == [0x01020304], "one BYE (RFC 3550 6.6), then nothing"
    assert harness.delivered == [] and len(harness.sent) == 1


def test_rtcp_reports_come_every_interval_with_blocks_lsr_dlsr_and_cname(harness: Harness) -> None:
    """While the agent talks, the tick sends one compound packet per interval (the first after half): a sender
    report carrying a report block per remote SSRC (loss, highest sequence, LSR and DLSR of the caller's last
    sender report) and the SDES CNAME; each sender report is announced for the round trip."""
    start = harness.now

    def talk_until(end: float) -> None:
        while harness.now < end:
            harness.now = round(harness.now + 0.25, 2)
            harness.path.push(b"frame")
            harness.path.tick(harness.now)

    for seq in (1, 2, 4):
        harness.path.receive(harness.caller_tx.protect(caller_rtp(seq)))
    talk_until(start + lean.RTCP_INTERVAL_S / 2 - 0.25)
    assert harness.rtcp() == [], "the first report waits half an interval"
    talk_until(start + lean.RTCP_INTERVAL_S / 2)
    [[sr, sdes]] = harness.rtcp()
    assert isinstance(sr, RtcpSrPacket) and sr.ssrc == 0x01020304
    assert sr.sender_info.ntp_timestamp == 7 << 32 and sr.sender_info.rtp_timestamp == 0xFFFFFF00
    [block] = sr.reports
    assert (block.ssrc, block.highest_sequence, block.packets_lost, block.lsr, block.dlsr) == (4242, 4, 1, 0, 0)
    assert isinstance(sdes, RtcpSdesPacket) and sdes.chunks[0].items == [(1, b"us")]
    assert harness.sender_reports == [((7 << 32 >> 16) & 0xFFFFFFFF, harness.wall)]

    harness.last_sr[0][4242], harness.last_sr[1][4242] = 0x12345678, harness.wall - 0.5
    talk_until(harness.now + lean.RTCP_INTERVAL_S - 0.25)
    assert len(harness.rtcp()) == 1, "not due before the interval"
    talk_until(harness.now + 0.25)
    sr, _ = harness.rtcp()[-1]
    sent = harness.path.packets_sent
    assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (sent, 5 * sent), "what was sent so far"
    [block] = sr.reports
    assert (block.lsr, block.dlsr) == (0x12345678, 0x8000), "DLSR: half a second in 1/65536 s"
    assert harness.counters["rtcp_tx"] == 2


def test_a_quiet_path_still_reports_often_enough_to_be_heard(harness: Harness) -> None:
    """With nothing sent to the caller (a quiet agent), a report goes out once QUIET_REPORT_S passed since the
    last packet, a receiver report while no RTP was ever sent: a caller watching for a dead transceiver
    hears from a live one."""
    start = harness.now
    harness.path.tick(start + lean.QUIET_REPORT_S - 0.25)
    assert harness.rtcp() == []
    harness.path.tick(start + lean.QUIET_REPORT_S)
    [[rr, sdes]] = harness.rtcp()
    assert isinstance(rr, RtcpRrPacket) and rr.reports == [] and isinstance(sdes, RtcpSdesPacket)
    harness.path.tick(start + lean.QUIET_REPORT_S + 0.5)
    harness.path.tick(start + 2 * lean.QUIET_REPORT_S)
    assert len(harness.rtcp()) == 2, "every QUIET_REPORT_S while quiet"


def test_negotiated_reads_the_opus_payload_type_our_ssrc_and_the_audio_level_id() -> None:
    answer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
              "m=audio 9 UDP/TLS/RTP/SAVPF 109 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
              "a=rtpmap:109 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
              "a=extmap:4 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=ssrc:555 cname:x\r\n")
    assert lean.negotiated(answer) == lean.RtpParameters(109, 555, 4)
    with pytest.raises(ValueError):
        lean.negotiated(answer.replace("a=rtpmap:109 opus/48000/2\r\n", "").replace(" 109 0", " 0"))


def test_srtp_held_from_before_the_keys_is_read_in_order_and_bounded(harness: Harness) -> None:
    early = lean.EarlyRtp(harness.counters, limit=3)
    for seq in range(1, 6):
        early.receive(harness.caller_tx.protect(caller_rtp(seq, bytes([seq]))))
    early.receive(b"\x80\x6f" + os.urandom(30))  # junk held too: authenticated only when read
    early.replay(harness.path)
    assert [payload for payload, _, _ in harness.delivered] == [bytes([4]), bytes([5])]
    assert harness.counters == Counter(early_rtp_overflow=3, early_rtp=3, lean_rx=2, srtp_error=1)
    assert not early.packets
