"""The transceiver's media path: Opus packets off the wire to the agent and back.

No jitter buffer and, in Opus mode, no codec: each RTP payload goes to the
agent as it is, and each frame the agent returns goes out as an RTP payload,
either through core/lean.py (the lean path) or through aiortc's RTCRtpSender,
which packs an ``av.Packet`` without encoding (the reference path). In PCM16
mode the transceiver decodes to mono PCM at the agent's rate and encodes the
agent's PCM back, with libopus straight at that rate and no thread hand-off:
opuslib-next loads libopus and makes and sets up the codec states, and each
packet is one call into libopus with argument types bound once, reused output
buffers and the PCM and packet bytes passed without a copy. Opus over RTP always
uses a 48 kHz clock (RFC 7587 4.1).
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections import deque
from fractions import Fraction

import av
import opuslib_next
import opuslib_next.api
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RTP_CLOCK_HZ = 48_000
FRAME_MS = 20
SAMPLES_PER_FRAME = RTP_CLOCK_HZ * FRAME_MS // 1000
TIME_BASE = Fraction(1, RTP_CLOCK_HZ)
OPUS_RATES_HZ = (8000, 12000, 16000, 24000, 48000)
MAX_PACKET_MS = 120
"""The longest Opus packet (RFC 6716 3.2.5), ms."""
MAX_PACKET_BYTES = 1275
"""The largest Opus frame (RFC 6716 3.2.1), bytes: one 20 ms packet from the encoder fits."""
BANDWIDTHS = {1101: "narrowband", 1102: "mediumband", 1103: "wideband", 1104: "superwideband", 1105: "fullband"}
"""libopus' OPUS_BANDWIDTH_* values by name: audio up to 4, 6, 8, 12 and 20 kHz (RFC 6716 2)."""
APPLICATIONS = {"voip": opuslib_next.APPLICATION_VOIP, "audio": opuslib_next.APPLICATION_AUDIO,
                "lowdelay": opuslib_next.APPLICATION_RESTRICTED_LOWDELAY}
"""libopus' encoder applications by config name (OPUS_APPLICATION_*). ``voip`` codes wideband speech with
SILK (linear prediction); ``lowdelay`` is CELT (MDCT) alone, 4 ms less algorithmic delay; ``audio`` picks by
bitrate."""
DEFAULT_APPLICATION = "voip"
DEFAULT_BITRATE = 32_000
DEFAULT_COMPLEXITY = 4
"""The agent's PCM16 is encoded as SILK at 32 kbit/s, complexity 4 (0-10; libopus' own default is 10): the
lowest complexity within 0.2 PESQ of 10 at the bitrate browsers use for voice. CELT (``lowdelay``) at
64 kbit/s, complexity 0, costs a sixth of the CPU for twice the bitrate: README "Media path" has the
measurement (bench/opus_complexity.py)."""
TALKSPURT_GAP_S = 0.1
"""A pause in the agent's audio longer than this (s) advances the RTP timestamp by wall time."""

# Our own function pointers into the libopus opuslib-next loaded (CDLL's [] makes a new one, leaving
# opuslib-next's argtypes alone): states by address, PCM and packets as bytes, outputs as reused buffers.
_libopus = opuslib_next.api.libopus
_opus_encode = _libopus["opus_encode"]
_opus_encode.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int32)
_opus_encode.restype = ctypes.c_int32
_opus_decode = _libopus["opus_decode"]
_opus_decode.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
_opus_decode.restype = ctypes.c_int


def _address(state: ctypes._Pointer) -> int:
    """The address of a codec state opuslib-next created (the object that frees it must outlive its use)."""
    return ctypes.cast(state, ctypes.c_void_p).value or 0


