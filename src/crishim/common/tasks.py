"""Background tasks: stopping one the same way everywhere; long loops that share the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")


async def stop(task: asyncio.Task[object] | None) -> None:
    """Cancel `task` and wait until it has ended; a task already done is just awaited."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def in_steps(items: Iterable[T], every: int) -> AsyncIterator[T]:
    """`items`, with a turn for the loop's other tasks after every `every` of them: a
    call arriving during a long stretch of work on the loop waits for one step of it."""
    for n, item in enumerate(items, 1):
        yield item
        if n % every == 0:
            await asyncio.sleep(0)
