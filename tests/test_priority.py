"""SetupHold (core/priority.py): a session waiting for its first audio holds new set-up work back, which then
goes on in order, datagrams a few turns of the event loop apart; a hold lapses; nothing is held when no session
holds."""

from __future__ import annotations

import asyncio

import pytest

from voicemesh.core.priority import SetupHold

pytestmark = pytest.mark.unit


async def turns(count: int) -> None:
    """Let the event loop run ``count`` turns."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_nothing_waits_while_no_session_holds() -> None:
    hold = SetupHold()
    ran: list[int] = []
    hold.run(ran.append, 1)
    await hold.turn()
    assert ran == [1] and not hold.holding and hold.counters == {}


async def test_held_datagrams_and_offers_go_on_in_order_once_the_first_audio_came() -> None:
    hold = SetupHold(hold_max_s=60)
    ran: list[str] = []
    hold.hold("a")
    hold.hold("b")
    hold.run(ran.append, "dtls 1")
    hold.run(ran.append, "dtls 2")
    offer = asyncio.ensure_future(hold.turn())
    await asyncio.sleep(0)
    hold.release("a")
    await asyncio.sleep(0)
    assert ran == [] and not offer.done(), "a second session still waits for its first audio"
    hold.release("b")
    assert ran == [], "held datagrams go on from the next turn of the event loop"
    await turns(8)
    assert ran == ["dtls 1", "dtls 2"], "held datagrams go on in arrival order"
    await asyncio.wait_for(offer, 1)
    hold.run(ran.append, "dtls 3")
    assert ran[-1] == "dtls 3"
    assert hold.counters == {"holds": 2, "datagrams_held": 2, "offers_held": 1}


async def test_a_datagram_never_overtakes_one_held_before_it() -> None:
    hold = SetupHold(hold_max_s=60)
    ran: list[str] = []
    hold.hold("a")
    hold.run(ran.append, "first")

    def another_session_connects(item: str) -> None:
        ran.append(item)
        hold.hold("b")  # another session connects while the held work goes on

    hold.run(another_session_connects, "second")
    hold.run(ran.append, "third")
    hold.release("a")
    await turns(12)
    assert ran == ["first", "second"], "a new hold stops the rest"
    hold.run(ran.append, "fourth")
    hold.release("b")
    await turns(12)
    assert ran == ["first", "second", "third", "fourth"]


async def test_datagrams_read_together_go_on_one_per_turn_so_a_connect_holds_the_rest() -> None:
    hold = SetupHold(hold_max_s=60)
    ran: list[str] = []
    loop = asyncio.get_running_loop()

    def last_flight(session: str) -> None:
        ran.append(session)
        # aiortc's handshake reads it two turns later (a read task under asyncio.wait_for) and connects
        loop.call_soon(loop.call_soon, hold.hold, session)

    for session in ("a", "b", "c"):  # three handshakes' last flights in one read of the socket
        hold.run(last_flight, session)
    assert ran == ["a"]
    await turns(12)
    assert ran == ["a"], "the session that connected holds the other handshakes back"
    hold.release("a")
    await turns(12)
    assert ran == ["a", "b"]


async def test_a_hold_lapses_when_the_first_audio_does_not_come() -> None:
    hold = SetupHold(hold_max_s=0.01)
    ran: list[int] = []
    hold.hold("silent agent")
    hold.run(ran.append, 1)
    await asyncio.wait_for(hold.turn(), 5)
    await turns(4)
    assert ran == [1] and hold.counters["hold_lapsed"] == 1
    hold.release("silent agent")  # its first audio, late: nothing left to release
    assert not hold.holding


async def test_a_zero_hold_never_holds() -> None:
    hold = SetupHold(hold_max_s=0)
    hold.hold("connected")
    ran: list[int] = []
    hold.run(ran.append, 1)
    await hold.turn()
    assert ran == [1] and not hold.holding and hold.counters == {}
