"""The store's rule: a slow, older inspect never overwrites a newer one."""

from __future__ import annotations

import asyncio
import contextlib

from crishim.common import errors
from crishim.engine.docker.types import ContainerInfo, ContainerState
from crishim.engine.store import Store


def info(cid: str, status: str) -> ContainerInfo:
    state = ContainerState(status, status == "running", 0, False, 1, "", 1, 0)
    return ContainerInfo(
        cid,
        "k8s_POD_p_ns_uid_0",
        1,
        "pause",
        "sha256:x",
        {"io.kubernetes.docker.type": "podsandbox"},
        state,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    )


class SlowFirstDocker:
    """A stand-in for the adapter's inspect in a unit test: the first answer is the slowest."""

    def __init__(self, answers: list[tuple[float, ContainerInfo | None]]) -> None:
        self.answers = answers

    async def inspect_container(self, cid: str) -> ContainerInfo:
        delay, answer = self.answers.pop(0)
        await asyncio.sleep(delay)
        if answer is None:
            raise errors.NotFound(cid)
        return answer


async def test_an_older_inspect_that_finishes_last_is_ignored() -> None:
    docker = SlowFirstDocker([(0.2, info("c1", "running")), (0.0, info("c1", "exited"))])
    store = Store(docker)  # type: ignore[arg-type]
    seen = []
    store.subscribe(lambda cid, rec: seen.append(rec.info.state.status if rec else None))
    await asyncio.gather(store.refresh("c1"), store.refresh("c1"))
    assert store.get("c1").info.state.status == "exited"
    assert seen == ["exited"]


async def test_a_late_answer_does_not_resurrect_a_removed_object() -> None:
    docker = SlowFirstDocker([(0.2, info("c2", "running")), (0.0, None)])
    store = Store(docker)  # type: ignore[arg-type]
    await asyncio.gather(store.refresh("c2"), store.refresh("c2"))
    assert store.get("c2") is None


async def test_duplicate_events_are_harmless() -> None:
    docker = SlowFirstDocker([(0.0, info("c3", "exited"))] * 3)
    store = Store(docker)  # type: ignore[arg-type]
    for _ in range(3):
        await store.refresh("c3")
    assert store.get("c3").info.state.status == "exited"
    assert len(store.records("podsandbox")) == 1


class CountingDocker:
    """A stand-in for the adapter: a burst of events, and every inspect counted."""

    def __init__(self, burst: list[tuple[str, str, str]]) -> None:
        self.burst = burst
        self.inspected: list[str] = []
        self.sent = asyncio.Event()

    async def list_container_ids(self, label: str) -> list[str]:
        return []

    async def events(self, types, actions):
        yield "", "subscribed", ""
        for event in self.burst:
            yield event
        self.sent.set()
        await asyncio.Event().wait()

    async def inspect_container(self, cid: str) -> ContainerInfo:
        self.inspected.append(cid)
        await asyncio.sleep(0.01)
        return info(cid, "exited")


async def _settle(store: Store, docker: CountingDocker) -> None:
    await docker.sent.wait()
    for _ in range(50):  # the refresher's turn
        await asyncio.sleep(0.01)


async def test_a_burst_of_events_for_one_container_costs_one_inspect() -> None:
    burst = [("container", a, "c4") for a in ("kill", "die", "stop")]
    burst.append(("container", "die", "c5"))
    docker = CountingDocker(burst)
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await _settle(store, docker)
    await store.close()
    assert sorted(docker.inspected) == ["c4", "c5"]  # was one inspect per event: four
    assert store.get("c4").info.state.status == "exited"


async def test_an_event_already_covered_by_a_later_refresh_costs_nothing() -> None:
    docker = CountingDocker([])
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    store._event("c6")  # Docker's event came...
    await store.refresh("c6")  # ...then the writer's own refresh began
    await _settle(store, docker)
    await store.close()
    assert docker.inspected == ["c6"]


async def test_a_removal_of_ours_needs_no_inspect_and_its_late_events_cost_nothing() -> None:
    docker = CountingDocker([])
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    await store.refresh("c7")
    seen = []
    store.subscribe(lambda cid, rec: seen.append((cid, rec)))
    store.removed("c7")  # Docker answered the forced DELETE
    assert store.get("c7") is None
    assert seen == [("c7", None)]
    store._event("c7")  # its destroy event, late
    await _settle(store, docker)
    await store.close()
    assert docker.inspected == ["c7"]  # the writer's first refresh only


async def test_an_answer_begun_before_a_removal_does_not_bring_it_back() -> None:
    docker = SlowFirstDocker([(0.1, info("c8", "running"))])
    store = Store(docker)  # type: ignore[arg-type]
    late = asyncio.ensure_future(store.refresh("c8"))
    await asyncio.sleep(0.01)
    store.removed("c8")
    assert await late is None
    assert store.get("c8") is None


