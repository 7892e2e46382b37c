"""First audio before new handshakes: while a session that just connected waits for its first audio from the
agent, the transceiver holds back the set-up work of sessions still connecting.

A transceiver's event loop runs every session's set-up (the offer, aiortc's peer connection and answer, the
DTLS handshake: a few ms of CPU each) between the steps that carry a call's first audio (the caller's first
packet to the agent link, the agent's answer back to the caller). Under a burst of calls, or a CPU quota
that the burst exhausts, each of those steps waits behind other calls' handshakes, and the first audio of a
call that has just connected comes tens of ms late. ``SetupHold`` gives that audio the loop first: from a
session's DTLS "connected" until the agent's first frame for it (or HOLD_MAX_S, whichever is first), new
offers wait before they build a peer connection and the DTLS datagrams of sessions not yet connected wait in
arrival order; both go on, in order, as soon as no session holds. Those datagrams are also paced a few turns
of the event loop apart (PACE_TURNS): one read of the socket often brings the last flights of several
handshakes, and run back to back their completions (~1 ms of CPU each) would all come before the first
connected session's audio, so a hold could only start after them. STUN (ICE checks and consent) is never
held. A burst of calls then alternates: one call's first audio, then the next handshakes.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Hashable
from typing import Any

PACE_TURNS = 3
"""Turns of the event loop between two datagrams that ``run`` paces: aiortc reads a handshake datagram two
turns after it is delivered (its DTLS transport's read runs in a task of its own under asyncio.wait_for), so a
session the first datagram connects holds before the next datagram goes on. core/hooks.py ``check`` fails if
aiortc reads it otherwise."""

HOLD_MAX_S = 0.05
"""The longest one session holds back the others' set-up (seconds): the agent's first frame usually comes
within a few ms; an agent that answers later, or a caller that sends nothing, must not stall other calls."""


class SetupHold:
    """Holds set-up work while sessions wait for their first audio (module docstring).

    ``hold(key)`` when a session connects, ``release(key)`` at its first frame from the agent (or its end);
    a hold not released within ``hold_max_s`` seconds lapses (``counters["hold_lapsed"]``); with
    ``hold_max_s`` 0 nothing is ever held. ``await turn()``
    before a new session's set-up; ``run(fn, *args)`` for a datagram of a session still connecting: it runs
    now, or on a later turn of the event loop in arrival order (PACE_TURNS apart). ``counters``: ``holds``,
    ``hold_lapsed``, ``offers_held``, ``datagrams_held``. Use from the event loop's thread.
    """

    def __init__(self, hold_max_s: float = HOLD_MAX_S) -> None:
        self.hold_max_s = hold_max_s
        self.counters: Counter[str] = Counter()
        self._holds: dict[Hashable, asyncio.TimerHandle] = {}
        self._deferred: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._pump_handle: asyncio.Handle | None = None
        self._open = asyncio.Event()
        self._open.set()

    @property
    def holding(self) -> bool:
        """True while some session holds the others' set-up back."""
        return bool(self._holds)

    def hold(self, key: Hashable) -> None:
        """Session ``key`` connected and waits for its first audio: hold set-up work back (no-op if it holds)."""
        if key in self._holds or self.hold_max_s <= 0:
            return
        self._holds[key] = asyncio.get_running_loop().call_later(self.hold_max_s, self._lapse, key)
        self.counters["holds"] += 1
        self._open.clear()

    def release(self, key: Hashable) -> None:
        """Session ``key`` has its first audio (or ended): once no session holds, the held work goes on."""
        handle = self._holds.pop(key, None)
        if handle is None:
            return
        handle.cancel()
        if not self._holds:
            self._open.set()
            if self._deferred and self._pump_handle is None:
                self._pace(1)

    def _lapse(self, key: Hashable) -> None:
        self.counters["hold_lapsed"] += 1
        self.release(key)

    async def turn(self) -> None:
        """Return once no session holds (at once if none does)."""
        if self._holds:
            self.counters["offers_held"] += 1
            while self._holds:
                await self._open.wait()

    def run(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` now if no session holds, nothing is waiting and none ran in the last PACE_TURNS turns of
        the event loop, else on a later turn, after the work that waits before it (``hold_max_s`` 0: always now)."""
        if self.hold_max_s <= 0:
            fn(*args)
            return
        if self._holds or self._deferred or self._pump_handle is not None:
            if self._holds:
                self.counters["datagrams_held"] += 1
            self._deferred.append((fn, args))
            return
        fn(*args)
        self._pace()

    def _pace(self, turns: int = PACE_TURNS) -> None:
        """The next waiting ``run`` goes on ``turns`` turns of the event loop from now, if no session holds then."""
        self._pump_handle = asyncio.get_running_loop().call_soon(self._pump, turns - 1)

    def _pump(self, turns: int) -> None:
        if turns > 0:
            self._pace(turns)
            return
        self._pump_handle = None
        if self._holds or not self._deferred:
            return
        fn, args = self._deferred.popleft()
        fn(*args)
        self._pace()
