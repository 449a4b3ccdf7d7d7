"""Create marks: each create carries a token of its own; a finished create's token is
written after the call without the call waiting for it; at start, a container that
never ran and whose token was not written is removed, and nothing else is."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from crishim.common import errors
from crishim.engine import labels
from crishim.engine.docker.types import ContainerSpec
from crishim.pods import markjournal
from crishim.pods.creating import Creator
from crishim.pods.markjournal import JOURNAL, read

TOKEN = labels.CREATE_TOKEN_LABEL


def _info(cid: str, token: str | None, ran: bool) -> SimpleNamespace:
    tags = {labels.TYPE_LABEL: labels.TYPE_CONTAINER}
    if token is not None:
        tags[TOKEN] = token
    state = SimpleNamespace(status="exited" if ran else "created", started_at_ns=int(ran))
    return SimpleNamespace(id=cid, name=f"/{cid}", labels=tags, state=state, created_at_ns=0)


class Docker:
    """Creates, inspects and removes containers in `self.infos` (by id or name)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.specs: list = []
        self.removed: list[str] = []

    async def create_container(self, spec) -> str:
        self.specs.append(spec)
        cid = f"id{len(self.specs)}"
        self.store.put(_info(cid, spec.labels[TOKEN], ran=False))
        return cid

    async def inspect_container(self, cid: str):
        info = self.store.infos.get(cid)
        if info is None:
            raise errors.NotFound(cid)
        return info

    async def remove_container(self, cid: str) -> None:
        self.removed.append(cid)
        self.store.infos.pop(cid, None)


class Store:
    def __init__(self) -> None:
        self.infos: dict[str, SimpleNamespace] = {}
        self.synced = asyncio.Event()
        self.synced.set()
        self.listeners: list = []

    def subscribe(self, listener) -> None:
        self.listeners.append(listener)

    def put(self, info: SimpleNamespace) -> None:
        """A container Docker made (or changed): the store's listeners hear of it."""
        self.infos[info.id] = info
        for listener in self.listeners:
            listener(info.id, SimpleNamespace(id=info.id, info=info))

    def get(self, cid: str):
        info = self.infos.get(cid)
        return SimpleNamespace(id=cid, info=info) if info is not None else None

    def records(self, kind: str):
        return tuple(
            SimpleNamespace(id=i.id, info=i)
            for i in self.infos.values()
            if i.labels.get(labels.TYPE_LABEL) == kind
        )

    def removed(self, cid: str) -> None:
        self.infos.pop(cid, None)


def _spec(name: str) -> ContainerSpec:
    return ContainerSpec(name=name, image="busybox")


def _taken() -> errors.CrishimError:
    return errors.AlreadyExists("taken")


def _creator(tmp_path) -> tuple[Creator, Docker, Store]:
    store = Store()
    docker = Docker(store)
    return Creator(docker, store, tmp_path), docker, store  # type: ignore[arg-type]


