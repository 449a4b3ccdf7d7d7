"""Bytes and inodes a container's writable layer uses, measured off the hot path.

Walking a layer costs time proportional to its files, so it is never done in
a stats call: a background task measures each running container's layer
directory (Docker's overlay2 `UpperDir`) at most every `interval` seconds, in
a worker thread, and stats calls read the last measurement. Docker's
`size=true` and `/system/df` are never used: they walk every layer of every
container inside dockerd on each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

import structlog

from crishim.common import tasks

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LayerUsage:
    bytes: int
    inodes: int
    measured_at_ns: int


def measure(directory: str) -> LayerUsage | None:
    """du of `directory`: allocated bytes (st_blocks, as du counts them) and inodes."""
    if not directory:
        return None
    seen: set[tuple[int, int]] = set()
    stack = [directory]
    try:
        root = os.lstat(directory)
    except OSError:
        return None
    total, inodes = root.st_blocks * 512, 1
    while stack:
        path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_blocks * 512
            inodes += 1
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return LayerUsage(total, inodes, time.time_ns())


class LayerMeter:
    """The last measurement per container, and the task that keeps them fresh."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._usage: dict[str, LayerUsage] = {}
        self.changes = 0  # bumped on every new or dropped measurement
        self._dirs: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def get(self, container_id: str) -> LayerUsage | None:
        return self._usage.get(container_id)

    def track(self, container_id: str, directory: str) -> None:
        """Measure this container's layer (soon, then every interval)."""
        if directory and self._dirs.get(container_id) != directory:
            self._dirs[container_id] = directory
            self._wake.set()

    def tracked(self) -> list[str]:
        return list(self._dirs)

    def forget(self, container_id: str) -> None:
        self._dirs.pop(container_id, None)
        if self._usage.pop(container_id, None) is not None:
            self.changes += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="layer-meter")

    async def close(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                now = time.time_ns()
                due = [
                    (cid, d)
                    for cid, d in list(self._dirs.items())
                    if (u := self._usage.get(cid)) is None
                    or now - u.measured_at_ns >= self.interval * 1e9
                ]
                for container_id, directory in due:
                    usage = await asyncio.to_thread(measure, directory)
                    if usage is not None and self._dirs.get(container_id) == directory:
                        self._usage[container_id] = usage
                        self.changes += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # the meter must outlive any one bad walk
                log.exception("layer_meter_failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
