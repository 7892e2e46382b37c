"""The PCM16 codec path (core/media.py): libopus at the agent's rate, the encoder's settings applied."""

import numpy as np
import pytest

from voicemesh.app import audio
from voicemesh.app.demo import bundled_speech
from voicemesh.core.media import APPLICATIONS, FRAME_MS, OPUS_RATES_HZ, OpusDecoder, OpusEncoder

pytestmark = pytest.mark.unit

RATE_HZ = 16_000
FRAME_BYTES = RATE_HZ * FRAME_MS // 1000 * 2


@pytest.fixture(scope="module")
def speech() -> bytes:
    """Two seconds of the bundled speech, PCM16 mono at RATE_HZ."""
    return audio.load_wav_mono(bundled_speech(), RATE_HZ).astype(np.int16).tobytes()[:2 * RATE_HZ * 2]


def toc_config(packet: bytes) -> int:
    """The configuration number of an Opus packet's TOC byte (RFC 6716 3.1): 0-11 SILK, 12-15 hybrid, 16-31 CELT."""
    return packet[0] >> 3


@pytest.mark.parametrize("rate_hz", OPUS_RATES_HZ)
@pytest.mark.parametrize("application", sorted(APPLICATIONS))
def test_every_20_ms_frame_is_one_packet_and_decodes_to_20_ms(rate_hz: int, application: str) -> None:
    frame = rate_hz * FRAME_MS // 1000 * 2
    encoder, decoder = OpusEncoder(rate_hz, application=application), OpusDecoder(rate_hz)
    packets = encoder.encode(bytes(frame * 5))
    assert len(packets) == 5
    assert [len(decoder.decode(packet)) for packet in packets] == [frame] * 5
    assert decoder.errors == 0


def test_input_is_buffered_into_whole_frames(speech: bytes) -> None:
    encoder = OpusEncoder(RATE_HZ)
    assert encoder.encode(speech[:FRAME_BYTES // 2]) == []
    assert len(encoder.encode(speech[FRAME_BYTES // 2:FRAME_BYTES * 3])) == 3, "the held half frame comes first"
    assert len(encoder.encode(speech[FRAME_BYTES * 3:FRAME_BYTES * 7 + 10])) == 4
    assert len(encoder.encode(speech[FRAME_BYTES * 7 + 10:FRAME_BYTES * 8])) == 1


def test_the_same_frames_whole_or_in_pieces_give_the_same_packets(speech: bytes) -> None:
    whole = OpusEncoder(RATE_HZ).encode(speech)
    pieces = OpusEncoder(RATE_HZ)
    cut = [pieces.encode(speech[at:at + 999]) for at in range(0, len(speech), 999)]
    assert [packet for packets in cut for packet in packets] == whole


def test_the_default_is_silk_and_lowdelay_is_celt_at_the_agents_rate(speech: bytes) -> None:
    """The application reaches libopus: SILK-only packets for voip (the default) at 16 kHz (wideband, nothing
    for the hybrid mode to add), CELT-only for lowdelay."""
    assert {toc_config(p) for p in OpusEncoder(RATE_HZ).encode(speech)} <= set(range(0, 12))
    assert {toc_config(p) for p in OpusEncoder(RATE_HZ, 64_000, 0, "lowdelay").encode(speech)} <= set(range(16, 32))


def test_the_bitrate_reaches_libopus(speech: bytes) -> None:
    def mean_bytes(bitrate: int) -> float:
        packets = OpusEncoder(RATE_HZ, bitrate=bitrate).encode(speech)
        return sum(map(len, packets)) / len(packets)

    assert mean_bytes(64_000) > 1.5 * mean_bytes(32_000)


def test_a_packet_libopus_rejects_is_counted_and_gives_no_audio() -> None:
    decoder = OpusDecoder(RATE_HZ)
    assert decoder.decode(b"\xfb\x00") == b"", "code 3 with a frame count of 0 (RFC 6716 3.2.5)"
    assert decoder.errors == 1
    assert len(decoder.decode(OpusEncoder(RATE_HZ).encode(bytes(FRAME_BYTES))[0])) == FRAME_BYTES, "the next one decodes"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate_hz": 44_100}, "PCM rate"),
    ({"complexity": 11}, "complexity"),
    ({"complexity": -1}, "complexity"),
    ({"bitrate": 5_999}, "bitrate"),
    ({"bitrate": 510_001}, "bitrate"),
    ({"application": "music"}, "application"),
])
def test_a_setting_libopus_does_not_take_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpusEncoder(**{"rate_hz": RATE_HZ, **kwargs})


def test_a_rate_libopus_does_not_decode_at_is_refused() -> None:
    with pytest.raises(ValueError, match="PCM rate"):
        OpusDecoder(22_050)


def test_the_decoder_tells_the_bandwidth_of_the_last_packet(speech: bytes) -> None:
    """OPUS_GET_BANDWIDTH after each packet (the transceiver's pcm_rx_<bandwidth> counter): wideband for 16 kHz
    input, fullband for the CELT packets of 48 kHz input, nothing before the first packet."""
    decoder = OpusDecoder(RATE_HZ)
    assert decoder.bandwidth == ""
    decoder.decode(OpusEncoder(RATE_HZ).encode(speech)[10])
    assert decoder.bandwidth == "wideband"
    decoder.decode(OpusEncoder(48_000, 64_000, 0, "lowdelay").encode(bytes(960 * 2))[0])
    assert decoder.bandwidth == "fullband"
