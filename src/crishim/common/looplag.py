"""How available the event loop is: once a second, how late a timer fires.

Every CRI call, Docker event and stats round shares one event loop. A step that
holds it (a long encoding, a full garbage collection, the GIL held by a worker
thread) delays every call that arrives meanwhile, which the per-RPC durations do
not show: they start when the handler runs. How late a timer due at a known time
fires is that delay, as a call arriving then would meet it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL = 1.0  # seconds between samples: a wake-up a second costs nothing measurable


async def watch(observe: Callable[[float], None], interval: float = INTERVAL) -> None:
    """Observe each timer's lateness in seconds, forever."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        # asyncio runs a timer up to its clock's resolution early: never below zero.
        observe(max(0.0, loop.time() - due))
