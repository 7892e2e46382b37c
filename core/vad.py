"""Turn-taking on the caller's audio, sans-IO: whether a 20 ms frame is voiced, when speech starts
and stops (with hysteresis), and when the caller's speech interrupts the agent (barge-in).

The transceiver feeds one voiced flag per RTP packet; the work per packet is a few integer
operations. Where the flag comes from, cheapest first:

1. The RTP header extension ssrc-audio-level (RFC 6464), which browsers and aiortc put on every
   audio packet and aiortc parses for us: no decoding at all (``level_voiced``).
2. webrtcvad on the PCM the transceiver decodes anyway in PCM16 mode (``PcmVoicing``), at the
   rates webrtcvad supports (8000, 16000, 32000, 48000 Hz).
3. Neither (Opus mode without the extension, or PCM16 at 12000 or 24000 Hz): no speech events.
"""

from __future__ import annotations

from typing import NamedTuple

import webrtcvad

VOICED_LEVEL_DBOV = -45
"""A frame at least this loud (dBov, RFC 6464 section 3) is voiced. Speech at a normal distance
from the microphone measures about -35 to -15 dBov per 20 ms frame (the bundled clip: -48 to -12,
-20 to -30 typical), a quiet room through a browser's noise suppression -60 dBov or below, and
digital silence -127. -45 sits between them, so soft word endings still count as voiced and room
noise does not."""

FLAGGED_LEVEL_DBOV = -70
"""The sender's own voice activity flag counts only for a frame at least this loud (dBov). Chromium sets the flag
on every frame of a file-fed microphone, its digital silence (-102 to -127 dBov) included, so the flag alone
would never let speech stop; softly spoken syllables between -70 and -45 dBov still count by the flag."""

START_FRAMES = 3
"""Speech starts when this many of the last ``WINDOW_FRAMES`` frames are voiced: a single click or
cough (one or two loud frames) does not start it; speech is seen 40 to 80 ms after it begins."""

WINDOW_FRAMES = 5
"""Frames (20 ms each, so 100 ms) in the start window."""

STOP_MS = 500
"""Speech stops after this many ms without a voiced frame. Pauses inside a sentence last up to about
350 ms (the bundled clip's longest is 340 ms); a turn ends with a longer one."""

WEBRTCVAD_MODE = 2
"""webrtcvad's aggressiveness, 0 (keeps most as speech) to 3 (drops most noise); 2 balances a
missed soft syllable (which the hysteresis bridges) against noise that would start speech."""

WEBRTCVAD_RATES_HZ = (8000, 16000, 32000, 48000)
"""PCM rates webrtcvad accepts."""

_MASK32 = 0xFFFFFFFF
_HALF32 = 1 << 31


def level_voiced(audio_level: tuple[bool, int]) -> bool:
    """Whether a frame is voiced, from its RFC 6464 audio level: ``(vad_flag, level)``, level in
    -dBov from 0 (loudest) to 127 (silence), as aiortc parses the extension.

    Voiced if the frame is at least ``VOICED_LEVEL_DBOV`` loud (senders that never set the flag,
    such as aiortc, still give the level), or if the sender's own voice activity flag is set
    (browsers set it from their audio pipeline) and the frame is at least ``FLAGGED_LEVEL_DBOV``
    loud.
    """
    return audio_level[1] <= -VOICED_LEVEL_DBOV or (audio_level[0] and audio_level[1] <= -FLAGGED_LEVEL_DBOV)


