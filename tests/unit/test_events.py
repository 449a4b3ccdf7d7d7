"""Container events from the store's changes: every step in order, and slow subscribers dropped."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from crishim.common import errors
from crishim.engine.docker.types import ContainerInfo, ContainerState
from crishim.engine.store import Store
from crishim.pods.events import CREATED, DELETED, STARTED, STOPPED, EventHub

LABELS = {"io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "sb1"}


def info(status: str, started: int = 0, cid: str = "c1") -> ContainerInfo:
    state = ContainerState(status, status == "running", 0, False, 1, "", started, 0)
    return ContainerInfo(
        cid, "k8s_app_p_ns_uid_0", 1, "img", "sha256:x", LABELS, state,
        "", "", "", "", "", "", "",
    )  # fmt: skip


class Answers:
    """A stand-in for the adapter's inspect in a unit test: answers in the order given."""

    def __init__(self, *answers: ContainerInfo | None) -> None:
        self.answers = list(answers)

    async def inspect_container(self, cid: str) -> ContainerInfo:
        answer = self.answers.pop(0)
        if answer is None:
            raise errors.NotFound(cid)
        return answer


async def drain(sub, n: int) -> list:
    """The next n events; the iteration is closed after (which unsubscribes)."""
    events = sub.__aiter__()
    try:
        return [await anext(events) for _ in range(n)]
    finally:
        await events.aclose()


async def test_each_step_is_an_event_in_order() -> None:
    docker = Answers(info("created"), info("running", 5), info("exited", 5), None)
    store = Store(docker)
    hub = EventHub(store)
    sub = hub.subscribe()
    for _ in range(4):
        await store.refresh("c1")
    events = await drain(sub, 4)
    assert [e.kind for e in events] == [CREATED, STARTED, STOPPED, DELETED]
    assert {e.sandbox_id for e in events} == {"sb1"}
    assert hub.subscribers == 0  # leaving the iteration unsubscribes


async def test_a_container_first_seen_exited_yields_all_its_steps() -> None:
    store = Store(Answers(info("exited", 5)))
    hub = EventHub(store)
    sub = hub.subscribe()
    await store.refresh("c1")
    assert [e.kind for e in await drain(sub, 3)] == [CREATED, STARTED, STOPPED]


async def test_an_unchanged_state_is_no_event() -> None:
    store = Store(Answers(info("running", 5), replace(info("running", 5), hostname="x")))
    hub = EventHub(store)
    sub = hub.subscribe()
    await store.refresh("c1")
    await store.refresh("c1")
    assert sub.queue.qsize() == 2  # CREATED, STARTED once


async def test_a_slow_subscriber_is_dropped_and_others_are_not() -> None:
    ids = [f"c{i}" for i in range(6)]
    store = Store(Answers(*(info("created", cid=cid) for cid in ids)))
    hub = EventHub(store, buffer=4)
    slow, fast = hub.subscribe(), hub.subscribe()
    got: list = []

    async def follow() -> None:
        async for event in fast:
            got.append(event.container_id)

    reader = asyncio.create_task(follow())
    for cid in ids:
        await store.refresh(cid)
        await asyncio.sleep(0)  # the fast one keeps up; the slow one never reads
    with pytest.raises(errors.ResourceExhausted, match="relist"):
        await drain(slow, len(ids))
    assert got == ids
    assert hub.subscribers == 1  # the slow one is gone, the fast one stays
    reader.cancel()
