"""The turn-based agent end to end: an aiortc caller speaks, pauses, the agent says it back, the caller
barges in mid-playback, and the agent stops. Real aiortc, real UDP through the edge relay, real gRPC."""

import numpy as np
import pytest

from voicemesh.agent.v1 import agent_pb2
from voicemesh.app import audio
from voicemesh.app.client import RATE, call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.core.turn_agent import TurnAgent

pytestmark = pytest.mark.integration

UTTERANCE_S = 3.0
PAUSE_S = 1.0


def two_utterances(path) -> str:
    """A WAV at 48 kHz: 3 s of the bundled speech, 1 s of silence, the same 3 s again."""
    speech = audio.load_wav_mono(bundled_speech(), RATE)[: round(UTTERANCE_S * RATE)]
    samples = np.concatenate([speech, np.zeros(round(PAUSE_S * RATE), dtype=np.int16), speech])
    audio.write_wav(str(path), samples, RATE)
    return str(path)


async def test_the_caller_interrupts_the_turn_agent(tmp_path):
    agent = TurnAgent()
    async with embedded_mesh(agent=agent) as mesh:
        report = await call(mesh.whip_url, two_utterances(tmp_path / "two.wav"), bind=LOOPBACK)
    assert report.session_id, report.error
    assert agent.events[agent_pb2.EVENT_SPEECH_STARTED] == 2
    assert agent.events[agent_pb2.EVENT_SPEECH_STOPPED] >= 1
    assert agent.events[agent_pb2.EVENT_INTERRUPT] == 1
    first = agent.turns[0]
    assert first.session_id == report.session_id
    assert first.heard > 100, "the first utterance was heard whole (3 s = 150 frames)"
    assert first.interrupted and first.played < first.heard
    assert 0 < report.packets_received < first.heard, "the caller heard less than the whole playback"
    assert agent.dropped_frames == agent.dropped_events == 0