async def test_a_finished_create_s_token_is_written_after_the_call(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("crishim.pods.creating.UNMARK_DELAY", 0.3)
    creator, docker, _ = _creator(tmp_path)
    await creator.start()
    for name in ("k8s_web_pod_ns_uid_0", "k8s_db_pod_ns_uid_0"):
        async with creator.creating(_spec(name), _taken):
            pass
    tokens = [spec.labels[TOKEN] for spec in docker.specs]
    assert len(set(tokens)) == 2, "a token of its own"
    assert read(creator.marks)[1] == set(), "the calls answered before it was written"
    await asyncio.sleep(0.6)
    assert read(creator.marks)[1] == set(tokens)
    await creator.close()


async def test_a_create_that_ran_or_failed_writes_no_token(tmp_path) -> None:
    creator, docker, store = _creator(tmp_path)
    await creator.start()
    async with creator.creating(_spec("k8s_POD_a_ns_u_0"), _taken) as made:
        store.put(_info(made.id, docker.specs[-1].labels[TOKEN], ran=True))  # started: a pause
    try:
        async with creator.creating(_spec("k8s_app_a_ns_u_0"), _taken):
            raise errors.Unavailable("the call failed after the create")
    except errors.Unavailable:
        pass
    assert docker.removed == ["id2"], "the failed call's container is removed"
    await creator.close()  # writes what is due
    assert read(creator.marks)[1] == set()


async def test_at_start_only_an_unfinished_create_that_never_ran_is_removed(tmp_path) -> None:
    directory = tmp_path / "creating"
    journal = markjournal.FinishJournal(directory)
    journal.start()
    journal.finished(["old-1", "old-2"])  # old-2's container has gone since
    journal.close()
    with (directory / JOURNAL).open("a") as f:
        f.write('+"marked-by-an-older-crishim"\n')
    creator, docker, store = _creator(tmp_path)
    for info in (
        _info("cut", "old-3", ran=False),  # its call never finished: a leftover
        _info("done", "old-1", ran=False),  # finished, not started yet by the kubelet
        _info("ran", "old-4", ran=True),  # unfinished but it ran: not a create's leftover
        _info("foreign", None, ran=False),  # no token: not made by crishim's creates
        _info("marked-by-an-older-crishim", None, ran=False),
    ):
        store.put(info)
    store.synced.clear()  # the store has no view yet: nothing is decided
    await creator.start()
    assert docker.removed == ["marked-by-an-older-crishim"]  # by its mark, at once
    store.synced.set()
    await asyncio.sleep(0.1)
    assert docker.removed == ["marked-by-an-older-crishim", "cut"]
    assert set(store.infos) == {"done", "ran", "foreign"}
    await creator.close()
    assert read(directory) == (set(), {"old-1"}), "rewritten with what is still needed"


async def test_past_its_limit_the_journal_keeps_the_tokens_of_containers_not_yet_started(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr("crishim.pods.creating.LIMIT", 200)
    creator, docker, store = _creator(tmp_path)
    await creator.start()
    for i in range(12):
        async with creator.creating(_spec(f"k8s_c{i}_p_ns_u_0"), _taken) as made:
            pass
        if i % 3:  # the kubelet started it (or removed it)
            store.put(_info(made.id, docker.specs[-1].labels[TOKEN], ran=True))
        creator._flush()
        await creator._writer
    tokens = [spec.labels[TOKEN] for spec in docker.specs]
    assert read(creator.marks)[1] >= {tokens[0], tokens[3], tokens[6], tokens[9]}
    assert not read(creator.marks)[1] & {tokens[1], tokens[2], tokens[4]}, "rewritten"
    assert (creator.marks / JOURNAL).stat().st_size <= 400
    await creator.close()


class HeldDocker(Docker):
    """A Docker whose create is under way until the test says what became of it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.asked = asyncio.Event()
        self.answer: asyncio.Future[str] | None = None

    async def create_container(self, spec) -> str:
        self.specs.append(spec)
        self.answer = asyncio.get_running_loop().create_future()
        self.asked.set()
        return await self.answer

    def made(self, cid: str) -> None:
        """Docker made what the last create asked for (whoever still waits for it)."""
        self.store.put(_info(cid, self.specs[-1].labels[TOKEN], ran=False))


def _held_creator(tmp_path) -> tuple[Creator, HeldDocker, Store]:
    store = Store()
    docker = HeldDocker(store)
    return Creator(docker, store, tmp_path), docker, store  # type: ignore[arg-type]


async def _create(creator: Creator, name: str) -> None:
    async with creator.creating(_spec(name), _taken):
        pass


async def _settled(creator: Creator) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    if creator._undoing:
        await asyncio.wait(creator._undoing, timeout=5)


async def test_what_a_cancelled_create_makes_later_is_removed_when_it_shows_up(tmp_path) -> None:
    creator, docker, store = _held_creator(tmp_path)
    await creator.start()
    call = asyncio.create_task(_create(creator, "k8s_late_pod_ns_uid_0"))
    await docker.asked.wait()
    call.cancel()  # the caller's deadline, while Docker creates
    await asyncio.gather(call, return_exceptions=True)
    assert call.cancelled()
    store.put(_info("other", "a-token-of-another-create", ran=False))
    docker.made("late")  # Docker finishes it for nobody
    await _settled(creator)
    assert docker.removed == ["late"], "only what the cancelled create made"
    assert "late" not in store.infos
    docker.made("late")  # seen again (an event, a resync): already dealt with
    await _settled(creator)
    assert docker.removed == ["late"]
    await creator.close()


async def test_what_a_cancelled_create_made_already_is_removed_at_once(tmp_path) -> None:
    """Docker made it and the store has it, but the call ended before it read the
    answer: nothing more will show up, so it is removed from what the store has."""
    creator, docker, _ = _held_creator(tmp_path)
    await creator.start()
    call = asyncio.create_task(_create(creator, "k8s_late_pod_ns_uid_0"))
    await docker.asked.wait()
    docker.made("late")
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await _settled(creator)
    assert docker.removed == ["late"]
    await creator.close()


@pytest.mark.parametrize(
    ("error", "removed"),
    [
        # the answer was lost: Docker may have made it, so it is watched for
        (errors.Unavailable("docker: the connection broke"), ["late"]),
        # Docker refused it: nothing it asked for will appear, and a container with its
        # token (not possible, but the test of it) is left alone
        (errors.InvalidArgument("docker: invalid reference format"), []),
    ],
    ids=["answer-lost", "refused"],
)
async def test_a_create_that_failed_is_watched_for_only_when_its_outcome_is_unknown(
    tmp_path, error, removed
) -> None:
    creator, docker, _ = _held_creator(tmp_path)
    await creator.start()
    call = asyncio.create_task(_create(creator, "k8s_late_pod_ns_uid_0"))
    await docker.asked.wait()
    assert docker.answer is not None
    docker.answer.set_exception(error)
    (outcome,) = await asyncio.gather(call, return_exceptions=True)
    assert outcome is error
    docker.made("late")
    await _settled(creator)
    assert docker.removed == removed
    await creator.close()


async def test_a_retry_waits_for_the_cut_short_call_s_undo_then_creates_afresh(tmp_path) -> None:
    """The kubelet's retry while the first call is being undone: never ALREADY_EXISTS."""
    creator, docker, _ = _creator(tmp_path)
    await creator.start()
    name = "k8s_POD_web_ns_uid_0"
    removing = asyncio.Event()
    real_remove = docker.remove_container

    async def slow_remove(cid: str) -> None:
        removing.set()
        await asyncio.sleep(0.2)  # a busy daemon
        await real_remove(cid)

    docker.remove_container = slow_remove

    async def first() -> None:
        async with creator.creating(_spec(name), _taken):
            await asyncio.sleep(10)  # cut short here, after the create

    call = asyncio.create_task(first())
    await asyncio.sleep(0.05)
    call.cancel()
    await removing.wait()
    assert await creator.landed(name) == "", "a clean slate once the undo is over"
    assert docker.removed == ["id1"]
    async with creator.creating(_spec(name), _taken) as made:
        pass
    assert made.id == "id2"
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await creator.close()


async def test_a_retry_during_a_call_that_finishes_answers_with_its_object(tmp_path) -> None:
    creator, _, _ = _creator(tmp_path)
    await creator.start()
    name = "k8s_app_web_ns_uid_0"
    go = asyncio.Event()

    async def first() -> str:
        async with creator.creating(_spec(name), _taken) as made:
            await go.wait()
        return made.id

    call = asyncio.create_task(first())
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(creator.landed(name))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    go.set()
    assert await waiting == await call == "id1"
    await creator.close()


class ReservingDocker(HeldDocker):
    """Docker's names as they are: a create holds its name from its start (another
    create of it gets 409) but can be inspected only once it is made (404 before)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.reserved: set[str] = set()
        self.refused = asyncio.Event()

    async def create_container(self, spec) -> str:
        if spec.name in self.reserved or any(
            i.name == f"/{spec.name}" for i in self.store.infos.values()
        ):
            self.refused.set()
            raise errors.FailedPrecondition(f"Conflict. The container name {spec.name!r}")
        self.reserved.add(spec.name)
        if len(self.specs) == 0:  # the first create is slow: the test says when it is made
            self.specs.append(spec)
            self.asked.set()
            self.answer = asyncio.get_running_loop().create_future()
            return await self.answer
        self.specs.append(spec)
        cid = f"id{len(self.specs)}"
        self.store.put(_named(cid, spec.name, spec.labels[TOKEN]))
        return cid

    def made(self, cid: str) -> None:
        self.store.put(_named(cid, self.specs[0].name, self.specs[0].labels[TOKEN]))

    async def inspect_container(self, name: str):
        for info in self.store.infos.values():
            if name in (info.id, info.name.lstrip("/")):
                return info
        raise errors.NotFound(name)

    async def remove_container(self, cid: str) -> None:
        info = self.store.infos.get(cid)
        if info is not None:
            self.reserved.discard(info.name.lstrip("/"))
        await super().remove_container(cid)


def _named(cid: str, name: str, token: str) -> SimpleNamespace:
    info = _info(cid, token, ran=False)
    info.name = f"/{name}"
    return info


@pytest.mark.parametrize("replace_never_ran", [True, False], ids=["pause", "container"])
async def test_a_retry_while_docker_still_makes_the_cut_short_create_waits_then_creates(
    tmp_path, monkeypatch, replace_never_ran
) -> None:
    """The starved node: the call was cut short while Docker created; the retry's create
    gets 409 while nothing of that name can be inspected. Never ALREADY_EXISTS."""
    store = Store()
    docker = ReservingDocker(store)
    creator = Creator(docker, store, tmp_path)  # type: ignore[arg-type]
    await creator.start()
    name = "k8s_POD_web_ns_uid_0"

    async def run() -> str:
        async with creator.creating(
            _spec(name), _taken, replace_never_ran=replace_never_ran
        ) as made:
            pass
        return made.id

    first = asyncio.create_task(run())
    await docker.asked.wait()
    first.cancel()  # the caller's deadline, while Docker creates
    await asyncio.gather(first, return_exceptions=True)
    retry = asyncio.create_task(run())
    await docker.refused.wait()
    await asyncio.sleep(0.2)
    assert not retry.done(), "waits while Docker holds the name"
    docker.made("late")  # Docker finishes the cut-short create, for nobody
    assert await asyncio.wait_for(retry, 10) == "id2"
    assert docker.removed == ["late"]
    assert [i.id for i in store.infos.values()] == ["id2"]
    await creator.close()


async def test_a_name_held_by_a_finished_object_is_taken_without_waiting(tmp_path) -> None:
    creator, docker, store = _creator(tmp_path)
    await creator.start()
    ran = _info("old", "a-finished-token", ran=True)
    store.put(ran)

    async def inspect(name: str):
        return ran

    async def refuse(spec) -> str:
        raise errors.FailedPrecondition("Conflict")

    docker.inspect_container = inspect
    docker.create_container = refuse
    with pytest.raises(errors.AlreadyExists):
        await asyncio.wait_for(_create(creator, "k8s_app_web_ns_uid_0"), 5)
    assert docker.removed == []
    await creator.close()
