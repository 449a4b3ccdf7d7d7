"""Store: List* and *Status read here; Docker is still the source of truth.

Filled by a full list at start, kept by Docker's event stream, and filled
again (resync) whenever that stream has to reconnect. An entry is never
patched from an event's content: every change is a fresh inspect of the
container. Each inspect takes a sequence number when it starts, and a result
is applied only if no inspect that started later has been applied already, so
a slow answer never overwrites a newer one; events that arrive twice or out
of order just cause one more inspect.

Writers (RunPodSandbox, StopPodSandbox, ...) call `refresh(id)` after their
Docker call returns, before answering: a caller never reads a state older
than a write it has seen completed.

Events are coalesced per container. The stream is read on its own and each
event marks its container dirty; one refresher inspects dirty containers in
the order they became dirty, once however many events came meanwhile (a stop
sends kill, die and stop), and not at all when an inspect that started after
the event (the writer's own refresh) already covers it; it waits a few
milliseconds (COALESCE_SECONDS) before it starts, to let both happen. A writer
also names the events Docker logged before answering its call (`covers`:
create, start, stop): its refresh is sent after that answer, so those events,
when they are the next ones of that container, cost no inspect (they used to
cost one per create, start and stop, as they arrive after the writer's
refresh began). A stop covers `die` too: Docker answers a stop only once the
container has stopped, so an inspect sent after the answer shows the exit; and
as a stop's die and stop often come before that answer, the stop covers them
from before its Docker call (`writing`).

Exits settle first. When an inspect shows a container newly ended, the
`on_exit` hook (the log copier's: crishim.logs.copier) is awaited, bounded by
EXIT_SETTLE_TIMEOUT, before the exit is applied: nobody reads "exited" (nor
gets the STOPPED event) before everything the container printed is in its
CRI log file. containerd orders exits the same way (IO drained first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import structlog

from crishim.common import errors, tasks
from crishim.engine import labels
from crishim.engine.docker import DockerClient
from crishim.engine.docker.types import ContainerInfo

log = structlog.get_logger(__name__)

RECONNECT_DELAYS = (0.5, 1, 2, 5)  # seconds, then every 5 s
# The container events that can change what the CRI reports: the only ones asked of
# Docker (its `event` filter matches an action exactly). Any other costs a JSON line
# sent, read and dropped: an exec (ExecSync, every exec probe) alone sent three
# (exec_create, exec_start, exec_die), and a health check one per run. A kill is the
# signal being sent, before any effect: if the process ends, `die` says so.
CONTAINER_ACTIONS = frozenset(
    {
        "create",
        "start",
        "restart",
        "stop",
        "die",
        "oom",
        "destroy",
        "pause",
        "unpause",
        "rename",
        "update",
        "checkpoint",
    }
)
EXIT_SETTLE_TIMEOUT = 10.0
# Removed ids remembered so their late events and answers are ignored (Docker never
# reuses an id); far more than can be removed while one event is in flight.
GONE_REMEMBERED = 4096
REMOVAL_WAIT = 10.0  # seconds a removal under way (Docker's "removing") may take
# The refresher waits this long after an event before inspecting: the events of one
# change (kill, die, stop) come together, and the refresh of the writer whose call
# caused them (it starts as Docker answers, about when the event comes) covers them.
COALESCE_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Record:
    """One CRI object: the Docker container and what its labels say."""

    info: ContainerInfo
    cri: labels.CriLabels
    seq: int
    # The kernel's OOM killer struck in this container (Docker's `oom` event), whatever
    # the order of that event and the exit, and whatever Docker's OOMKilled says.
    oom_seen: bool = False

    @property
    def id(self) -> str:
        return self.info.id


class Store:
    def __init__(self, docker: DockerClient) -> None:
        self._docker = docker
        self._records: dict[str, Record] = {}
        # Bumped on every change of _records: the polled lists are memoized on it.
        self.version = 0
        self._by_kind: dict[str, tuple[int, tuple[Record, ...]]] = {}
        self._applied: dict[str, int] = {}  # id -> seq of the newest applied inspect
        self._gone: dict[str, None] = {}  # removed ids, oldest first (GONE_REMEMBERED)
        self._seq = 0  # of the last inspect started
        self._started: dict[str, int] = {}  # id -> seq of its newest inspect started
        # id -> the seq the next inspect would take when its newest event came.
        self._dirty: dict[str, int] = {}
        # id -> actions a writer's refresh covers, until another event of the id comes.
        self._covered: dict[str, frozenset[str]] = {}
        # id -> writers in their `writing` block: its events wait for their refresh.
        self._writers: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._events: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str, Record | None], None]] = []
        self._oom: set[str] = set()
        self.on_exit: Callable[[ContainerInfo], Awaitable[None]] | None = None
        # Called on every (re)subscription before the resync, and when the stream is lost.
        self.on_connect: Callable[[], Awaitable[None]] | None = None
        self.on_lost: Callable[[str], None] | None = None
        # Other kinds of Docker events ride on the same stream:
        # type -> (the actions followed, callback(action, id)).
        self._watchers: dict[str, tuple[frozenset[str], Callable[[str, str], None]]] = {}
        self.synced = asyncio.Event()

    def watch(
        self, kind: str, actions: frozenset[str], callback: Callable[[str, str], None]
    ) -> None:
        """Also follow Docker events of type `kind` (e.g. "image") whose action is one of
        `actions`; before start()."""
        self._watchers[kind] = (actions, callback)

    def subscribe(self, listener: Callable[[str, Record | None], None]) -> None:
        """Call `listener(id, record or None when gone)` after every applied change."""
        self._listeners.append(listener)

    def _notify(self, container_id: str, record: Record | None) -> None:
        for listener in self._listeners:
            try:
                listener(container_id, record)
            except Exception:
                log.exception("store_listener_failed", container_id=container_id)

    # -- reading ------------------------------------------------------------

    def get(self, id_or_prefix: str) -> Record | None:
        """By full ID, or by a prefix that names exactly one object (as crictl allows)."""
        record = self._records.get(id_or_prefix)
        if record is not None or len(id_or_prefix) < 6:
            return record
        matches = [r for i, r in self._records.items() if i.startswith(id_or_prefix)]
        return matches[0] if len(matches) == 1 else None

    def records(self, kind: str) -> tuple[Record, ...]:
        """Every record of a kind; the same tuple while nothing changed."""
        hit = self._by_kind.get(kind)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        found = tuple(r for r in self._records.values() if r.cri.kind == kind)
        self._by_kind[kind] = (self.version, found)
        return found

    # -- writing --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def writing(
        self, container_id: str, covers: tuple[str, ...]
    ) -> AsyncIterator[Callable[[], Awaitable[Record | None]]]:
        """Around a writer's Docker call and its refresh:
        `async with store.writing(id, covers) as refresh: <call>; await refresh()`.

        The call's events (`covers`) cost no inspect even when they come before its
        answer (a stop's die comes while Docker still waits to answer), and an event
        that came just before the block (a create's, as the pause starts) waits for
        the writer's refresh, which covers them too. If the block fails, the cover
        is dropped and the container inspected soon.
        """
        self._covered[container_id] = frozenset(covers)
        self._writers[container_id] = self._writers.get(container_id, 0) + 1
        done = False
        try:
            yield lambda: self.refresh(container_id, covers=covers)
            done = True
        finally:
            left = self._writers.pop(container_id) - 1
            if left:
                self._writers[container_id] = left
            if not done:
                self._covered.pop(container_id, None)
                self._event(container_id)
            elif container_id in self._dirty:
                self._wake.set()  # whatever the refresh did not tell

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def refresh(self, container_id: str, covers: tuple[str, ...] = ()) -> Record | None:
        """Inspect `container_id` now and apply the result (None: it is gone).

        `covers`: the events Docker logs before answering the call this refresh
        follows (the caller's call has returned): no inspect for them.
        """
        if covers:
            self._covered[container_id] = frozenset(covers)
        seq = self._next_seq()
        self._started[container_id] = seq
        try:
            info = await self._docker.inspect_container(container_id)
        except errors.NotFound:
            self._apply_gone(container_id, seq)
            return None
        if self.on_exit is not None and self._newly_ended(info):
            try:
                async with asyncio.timeout(EXIT_SETTLE_TIMEOUT):
                    await self.on_exit(info)
            except TimeoutError:
                log.warning("exit_settle_timeout", container_id=info.id)
        return self._apply(info, seq)

    async def wait_gone(self, container_id: str, seconds: float = REMOVAL_WAIT) -> bool:
        """True once a container being removed (by us or another client) is gone."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            if await self.refresh(container_id) is None:
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.1)

    def _newly_ended(self, info: ContainerInfo) -> bool:
        """Seen alive by this store before, ended now (not: first seen already ended)."""
        if info.state.status not in ("exited", "dead"):
            return False
        before = self._records.get(info.id)
        return before is not None and before.info.state.status not in ("exited", "dead")

    def _apply(self, info: ContainerInfo, seq: int) -> Record | None:
        if info.id in self._gone:
            return None  # an answer that started before the removal landed
        if self._applied.get(info.id, 0) > seq:
            return self._records.get(info.id)  # a newer inspect already landed
        self._applied[info.id] = seq
        cri = labels.read(info.labels)
        if not cri.kind:
            if self._records.pop(info.id, None) is not None:
                self.version += 1
            return None
        record = Record(info=info, cri=cri, seq=seq, oom_seen=info.id in self._oom)
        self._records[info.id] = record
        self.version += 1
        self._notify(info.id, record)
        return record

    def removed(self, container_id: str) -> None:
        """A removal of ours succeeded: the container is gone, no inspect needed."""
        self._apply_gone(container_id, self._next_seq())

    def _apply_gone(self, container_id: str, seq: int) -> None:
        if self._applied.get(container_id, 0) > seq:
            return  # a newer inspect already landed
        # Remembered even for an object not recorded yet, so that a slower
        # inspect that started earlier cannot bring it back, nor a late event
        # cost an inspect.
        self._gone[container_id] = None
        if len(self._gone) > GONE_REMEMBERED:
            del self._gone[next(iter(self._gone))]
        self._applied.pop(container_id, None)
        self._dirty.pop(container_id, None)
        self._covered.pop(container_id, None)
        self._oom.discard(container_id)
        self._started.pop(container_id, None)
        if self._records.pop(container_id, None) is not None:
            self.version += 1
            self._notify(container_id, None)

    async def resync(self) -> None:
        """Rebuild from a full list: what the event stream may have missed."""
        seq = self._next_seq()
        ids = await self._docker.list_container_ids(labels.TYPE_LABEL)
        for stale in set(self._records) - set(ids):
            self._apply_gone(stale, seq)
        for container_id in ids:
            await self.refresh(container_id)
        log.info("store_synced", objects=len(self._records))

    # -- the event stream ---------------------------------------------------------

    async def start(self) -> None:
        """Follow Docker's events (resyncing on every connect) until close()."""
        self._events = asyncio.create_task(self._follow(), name="store-events")
        self._refresher = asyncio.create_task(self._refresh_dirty(), name="store-refresher")

    async def close(self) -> None:
        await tasks.stop(self._events)
        await tasks.stop(self._refresher)
        self._events = self._refresher = None

    def _is_covered(self, container_id: str, action: str) -> bool:
        """A writer's refresh already tells what this event says (see `covers`).

        Only the container's next events count: any other event ends the cover, so
        a cover that outlived its event (which came before the writer's refresh and
        was handled then) cannot hide a later change.
        """
        covered = self._covered.get(container_id)
        if covered is None:
            return False
        if action not in covered:
            del self._covered[container_id]
            return False
        rest = covered - {action}
        if rest:
            self._covered[container_id] = rest
        else:
            del self._covered[container_id]
        return True

    def _event(self, container_id: str) -> None:
        """Docker says `container_id` changed: inspect it soon, once."""
        if container_id in self._gone:
            return  # the destroy event of a removal already applied
        self._dirty[container_id] = self._seq + 1
        self._wake.set()

    async def _refresh_dirty(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            while True:
                # A container being written waits: its writer's refresh comes (`writing`).
                container_id = next((c for c in self._dirty if c not in self._writers), None)
                if container_id is None:
                    break
                since = self._dirty.pop(container_id)
                if self._started.get(container_id, 0) >= since:
                    continue  # an inspect begun after the event already tells what it says
                try:
                    await self.refresh(container_id)
                except errors.CrishimError as exc:  # Docker away: the resync will catch up
                    log.debug("store_refresh_failed", container_id=container_id, error=str(exc))
                except Exception:
                    log.exception("store_refresh_failed", container_id=container_id)

    async def _follow(self) -> None:
        attempt = 0  # failures since the last good subscription: the next delay
        while True:
            try:
                kinds = ("container", *self._watchers)
                actions = CONTAINER_ACTIONS.union(*(a for a, _ in self._watchers.values()))
                events = self._docker.events(kinds, actions)
                await anext(events)  # subscribed: list now, and nothing is missed
                if self.on_connect is not None:
                    await self.on_connect()
                await self.resync()
                self.synced.set()
                attempt = 0
                async for kind, action, actor in events:
                    if kind != "container":
                        self._dispatch(kind, action, actor)
                        continue
                    if action == "oom" and actor:
                        self._oom.add(actor)
                    wanted = action in CONTAINER_ACTIONS  # (the filter is every kind's actions)
                    if actor and wanted and not self._is_covered(actor, action):
                        self._event(actor)
                raise errors.Unavailable("docker closed the event stream")
            except asyncio.CancelledError:
                raise
            except (errors.CrishimError, StopAsyncIteration) as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warning(
                    "store_events_lost", error=str(exc) or type(exc).__name__, retry_s=delay
                )
                self.synced.clear()
                if self.on_lost is not None:
                    self.on_lost(str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
            except Exception:
                log.exception("store_events_failed")
                await asyncio.sleep(RECONNECT_DELAYS[-1])

    def _dispatch(self, kind: str, action: str, actor: str) -> None:
        watcher = self._watchers.get(kind)
        if watcher is None:
            return
        try:
            watcher[1](action, actor)
        except Exception:
            log.exception("store_watcher_failed", kind=kind, action=action)
