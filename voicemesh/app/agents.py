"""The built-in agents by kind, for ``voicemesh agent --kind`` and ``voicemesh transceiver --agent-kind``."""

from __future__ import annotations

from voicemesh.agent.v1.agent_pb2_grpc import AgentServicer

KINDS = ("echo", "turn", "realtime")
"""echo: plays every frame back; turn: says back each utterance when the caller stops, until interrupted;
realtime: answers OpenAI Realtime events, speaking the bundled clip for each response.create."""

SPEECH_RATE_HZ = 16000
"""The rate the realtime agent keeps its clip at (the bundled clip's own)."""


def builtin_agent(kind: str) -> AgentServicer:
    """A new agent of ``kind`` (one of KINDS). Raises ValueError for another kind."""
    if kind == "echo":
        from voicemesh.core.echo_agent import EchoAgent

        return EchoAgent()
    if kind == "turn":
        from voicemesh.core.turn_agent import TurnAgent

        return TurnAgent()
    if kind == "realtime":
        from voicemesh.app import audio
        from voicemesh.core.realtime_agent import RealtimeAgent

        clip = audio.load_wav_mono(audio.bundled_speech(), SPEECH_RATE_HZ).astype("<i2").tobytes()
        return RealtimeAgent(clip, SPEECH_RATE_HZ, audio.BUNDLED_SPEECH_TEXT)
    raise ValueError(f"agent kind must be one of {', '.join(KINDS)}, got {kind!r}")
