"""Docker creates that leave nothing behind, whatever happens to the call.

RunPodSandbox and CreateContainer start with a Docker create. Three ways that
used to leave a "created" object no call would ever finish, after which a
retry with the same metadata got ALREADY_EXISTS forever:

  - the caller cancelled (its deadline passed) while Docker was creating: the
    create is now shielded, and if it completes for nobody the object is removed;
  - crishim was killed between the create and the end of the call: every create
    is marked in the state dir (a line in `creating/.journal`, crishim.markjournal)
    before it starts and unmarked after the call has finished either way; a mark
    found at start names a leftover, which is removed if it never ran. Unmarks wait for the next
    create's worker-thread trip (its mark) or UNMARK_DELAY, whichever comes
    first, and go together: a trip costs a call ~1 ms here, and a kubelet's
    creates come in pairs (RunPodSandbox, then CreateContainer). A crash in
    that time removes at start a container that a finished CreateContainer made
    and nobody started yet: the kubelet, finding it gone, creates it again (a
    pause has run, and is never removed so);
  - a RunPodSandbox retry meets such a leftover first: a pause that never ran,
    and that no call of this process is creating, is removed and the create
    retried once (RunPodSandbox always starts its pause, so one that never ran
    was left by a call that never finished). Not for containers: CreateContainer
    does not start, so a created container may be exactly what a finished call
    made (ALREADY_EXISTS, as for a name taken by an object that ran).

Besides, a sweep every `sweep_seconds` (the leftover_sweep_seconds setting)
removes pause containers that never ran and are older than twice that
(RunPodSandbox always starts its pause, so one that never ran is a leftover,
whatever left it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from crishim import errors, labels, tasks
from crishim.docker import DockerClient
from crishim.docker.types import ContainerInfo, ContainerSpec
from crishim.markjournal import MarkJournal
from crishim.store import Store

log = structlog.get_logger(__name__)

UNDO_TIMEOUT = 30.0
UNMARK_DELAY = 1.0  # seconds a finished create's mark may wait for the next create's trip


def never_ran(info: ContainerInfo) -> bool:
    return info.state.status == "created" and not info.state.started_at_ns


class Creator:
    def __init__(
        self, docker: DockerClient, store: Store, state_dir: Path, sweep_seconds: float = 60.0
    ) -> None:
        self.docker = docker
        self.sweep_seconds = sweep_seconds
        self.store = store
        self.marks = state_dir / "creating"
        self._journal = MarkJournal(self.marks)
        self._names: set[str] = set()  # creates in flight in this process
        self._undoing: set[asyncio.Task[None]] = set()
        self._finished: list[str] = []  # creates that finished: their marks go next
        self._unmarking: dict[str, asyncio.Future[Any]] = {}  # name -> the trip unmarking it
        self._flush_timer: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- start and stop -----------------------------------------------------------

    async def start(self) -> None:
        """Remove what a killed process left mid-create, then sweep periodically."""
        names = await asyncio.to_thread(self._journal.start)
        for name in sorted(names):
            with contextlib.suppress(errors.CrishimError):
                await self._remove_if_never_ran(name)
        await asyncio.to_thread(self._journal.clear)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="create-sweeper")

    async def close(self) -> None:
        await tasks.stop(self._sweeper)
        if self._undoing:
            await asyncio.wait(self._undoing, timeout=UNDO_TIMEOUT)
        self._flush()
        if self._unmarking:
            await asyncio.wait(list(self._unmarking.values()), timeout=UNDO_TIMEOUT)
        await asyncio.to_thread(self._journal.close)

    # -- creating -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def creating(
        self,
        spec: ContainerSpec,
        taken: Callable[[], errors.CrishimError],
        *,
        replace_never_ran: bool = False,
    ):
        """`async with creator.creating(spec, taken) as made:` -> made.id is the new object.

        Everything inside the block belongs to the create: if the block fails or is
        cancelled, the object is removed (under a shield). `taken()` is the error for
        a name already in use; with replace_never_ran (pause containers), a holder
        that never ran is removed and the create tried again.
        """
        async with self.marked(spec.name, taken) as made:
            await self.create(made, spec, taken, replace_never_ran=replace_never_ran)
            yield made

    @contextlib.asynccontextmanager
    async def marked(
        self,
        name: str,
        taken: Callable[[], errors.CrishimError],
        prepare: Callable[[], Any] | None = None,
    ):
        """`creating` in two steps, for a caller with blocking work before its create:
        `async with creator.marked(name, taken, prepare) as made:` marks the create
        and runs `prepare` in the same worker-thread trip (each trip costs 0.5-1 ms
        of the call on a busy loop; made.prepared is what it returned); then
        `await creator.create(made, spec, taken)` inside the block.
        """
        if name in self._names:
            raise taken()  # the same object is being created by a call running now
        self._names.add(name)
        made = _Made()
        trip = None
        try:
            unmarking = self._unmarking.get(name)
            if unmarking is not None:  # an earlier create's: it must not take the new mark
                await asyncio.wait({unmarking})
            # A finished create of this name is superseded: its mark file is this one's.
            stale = [n for n in self._finished if n != name]
            self._finished.clear()
            trip = asyncio.ensure_future(asyncio.to_thread(self._mark, name, prepare, stale))
            self._unmarking_in(trip, stale)
            made.prepared = await asyncio.shield(trip)  # the others' unmarks are in it
        except BaseException:
            self._names.discard(name)
            if trip is not None:
                self._finish(name)  # cancelled or failed after the mark may have been made
            raise
        try:
            yield made
        except BaseException:
            if made.id:
                await self.undo(made.id)
            raise
        finally:
            self._names.discard(name)
            self._finish(name)

    async def create(
        self,
        made: _Made,
        spec: ContainerSpec,
        taken: Callable[[], errors.CrishimError],
        *,
        replace_never_ran: bool = False,
    ) -> str:
        """The Docker create of a `marked` block (its name, its `taken`)."""
        made.id = await self._create(spec, taken, replace_never_ran)
        return made.id

    def _finish(self, name: str) -> None:
        """The create of `name` is over: its mark goes with the next trip (the call
        answers without waiting for it)."""
        self._finished.append(name)
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(UNMARK_DELAY, self._flush)

    def _flush(self) -> None:
        """Unmark the finished creates in a trip of their own (no create came to take them)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        names, self._finished = self._finished, []
        if names:
            trip = asyncio.ensure_future(asyncio.to_thread(self._unmark_all, names))
            self._unmarking_in(trip, names)

    def _unmarking_in(self, trip: asyncio.Future[Any], names: list[str]) -> None:
        """`trip` removes the marks of `names`: a new create of one of them waits for it."""
        for name in names:
            self._unmarking[name] = trip

        def done(t: asyncio.Future[Any]) -> None:
            for name in names:
                if self._unmarking.get(name) is t:
                    del self._unmarking[name]

        trip.add_done_callback(done)

    async def _create(
        self, spec: ContainerSpec, taken: Callable[[], errors.CrishimError], replace: bool
    ) -> str:
        for attempt in (1, 2):
            create = asyncio.ensure_future(self.docker.create_container(spec))
            try:
                return await asyncio.shield(create)
            except asyncio.CancelledError:
                create.add_done_callback(self._undo_if_created)
                raise
            except errors.FailedPrecondition as exc:  # 409: the name is taken
                if attempt == 2 or not replace or not await self._remove_if_never_ran(spec.name):
                    raise taken() from exc
                log.warning("create_leftover_replaced", name=spec.name)
        raise AssertionError("unreachable")

    def _undo_if_created(self, create: asyncio.Future[str]) -> None:
        if create.cancelled() or create.exception() is not None:
            return
        task = asyncio.ensure_future(self.undo(create.result()))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def undo(self, container_id: str) -> None:
        """Remove a half-created object, even if the call that created it was cancelled."""

        async def remove() -> None:
            async with asyncio.timeout(UNDO_TIMEOUT):
                with contextlib.suppress(errors.NotFound):
                    await self.docker.remove_container(container_id)
            self.store.removed(container_id)

        with contextlib.suppress(errors.CrishimError, TimeoutError):
            await asyncio.shield(remove())

    async def _remove_if_never_ran(self, name: str) -> bool:
        """Remove the object called `name` if it never ran; True when the name is free now."""
        try:
            info = await self.docker.inspect_container(name)
        except errors.NotFound:
            return True
        if info.state.status == "removing":
            # Already going: the undo of a cancelled call whose retry this is, or
            # another client. Wait for it rather than call the name taken.
            return await self.store.wait_gone(info.id)
        if not never_ran(info) or not labels.read(info.labels).kind:
            return False
        log.warning("create_leftover_removed", name=name, container_id=info.id)
        try:
            await self.docker.remove_container(info.id)
        except errors.NotFound:
            pass
        except errors.FailedPrecondition:  # 409: a removal started meanwhile
            return await self.store.wait_gone(info.id)
        self.store.removed(info.id)
        return True

    # -- the sweep ---------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                # Twice the interval: a pause that has not started by then never will.
                removed = await self.sweep(age=2 * self.sweep_seconds)
                if removed:
                    log.info("leftover_pauses_removed", count=removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("create_sweep_failed")

    async def sweep(self, age: float) -> int:
        """Remove pause containers that never ran and are older than `age` seconds."""
        now = time.time_ns()
        removed = 0
        for record in self.store.records(labels.TYPE_SANDBOX):
            info = record.info
            if not never_ran(info) or (now - info.created_at_ns) / 1e9 < age:
                continue
            if info.name.lstrip("/") in self._names:
                continue
            with contextlib.suppress(errors.CrishimError):
                if await self._remove_if_never_ran(info.id):
                    removed += 1
        return removed

    # -- marks (blocking) -------------------------------------------------------------

    def _mark(
        self, name: str, prepare: Callable[[], Any] | None = None, finished: Iterable[str] = ()
    ) -> Any:
        self._unmark_all(finished)
        self._journal.mark(name)
        if prepare is None:
            return None
        try:
            return prepare()
        except BaseException:
            self._unmark_all([name])
            raise

    def _unmark_all(self, names: Iterable[str]) -> None:
        """Never fails the create whose trip this is: a mark left is logged (at start, its
        container is removed if it never ran)."""
        names = list(names)
        try:
            self._journal.unmark(names)
        except OSError as exc:
            log.error("create_unmark_failed", names=names, error=repr(exc))


class _Made:
    __slots__ = ("id", "prepared")

    def __init__(self) -> None:
        self.id = ""
        self.prepared: Any = None
