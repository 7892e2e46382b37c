"""core/vad.py: voiced frames from RFC 6464 levels and webrtcvad, speech start/stop hysteresis, the barge-in rule."""

import numpy as np
import pytest

from voicemesh.app import audio
from voicemesh.app.demo import bundled_speech
from voicemesh.core.vad import BargeIn, PcmVoicing, Speech, SpeechDetector, level_voiced

pytestmark = pytest.mark.unit

FRAME = 960  # 20 ms at the 48 kHz RTP clock


def feed(detector, pattern, start=0):
    """Feed '1' (voiced) and '0' frames at consecutive RTP timestamps; return (frame index, Speech) per change."""
    changes = []
    for i, flag in enumerate(pattern):
        speech = detector.update(flag == "1", (start + i * FRAME) & 0xFFFFFFFF)
        if speech is not None:
            changes.append((i, speech))
    return changes


def test_level_voiced_uses_a_level_of_minus_45_dbov_or_louder_or_the_flag_above_minus_70():
    assert level_voiced((False, 20))
    assert level_voiced((False, 45))
    assert not level_voiced((False, 46))
    assert not level_voiced((False, 127))
    assert level_voiced((True, 60)), "the sender's own voice activity flag counts for soft speech"
    assert level_voiced((True, 70))
    assert not level_voiced((True, 71))
    assert not level_voiced((True, 127)), "Chromium flags a file-fed microphone's digital silence as voiced"


def test_speech_starts_on_3_voiced_of_5_and_is_dated_to_the_first_of_them():
    detector = SpeechDetector()
    assert feed(detector, "0000101") == []
    assert detector.update(True, 7 * FRAME) == Speech(True, 4 * FRAME)
    assert detector.speaking


def test_one_or_two_loud_frames_do_not_start_speech():
    assert feed(SpeechDetector(), "0110000100011000") == []


def test_speech_stops_500_ms_after_the_last_voiced_frame_and_bridges_shorter_pauses():
    detector = SpeechDetector()
    pause = "0" * 17  # 340 ms, the bundled clip's longest pause
    changes = feed(detector, "111" + pause + "11" + "0" * 30)
    assert changes == [(2, Speech(True, 0)), (20 + 2 + 25, Speech(False, 22 * FRAME))]
    assert not detector.speaking


def test_stop_counts_media_time_so_lost_packets_or_dtx_do_not_delay_it():
    detector = SpeechDetector()
    feed(detector, "111")
    assert detector.update(False, 3 * FRAME) is None
    assert detector.update(False, 3 * FRAME + 24000) == Speech(False, 3 * FRAME)


def test_a_late_packet_older_than_the_last_voiced_frame_does_not_stop_speech():
    detector = SpeechDetector()
    feed(detector, "111", start=10 * FRAME)
    assert detector.update(False, 0) is None
    assert detector.speaking


def test_rtp_timestamps_wrap_at_2_to_the_32():
    detector = SpeechDetector()
    start = 2**32 - 2 * FRAME
    changes = feed(detector, "111" + "0" * 26, start=start)
    assert changes == [(2, Speech(True, start)), (28, Speech(False, FRAME))]


def test_speech_restarts_only_on_fresh_voiced_frames():
    detector = SpeechDetector()
    changes = feed(detector, "111" + "0" * 26 + "1" + "0" + "11")
    assert [(i, s.started) for i, s in changes] == [(2, True), (28, False), (32, True)]


def test_detector_rejects_a_start_threshold_above_its_window():
    with pytest.raises(ValueError):
        SpeechDetector(start_frames=6, window_frames=5)


def test_webrtcvad_on_pcm_finds_the_bundled_speech_and_not_silence():
    voicing = PcmVoicing(16000)
    clip = audio.load_wav_mono(bundled_speech(), 16000)
    frames = [clip[i:i + 320].tobytes() for i in range(0, len(clip) - 320, 320)]
    voiced = [voicing(frame) for frame in frames]
    assert sum(voiced) > len(frames) // 2
    assert not voicing(np.zeros(320, dtype=np.int16).tobytes())
    assert voicing(frames[10][:304 * 2]) == voicing(frames[10][:160 * 2]), "a short first frame: its first 10 ms"
    assert not voicing(b"\x00\x01" * 10)


def test_webrtcvad_rates():
    with pytest.raises(ValueError):
        PcmVoicing(24000)


def test_speech_during_a_response_interrupts_and_mutes_until_the_next_response_event():
    barge_in = BargeIn()
    assert not barge_in.speech_started(), "no response, no interrupt"
    barge_in.response_started()
    assert barge_in.speech_started()
    assert barge_in.muted and not barge_in.responding
    assert not barge_in.speech_started(), "one interrupt per response"
    barge_in.response_done()
    assert not barge_in.muted
    barge_in.response_started()
    barge_in.response_done()
    assert not barge_in.speech_started(), "a finished response is not interrupted"
