"""The turn-based built-in agent: says back each thing the caller said once they stop speaking,
and stops at once when the caller interrupts; it exercises turn-taking and barge-in end to end.

Run it with ``voicemesh agent --kind turn``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging

from voicemesh.agent import sdk
from voicemesh.agent.v1 import agent_pb2
from voicemesh.runtime.tasks import spawn

logger = logging.getLogger("voicemesh.agent")


@dataclasses.dataclass
class Turn:
    """One answer: the session, frames heard in the utterance, frames played back, whether the caller interrupted."""

    session_id: str
    heard: int
    played: int = 0
    interrupted: bool = False


class TurnAgent(sdk.Agent):
    """Records the caller's frames from EVENT_SPEECH_STARTED to EVENT_SPEECH_STOPPED (so with the
    500 ms of silence that ended the utterance), then sends EVENT_RESPONSE_STARTED, plays them back
    in real time (one 20 ms frame per 20 ms, in either codec), and sends EVENT_RESPONSE_DONE.
    EVENT_INTERRUPT stops the playback at once (it still ends with EVENT_RESPONSE_DONE); a new
    utterance replaces a playback still running.

    For inspection: ``events`` counts the caller events heard by kind (agent_pb2.Event values),
    ``turns`` holds the last 100 answers (Turn).
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: collections.Counter[int] = collections.Counter()
        self.turns: collections.deque[Turn] = collections.deque(maxlen=100)

    async def on_session(self, session: sdk.Session) -> None:
        """Listen and answer, turn by turn, until the call ends."""
        heard: list[bytes] | None = None
        playing: tuple[Turn, asyncio.Task[None]] | None = None
        try:
            async for item in session:
                if isinstance(item, agent_pb2.AudioFrame):
                    if heard is not None:
                        heard.append(item.payload)
                    continue
                if not isinstance(item, agent_pb2.SessionEvent):  # JSON events: this agent takes none
                    continue
                self.events[item.event] += 1
                if item.event == agent_pb2.EVENT_SPEECH_STARTED:
                    heard = []
                elif item.event == agent_pb2.EVENT_SPEECH_STOPPED and heard:
                    if playing is not None:
                        playing[1].cancel()
                    turn = Turn(session.session_id, len(heard))
                    self.turns.append(turn)
                    playing = turn, spawn(self._play(session, heard, turn), f"turn of {session.session_id}")
                    heard = None
                elif item.event == agent_pb2.EVENT_INTERRUPT and playing is not None and not playing[1].done():
                    turn, playback = playing
                    turn.interrupted = True
                    playback.cancel()
        finally:
            if playing is not None:
                playing[1].cancel()

    @staticmethod
    async def _play(session: sdk.Session, frames: list[bytes], turn: Turn) -> None:
        session.response_started()
        try:
            for payload in frames:
                if session.ended:
                    break
                turn.played += 1  # send_audio sends before it waits for its turn
                await session.send_audio(payload)
        finally:
            session.response_done()
            logger.info("turn played %d of %d frames%s", turn.played, turn.heard,
                        ", interrupted" if turn.interrupted else "", extra={"session_id": turn.session_id})
