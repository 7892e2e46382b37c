"""spawn: background tasks are kept until done, and a failure is logged with the task's name."""

from __future__ import annotations

import asyncio
import logging

import pytest

from voicemesh.runtime.tasks import spawn

pytestmark = pytest.mark.unit


async def test_the_owner_keeps_the_task_until_it_is_done() -> None:
    tasks: set[asyncio.Task[object]] = set()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    task = spawn(work(), "work", tasks)
    assert tasks == {task} and task.get_name() == "work"
    release.set()
    assert await task == "done"
    await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert tasks == set()


async def test_a_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise ValueError("boom")

    tasks: set[asyncio.Task[object]] = set()
    task = spawn(fail(), "end session abc", tasks)
    with caplog.at_level(logging.ERROR, logger="voicemesh.runtime.tasks"):
        await asyncio.wait([task])
        await asyncio.sleep(0)
    [record] = caplog.records
    assert record.getMessage() == "task end session abc failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert tasks == set()


async def test_cancellation_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    task = spawn(asyncio.Event().wait(), "waits forever")
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="voicemesh.runtime.tasks"):
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert task.cancelled() and caplog.records == []
