"""The lean media path: once DTLS is up, SRTP goes straight between the backbone mux and the agent link.

aiortc keeps ICE, DTLS, SRTCP and its RTCP reports; its per-packet RTP path (RtpPacket objects, the
router, the receiver's statistics and NTP time per packet, the sender's task) is bypassed. The mux hands
each SRTP datagram of the session (core/mux_core.py ``on_rtp``) to ``LeanPath.receive``, which unprotects
it with the pylibsrtp Session aiortc keyed (C, shared with aiortc so the replay window and rollover
counter stay one per SSRC), reads only the RTP header fields the agent needs (RFC 3550 5.1, RFC 8285 for
the RFC 6464 audio level) and hands the payload on; the agent link batches it. Each frame the agent
returns becomes one RTP packet with a 12-byte header, protected and sent over the session's active route
at once.

RTCP: aiortc still reads the caller's SRTCP (its round trip, its reports), but the lean path sends our reports
itself (``LeanPath.tick``), in place of aiortc's two per-session tasks (a sender report and a receiver report
every 0.5-1.5 s, each a timer wake-up and a datagram): one compound packet per session every RTCP_INTERVAL_S
on average (RFC 3550 6.2's recommended minimum; randomized over 0.5-1.5 times it, 6.3.1), a sender report
carrying the reception report blocks (6.4.1) and the SDES CNAME (6.5.1), from a tick the transceiver shares
among all its sessions; sooner while the agent is quiet, so that the caller hears something at least every
QUIET_REPORT_S (plus a tick); a BYE (6.6) when the session ends. Each received packet goes into aiortc's
receiver statistics for its SSRC (highest sequence, loss, jitter; RFC 3550 6.4.2), which the report blocks and
``getStats`` read, and the sender's counters follow what is sent. aiortc's own sender never sends RTP (its
track never yields), so one SSRC has one sequence space.
Every private reach into aiortc is in core/hooks.py.

Drops are counted in ``counters`` (shared by all sessions of a transceiver): ``srtp_error`` (unprotect
failed: bad authentication tag, replay, unknown SSRC context), ``rtp_malformed`` (MalformedRtp, by any
reason), ``rtp_payload_type`` (not the negotiated Opus payload type), ``srtp_protect_error`` (RTP or RTCP);
``lean_rx``, ``lean_tx`` count the packets carried and ``rtcp_tx`` the reports sent; ``early_rtp`` the packets
held until the keys existed (EarlyRtp) and ``early_rtp_overflow`` those it had no room for.
"""

from __future__ import annotations

