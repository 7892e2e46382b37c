"""The transceiver's media path: Opus packets off the wire to the agent and back.

No jitter buffer and, in Opus mode, no codec: each RTP payload the receiver
accepts goes to the agent as it is, and each frame the agent returns goes out
as an RTP payload (aiortc's RTCRtpSender packs an ``av.Packet`` without
encoding). In PCM16 mode the transceiver decodes to mono PCM at the agent's
rate and encodes the agent's PCM back, with libopus through PyAV and no thread
hand-off. Opus over RTP always uses a 48 kHz clock (RFC 7587 4.1).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RTP_CLOCK_HZ = 48_000
FRAME_MS = 20
SAMPLES_PER_FRAME = RTP_CLOCK_HZ * FRAME_MS // 1000
TIME_BASE = Fraction(1, RTP_CLOCK_HZ)
OPUS_RATES_HZ = (8000, 12000, 16000, 24000, 48000)
TALKSPURT_GAP_S = 0.1
"""A pause in the agent's audio longer than this (s) advances the RTP timestamp by wall time."""


class AgentAudioTrack(MediaStreamTrack):
    """Outgoing audio track fed with Opus packets by ``push``; aiortc sends what it yields.

    Holds at most ``max_queue`` packets (20 ms each; default 25 = 500 ms) and
    drops the oldest beyond that (``dropped`` counts them), so a flood from
    the agent cannot grow memory or delay. RTP timestamps advance 960 per
    packet within a talkspurt and by wall-clock time across a pause, so the
    caller's jitter buffer sees real gaps (RFC 3550 5.1).
    """

    kind = "audio"

    def __init__(self, max_queue: int = 25) -> None:
        super().__init__()
        self._queue: deque[bytes] = deque(maxlen=max_queue)
        self._waiter: asyncio.Future[None] | None = None
        self._pts = 0
        self._last_sent = 0.0
        self.dropped = 0
        self.sent = 0

    def push(self, payload: bytes) -> None:
        """Queue one Opus packet (bytes) for sending; never blocks."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(payload)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def flush(self) -> int:
        """Drop every queued packet (the caller barged in); returns how many were dropped."""
        flushed = len(self._queue)
        self._queue.clear()
        return flushed

    async def recv(self) -> av.Packet:
        """Return the next packet (``av.Packet`` with pts in 1/48000 s); raises MediaStreamError when stopped."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        now = time.monotonic()
        gap = now - self._last_sent
        if self._last_sent and gap > TALKSPURT_GAP_S:
            self._pts += round(gap * 1000 / FRAME_MS) * SAMPLES_PER_FRAME
        elif self._last_sent:
            self._pts += SAMPLES_PER_FRAME
        self._last_sent = now
        packet = av.Packet(self._queue.popleft())
        packet.pts = self._pts
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet

    def stop(self) -> None:
        super().stop()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class OpusDecoder:
    """Opus packets (RFC 7587) to PCM16 mono little-endian at ``rate_hz``.

    libopus decodes at 48 kHz; other rates (8000, 12000, 16000, 24000 Hz) go
    through PyAV's resampler. Raises ValueError for any other rate.
    """

    def __init__(self, rate_hz: int) -> None:
        if rate_hz not in OPUS_RATES_HZ:
            raise ValueError(f"PCM rate must be one of {OPUS_RATES_HZ} Hz, got {rate_hz}")
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = RTP_CLOCK_HZ
        self._resampler = (
            None if rate_hz == RTP_CLOCK_HZ
            else av.AudioResampler(format="s16", layout="mono", rate=rate_hz)
        )

    def decode(self, payload: bytes) -> bytes:
        """Decode one packet; returns PCM16 bytes (b"" if libopus rejects it)."""
        try:
            frames = self._codec.decode(av.Packet(payload))
            if self._resampler is not None:
                frames = [r for f in frames for r in self._resampler.resample(f)]
        except av.error.FFmpegError:
            return b""
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)


class OpusEncoder:
    """PCM16 mono at ``rate_hz`` to Opus packets, 20 ms each, voice-tuned.

    ``bitrate`` in bit/s (default 32000, what browsers send for voice).
    Input of any length is buffered into 20 ms frames.
    """

    def __init__(self, rate_hz: int, bitrate: int = 32_000) -> None:
        if rate_hz not in OPUS_RATES_HZ:
            raise ValueError(f"PCM rate must be one of {OPUS_RATES_HZ} Hz, got {rate_hz}")
        self._rate = rate_hz
        self._frame_bytes = rate_hz * FRAME_MS // 1000 * 2
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = rate_hz
        self._codec.bit_rate = bitrate
        self._codec.options = {"application": "voip", "frame_duration": str(FRAME_MS)}
        self._codec.time_base = Fraction(1, rate_hz)
        self._pending = b""
        self._pts = 0

    def encode(self, pcm: bytes) -> list[bytes]:
        """Encode PCM16 bytes; returns zero or more Opus packets."""
        self._pending += pcm
        out: list[bytes] = []
        samples = self._frame_bytes // 2
        while len(self._pending) >= self._frame_bytes:
            chunk, self._pending = self._pending[: self._frame_bytes], self._pending[self._frame_bytes :]
            frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
            frame.planes[0].update(chunk)
            frame.sample_rate = self._rate
            frame.pts = self._pts
            frame.time_base = self._codec.time_base
            self._pts += samples
            out.extend(bytes(p) for p in self._codec.encode(frame))
        return out
