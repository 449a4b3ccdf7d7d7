"""What ImageFsInfo reports: bytes and inodes of Docker's image store and of the
containers' own layers, measured on disk off the hot path.

Docker keeps both under its data root, on one filesystem. Images: the image
metadata (`<root>/image`) and the image layers (`<root>/<driver>/*` less each
container's writable `X` and `X-init` layers). Containers: those writable layers
and `<root>/containers`. Counted as du counts (allocated blocks, hard links
once), so the figures agree with `du -s` of the same directories.

Image layers never change once written, so each is walked once and
remembered; a measurement walks only new layers, the (small) image metadata
and the containers' layers. A background task measures again every
`interval` seconds and whenever `changed()` says the image set moved (the image
cache calls it); ImageFsInfo reads the last measurement, and waits only for the
first one and for one that an image change made due (so a caller never sees
the store as it was before a pull or removal it saw complete).

Docker's `/system/df` is not used: it walks every layer inside dockerd on each
call (100-250 ms of daemon time here, growing with the number of containers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from crishim.common import tasks
from crishim.common.fsusage import LayerUsage, measure

log = structlog.get_logger(__name__)

INTERVAL = 30.0
LINKS = "l"  # overlay2's directory of short layer links


@dataclass(frozen=True, slots=True)
class StoreUsage:
    measured_at_ns: int
    mountpoint: str
    image_bytes: int
    image_inodes: int
    container_bytes: int
    container_inodes: int


def mountpoint(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def split_layers(layer_store: Path) -> tuple[list[Path], list[Path]]:
    """(image layers, container layers) of a layer store directory (blocking).

    Every container's writable layer `X` has an `X-init` sibling; those two are
    the container's, everything else is images'. The `l` directory of short links
    (one per layer, a container's too) is neither: it changes with every container,
    so it is measured each time, with the image metadata (see _measure).
    """
    try:
        names = {p.name for p in layer_store.iterdir()}
    except OSError:
        return [], []
    containers = {n for n in names if n.endswith("-init")}
    containers |= {n.removesuffix("-init") for n in containers}
    images = [layer_store / n for n in sorted(names - containers - {LINKS})]
    return images, [layer_store / n for n in sorted(containers & names)]


def _sum(usages: list[LayerUsage | None]) -> tuple[int, int]:
    found = [u for u in usages if u is not None]
    return sum(u.bytes for u in found), sum(u.inodes for u in found)


class ImageFsMeter:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._root: Path | None = None
        self._driver = ""
        self._layers: dict[str, LayerUsage | None] = {}  # image layer path -> its usage
        self._last: StoreUsage | None = None
        self._due = asyncio.Event()  # a measurement is wanted now
        self._fresh = asyncio.Event()  # set when a measurement finished with nothing due
        self._task: asyncio.Task[None] | None = None

    def configure(self, root: str, driver: str) -> None:
        """Docker's data root and storage driver (from /info); a change measures again
        (the measurement drops remembered layers that are not under the new root)."""
        if (Path(root), driver) != (self._root, self._driver):
            self._root, self._driver = Path(root), driver
            self.changed()

    def changed(self) -> None:
        """The image set moved: the next read waits for a new measurement."""
        self._fresh.clear()
        self._due.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="imagefs-meter")

    async def current(self) -> StoreUsage:
        if self._task is None:
            self.changed()
        await self._fresh.wait()
        assert self._last is not None
        return self._last

    async def close(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            self._due.clear()
            if self._root is not None:
                try:
                    self._last = await asyncio.to_thread(self._measure, self._root, self._driver)
                except Exception:  # the meter must outlive any one bad walk
                    log.exception("imagefs_measure_failed")
            if not self._due.is_set() and self._last is not None:
                self._fresh.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._due.wait()

    def _measure(self, root: Path, driver: str) -> StoreUsage:
        """Runs in a worker thread: the walks block."""
        image_layers, container_layers = split_layers(root / driver)
        wanted = {str(p) for p in image_layers}
        for gone in set(self._layers) - wanted:
            del self._layers[gone]
        for path in wanted - set(self._layers):
            self._layers[path] = measure(path)  # once: an image layer never changes
        always = [measure(str(root / "image")), measure(str(root / driver / LINKS))]
        image_bytes, image_inodes = _sum([*self._layers.values(), *always])
        container_bytes, container_inodes = _sum(
            [measure(str(p)) for p in container_layers] + [measure(str(root / "containers"))]
        )
        return StoreUsage(
            measured_at_ns=time.time_ns(),
            mountpoint=str(mountpoint(root)),
            image_bytes=image_bytes,
            image_inodes=image_inodes,
            container_bytes=container_bytes,
            container_inodes=container_inodes,
        )
