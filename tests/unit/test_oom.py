"""OOMKilled from Docker's `oom` event, whichever comes first: that event or the exit."""

from __future__ import annotations

import asyncio

from crishim.engine.docker.types import ContainerInfo, ContainerState
from crishim.engine.store import Store
from crishim.pods.containers import Containers

LABELS = {"io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "sb1"}


def exited() -> ContainerInfo:
    # Docker's own flag unset: the case a conformance run saw as "Error" for 60 s.
    state = ContainerState("exited", False, 137, False, 0, "", 5, 9)
    return ContainerInfo(
        "c1", "k8s_app_p_ns_uid_0", 1, "img", "sha256:x", LABELS, state,
        "", "", "", "", "", "", "",
    )  # fmt: skip


class EventsThenQuiet:
    """A stand-in for the adapter in a unit test: one container, the given events, then idle."""

    def __init__(self, *actions: str) -> None:
        self.actions = actions

    async def list_container_ids(self, label: str) -> list[str]:
        return []

    async def inspect_container(self, cid: str) -> ContainerInfo:
        return exited()

    async def events(self, types, actions):
        yield "", "subscribed", ""
        for action in self.actions:
            yield "container", action, "c1"
        await asyncio.Event().wait()


async def reason_after(*actions: str) -> str:
    store = Store(EventsThenQuiet(*actions))
    await store.start()
    try:
        for _ in range(100):
            record = store.get("c1")
            if record is not None and (record.oom_seen or "oom" not in actions):
                break
            await asyncio.sleep(0.01)
        view = Containers.view(store.get("c1"))
        return view.reason
    finally:
        await store.close()


async def test_oom_after_the_exit_still_says_oomkilled() -> None:
    assert await reason_after("die", "oom") == "OOMKilled"


async def test_oom_before_the_exit_says_oomkilled() -> None:
    assert await reason_after("oom", "die") == "OOMKilled"


async def test_no_oom_is_an_error_exit() -> None:
    assert await reason_after("die") == "Error"
