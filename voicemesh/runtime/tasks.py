"""Background tasks that are kept until they finish and whose failures are logged.

asyncio holds only a weak reference to a running task, so a task nobody keeps can be garbage
collected mid-run, and the exception of a task nobody awaits is reported, if at all, when it is
collected. ``spawn`` is the one way the parts start a task they do not await in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], name: str, tasks: set[asyncio.Task[Any]] | None = None) -> asyncio.Task[T]:
    """Run ``coro`` as a task named ``name`` on the running loop and return the task.

    The task is kept in ``tasks`` (its owner's set) until it is done, then discarded; pass None only
    when the caller keeps the returned task itself. An exception that ends the task is logged at
    error level with its traceback (cancellation is not a failure). Raises RuntimeError outside a
    running event loop.
    """
    task = asyncio.get_running_loop().create_task(coro, name=name)
    if tasks is not None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task %s failed", task.get_name(), exc_info=exc)