class TalkspurtClock:
    """RTP timestamps (48 kHz clock, from 0) for 20 ms packets sent as they come from the agent: 960 apart
    within a talkspurt, and by wall-clock time across a pause longer than TALKSPURT_GAP_S, so the caller's
    jitter buffer sees real gaps (RFC 3550 5.1)."""

    __slots__ = ("_pts", "_last_sent")

    def __init__(self) -> None:
        self._pts = 0
        self._last_sent = 0.0

    def next(self, now: float) -> tuple[int, bool]:
        """The timestamp of a packet sent at ``now`` (monotonic seconds), and whether it starts a talkspurt
        (the first packet, or the first after a pause: RFC 3551 4.1 sets the marker bit on it)."""
        gap = now - self._last_sent
        starts = not self._last_sent or gap > TALKSPURT_GAP_S
        if self._last_sent:
            self._pts += round(gap * 1000 / FRAME_MS) * SAMPLES_PER_FRAME if starts else SAMPLES_PER_FRAME
        self._last_sent = now
        return self._pts, starts


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
        self._clock = TalkspurtClock()
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
        packet = av.Packet(self._queue.popleft())
        packet.pts = self._clock.next(time.monotonic())[0]
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet

    def stop(self) -> None:
        super().stop()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class OpusDecoder:
    """Opus packets (RFC 7587) to PCM16 mono little-endian at ``rate_hz``, decoded by libopus straight at that
    rate (libopus decodes natively at 8000, 12000, 16000, 24000 and 48000 Hz: no resampler, so no resampler
    delay). Raises ValueError for any other rate.
    """

    def __init__(self, rate_hz: int) -> None:
        if rate_hz not in OPUS_RATES_HZ:
            raise ValueError(f"PCM rate must be one of {OPUS_RATES_HZ} Hz, got {rate_hz}")
        self._decoder = opuslib_next.Decoder(rate_hz, 1)
        self._state = _address(self._decoder.decoder_state)
        self._max_samples = rate_hz * MAX_PACKET_MS // 1000
        self._pcm = ctypes.create_string_buffer(self._max_samples * 2)
        self._pcm_address = ctypes.addressof(self._pcm)
        self.errors = 0

    @property
    def bandwidth(self) -> str:
        """The audio bandwidth of the last packet decoded (a value of BANDWIDTHS; OPUS_GET_BANDWIDTH), or ""
        before the first."""
        return BANDWIDTHS.get(self._decoder.bandwidth, "")

    def decode(self, payload: bytes) -> bytes:
        """Decode one packet; returns PCM16 bytes (b"" if libopus rejects it, counted in ``errors``)."""
        samples = _opus_decode(self._state, payload, len(payload), self._pcm_address, self._max_samples, 0)
        if samples < 0:
            self.errors += 1
            return b""
        return ctypes.string_at(self._pcm_address, samples * 2)


class OpusEncoder:
    """PCM16 mono at ``rate_hz`` to Opus packets, 20 ms each (libopus).

    ``application``: a key of APPLICATIONS (OPUS_SET_APPLICATION); ``bitrate`` in bit/s, 6000-510000
    (OPUS_SET_BITRATE, variable bitrate); ``complexity`` 0-10 (OPUS_SET_COMPLEXITY: CPU against
    quality). README "Media path" has the measurement behind the defaults. Input of any length is
    buffered into 20 ms frames. Raises ValueError for a rate libopus does not take or a setting out of
    range, OpusError if libopus fails to encode a frame.
    """

    def __init__(self, rate_hz: int, bitrate: int = DEFAULT_BITRATE, complexity: int = DEFAULT_COMPLEXITY,
                 application: str = DEFAULT_APPLICATION) -> None:
        if rate_hz not in OPUS_RATES_HZ:
            raise ValueError(f"PCM rate must be one of {OPUS_RATES_HZ} Hz, got {rate_hz}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity must be 0-10, got {complexity}")
        if not 6000 <= bitrate <= 510_000:
            raise ValueError(f"Opus bitrate must be 6000-510000 bit/s, got {bitrate}")
        if application not in APPLICATIONS:
            raise ValueError(f"Opus application must be one of {sorted(APPLICATIONS)}, got {application!r}")
        self._samples = rate_hz * FRAME_MS // 1000
        self._frame_bytes = self._samples * 2
        self._encoder = opuslib_next.Encoder(rate_hz, 1, APPLICATIONS[application])
        self._encoder.bitrate = bitrate
        self._encoder.complexity = complexity
        self._state = _address(self._encoder.encoder_state)
        self._packet = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self._packet_address = ctypes.addressof(self._packet)
        self._pending = b""

    def encode(self, pcm: bytes) -> list[bytes]:
        """Encode PCM16 bytes; returns zero or more Opus packets (one per whole 20 ms frame)."""
        size = self._frame_bytes
        if not self._pending and len(pcm) == size:
            return [self._encode_frame(pcm)]
        if self._pending:
            pcm = self._pending + pcm
        whole = len(pcm) - len(pcm) % size
        self._pending = pcm[whole:]
        return [self._encode_frame(pcm[at:at + size]) for at in range(0, whole, size)]

    def _encode_frame(self, frame: bytes) -> bytes:
        """One 20 ms frame (``_frame_bytes`` of PCM16) to one packet."""
        size = _opus_encode(self._state, frame, self._samples, self._packet_address, MAX_PACKET_BYTES)
        if size < 0:
            raise opuslib_next.OpusError(size)
        return ctypes.string_at(self._packet_address, size)
