"""The bench's load client (bench/load_client.py) sends what a browser would: fullband Opus, or wideband SILK
once the answer's maxplaybackrate (RFC 7587 6.1) says 16 kHz, as the transceiver answers in PCM16 mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import opuslib_next
import pytest

from voicemesh.core.offer import limit_opus_rates

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
# By path: bench/ on sys.path would let bench/dns.py shadow dnspython for the rest of the session.
_spec = importlib.util.spec_from_file_location("load_client", REPO / "bench" / "load_client.py")
load_client = importlib.util.module_from_spec(_spec)
sys.modules["load_client"] = load_client
_spec.loader.exec_module(load_client)

ANSWER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
          "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:96 opus/48000/2\r\n")


def test_the_answers_max_playback_rate_is_read_from_its_opus_fmtp() -> None:
    assert load_client.max_playback_rate(ANSWER) is None
    assert load_client.max_playback_rate(limit_opus_rates(ANSWER, 16000)) == 16000


def test_the_speech_is_hybrid_fullband_or_silk_wideband_alike_in_length() -> None:
    """RFC 6716 3.1: the TOC byte's configuration 15 is SILK+CELT hybrid fullband, 9 SILK wideband (20 ms)."""
    fullband = load_client.encode_speech()
    wideband = load_client.encode_speech(max_bandwidth=opuslib_next.BANDWIDTH_WIDEBAND)

    assert len(fullband) == len(wideband) > 100
    assert {p[0] >> 3 for p in fullband} == {15} and {p[0] >> 3 for p in wideband} == {9}
