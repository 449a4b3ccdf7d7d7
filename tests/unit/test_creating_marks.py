"""Create marks: gone after the call without the call waiting for it, and never taken
from a newer create of the same name."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from crishim import errors
from crishim.creating import Creator
from crishim.markjournal import read_marks


class Docker:
    def __init__(self) -> None:
        self.created: list[str] = []

    async def create_container(self, spec) -> str:
        self.created.append(spec.name)
        return f"id{len(self.created)}"


class Store:
    def removed(self, container_id: str) -> None:
        pass


def _taken() -> errors.CrishimError:
    return errors.AlreadyExists("taken")


def _hold_unmarks(creator: Creator, gate: threading.Event) -> None:
    """Unmarks (of at least one name) wait in their worker thread until `gate` is set."""
    real = creator._unmark_all

    def held(names) -> None:
        names = list(names)
        if names:
            gate.wait(10)
        real(names)

    creator._unmark_all = held  # type: ignore[method-assign]


def _marked(creator: Creator) -> set[str]:
    return read_marks(creator.marks)


async def test_the_mark_goes_after_the_block_without_the_block_waiting(tmp_path) -> None:
    creator = Creator(Docker(), Store(), tmp_path)  # type: ignore[arg-type]
    await creator.start()
    gate = threading.Event()
    _hold_unmarks(creator, gate)
    spec = SimpleNamespace(name="k8s_web_pod_ns_uid_0")
    async with creator.creating(spec, _taken) as made:  # type: ignore[arg-type]
        assert spec.name in _marked(creator)
    assert made.id == "id1"
    assert spec.name in _marked(creator)  # the unmark is still held: not awaited
    gate.set()
    await creator.close()
    assert _marked(creator) == set()


async def test_a_new_create_of_the_same_name_waits_for_the_earlier_unmark(tmp_path) -> None:
    docker = Docker()
    creator = Creator(docker, Store(), tmp_path)  # type: ignore[arg-type]
    await creator.start()
    gate = threading.Event()
    _hold_unmarks(creator, gate)
    spec = SimpleNamespace(name="k8s_POD_pod_ns_uid_0")
    async with creator.creating(spec, _taken):  # type: ignore[arg-type]
        pass
    creator._flush()  # no other create came: the unmark runs (and is held) on its own
    inside = asyncio.Event()
    leave = asyncio.Event()
    marked_inside: list[bool] = []

    async def again() -> None:
        async with creator.creating(spec, _taken):  # type: ignore[arg-type]
            marked_inside.append(spec.name in _marked(creator))
            inside.set()
            await leave.wait()

    second = asyncio.create_task(again())
    await asyncio.sleep(0.2)
    assert docker.created == [spec.name]  # still waiting for the first unmark
    gate.set()
    await inside.wait()
    assert marked_inside == [True]
    assert spec.name in _marked(creator)  # its own mark, not taken by the old unmark
    leave.set()
    await second
    await creator.close()
    assert _marked(creator) == set()


async def test_finished_marks_go_in_the_next_create_s_trip_or_after_a_delay(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr("crishim.creating.UNMARK_DELAY", 0.5)
    creator = Creator(Docker(), Store(), tmp_path)  # type: ignore[arg-type]
    await creator.start()
    trips = 0  # unmark trips of their own
    real = creator._flush

    def counted() -> None:
        nonlocal trips
        trips += bool(creator._finished)
        real()

    creator._flush = counted  # type: ignore[method-assign]
    pod, app = SimpleNamespace(name="k8s_POD_p_ns_u_0"), SimpleNamespace(name="k8s_app_p_ns_u_0")
    async with creator.creating(pod, _taken):  # type: ignore[arg-type]
        pass
    assert pod.name in _marked(creator)  # the call answered; the mark waits
    async with creator.creating(app, _taken):  # type: ignore[arg-type]
        assert pod.name not in _marked(creator), "gone in this create's own trip"
        assert app.name in _marked(creator)
    assert trips == 0, "no trip of its own"
    await asyncio.sleep(1.0)
    assert _marked(creator) == set(), "no create came: it went after the delay"
    assert trips == 1
    await creator.close()
