"""Waiting in tests for what other tasks or processes bring about."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


async def eventually(predicate: Callable[[], object], what: str, deadline_s: float = 20.0) -> None:
    """Poll ``predicate()`` every 20 ms until it is true; fail the test (naming ``what``) after a generous
    deadline, which is a bound on a hang, not a timing assertion."""
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