class SteppedDocker(CountingDocker):
    """Events sent one at a time, when the test says."""

    def __init__(self) -> None:
        super().__init__([])
        self.queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()

    async def events(self, types, actions):
        yield "", "subscribed", ""
        while True:
            yield await self.queue.get()


async def _send(store: Store, docker: SteppedDocker, *events: tuple[str, str]) -> None:
    for action, cid in events:
        docker.queue.put_nowait(("container", action, cid))
    for _ in range(30):  # the reader's and the refresher's turns
        await asyncio.sleep(0.01)


async def test_events_a_writers_refresh_covers_cost_no_inspect() -> None:
    docker = SteppedDocker()
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    await store.refresh("c9", covers=("create", "start"))  # RunPodSandbox's refresh
    await _send(store, docker, ("create", "c9"), ("start", "c9"))
    assert docker.inspected == ["c9"]  # was three: the refresh, then one per event
    await _send(store, docker, ("die", "c9"))
    await store.close()
    assert docker.inspected == ["c9", "c9"]  # a change nobody covered is inspected


async def test_a_cover_ends_at_the_next_other_event() -> None:
    docker = SteppedDocker()
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    # The start event came before the writer's refresh began (handled then): the
    # cover must not swallow a later start after the container died meanwhile.
    await store.refresh("c10", covers=("start",))
    await _send(store, docker, ("die", "c10"))
    await _send(store, docker, ("start", "c10"))
    await store.close()
    assert docker.inspected == ["c10", "c10", "c10"]


async def test_a_kill_costs_no_inspect_the_die_after_it_does() -> None:
    docker = SteppedDocker()
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    # A signal the process ignores or handles changes nothing the CRI reports.
    await _send(store, docker, ("kill", "c11"))
    assert docker.inspected == []
    await _send(store, docker, ("kill", "c11"), ("die", "c11"))
    await store.close()
    assert docker.inspected == ["c11"]  # the exit itself is always inspected


async def test_a_stops_refresh_covers_its_die_and_stop_in_either_order() -> None:
    docker = SteppedDocker()
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    # A graceful stop that timed out: two kills, then die and stop (Docker may log
    # stop first: it answers once the container is stopped, die comes with cleanup).
    await store.refresh("c12", covers=("die", "stop"))
    await _send(store, docker, ("kill", "c12"), ("kill", "c12"), ("die", "c12"), ("stop", "c12"))
    await store.refresh("c13", covers=("die", "stop"))
    await _send(store, docker, ("stop", "c13"), ("die", "c13"))
    assert docker.inspected == ["c12", "c13"]  # was four for c12: each kill, the die
    # A later life of the container is not hidden: start ends what is left of a cover.
    await store.refresh("c14", covers=("die", "stop"))  # stopped while already exited
    await _send(store, docker, ("start", "c14"))
    await _send(store, docker, ("die", "c14"))
    await store.close()
    assert docker.inspected == ["c12", "c13", "c14", "c14", "c14"]


async def test_a_writer_covers_its_events_from_before_its_call_and_a_failure_ends_that() -> None:
    docker = SteppedDocker()
    store = Store(docker)  # type: ignore[arg-type]
    await store.start()
    await store.synced.wait()
    # A graceful stop: die and stop come while Docker has not answered yet.
    async with store.writing("c15", ("die", "stop")):
        await _send(store, docker, ("kill", "c15"), ("die", "c15"), ("stop", "c15"))
        assert docker.inspected == []
        await store.refresh("c15", covers=("die", "stop"))
    assert docker.inspected == ["c15"]
    # The stop failed after the container died: what the die said is inspected.
    with contextlib.suppress(RuntimeError):
        async with store.writing("c16", ("die", "stop")):
            await _send(store, docker, ("die", "c16"))
            raise RuntimeError("docker: 500")
    await _send(store, docker)
    assert docker.inspected == ["c15", "c16"]
    # Another event ends the cover: it and a die after it are news, inspected once the
    # writer is done (here without a refresh of its own).
    async with store.writing("c17", ("die", "stop")):
        await _send(store, docker, ("update", "c17"))
        await _send(store, docker, ("die", "c17"))
        assert docker.inspected == ["c15", "c16"]
    await _send(store, docker)
    assert docker.inspected == ["c15", "c16", "c17"]
    # An event just before the block (a pause's create, as RunPodSandbox starts it)
    # waits for the writer's refresh, which tells what it says.
    docker.queue.put_nowait(("container", "create", "c18"))
    await asyncio.sleep(0)  # read, the refresher not yet past its coalescing wait
    async with store.writing("c18", ("create", "start")):
        await _send(store, docker, ("start", "c18"))
        await store.refresh("c18", covers=("create", "start"))
    await _send(store, docker)
    await store.close()
    assert docker.inspected == ["c15", "c16", "c17", "c18"]
