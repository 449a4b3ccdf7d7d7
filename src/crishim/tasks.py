"""Background tasks: stopping one the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib


async def stop(task: asyncio.Task[object] | None) -> None:
    """Cancel `task` and wait until it has ended; a task already done is just awaited."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
