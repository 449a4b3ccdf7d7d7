"""A pod's CNI CHECK as a verbose PodSandboxStatus reports it (network/rechecked.py)."""

from __future__ import annotations

import asyncio

import pytest

from crishim.common import rfc3339
from crishim.network.rechecked import Rechecked


class Plugin:
    """A CHECK that answers what `result` says when `release` is set, counting its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.result = "ok"
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, key: str) -> str:
        self.runs += 1
        await self.release.wait()
        return f"{self.result} ({key})"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_first_ask_runs_the_check_and_concurrent_asks_share_it() -> None:
    plugin, clock = Plugin(), Clock()
    checks = Rechecked(plugin, max_age=30, clock=clock)
    plugin.release.clear()
    asks = [asyncio.create_task(checks.get("pod")) for _ in range(3)]
    await _settle()
    plugin.release.set()
    outcomes = await asyncio.gather(*asks)
    assert plugin.runs == 1
    assert {o.result for o in outcomes} == {"ok (pod)"}
    report = outcomes[0].report()
    assert report["result"] == "ok (pod)"
    assert rfc3339.to_ns(report["checkedAt"]) == outcomes[0].checked_at_ns


async def test_a_kept_outcome_is_answered_and_refreshed_behind_once_old() -> None:
    plugin, clock = Plugin(), Clock()
    checks = Rechecked(plugin, max_age=30, clock=clock)
    first = await checks.get("pod")
    clock.now += 29
    assert await checks.get("pod") is first
    assert plugin.runs == 1  # young enough: no new run

    plugin.result = "bridge: no IP on eth0"
    clock.now += 2
    plugin.release.clear()
    assert await checks.get("pod") is first  # old: still answered at once...
    assert await checks.get("pod") is first
    await _settle()
    assert plugin.runs == 2  # ...and one run started behind, not one per ask
    plugin.release.set()
    await _settle()
    now = await checks.get("pod")
    assert now.result == "bridge: no IP on eth0 (pod)"
    assert now.checked_at_ns >= first.checked_at_ns


async def test_a_forgotten_pod_keeps_nothing_even_from_a_run_in_flight() -> None:
    plugin, clock = Plugin(), Clock()
    checks = Rechecked(plugin, max_age=30, clock=clock)
    await checks.get("pod")
    clock.now += 31
    plugin.release.clear()
    await checks.get("pod")  # starts a run behind
    await _settle()
    checks.forget("pod")
    plugin.release.set()
    await _settle()
    plugin.result = "fresh"
    assert (await checks.get("pod")).result == "fresh (pod)"  # ran again, nothing kept
    assert plugin.runs == 3


async def test_a_failing_check_is_not_kept_and_close_ends_runs() -> None:
    class Broken(Plugin):
        async def __call__(self, key: str) -> str:
            self.runs += 1
            await self.release.wait()
            raise RuntimeError("plugin crashed")

    plugin, clock = Broken(), Clock()
    checks = Rechecked(plugin, max_age=30, clock=clock)
    with pytest.raises(RuntimeError, match="plugin crashed"):
        await checks.get("pod")
    plugin.release.clear()
    pending = asyncio.create_task(checks.get("pod"))
    await _settle()
    assert plugin.runs == 2  # nothing was kept from the failed run
    await checks.close()
    await asyncio.gather(pending, return_exceptions=True)
    assert pending.cancelled() or isinstance(pending.exception(), asyncio.CancelledError)
