"""Audio helpers for the voicemesh test client: read and write WAV files, place
timed 20 ms frames on one timeline, and measure how late an echo comes back.

Everything here works on numpy arrays of int16 PCM samples, mono; nothing
touches the network or the clock.
"""

import wave
from collections.abc import Iterable, Sequence
from importlib import resources

import av
import numpy as np

ENVELOPE_RATE = 1000
"""Envelope sample rate, Hz: ``estimate_delay_ms`` resolves lags to 1 ms."""

ENVELOPE_SMOOTHING = 5
"""Moving-average length of the envelope, in envelope samples (5 ms)."""


BUNDLED_SPEECH_TEXT = "Hello from voicemesh. This is a test call through the relay mesh: one, two, three."
"""What the bundled speech clip says (voicemesh/app/assets/README.md)."""


def bundled_speech() -> str:
    """Path of the speech WAV shipped in the package (voicemesh/app/assets/speech.wav)."""
    return str(resources.files("voicemesh.app.assets") / "speech.wav")


class BadAudio(ValueError):
    """Audio input that cannot be used; ``reason`` is a short counter label
    (``"unreadable"``, ``"no_audio"``, ``"empty"``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_wav_mono(path: str, rate: int = 48000) -> np.ndarray:
    """Read an audio file (WAV, or anything FFmpeg decodes) as mono s16 PCM.

    Channels are mixed down and the audio is resampled to ``rate`` Hz by
    FFmpeg's libswresample (through ``av.AudioResampler``), which low-pass
    filters properly.

    Returns a 1-D ``np.int16`` array of samples at ``rate`` Hz.
    Raises ``FileNotFoundError`` if ``path`` does not exist, and ``BadAudio``
    (``"unreadable"``) if it is not audio FFmpeg can decode or
    (``"no_audio"``) if it holds no audio samples.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    chunks: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            for frame in container.decode(audio=0):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    except FileNotFoundError:
        raise
    except av.FFmpegError as exc:
        raise BadAudio("unreadable", f"{path}: not decodable audio: {exc}") from exc
    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    if not chunks:
        raise BadAudio("no_audio", f"{path}: no audio samples")
    return np.concatenate(chunks).astype(np.int16)


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
    """Write mono PCM samples (1-D, int16 or anything castable) as a 16-bit WAV
    file at ``rate`` Hz. Values outside the int16 range are clipped."""
    pcm = np.clip(np.asarray(samples), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def anchor_media_time(frames: Sequence[tuple[float, float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    """Re-time one stream's frames by their media timestamps.

    ``frames`` are ``(t, media_t, samples)``: ``t`` the clock time (seconds)
    the frame was handed over or arrived, ``media_t`` its media timestamp in
    seconds (pts, or the RTP timestamp over the clock rate). Returns
    ``(media_t + offset, samples)`` pairs, ``offset`` being the median of
    ``t - media_t``: the stream keeps its sample-exact spacing (with gaps
    only where media is missing, such as a lost packet) at its typical
    position on the clock, so an event loop that stalls and then delivers
    frames in a burst does not tear the audio apart.
    """
    if not frames:
        return []
    offset = float(np.median([t - media_t for t, media_t, _ in frames]))
    return [(media_t + offset, samples) for _, media_t, samples in frames]


def place_on_timeline(chunks: Iterable[tuple[float, np.ndarray]], start: float, rate: int) -> np.ndarray:
    """Lay timed chunks of mono samples on one timeline.

    ``chunks`` are ``(t, samples)`` pairs: ``t`` in seconds on any clock
    (for the client, ``time.monotonic()``), ``samples`` at ``rate`` Hz.
    Each chunk is written from index ``round((t - start) * rate)``; a later
    chunk overwrites an earlier one where they overlap, chunks before
    ``start`` are cut, and gaps stay silent (zero).

    Returns a 1-D ``np.int16`` array that ends with the last chunk.
    """
    placed = [(round((t - start) * rate), np.asarray(s, dtype=np.int16)) for t, s in chunks]
    length = max((i + len(s) for i, s in placed), default=0)
    timeline = np.zeros(max(length, 0), dtype=np.int16)
    for index, samples in placed:
        if index < 0:
            samples, index = samples[-index:], 0
        timeline[index : index + len(samples)] = samples
    return timeline


def _envelope(samples: np.ndarray, block: int) -> np.ndarray:
    magnitude = np.abs(np.asarray(samples, dtype=np.float64))
    blocks = len(magnitude) // block
    coarse = magnitude[: blocks * block].reshape(blocks, block).mean(axis=1)
    smoothed = np.convolve(coarse, np.ones(ENVELOPE_SMOOTHING) / ENVELOPE_SMOOTHING, mode="same")
    return smoothed - smoothed.mean()


def estimate_delay_ms(sent: np.ndarray, received: np.ndarray, rate: int) -> tuple[float, float]:
    """Estimate how much later ``received`` carries the sound of ``sent``.

    Both are 1-D mono sample arrays at ``rate`` Hz on a common timeline
    (index 0 is the same instant in both; see ``place_on_timeline``). The
    amplitude envelopes (mean of ``|x|`` over 1 ms blocks, smoothed over
    5 ms) are cross-correlated by FFT; envelopes survive a lossy codec, a
    few samples of misplacement and gain changes, where raw waveforms would
    not. Only lags >= 0 are searched: an echo cannot precede its sound.

    Returns ``(delay_ms, correlation)``: the lag of the correlation peak in
    ms (1 ms resolution) and the peak's normalised correlation, clamped to
    0..1 (1 = same envelope). A silent or constant signal gives
    ``(0.0, 0.0)``. Raises ``BadAudio`` (``"empty"``) if either signal is
    shorter than one envelope block.
    """
    block = max(1, round(rate / ENVELOPE_RATE))
    if min(len(sent), len(received)) < block:
        raise BadAudio("empty", "both signals need at least 1 ms of samples")
    a = _envelope(sent, block)
    b = _envelope(received, block)
    norm = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if norm == 0.0:
        return 0.0, 0.0
    size = 1 << (len(a) + len(b) - 1).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: len(b)]
    lag = int(np.argmax(xcorr))
    correlation = float(np.clip(xcorr[lag] / norm, 0.0, 1.0))
    return lag * block * 1000.0 / rate, correlation
