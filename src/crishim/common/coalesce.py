"""One run of an operation per key, shared by every caller that asks meanwhile.

The kubelet and its garbage collector (or a retry) race to stop or remove the
same pod or container. Docker answers the second overlapping removal with a
409 ("removal already in progress"), which would reach the caller as a failure
while the object is in fact going away. Callers with the same key share one
run instead: all of them get its outcome. A caller that is cancelled (its
deadline passed) leaves the run going for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class Coalescer:
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task] = {}

    async def run(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))
        return await asyncio.shield(task)
