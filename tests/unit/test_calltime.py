"""A call's log line says how much of it was Docker's and the CNI plugins' (common/calltime.py)."""

from __future__ import annotations

import asyncio

import structlog

from crishim.common import calltime
from crishim.server import instrument


class Stream:
    deadline = None


def _wrapped(handler):
    return instrument._wrap(
        "/runtime.v1.RuntimeService/RunPodSandbox", handler, instrument.Inflight()
    )


async def _serve(handler) -> dict:
    with structlog.testing.capture_logs() as logs:
        await _wrapped(handler)(Stream())
    (line,) = [entry for entry in logs if entry["event"] == "rpc"]
    return line


async def test_time_added_by_the_call_its_tasks_and_threads_is_on_its_log_line() -> None:
    async def handler(stream) -> None:
        calltime.add("docker", 0.010)

        async def concurrent_step() -> None:  # e.g. a gather of container stops
            calltime.add("docker", 0.005)

        await asyncio.gather(concurrent_step(), concurrent_step())
        await asyncio.to_thread(calltime.add, "cni", 0.030)  # e.g. a plugin run off the loop

    line = await _serve(handler)
    assert line["docker_ms"] == 20.0
    assert line["cni_ms"] == 30.0
    assert line["code"] == "OK"


async def test_each_call_has_its_own_tally_and_none_outside_calls() -> None:
    calltime.add("docker", 1.0)  # no call: nowhere to add, and no error

    async def busy(stream) -> None:
        calltime.add("docker", 0.002)

    async def idle(stream) -> None:
        return None

    with structlog.testing.capture_logs() as logs:
        await asyncio.gather(_wrapped(busy)(Stream()), _wrapped(idle)(Stream()))
    lines = [entry for entry in logs if entry["event"] == "rpc"]
    assert sorted(str(line.get("docker_ms")) for line in lines) == ["2.0", "None"]
    assert all("cni_ms" not in line for line in lines)
