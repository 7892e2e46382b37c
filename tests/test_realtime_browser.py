"""An OpenAI Realtime WebRTC app in headless Chromium (edge/static/realtime.html: the flow of OpenAI's guide,
with this mesh's base URL) calls ``POST /v1/realtime/calls`` through the geo name from a client city's
namespace in the lab, and exchanges events with the Realtime example agent on ``oai-events``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from voicemesh.app import audio
from voicemesh.app.lab.plan import load_topology, plan
from voicemesh.app.lab.runner import Lab

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or not Path("/dev/net/tun").exists(),
                       reason="the lab needs root (network namespaces), iproute2's ip and /dev/net/tun"),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium not installed"),
]


def speech_then_silence(path: Path, silence_s: float = 3.0) -> str:
    """The bundled clip followed by ``silence_s`` of silence (Chromium loops its fake microphone's file), so
    the caller's speech is seen to start and to stop."""
    rate = 48000
    speech = audio.load_wav_mono(audio.bundled_speech(), rate)
    audio.write_wav(str(path), np.concatenate([speech, np.zeros(int(silence_s * rate), dtype=np.int16)]), rate)
    return str(path)


async def test_an_openai_realtime_app_in_chromium_through_the_geo_name(tmp_path: Path) -> None:
    lab = plan(load_topology(), regions=1, cities=["berlin"])
    async with Lab(lab, agent_kind="realtime") as running:
        result = await running.browser_call(lab.cities[0], 20, speech_then_silence(tmp_path / "caller.wav"),
                                            page="realtime")
    assert result["ok"], result
    assert result["edge"] == lab.nearest_edge(lab.cities[0]), "the geo name picked the city's edge"
    responses = [kind for kind in result["events"] if not kind.startswith("input_audio_buffer.")]
    assert responses[:3] == ["session.created", "session.updated", "response.created"], responses
    assert responses.index("response.output_audio_transcript.delta") < responses.index("response.done")
    assert result["transcript"] == audio.BUNDLED_SPEECH_TEXT
    assert result["speech"][:2] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
    assert result["location"].startswith("/v1/realtime/calls/")
    assert result["inbound"]["packets_received"] > 200 and result["inbound"]["total_audio_energy"] > 0
    print("setup_ms", result["setup_ms"])  # README "OpenAI Realtime compatibility" quotes these (pytest -s)
