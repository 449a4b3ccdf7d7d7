"""Docker creates that leave nothing behind, whatever happens to the call.

RunPodSandbox and CreateContainer start with a Docker create. Three ways that
used to leave a "created" object no call would ever finish, after which a
retry with the same metadata got ALREADY_EXISTS forever:

  - the caller cancelled (its deadline passed) while Docker was creating, or
    the daemon's answer was lost: the create's token is watched for, and the
    object it makes for nobody is removed as soon as the store sees it (the
    store sees every create, from Docker's events or a resync). The create is
    awaited in the call's own task: shielding it in a task of its own cost a
    kubelet-shaped CreateContainer ~0.25 ms of loop passes (bench/paired.py);
  - crishim was killed between the create and the end of the call: every create
    carries a token of its own (a label, labels.CREATE_TOKEN_LABEL), and the
    token of a finished create that has not run is written to the state dir
    (`creating/.journal`, crishim.pods.markjournal). Once the store has its first
    view after a start, a container that never ran and whose token is not
    written was left mid-create: it is removed. The mark is the create's own
    request, so no file is written before it (a worker-thread trip cost a call
    0.3-0.5 ms here); finished tokens are written together UNMARK_DELAY later,
    off the calls' path. A crash in that time removes at start a container that
    a finished CreateContainer made and nobody started yet: the kubelet, finding
    it gone, creates it again (as it does for all of them if the journal is lost);
  - a RunPodSandbox retry meets such a leftover first: a pause that never ran,
    and that no call of this process is creating, is removed and the create
    retried once (RunPodSandbox always starts its pause, so one that never ran
    was left by a call that never finished). A container's name is freed that way
    only from an object a create cut short made (its token is not a finished
    create's): CreateContainer does not start, so a created container may be
    exactly what a finished call made (ALREADY_EXISTS, as for a name taken by an
    object that ran). On a busy daemon the retry often comes while Docker is still
    making what the cut-short call asked for: Docker holds the name from the start
    of a create (409) but inspects it only once made (404). The retry waits for it
    to be made (RESERVED_WAIT at most), then meets it as above.

A retry often comes while the call it repeats is still in this process: the
kubelet's deadline passed, grpclib cancelled the handler, and its undo (CNI DEL,
the removal) is under way; or two callers sent the same request at once. Each
create in flight is a flight (name -> future): a call for a name in flight waits
for it to land. If it made its object and finished, the waiting call answers
with that object, as for a completed call; if it was undone, the name is free
once the undo is over (never while it runs), and the waiting call creates
afresh. An undo runs in a task of its own, without the caller's deadline
(crishim.common.deadlines.detached): the deadline that cut a call short never cuts
short the removal of what it made.

Besides, a sweep every `sweep_seconds` (the leftover_sweep_seconds setting)
removes pause containers that never ran and are older than twice that
(RunPodSandbox always starts its pause, so one that never ran is a leftover,
whatever left it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from crishim.common import deadlines, errors, tasks
from crishim.engine import labels
from crishim.engine.docker import DockerClient
from crishim.engine.docker.types import ContainerInfo, ContainerSpec
from crishim.engine.store import Record, Store
from crishim.pods.markjournal import LIMIT, FinishJournal

log = structlog.get_logger(__name__)

UNDO_TIMEOUT = 30.0
ABANDONED_WATCH = 600.0  # seconds a cancelled create's token is watched for
UNMARK_DELAY = 1.0  # seconds a finished create's token waits to be written with others
RESERVED_WAIT = 60.0  # seconds a create waits for Docker to finish one that holds its name


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
        self._journal = FinishJournal(self.marks)
        self._prefix = secrets.token_hex(8) + "-"  # this process's tokens
        self._made = 0  # tokens this process has given out
        # name -> the create in flight in this process: its object's id once it finished,
        # "" once it failed and its undo is over.
        self._flights: dict[str, asyncio.Future[str]] = {}
        self._undoing: set[asyncio.Task[None]] = set()
        # token -> monotonic time: creates whose call ended before Docker's answer
        self._abandoned: dict[str, float] = {}
        store.subscribe(self._on_record)
        self._done: list[str] = []  # tokens of finished creates, not written yet
        self._kept: set[str] = set()  # tokens in the journal
        self._writer: asyncio.Future[None] | None = None  # the journal's last trip
        self._flush_timer: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._leftovers: asyncio.Task[None] | None = None

    # -- start and stop -----------------------------------------------------------

    async def start(self) -> None:
        """Remove what a killed process left mid-create (once the store has its view),
        then sweep periodically."""
        names, tokens = await asyncio.to_thread(self._journal.start)
        self._kept = tokens
        for name in sorted(names):  # marked by an older crishim
            with contextlib.suppress(errors.CrishimError):
                await self._remove_if_never_ran(name)
        if names:
            await self._write(self._journal.rewrite, set(tokens))
        self._leftovers = asyncio.create_task(self._remove_leftovers(), name="create-leftovers")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="create-sweeper")

    async def close(self) -> None:
        await tasks.stop(self._sweeper)
        await tasks.stop(self._leftovers)
        if self._undoing:
            await asyncio.wait(self._undoing, timeout=UNDO_TIMEOUT)
        self._flush()
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=UNDO_TIMEOUT)
        await asyncio.to_thread(self._journal.close)

    async def _remove_leftovers(self) -> None:
        """Containers that never ran, with a token of an earlier process not written as
        finished: their create was cut short."""
        await self.store.synced.wait()
        removed = 0
        for record in self._never_ran():
            token = record.info.labels.get(labels.CREATE_TOKEN_LABEL, "")
            if not token or token in self._kept or token.startswith(self._prefix):
                continue  # not crishim's make, finished, or being made now
            with contextlib.suppress(errors.CrishimError):
                removed += await self._remove_if_never_ran(record.id)
        log.info("create_leftovers_checked", removed=removed)
        # What is left to keep: tokens whose containers may still be started.
        self._kept = self._needed()
        await self._write(self._journal.rewrite, set(self._kept))

    def _never_ran(self) -> list[Record]:
        kinds = (labels.TYPE_SANDBOX, labels.TYPE_CONTAINER)
        return [r for k in kinds for r in self.store.records(k) if never_ran(r.info)]

    def _needed(self) -> set[str]:
        """The kept tokens whose containers exist and never ran."""
        have = {r.info.labels.get(labels.CREATE_TOKEN_LABEL) for r in self._never_ran()}
        return self._kept & have

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

    async def landed(self, name: str) -> str:
        """Wait while a create of `name` is in flight in this process: the id of the object
        it made and finished, or "" (none in flight, or it was undone: the name is free)."""
        made = ""
        while not made and (flight := self._flights.get(name)) is not None:
            await asyncio.wait({flight})  # its own undo included
            made = flight.result()
        return made

    @contextlib.asynccontextmanager
    async def marked(self, name: str, taken: Callable[[], errors.CrishimError]):
        """`creating` in two steps, for a caller with work of its own before its create:
        `async with creator.marked(name, taken) as made:`, then
        `await creator.create(made, spec, taken)` inside the block. A caller first asks
        `landed(name)`, so that a retry meets the finished object or a clean slate.
        """
        if name in self._flights:
            raise taken()  # another call began creating it since this one asked landed()
        flight: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._flights[name] = flight
        self._made += 1
        made = _Made(f"{self._prefix}{self._made}")
        outcome = ""
        undone_later = False  # the undo's end lands the flight, not this block's
        try:
            yield made
        except BaseException:
            if made.id:
                # A task of its own: a second cancel of this call stops only the wait.
                undoing = deadlines.detached(self.undo(made.id))
                undoing.add_done_callback(functools.partial(_landed, self._flights, name, flight))
                self._undoing.add(undoing)  # close() waits for it
                undoing.add_done_callback(self._undoing.discard)
                undone_later = True
                await asyncio.shield(undoing)
            raise
        else:
            outcome = made.id
            record = self.store.get(made.id) if made.id else None
            if record is not None and never_ran(record.info):  # ran: never a leftover
                self._finish(made.token)
        finally:
            if not undone_later:
                _land(self._flights, name, flight, outcome)

    async def create(
        self,
        made: _Made,
        spec: ContainerSpec,
        taken: Callable[[], errors.CrishimError],
        *,
        replace_never_ran: bool = False,
    ) -> str:
        """The Docker create of a `marked` block (its name, its `taken`), with its token."""
        spec = replace(spec, labels={**spec.labels, labels.CREATE_TOKEN_LABEL: made.token})
        made.id = await self._create(spec, taken, replace_never_ran)
        return made.id

    def _finish(self, token: str) -> None:
        """The create of `token` is over: written with others, soon (the call answers
        without waiting for it)."""
        self._done.append(token)
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(UNMARK_DELAY, self._flush)

    def _flush(self) -> None:
        """Write the finished tokens, in a trip of their own; the journal is rewritten
        with what it needs once it has grown past its limit."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        tokens, self._done = self._done, []
        if not tokens:
            return
        self._kept.update(tokens)
        if self._journal.size > LIMIT:
            self._kept = self._needed()
            self._write(self._journal.rewrite, set(self._kept))
        else:
            self._write(self._journal.finished, tokens)

    def _write(self, write: Callable[[Any], None], tokens: Any) -> asyncio.Future[None]:
        """A journal trip, after the one before it (one writes at a time)."""
        previous = self._writer

        async def trip() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            try:
                await asyncio.to_thread(write, tokens)
            except OSError as exc:  # never fails a call: a token lost only risks a restart
                log.error("create_journal_failed", error=repr(exc))

        self._writer = asyncio.ensure_future(trip())
        return self._writer

    async def _create(
        self, spec: ContainerSpec, taken: Callable[[], errors.CrishimError], replace: bool
    ) -> str:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RESERVED_WAIT
        pause = 0.05
        replaced = False
        while True:
            try:
                return await self.docker.create_container(spec)
            except (asyncio.CancelledError, errors.Unavailable):
                self._abandon(spec)  # Docker may create it all the same
                raise
            except errors.FailedPrecondition as exc:  # 409: the name is taken
                holder = await self._holder(spec.name)
                if holder is None and loop.time() < give_up:
                    # Docker holds the name for a create it has not finished (a cut-short
                    # call's, mostly, on a busy daemon): it is not inspectable until made.
                    log.info("create_name_reserved", name=spec.name)
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, 1.0)
                    continue
                if replaced or holder is None:
                    raise taken() from exc
                if not await self._remove_if_never_ran(spec.name, replace, holder):
                    raise taken() from exc
                replaced = True
                log.warning("create_leftover_replaced", name=spec.name)

    def _abandon(self, spec: ContainerSpec) -> None:
        """The create of `spec` ended without Docker's answer: what it makes is removed,
        now if the store has it already, else when it shows up."""
        token = spec.labels[labels.CREATE_TOKEN_LABEL]
        now = time.monotonic()
        for old, since in list(self._abandoned.items()):
            if now - since > ABANDONED_WATCH:
                del self._abandoned[old]
        for record in self._never_ran():
            if record.info.labels.get(labels.CREATE_TOKEN_LABEL) == token:
                self._remove_abandoned(record.id)
                return
        self._abandoned[token] = now

    def _on_record(self, container_id: str, record: Record | None) -> None:
        """Store listener: an object an abandoned create made has shown up."""
        if record is None or not self._abandoned:
            return
        token = record.info.labels.get(labels.CREATE_TOKEN_LABEL)
        if token is not None and self._abandoned.pop(token, None) is not None:
            self._remove_abandoned(container_id)

    def _remove_abandoned(self, container_id: str) -> None:
        log.warning("create_abandoned_removed", container_id=container_id)
        task = asyncio.ensure_future(self.undo(container_id))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def undo(self, container_id: str) -> None:
        """Remove a half-created object, even if the call that created it was cancelled
        (bounded by UNDO_TIMEOUT; what it cannot remove, the sweep and the next start do)."""

        async def remove() -> None:
            async with asyncio.timeout(UNDO_TIMEOUT):
                with contextlib.suppress(errors.NotFound):
                    await self.docker.remove_container(container_id)
            self.store.removed(container_id)

        with contextlib.suppress(errors.CrishimError, TimeoutError):
            await asyncio.shield(remove())

    def _cut_short(self, info: ContainerInfo) -> bool:
        """Whether a never-run object is what a create cut short made: its token is not
        one of a finished create (an abandoned create's, whose removal may be under way)."""
        token = info.labels.get(labels.CREATE_TOKEN_LABEL, "")
        return bool(token) and token not in self._kept and token not in self._done

    async def _holder(self, name: str) -> ContainerInfo | None:
        """The object called `name`, if Docker shows one."""
        try:
            return await self.docker.inspect_container(name)
        except errors.NotFound:
            return None

    async def _remove_if_never_ran(
        self, name: str, any_holder: bool = True, info: ContainerInfo | None = None
    ) -> bool:
        """Remove the object called `name` (its inspect, if the caller has it) if it never
        ran (with any_holder False: only if a create cut short made it); True when the name
        is free now."""
        if info is None and (info := await self._holder(name)) is None:
            return True
        if info.state.status == "removing":
            # Already going: the undo of a cancelled call whose retry this is, or
            # another client. Wait for it rather than call the name taken.
            return await self.store.wait_gone(info.id)
        # Never an object that ran: a create's token is journaled only while it has not
        # run, so "cut short" cannot tell a finished pod that ran from a half-made one.
        held = not never_ran(info) or not labels.read(info.labels).kind
        if held or (not any_holder and not self._cut_short(info)):
            log.info("create_name_held", name=name, container_id=info.id, status=info.state.status)
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
            if info.name.lstrip("/") in self._flights:
                continue
            with contextlib.suppress(errors.CrishimError):
                if await self._remove_if_never_ran(info.id):
                    removed += 1
        return removed


def _landed(flights: dict[str, asyncio.Future[str]], name, flight, _undo) -> None:
    """An undo's done callback: its flight is over, with nothing made."""
    _land(flights, name, flight, "")


def _land(flights: dict[str, asyncio.Future[str]], name, flight, outcome: str) -> None:
    """The flight of `name` is over: the calls waiting for it go on."""
    if flights.get(name) is flight:
        del flights[name]
    if not flight.done():
        flight.set_result(outcome)


class _Made:
    __slots__ = ("id", "token")

    def __init__(self, token: str) -> None:
        self.id = ""
        self.token = token
