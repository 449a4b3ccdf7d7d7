"""The event stream's reconnect delay grows while Docker is away and starts over once it is back."""

from __future__ import annotations

import asyncio

import structlog

from crishim.common import errors
from crishim.engine.store import cache


class FlakyEvents:
    """A stand-in for the adapter in a unit test: fails twice, works once, fails, works."""

    def __init__(self) -> None:
        self.attempt = 0

    async def list_container_ids(self, label: str) -> list[str]:
        return []

    async def events(self, types, actions):
        self.attempt += 1
        if self.attempt in (1, 2, 4):
            raise errors.Unavailable("docker is away")
        yield "", "subscribed", ""
        if self.attempt == 3:
            return  # the stream ends: Docker restarted
        await asyncio.Event().wait()


async def test_the_delay_starts_over_after_a_good_subscription(monkeypatch) -> None:
    monkeypatch.setattr(cache, "RECONNECT_DELAYS", (0.01, 0.02, 0.03))
    docker = FlakyEvents()
    store = cache.Store(docker)
    with structlog.testing.capture_logs() as logs:
        await store.start()
        for _ in range(500):
            if docker.attempt >= 5 and store.synced.is_set():
                break
            await asyncio.sleep(0.01)
        await store.close()
    delays = [e["retry_s"] for e in logs if e["event"] == "store_events_lost"]
    # away, away (growing) | subscribed, ended: back to the first delay | away: second
    assert delays == [0.01, 0.02, 0.01, 0.02]