import random
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import pylibsrtp
from aiortc import clock, sdp
from aiortc.rtp import (
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from voicemesh.core import hooks
from voicemesh.core.media import RTP_CLOCK_HZ, TalkspurtClock

RTP_HEADER = struct.Struct("!BBHII")
"""V/P/X/CC, M/PT, sequence number, timestamp, SSRC (RFC 3550 5.1): 12 bytes."""
_EXTENSION = struct.Struct("!HH")
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
"""RFC 6464: the client-to-mixer audio level header extension."""
SENDER_REPORT_EVERY = 10
"""Sent packets between two updates of the fields aiortc's next sender report carries."""
RTCP_INTERVAL_S = 5.0
"""Mean seconds between two RTCP reports of a session (RFC 3550 6.2 minimum); the first comes after half."""
QUIET_REPORT_S = 0.75
"""A session that sent the caller nothing (RTP or RTCP) for this long sends its report now: a caller hears
from a live transceiver at least every QUIET_REPORT_S plus a tick even while the agent is quiet
(``voicemesh call --redial`` takes 1.5 s of silence for a dead one, voicemesh.app.client SILENCE_S)."""
EARLY_PACKETS = 8
"""SRTP packets held per session from before its keys exist (about 160 ms of audio)."""


class MalformedRtp(ValueError):
    """An RTP packet that cannot be read; ``reason`` is ``short``, ``version``, ``extension`` or ``padding``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed RTP packet: {reason}")
        self.reason = reason


class RtpPacket(NamedTuple):
    """The fields of one received RTP packet that the agent needs (RFC 3550 5.1).

    ``timestamp`` is in samples of the 48 kHz Opus clock; ``audio_level`` is ``(voice activity flag, level
    in -dBov)`` from the RFC 6464 extension, or None.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes
    audio_level: tuple[bool, int] | None


def parse(packet: bytes, audio_level_id: int | None) -> RtpPacket:
    """Read an (unprotected) RTP packet: header, CSRCs, header extension (RFC 8285 one- or two-byte form;
    only the audio level with id ``audio_level_id`` is read) and padding. Raises MalformedRtp."""
    size = len(packet)
    if size < RTP_HEADER.size:
        raise MalformedRtp("short")
    first, second, sequence_number, timestamp, ssrc = RTP_HEADER.unpack_from(packet)
    if first >> 6 != 2:
        raise MalformedRtp("version")
    at = RTP_HEADER.size + 4 * (first & 0x0F)
    level = None
    if first & 0x10:
        if size < at + 4:
            raise MalformedRtp("extension")
        profile, words = _EXTENSION.unpack_from(packet, at)
        start, at = at + 4, at + 4 + 4 * words
        if at > size:
            raise MalformedRtp("extension")
        if audio_level_id is not None:
            level = _audio_level(packet, start, at, profile, audio_level_id)
    end = size
    if first & 0x20:
        padding = packet[-1]
        if padding == 0 or padding > size - at:
            raise MalformedRtp("padding")
        end -= padding
    if at > end:
        raise MalformedRtp("short")
    return RtpPacket(second & 0x7F, sequence_number, timestamp, ssrc, packet[at:end], level)


def _audio_level(packet: bytes, at: int, end: int, profile: int, wanted: int) -> tuple[bool, int] | None:
    """The RFC 6464 element ``wanted`` among the RFC 8285 elements in ``packet[at:end]``, or None."""
    if profile == 0xBEDE:  # one-byte form: 4-bit id, 4-bit length - 1; id 0 is padding, 15 ends
        while at < end:
            ident, length = packet[at] >> 4, (packet[at] & 0x0F) + 1
            if ident == 0:
                at += 1
                continue
            if ident == 15:
                return None
            if ident == wanted and at + 1 < end:
                return bool(packet[at + 1] & 0x80), packet[at + 1] & 0x7F
            at += 1 + length
    elif profile & 0xFFF0 == 0x1000:  # two-byte form: id byte, length byte; id 0 is padding
        while at + 1 < end:
            ident = packet[at]
            if ident == 0:
                at += 1
                continue
            length = packet[at + 1]
            if ident == wanted and length and at + 2 < end:
                return bool(packet[at + 2] & 0x80), packet[at + 2] & 0x7F
            at += 2 + length
    return None


@dataclass(frozen=True)
class RtpParameters:
    """What the offer/answer fixed for a session's audio: the Opus payload type (both ways: an answer keeps
    the offer's numbers), our SSRC, and the id of the caller's audio level extension (None if not agreed)."""

    payload_type: int
    ssrc: int
    audio_level_id: int | None


def negotiated(answer_sdp: str) -> RtpParameters:
    """The RtpParameters in our answer (``pc.localDescription.sdp``). Raises ValueError if it has no audio
    section with Opus and an SSRC."""
    description = sdp.SessionDescription.parse(answer_sdp)
    for media in description.media:
        if media.kind != "audio":
            continue
        opus = [codec.payloadType for codec in media.rtp.codecs
                if codec.mimeType.lower() == "audio/opus" and codec.payloadType is not None]
        if not opus or not media.ssrc:
            break
        level = [ext.id for ext in media.rtp.headerExtensions if ext.uri == AUDIO_LEVEL_URI]
        return RtpParameters(opus[0], media.ssrc[0].ssrc, level[0] if level else None)
    raise ValueError("the answer has no audio section with Opus and an SSRC")


class StreamStatistics(Protocol):
    """What the lean path needs of aiortc's receiver statistics for one remote SSRC (core/hooks.py
    ``receiver_streams``)."""

    def add(self, packet: Any) -> None:
        """Count one received packet, from its ``sequence_number`` and ``timestamp`` (RFC 3550 A.1, A.8)."""


class EarlyRtp:
    """Holds a session's SRTP from before its DTLS handshake finished, for the LeanPath to read once it exists.

    A caller that is the DTLS server (``a=setup:active`` in our answer) is connected one flight before us
    and starts sending RTP at once; aiortc drops SRTP that arrives before its keys exist, which costs
    the call its first 20 ms frame and the caller 20 ms more before it hears anything. The mux delivers
    only what came over a route the caller proved (ICE), at most EARLY_PACKETS are kept (newest kept,
    ``early_rtp_overflow`` counts the rest), and each is authenticated when the LeanPath reads it.
    """

    def __init__(self, counters: Counter[str], limit: int = EARLY_PACKETS) -> None:
        self.packets: deque[bytes] = deque(maxlen=limit)
        self.counters = counters

    def receive(self, srtp: bytes) -> None:
        """Hold one SRTP packet (the mux's ``on_rtp`` until the LeanPath takes over)."""
        if len(self.packets) == self.packets.maxlen:
            self.counters["early_rtp_overflow"] += 1
        self.packets.append(srtp)

    def replay(self, path: LeanPath) -> None:
        """Hand every held packet to ``path``, oldest first, and forget them."""
        self.counters["early_rtp"] += len(self.packets)
        while self.packets:
            path.receive(self.packets.popleft())


class LeanPath:
    """One session's lean media path (module docstring), both directions.

    ``rx`` and ``tx``: the session's inbound and outbound pylibsrtp Sessions. ``streams``: aiortc's receiver
    statistics by SSRC, filled with ``new_stream(clock_hz)`` for a new SSRC. ``on_packet(payload,
    timestamp, audio_level)`` gets each received Opus payload (timestamp: 48 kHz RTP clock). ``send(srtp)``
    sends a protected packet over the session's active route. ``sender_report(ntp_timestamp,
    rtp_timestamp, packets, octets)`` updates aiortc's sender counters (``getStats``). ``counters`` counts
    drops and packets (module docstring). ``sequence_number`` and ``timestamp_origin``: the first RTP
    sequence number and timestamp sent (random in use, RFC 3550 5.1). ``now`` is the monotonic clock
    (seconds), ``ntp_now`` the wall clock as 64-bit NTP, ``wall_now`` as unix seconds.

    RTCP (``tick``): ``cname`` (an attribute, settable later) goes in the SDES (no SDES while it is None);
    ``last_sr`` is the pair of dicts by remote SSRC of the middle NTP bits of its last sender report and when
    it came (unix seconds), kept by aiortc's receiver, for each report block's LSR and DLSR;
    ``on_report(lsr, sent_at)`` is told of each sender report sent, so that the caller's receiver reports give
    the round trip. ``jitter()`` draws the interval's random factor (0-1).
    """

    def __init__(self, params: RtpParameters, rx: pylibsrtp.Session, tx: pylibsrtp.Session,
                 streams: dict[int, Any], new_stream: Callable[[int], StreamStatistics],
                 on_packet: Callable[[bytes, int, tuple[bool, int] | None], None],
                 send: Callable[[bytes], None], sender_report: Callable[[int, int, int, int], None],
                 counters: Counter[str], *, sequence_number: int = 0, timestamp_origin: int = 0,
                 cname: str | None = None,
                 last_sr: tuple[dict[int, int], dict[int, float]] | None = None,
                 on_report: Callable[[int, float], None] | None = None,
                 now: Callable[[], float] = time.monotonic,
                 ntp_now: Callable[[], int] = clock.current_ntp_time,
                 wall_now: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = random.random) -> None:
        self.params = params
        self._unprotect = hooks.srtp_processor(rx, protect=False)
        self._protect = hooks.srtp_processor(tx, protect=True)
        self._tx = tx
        self._streams = streams
        self._new_stream = new_stream
        self._on_packet = on_packet
        self._send = send
        self._sender_report = sender_report
        self.counters = counters
        self._clock = TalkspurtClock()
        self._sequence_number = sequence_number & 0xFFFF
        self._timestamp_origin = timestamp_origin & 0xFFFFFFFF
        self._now = now
        self._ntp_now = ntp_now
        self._wall_now = wall_now
        self._jitter = jitter
        self.cname = cname
        self._last_sr = last_sr or ({}, {})
        self._on_report = on_report
        self._sent_at = (0, 0)  # (NTP time, RTP timestamp) of a packet sent, for the sender report
        self._report_at = now() + RTCP_INTERVAL_S / 2 * (0.5 + jitter())
        self._sent_last = now()  # when the caller was last sent RTP or RTCP
        self.packets_sent = 0
        self.octets_sent = 0
        self.closed = False

    def receive(self, srtp: bytes) -> None:
        """One SRTP packet from the caller (RFC 3711 3.3): unprotect, read, count, hand the payload on."""
        if self.closed:
            return
        counters = self.counters
        try:
            packet = parse(self._unprotect(srtp), self.params.audio_level_id)
        except pylibsrtp.Error:
            counters["srtp_error"] += 1
            return
        except MalformedRtp:
            counters["rtp_malformed"] += 1
            return
        if packet.payload_type != self.params.payload_type:
            counters["rtp_payload_type"] += 1
            return
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = self._new_stream(RTP_CLOCK_HZ)
        stream.add(packet)
        counters["lean_rx"] += 1
        self._on_packet(packet.payload, packet.timestamp, packet.audio_level)

    def push(self, payload: bytes) -> None:
        """Send one Opus packet (20 ms) from the agent to the caller now (RFC 3550 5.1, RFC 7587)."""
        if self.closed:
            return
        now = self._sent_last = self._now()
        offset, starts = self._clock.next(now)
        timestamp = (self._timestamp_origin + offset) & 0xFFFFFFFF
        params = self.params
        header = RTP_HEADER.pack(0x80, params.payload_type | (0x80 if starts else 0), self._sequence_number,
                                 timestamp, params.ssrc)
        try:
            srtp = self._protect(header + payload)
        except pylibsrtp.Error:
            self.counters["srtp_protect_error"] += 1
            return
        self._sequence_number = (self._sequence_number + 1) & 0xFFFF
        self._send(srtp)
        self.counters["lean_tx"] += 1
        self.packets_sent += 1
        self.octets_sent += len(payload)
        if self.packets_sent % SENDER_REPORT_EVERY == 1:
            self._sent_at = (self._ntp_now(), timestamp)
            self._sender_report(*self._sent_at, self.packets_sent, self.octets_sent)

    def tick(self, now: float) -> None:
        """Send the session's RTCP report if it is due at ``now`` (monotonic seconds), or if the caller was sent
        nothing for QUIET_REPORT_S; call it every half second or so (module docstring): a sender report, with a
        report block per remote SSRC (a receiver report before anything was sent), then the SDES CNAME, as
        one compound SRTCP packet (RFC 3550 6.1, RFC 3711 3.4)."""
        if self.closed or (now < self._report_at and now - self._sent_last < QUIET_REPORT_S):
            return
        self._report_at = now + RTCP_INTERVAL_S * (0.5 + self._jitter())
        self._sent_last = now
        wall = self._wall_now()
        lsr_by_ssrc, received_at = self._last_sr
        blocks = []
        for ssrc, stream in self._streams.items():
            lsr = lsr_by_ssrc.get(ssrc, 0)
            delay = wall - received_at[ssrc] if lsr else 0.0
            blocks.append(RtcpReceiverInfo(
                ssrc=ssrc, fraction_lost=stream.fraction_lost, packets_lost=stream.packets_lost,
                highest_sequence=stream.max_seq, jitter=stream.jitter, lsr=lsr,
                dlsr=int(delay * 65536) if 0 < delay < 65536 else 0))
        ssrc = self.params.ssrc
        packets: list[AnyRtcpPacket] = []
        if self.packets_sent:
            ntp_timestamp, rtp_timestamp = self._sent_at
            packets.append(RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp_timestamp, rtp_timestamp=rtp_timestamp,
                packet_count=self.packets_sent & 0xFFFFFFFF, octet_count=self.octets_sent & 0xFFFFFFFF),
                reports=blocks))
            if self._on_report is not None:
                self._on_report((ntp_timestamp >> 16) & 0xFFFFFFFF, wall)
        else:
            packets.append(RtcpRrPacket(ssrc=ssrc, reports=blocks))
        if self.cname is not None:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, self.cname.encode())])]))
        self._send_rtcp(packets)

    def _send_rtcp(self, packets: list[AnyRtcpPacket]) -> None:
        try:
            srtcp = self._tx.protect_rtcp(b"".join(bytes(packet) for packet in packets))
        except pylibsrtp.Error:
            self.counters["srtp_protect_error"] += 1
            return
        self._send(srtcp)
        self.counters["rtcp_tx"] += 1

    def flush(self) -> int:
        """Drop the agent audio queued for the caller (barge-in): none is, each frame goes out as it comes."""
        return 0

    def close(self) -> None:
        """Carry nothing more (the session ended): say so with an RTCP BYE (RFC 3550 6.6), once."""
        if not self.closed:
            self.closed = True
            self._send_rtcp([RtcpByePacket(sources=[self.params.ssrc])])
