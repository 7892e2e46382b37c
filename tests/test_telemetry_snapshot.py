"""telemetry.Snapshot: metric callbacks read what the event loop last took, never the live tables."""

from __future__ import annotations

import asyncio

import pytest

from voicemesh.runtime import telemetry

pytestmark = pytest.mark.unit


async def test_callbacks_read_the_last_value_the_loop_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_providers", [object()])  # as if setup() had installed the SDK
    sessions = {"a": "connected"}
    snapshot = telemetry.Snapshot(lambda: tuple(sorted(sessions.items())), interval_s=0.01)
    snapshot.start()
    sessions["b"] = "connecting"
    assert snapshot.value == (("a", "connected"),)
    await asyncio.sleep(0.02)  # the refresh due first (at 0.01 s) runs before this sleep ends
    assert snapshot.value == (("a", "connected"), ("b", "connecting"))
    snapshot.close()


async def test_no_refresh_without_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_providers", [])
    taken = 0

    def take() -> int:
        nonlocal taken
        taken += 1
        return taken

    snapshot = telemetry.Snapshot(take, interval_s=0.01)
    snapshot.start()
    await asyncio.sleep(0.02)
    assert snapshot.value == taken == 1  # taken once, when made
    snapshot.close()
