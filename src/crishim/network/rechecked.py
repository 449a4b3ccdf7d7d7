"""The last outcome of a slow check per pod, refreshed in the background.

A CNI CHECK runs every plugin of the pod's network as a process: ~10 ms, far more than
the rest of a verbose PodSandboxStatus (`crictl inspectp`). So a pod's first ask runs
it (an operator's one inspectp sees a live CHECK); later asks get the kept outcome with
the time it was made, and one older than `max_age` starts a new run in the background
for the next ask. Concurrent first asks share one run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from crishim.common import rfc3339


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str
    checked_at_ns: int  # wall clock, for the operator
    taken: float  # monotonic, for the age

    def report(self) -> dict[str, str]:
        return {"result": self.result, "checkedAt": rfc3339.from_ns(self.checked_at_ns)}


class Rechecked:
    def __init__(
        self,
        run: Callable[[str], Awaitable[str]],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self.max_age = max_age
        self._clock = clock
        self._kept: dict[str, Outcome] = {}
        self._running: dict[str, asyncio.Task[Outcome]] = {}

    async def get(self, key: str) -> Outcome:
        kept = self._kept.get(key)
        if kept is None:
            return await asyncio.shield(self._start(key))
        if self._clock() - kept.taken > self.max_age:
            self._start(key)
        return kept

    def _start(self, key: str) -> asyncio.Task[Outcome]:
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._check(key), name=f"recheck-{key[:12]}")
            self._running[key] = task
        return task

    async def _check(self, key: str) -> Outcome:
        try:
            result = await self._run(key)
            outcome = Outcome(result, time.time_ns(), self._clock())
            if self._running.get(key) is asyncio.current_task():  # not forgotten meanwhile
                self._kept[key] = outcome
            return outcome
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]

    def forget(self, key: str) -> None:
        """The pod's network is gone: drop its outcome and any run of it."""
        self._kept.pop(key, None)
        task = self._running.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        running = list(self._running.values())
        self._running.clear()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
