"""The loop-lag watch: a step that holds the event loop is seen as a late timer."""

from __future__ import annotations

import asyncio
import time

from crishim.common import looplag, tasks


async def test_a_step_that_holds_the_loop_is_seen_as_lateness_of_at_least_its_length() -> None:
    seen: list[float] = []
    came = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        came.set()

    watch = asyncio.create_task(looplag.watch(observe, interval=0.01))
    try:
        await came.wait()  # a first sample; the next timer is now due within 10 ms
        came.clear()
        time.sleep(0.05)  # noqa: ASYNC251  a step holding the loop, on purpose
        await came.wait()
    finally:
        await tasks.stop(watch)
    assert all(lag >= 0 for lag in seen)
    assert seen[-1] >= 0.04  # due before the step ended, run after it: >= 50 - 10 ms late