class PcmVoicing:
    """webrtcvad on decoded PCM16 mono frames: ``voicing(pcm) -> bool``.

    rate_hz: one of ``WEBRTCVAD_RATES_HZ``, else ValueError. A frame of 20 ms is classified whole;
    a shorter one (a resampler's first output) on its first 10 ms; under 10 ms counts as unvoiced.
    """

    def __init__(self, rate_hz: int, mode: int = WEBRTCVAD_MODE) -> None:
        if rate_hz not in WEBRTCVAD_RATES_HZ:
            raise ValueError(f"webrtcvad needs a rate in {WEBRTCVAD_RATES_HZ} Hz, got {rate_hz}")
        self._vad = webrtcvad.Vad(mode)
        self._rate = rate_hz
        self._bytes_20ms = rate_hz // 50 * 2
        self._bytes_10ms = rate_hz // 100 * 2

    def __call__(self, pcm: bytes) -> bool:
        if len(pcm) >= self._bytes_20ms:
            return self._vad.is_speech(pcm[: self._bytes_20ms], self._rate)
        if len(pcm) >= self._bytes_10ms:
            return self._vad.is_speech(pcm[: self._bytes_10ms], self._rate)
        return False


class Speech(NamedTuple):
    """Speech started (``started`` True) or stopped, at ``timestamp`` (RTP clock, mod 2^32)."""

    started: bool
    timestamp: int


class SpeechDetector:
    """Voiced flags per frame in, speech started and stopped out, with hysteresis.

    Speech starts when ``start_frames`` of the last ``window_frames`` frames are voiced; its
    timestamp is the first voiced frame of that window. It stops at the first frame that begins
    ``stop_ms`` or more after the end of the last voiced frame; its timestamp is that end. The
    stop is measured on RTP timestamps (RFC 3550 5.1: 32 bits, wrapping), so lost packets or a
    sender that pauses (DTX) delay nothing; a packet older than the last voiced one is ignored
    for the stop. clock_hz: the RTP clock (48000 for Opus, RFC 7587 4.1); frame_ms: the packet
    duration (20).
    """

    def __init__(
        self,
        *,
        clock_hz: int = 48000,
        frame_ms: int = 20,
        start_frames: int = START_FRAMES,
        window_frames: int = WINDOW_FRAMES,
        stop_ms: int = STOP_MS,
    ) -> None:
        if not 1 <= start_frames <= window_frames:
            raise ValueError(f"need 1 <= start_frames <= window_frames, got {start_frames}, {window_frames}")
        self.speaking = False
        self._frame = clock_hz * frame_ms // 1000
        self._stop_after = clock_hz * stop_ms // 1000 + self._frame
        self._start_frames = start_frames
        self._window = (1 << window_frames) - 1
        self._bits = 0
        self._last_voiced = 0

    def update(self, voiced: bool, timestamp: int) -> Speech | None:
        """Feed one frame: voiced or not, its RTP timestamp. Returns Speech on a change, else None."""
        if voiced:
            self._last_voiced = timestamp
            if self.speaking:
                return None
            bits = self._bits = ((self._bits << 1) | 1) & self._window
            if bits.bit_count() < self._start_frames:
                return None
            self.speaking = True
            return Speech(True, (timestamp - (bits.bit_length() - 1) * self._frame) & _MASK32)
        if not self.speaking:
            self._bits = (self._bits << 1) & self._window
            return None
        if self._stop_after <= (timestamp - self._last_voiced) & _MASK32 < _HALF32:
            self.speaking = False
            self._bits = 0
            return Speech(False, (self._last_voiced + self._frame) & _MASK32)
        return None


class BargeIn:
    """The barge-in rule of one session (agent.proto, EVENT_INTERRUPT).

    The agent is responding between its response started and response done. Caller speech that
    starts then interrupts it: ``speech_started()`` returns True, the transceiver tells the agent
    and drops the agent audio it holds, and ``muted`` stays True (drop the agent's frames, which
    were sent before it heard the interrupt) until the agent's next response started or done.
    """

    def __init__(self) -> None:
        self.responding = False
        self.muted = False

    def speech_started(self) -> bool:
        """The caller started speaking; True if this interrupts the agent."""
        if not self.responding:
            return False
        self.responding = False
        self.muted = True
        return True

    def response_started(self) -> None:
        """The agent starts a response: its frames play, caller speech interrupts it."""
        self.responding = True
        self.muted = False

    def response_done(self) -> None:
        """The agent's response is over (played out or interrupted)."""
        self.responding = False
        self.muted = False
