"""Container lifecycle events for GetContainerEvents (the kubelet's evented PLEG).

Fed by the store: every applied change of a sandbox or container is compared
with the state last seen for it, and each step between the two becomes an
event (created -> started -> stopped -> deleted), so a container first seen
already running still yields CREATED then STARTED, in order.

Every subscriber has its own bounded queue. The store's listener never waits:
a subscriber whose queue is full is dropped (its queue emptied, its stream
ended with RESOURCE_EXHAUSTED), and the kubelet falls back to relisting, as it
does whenever the event stream breaks. Subscribers are independent: a slow
one never delays the store or the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from crishim.common import errors
from crishim.engine import labels
from crishim.engine.store import Record, Store

log = structlog.get_logger(__name__)

CREATED, STARTED, STOPPED, DELETED = "created", "started", "stopped", "deleted"
_ORDER = (CREATED, STARTED, STOPPED)
BUFFER = 1024


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    container_id: str
    kind: str  # created | started | stopped | deleted
    created_at_ns: int  # when crishim saw it happen
    sandbox_id: str  # the pod it belongs to (its own id for a sandbox)


def _step(record: Record) -> str:
    status = record.info.state.status
    if status in ("exited", "dead"):
        return STOPPED
    if status in ("running", "paused", "restarting"):
        return STARTED
    return CREATED


class Subscription:
    def __init__(self, hub: EventHub, size: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue(size)
        self.overflowed = False

    async def __aiter__(self) -> AsyncIterator[ContainerEvent]:
        try:
            while True:
                event = await self.queue.get()
                if event is None:
                    raise errors.ResourceExhausted(
                        "the event stream fell more than "
                        f"{self.queue.maxsize} events behind; relist and subscribe again"
                    )
                yield event
        finally:
            self._hub.unsubscribe(self)

    def offer(self, event: ContainerEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            log.warning("event_subscriber_dropped", buffered=self.queue.maxsize)


class EventHub:
    def __init__(self, store: Store, buffer: int = BUFFER) -> None:
        self._buffer = buffer
        self._last: dict[str, tuple[str, str]] = {}  # id -> (step, sandbox id)
        self._subscribers: list[Subscription] = []
        store.subscribe(self._on_change)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._buffer)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _on_change(self, object_id: str, record: Record | None) -> None:
        before = self._last.get(object_id)
        if record is None:
            if before is not None:
                del self._last[object_id]
                self._emit(object_id, [DELETED], before[1])
            return
        kind = record.cri.kind
        if kind not in (labels.TYPE_CONTAINER, labels.TYPE_SANDBOX):
            return
        sandbox_id = record.cri.sandbox_id if kind == labels.TYPE_CONTAINER else record.id
        now = _step(record)
        start = _ORDER.index(before[0]) + 1 if before is not None else 0
        end = _ORDER.index(now) + 1
        steps = [s for s in _ORDER[start:end] if s != STARTED or record.info.state.started_at_ns]
        self._last[object_id] = (now, sandbox_id)
        if steps:
            self._emit(object_id, steps, sandbox_id)

    def _emit(self, object_id: str, steps: list[str], sandbox_id: str) -> None:
        if not self._subscribers:
            return
        now = time.time_ns()
        for step in steps:
            event = ContainerEvent(object_id, step, now, sandbox_id)
            for sub in list(self._subscribers):
                sub.offer(event)
