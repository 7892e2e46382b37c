"""Tests for voicemesh.audio: WAV round trips, timelines and echo delay estimation."""

from importlib import resources

import numpy as np
import pytest

from voicemesh.app.audio import (
    BadAudio,
    anchor_media_time,
    estimate_delay_ms,
    load_wav_mono,
    place_on_timeline,
    write_wav,
)

pytestmark = pytest.mark.unit

RATE = 48000
SPEECH = str(resources.files("voicemesh.app.assets") / "speech.wav")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_wav_mono(SPEECH, RATE)


def echo_of(speech: np.ndarray, delay_ms: float, gain: float, noise_rms: float, seed: int = 1) -> np.ndarray:
    """The speech delayed by delay_ms, scaled by gain, with white noise on top,
    on a timeline one second longer than the speech."""
    rng = np.random.default_rng(seed)
    delay = round(delay_ms * RATE / 1000)
    echo = np.zeros(len(speech) + RATE)
    echo[delay : delay + len(speech)] = gain * speech
    echo += rng.normal(0.0, noise_rms, len(echo))
    return np.clip(echo, -32768, 32767).astype(np.int16)


def test_load_resamples_the_16k_asset_to_48k(speech):
    assert speech.dtype == np.int16
    assert 4.0 < len(speech) / RATE < 6.0
    rms = np.sqrt(np.mean(speech.astype(np.float64) ** 2))
    assert rms > 1000


def test_write_then_load_round_trips(tmp_path, speech):
    path = str(tmp_path / "copy.wav")
    write_wav(path, speech, RATE)
    assert np.array_equal(load_wav_mono(path, RATE), speech)


def test_load_rejects_a_file_that_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not a wave file")
    with pytest.raises(BadAudio) as info:
        load_wav_mono(str(path))
    assert info.value.reason == "unreadable"


@pytest.mark.parametrize("delay_ms", [0.0, 37.0, 180.0, 423.0])
def test_delayed_noisy_quieter_echo_gives_its_delay(speech, delay_ms):
    sent = np.concatenate([speech, np.zeros(RATE, dtype=np.int16)])
    received = echo_of(speech, delay_ms, gain=0.4, noise_rms=200.0)
    measured, correlation = estimate_delay_ms(sent, received, RATE)
    assert measured == pytest.approx(delay_ms, abs=2.0)
    assert correlation > 0.8


def test_works_at_8khz(speech):
    decimated = speech[::6]
    received = np.concatenate([np.zeros(1600, dtype=np.int16), decimated])
    measured, correlation = estimate_delay_ms(decimated, received, 8000)
    assert measured == pytest.approx(200.0, abs=2.0)
    assert correlation > 0.9


def test_unrelated_noise_correlates_poorly(speech):
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 3000.0, len(speech) + RATE).astype(np.int16)
    _, correlation = estimate_delay_ms(speech, noise, RATE)
    assert correlation < 0.2


def test_silence_gives_zero_correlation(speech):
    assert estimate_delay_ms(speech, np.zeros(RATE, dtype=np.int16), RATE) == (0.0, 0.0)


def test_empty_signal_is_rejected(speech):
    with pytest.raises(BadAudio) as info:
        estimate_delay_ms(speech, np.zeros(0, dtype=np.int16), RATE)
    assert info.value.reason == "empty"


def test_timeline_places_chunks_by_time():
    chunks = [(10.0, np.full(4, 1)), (10.010, np.full(4, 2)), (9.999, np.full(4, 3))]
    timeline = place_on_timeline(chunks, start=10.0, rate=1000)
    assert timeline.tolist() == [3, 3, 3, 1, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2]


def test_anchoring_keeps_a_bursty_stream_whole():
    # 4 ms frames at 1 kHz; the third arrives late in a burst with the fourth, one frame (media 12 ms) was lost.
    frames = [
        (10.002, 0.000, np.full(4, 1)),
        (10.006, 0.004, np.full(4, 2)),
        (10.020, 0.008, np.full(4, 3)),
        (10.020, 0.016, np.full(4, 4)),
    ]
    anchored = anchor_media_time(frames)
    assert anchored[0][0] == pytest.approx(10.003)
    timeline = place_on_timeline(anchored, start=anchored[0][0], rate=1000)
    assert timeline.tolist() == [1] * 4 + [2] * 4 + [3] * 4 + [0] * 4 + [4] * 4
