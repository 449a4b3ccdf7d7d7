"""Stats of containers and pods: the store says who, the kernel says how much.

One call reads every cgroup it needs in a single worker thread (a few small
kernel files per container, kept open and re-read: cgroups.Handle), so
ListContainerStats over hundreds of containers costs one hop off the event
loop and no Docker request. Each container's cgroup is found once, from its
init process, and kept while that process lives; the sampler closes the
handles of containers that are gone.

CPU rate (`usage_nano_cores`) is the change of cumulative CPU time between
this reading and an earlier one kept per container: the newest kept sample at
least MIN_WINDOW old, or else the container's start (when it had used no CPU),
so a first call already has a rate: the average since start.

A background sampler reads every running container and pod every
SAMPLE_INTERVAL seconds, or every DEMAND_INTERVAL while the list calls are
being made (one in the last DEMAND_WINDOW). The list calls, which the kubelet
polls for all pods at once, answer from the latest reading when it is at most
LIST_MAX_AGE old, as the kubelet's own cAdvisor answers from its housekeeping;
each entry's timestamps say when it was read. The single-object calls
(ContainerStats, PodSandboxStats) read the kernel at once. The metrics answer
from a full reading (one with what only they use) at most METRICS_MAX_AGE old,
as the kubelet's cAdvisor answered from its housekeeping (every 10 s). While
they were asked within METRICS_WINDOW, the sampler's rounds read full about
every SAMPLE_INTERVAL, so a scrape finds one and reads nothing: every round
while the list calls are not polled, one in FULL_EVERY seconds while they are
(rounds then come every DEMAND_INTERVAL; reading full in each would cost more
than the scrapes, every 15 s or more, that it saves). The latest full reading
is kept apart from the latest reading, which the partial rounds renew.
Stats objects are kept while nothing they show changed, so the server can
keep their encoding too; a list call over every container (or pod) gets the
very list it got last time while no reading, record or layer changed, and the
sampler's round makes that list, so a poll after it costs no reading at all.
While the list calls are in demand, `on_sample` (the server's) runs after each
round, and after each full one that the next metrics call may follow (by the gap
between the last two): it encodes the fresh entries (and metrics) then, off the
calls' path.

Exited containers get attributes and their writable layer only: no CPU or
memory, as the kubelet expects. A pod's totals come from its pod cgroup (the
parent of the pause container's cgroup, when the kubelet gave a cgroup
parent); without one, from the sum of its running containers and the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace

import structlog

from crishim.common import cgroups, tasks
from crishim.common.fsusage import LayerMeter, LayerUsage
from crishim.pods.containers import Containers, ContainerView
from crishim.pods.sandboxes import Sandboxes, SandboxView
from crishim.stats import netdev

log = structlog.get_logger(__name__)

MIN_WINDOW_NS = 500_000_000
SAMPLE_INTERVAL = 10.0
DEMAND_INTERVAL = 2.0
DEMAND_WINDOW = 60.0
LIST_MAX_AGE_NS = 3_000_000_000
METRICS_WINDOW = 90.0  # Prometheus scrapes every 15 s to 1 min
FULL_ROUND_GAP = SAMPLE_INTERVAL + DEMAND_INTERVAL  # at most, between two full rounds
METRICS_MAX_AGE_NS = int(FULL_ROUND_GAP * 1e9)  # a full round's reading, until the next
FULL_EVERY = SAMPLE_INTERVAL - DEMAND_INTERVAL  # seconds between full rounds while polled
# Objects built between yields to the loop when a round's readings come back (~1-2 ms):
# a call arriving meanwhile waits that long, not for the whole build of every object.
BUILD_YIELD_EVERY = 25
HISTORY = 4


@dataclass(frozen=True, slots=True)
class Cpu:
    timestamp_ns: int
    usage_ns: int
    nano_cores: int | None


@dataclass(frozen=True, slots=True)
class Memory:
    timestamp_ns: int
    usage: int | None
    working_set: int | None
    available: int | None
    rss: int | None
    page_faults: int | None
    major_page_faults: int | None


@dataclass(frozen=True, slots=True)
class Swap:
    timestamp_ns: int
    usage: int
    available: int | None


@dataclass(frozen=True, slots=True)
class Layer:
    timestamp_ns: int
    mountpoint: str
    bytes: int
    inodes: int


@dataclass(frozen=True, slots=True)
class ContainerStats:
    view: ContainerView
    cpu: Cpu | None = None
    memory: Memory | None = None
    swap: Swap | None = None
    layer: Layer | None = None
    usage: cgroups.Usage | None = None  # the raw reading (metrics use more of it)
    timestamp_ns: int = 0
    cgroup: str = ""  # the cgroup's name in its hierarchy


@dataclass(frozen=True, slots=True)
class Filesystem:
    mountpoint: str
    device: str


@dataclass(frozen=True, slots=True)
class Network:
    timestamp_ns: int
    interfaces: tuple[netdev.Interface, ...]
    default: str = "eth0"


@dataclass(frozen=True, slots=True)
class PodStats:
    view: SandboxView
    cpu: Cpu | None
    memory: Memory | None
    network: Network | None
    processes: int | None
    containers: tuple[ContainerStats, ...]
    pause: cgroups.Usage | None  # the pause container's own reading
    timestamp_ns: int = 0
    cgroup: str = ""  # the pause container's cgroup name


@dataclass(frozen=True, slots=True)
class _Listed:
    """The last result of a call over every container (or pod), and what it depended on."""

    views: object  # the store's list it was made for (a tuple, the same while unchanged)
    containers: object  # for pods: the container list their members came from
    full: bool
    generation: tuple[int, ...]  # StatsCollector._generation() then
    oldest_ns: int  # the oldest reading of a running entry in it
    result: list


@dataclass(frozen=True, slots=True)
class _PodReading:
    pause: cgroups.Usage | None  # the pause container's cgroup
    pod: cgroups.Usage | None  # the pod cgroup the kubelet made, if any
    network: Network | None
    timestamp_ns: int
    full: bool  # read with what only the metrics use


def _sum(usages: Iterable[cgroups.Usage]) -> cgroups.Usage:
    """Field-wise sum of readings; a limit is kept only where all agree on one."""
    usages = list(usages)
    total: dict[str, int | None] = {}
    for f in fields(cgroups.Usage):
        values = [getattr(u, f.name) for u in usages if getattr(u, f.name) is not None]
        total[f.name] = sum(values) if values else None
    total["memory_limit"] = None
    total["swap_limit"] = None
    return cgroups.Usage(**total)


class StatsCollector:
    def __init__(self, containers: Containers, sandboxes: Sandboxes, meter: LayerMeter) -> None:
        self.containers = containers
        self.sandboxes = sandboxes
        self.meter = meter
        self._handles: dict[str, tuple[int, cgroups.Handle | None]] = {}
        self._netdevs: dict[str, netdev.Reader] = {}  # "net:<pod id>" -> its open net/dev
        # One batch of reading (or closing) at a time: a handle is never closed, and its
        # descriptor number reused, under a reader in another worker thread.
        self._lock = threading.Lock()
        self._cpu: dict[str, deque[tuple[int, int]]] = {}
        self._mountpoints: dict[str, str] = {}
        self._devices: dict[str, str] = {}
        self._sampler: asyncio.Task[None] | None = None
        # The latest stats per container: (stats, the layer measurement it shows, full);
        # and the latest full ones, which the metrics use while partial rounds go on.
        self._latest: dict[str, tuple[ContainerStats, LayerUsage | None, bool]] = {}
        self._latest_full: dict[str, tuple[ContainerStats, LayerUsage | None, bool]] = {}
        # The latest reading per pod and the PodStats last built from it; the same for
        # full readings (so that a scrape makes none of the lists' PodStats anew).
        self._pod_readings: dict[str, tuple[SandboxView, _PodReading]] = {}
        self._pods: dict[str, PodStats] = {}
        self._pod_readings_full: dict[str, tuple[SandboxView, _PodReading]] = {}
        self._pods_full: dict[str, PodStats] = {}
        self._asked_at = 0.0  # monotonic time of the last list call
        self._answered_ns: dict[str, int] = {}  # kind -> when its last list call answered
        self._metrics_asked_at = -METRICS_WINDOW  # ... and of the last metrics call
        self._metrics_gap = 0.0  # seconds between the last two metrics calls (0: unknown)
        self._full_round_at = -METRICS_WINDOW  # ... and of the sampler's last full round
        self._demand = asyncio.Event()
        # Bumped whenever kept container (pod) readings change: the lists' memos key on them.
        self._container_changes = 0
        self._pod_changes = 0
        self._listed_containers: _Listed | None = None
        self._listed_pods: _Listed | None = None
        # Run after each sampler round while the list calls are in demand, and after
        # each full round that a metrics call may follow (is it one?).
        self.on_sample: Callable[[bool], Awaitable[None]] | None = None

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        self.meter.start()
        self._sampler = asyncio.create_task(self._sample_forever(), name="stats-sampler")

    async def close(self) -> None:
        await tasks.stop(self._sampler)
        self._sampler = None
        await asyncio.to_thread(self._forget_gone, set())
        await self.meter.close()

    def _in_demand(self) -> bool:
        return time.monotonic() - self._asked_at < DEMAND_WINDOW

    def asked(self) -> None:
        """A list call came: keep its readings fresh for the next ones."""
        was = self._in_demand()
        self._asked_at = time.monotonic()
        if not was:
            self._demand.set()

    def list_age(self, kind: str) -> int:
        """How old a reading a list call of `kind` may answer with: LIST_MAX_AGE_NS, but
        nothing the previous such call could have answered, if that one was at least
        MIN_WINDOW_NS ago. `crictl stats` lists twice a second apart and needs a newer
        CPU reading the second time; the kubelet's polls, 10 s apart, still find the
        sampler's. Calls closer together (one poll's burst) share their readings."""
        gap = time.time_ns() - self._answered_ns.get(kind, 0)
        return min(LIST_MAX_AGE_NS, gap) if gap >= MIN_WINDOW_NS else LIST_MAX_AGE_NS

    def answered(self, kind: str) -> None:
        """A list call of `kind` answered (its readings are all older than now)."""
        self._answered_ns[kind] = time.time_ns()

    def metrics_asked(self) -> None:
        """A metrics call came: the sampler's rounds read what the metrics show too."""
        now = time.monotonic()
        gap = now - self._metrics_asked_at
        self._metrics_gap = gap if gap < METRICS_WINDOW else 0.0
        self._metrics_asked_at = now

    def _metrics_due(self, now: float) -> bool:
        """Whether the next metrics call may come before the full round after this one
        (at most FULL_ROUND_GAP away), judged by the gap between the last two calls
        (none known: yes). Only such a round's reading is worth encoding ahead: a
        scrape every minute would otherwise have six encoded for the one it gets."""
        return now + FULL_ROUND_GAP >= self._metrics_asked_at + self._metrics_gap

    async def _sample_forever(self) -> None:
        while True:
            interval = DEMAND_INTERVAL if self._in_demand() else SAMPLE_INTERVAL
            self._demand.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._demand.wait(), interval)
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stats_sample_failed")

    async def sample(self) -> None:
        """One sampler round: every container and pod read now."""
        now = time.monotonic()
        wanted = now - self._metrics_asked_at < METRICS_WINDOW
        full = wanted and (not self._in_demand() or now - self._full_round_at >= FULL_EVERY)
        if full:
            self._full_round_at = now
        await self.pods_stats(self.sandboxes.list(), full=full)
        await asyncio.to_thread(self._forget_gone, self._live_keys())
        metrics = full and self._metrics_due(now)
        if self.on_sample is not None and (metrics or self._in_demand()):
            await self.on_sample(metrics)

    # -- containers -------------------------------------------------------------------

    def _generation(self, pods: bool) -> tuple[int, ...]:
        if pods:
            return self._container_changes, self.meter.changes, self._pod_changes
        return self._container_changes, self.meter.changes

    @staticmethod
    def _reuse(listed: _Listed | None, views, containers, full: bool, since_ns: int, generation):
        """The last result over every object, if it still says what a new one would."""
        if (
            listed is not None
            and listed.views is views
            and listed.containers is containers
            and listed.full >= full
            and listed.generation == generation
            and listed.oldest_ns >= since_ns
        ):
            return listed.result
        return None

    async def containers_stats(
        self, views: Sequence[ContainerView], full: bool = False, max_age_ns: int = 0
    ) -> list[ContainerStats]:
        """Stats of these containers; full=True adds what only the metrics use.

        A running container's reading may be up to max_age_ns old (0: read now).
        """
        since = _oldest_usable(max_age_ns)
        every = views is self.containers.list()
        if every:
            kept = self._reuse(
                self._listed_containers, views, None, full, since, self._generation(False)
            )
            if kept is not None:
                return kept
        # What this call answers is held here: the kept maps lose gone objects while
        # it waits (the sampler's _live_keys), and a view it was given may be one.
        current: dict[str, ContainerStats] = {}
        stale = []
        for view in views:
            self._track_layer(view)
            stats = self._current(view, full, since)
            if stats is None:
                stale.append(view)
            else:
                current[view.id] = stats
        if stale:
            readings = await asyncio.to_thread(
                self._read_many,
                [(v.id, v.record.info.state.pid) for v in stale if _running(v)],
                [v.record.info.upper_dir for v in stale],
                full,
            )
            async for view in tasks.in_steps(stale, BUILD_YIELD_EVERY):
                stats = self._container(view, readings.get(view.id))
                entry = (stats, self.meter.get(view.id), full)
                self._latest[view.id] = entry
                if full:
                    self._latest_full[view.id] = entry
                current[view.id] = stats
            self._container_changes += 1
        result = [current[v.id] for v in views]
        if every:
            oldest = min((s.timestamp_ns for s in result if _running(s.view)), default=1 << 63)
            self._listed_containers = _Listed(
                views, None, full, self._generation(False), oldest, result
            )
        return result

    def _current(self, view: ContainerView, full: bool, since_ns: int) -> ContainerStats | None:
        """The kept stats of this container, if they still say what a reading would.

        A new layer measurement alone (one per container every 30 s) is put into them
        without reading the cgroup again: each part carries the time it was measured."""
        kept = (self._latest_full if full else self._latest).get(view.id)
        if kept is None:
            return None
        stats, layer, kept_full = kept
        if stats.view is not view or full > kept_full:
            return None
        if _running(view) and stats.timestamp_ns < since_ns:
            return None
        measured = self.meter.get(view.id)
        if layer is not measured:
            stats = replace(stats, layer=self._layer(view.id, view.record.info.upper_dir))
            for latest in (self._latest, self._latest_full):
                if latest.get(view.id) is kept:
                    latest[view.id] = (stats, measured, kept_full)
            self._container_changes += 1
        return stats

    def _track_layer(self, view: ContainerView) -> None:
        self.meter.track(view.id, view.record.info.upper_dir)

    def _container(
        self, view: ContainerView, reading: tuple[int, cgroups.Usage] | None
    ) -> ContainerStats:
        layer = self._layer(view.id, view.record.info.upper_dir)
        if reading is None:
            return ContainerStats(view=view, layer=layer, timestamp_ns=time.time_ns())
        ts, usage = reading
        return ContainerStats(
            cgroup=self._cgroup_name(view.id),
            view=view,
            cpu=self._cpu_of(view.id, ts, usage, view.started_at_ns),
            memory=_memory(ts, usage),
            swap=_swap(ts, usage),
            layer=layer,
            usage=usage,
            timestamp_ns=ts,
        )

    def _layer(self, container_id: str, upper_dir: str) -> Layer | None:
        measured: LayerUsage | None = self.meter.get(container_id)
        if measured is None:
            return None
        return Layer(
            measured.measured_at_ns,
            self._mountpoints.get(upper_dir, ""),
            measured.bytes,
            measured.inodes,
        )

    # -- pods ---------------------------------------------------------------------------

    async def pods_stats(
        self, views: Sequence[SandboxView], full: bool = False, max_age_ns: int = 0
    ) -> list[PodStats]:
        """Stats of these pods; readings may be up to max_age_ns old (0: read now)."""
        since = _oldest_usable(max_age_ns)
        every = views is self.sandboxes.list()
        everyone = self.containers.list()
        if every:
            kept = self._reuse(
                self._listed_pods, views, everyone, full, since, self._generation(True)
            )
            if kept is not None:
                return kept
        members: dict[str, list[ContainerView]] = {v.id: [] for v in views}
        for c in everyone:
            if c.sandbox_id in members:
                members[c.sandbox_id].append(c)
        # Over every pod, every container: the same list a ListContainerStats reuses.
        containers = await self.containers_stats(
            everyone if every else [c for m in members.values() for c in m], full, max_age_ns
        )
        by_id = {s.view.id: s for s in containers}
        have: dict[str, _PodReading] = {}  # held here, as the containers' (above)
        stale = []
        for view in views:
            reading = self._pod_reading(view, full, since)
            if reading is None:
                stale.append(view)
            else:
                have[view.id] = reading
        if stale:
            fresh = await asyncio.to_thread(self._read_pods, stale, full)
            for view in stale:
                reading = fresh.get(view.id) or _PodReading(None, None, None, time.time_ns(), full)
                self._pod_readings[view.id] = (view, reading)
                if full:
                    self._pod_readings_full[view.id] = (view, reading)
                have[view.id] = reading
            self._pod_changes += 1
        built = self._pods_full if full else self._pods
        out = []
        async for view in tasks.in_steps(views, BUILD_YIELD_EVERY):
            stats = tuple(by_id[c.id] for c in members[view.id])
            reading = have[view.id]
            kept = built.get(view.id)
            if (
                kept is not None
                # By record: get() makes a view per call, a new checkpoint a new view.
                and kept.view.record is view.record
                and kept.timestamp_ns == reading.timestamp_ns
                and len(kept.containers) == len(stats)
                and all(a is b for a, b in zip(kept.containers, stats, strict=True))
            ):
                out.append(kept)
                continue
            pod = self._pod(view, reading, stats)
            built[view.id] = pod
            out.append(pod)
        if every:
            oldest = min(
                [p.timestamp_ns for p in out if p.view.ready]
                + [s.timestamp_ns for s in containers if _running(s.view)],
                default=1 << 63,
            )
            self._listed_pods = _Listed(views, everyone, full, self._generation(True), oldest, out)
        return out

    def _pod_reading(self, view: SandboxView, full: bool, since_ns: int) -> _PodReading | None:
        kept = (self._pod_readings_full if full else self._pod_readings).get(view.id)
        if kept is None or kept[0].record is not view.record or full > kept[1].full:
            return None
        if view.ready and kept[1].timestamp_ns < since_ns:
            return None
        return kept[1]

    def _pod(
        self, view: SandboxView, reading: _PodReading, stats: tuple[ContainerStats, ...]
    ) -> PodStats:
        pause, pod_usage, ts = reading.pause, reading.pod, reading.timestamp_ns
        if pod_usage is None and view.ready:
            running = [s.usage for s in stats if s.usage is not None]
            pod_usage = _sum([*running, *([pause] if pause is not None else [])])
        return PodStats(
            view=view,
            cpu=self._cpu_of(f"pod:{view.id}", ts, pod_usage, view.created_at_ns)
            if pod_usage
            else None,
            memory=_memory(ts, pod_usage) if pod_usage else None,
            network=reading.network,
            processes=pod_usage.processes if pod_usage else None,
            containers=stats,
            pause=pause,
            timestamp_ns=ts,
            cgroup=self._cgroup_name(view.id),
        )

    def _cgroup_name(self, key: str) -> str:
        known = self._handles.get(key)
        return known[1].paths.name if known and known[1] else ""

    def filesystem(self, upper_dir: str) -> Filesystem:
        """The filesystem a writable layer lives on (mount point and its source device)."""
        return Filesystem(self._mountpoints.get(upper_dir, ""), self._devices.get(upper_dir, ""))

    # -- reading (worker thread) ------------------------------------------------------

    def _handle(self, key: str, pid: int) -> cgroups.Handle | None:
        known = self._handles.get(key)
        if known is not None and known[0] == pid:
            return known[1]
        if known is not None and known[1] is not None:
            known[1].close()  # a new process: its cgroup may differ
        paths = cgroups.locate(pid, cgroups.host_mounts())
        handle = cgroups.Handle(paths) if paths is not None else None
        self._handles[key] = (pid, handle)
        return handle

    def _pod_handle(self, view: SandboxView) -> cgroups.Handle | None:
        """The pod cgroup the kubelet made: the parent of the pause container's."""
        key = f"podcg:{view.id}"
        known = self._handles.get(key)
        if known is not None and known[0] == view.pid:
            return known[1]
        if known is not None and known[1] is not None:
            known[1].close()
        pause = self._handle(view.id, view.pid)
        handle = cgroups.Handle(pause.paths.parent()) if pause is not None else None
        self._handles[key] = (view.pid, handle)
        return handle

    def _read_one(self, key: str, pid: int, full: bool) -> tuple[int, cgroups.Usage] | None:
        handle = self._handle(key, pid)
        if handle is None:
            return None
        usage = cgroups.read(handle, full)
        if usage.cpu_ns is None and usage.memory_usage is None:
            handle.close()  # the process ended meanwhile
            self._handles.pop(key, None)
            return None
        return time.time_ns(), usage

    def _read_many(
        self, targets: list[tuple[str, int]], upper_dirs: list[str], full: bool
    ) -> dict[str, tuple[int, cgroups.Usage]]:
        out = {}
        with self._lock:
            for key, pid in targets:
                if pid > 0:
                    reading = self._read_one(key, pid, full)
                    if reading is not None:
                        out[key] = reading
        self._learn_mountpoints(upper_dirs)
        return out

    def _read_pods(self, views: list[SandboxView], full: bool) -> dict[str, _PodReading]:
        with self._lock:
            return self._read_pods_locked(views, full)

    def _read_pods_locked(self, views: list[SandboxView], full: bool) -> dict[str, _PodReading]:
        out = {}
        for view in views:
            if not view.ready or view.pid <= 0:
                continue
            pod = self._pod_handle(view) if view.cgroup_parent else None
            pause = None
            # With a pod cgroup, the pause's own reading serves only the metrics (full).
            if pod is None or full:
                reading = self._read_one(view.id, view.pid, full)
                pause = reading[1] if reading else None
            pod_usage = cgroups.read(pod, full) if pod is not None else None
            network = None
            if not view.host_network:
                interfaces = self._netdev(view).read()
                if interfaces is not None:
                    network = Network(time.time_ns(), tuple(interfaces))
            out[view.id] = _PodReading(pause, pod_usage, network, time.time_ns(), full)
        return out

    def _netdev(self, view: SandboxView) -> netdev.Reader:
        key = f"net:{view.id}"
        reader = self._netdevs.get(key)
        if reader is None or reader.pid != view.pid:
            if reader is not None:
                reader.close()
            reader = self._netdevs[key] = netdev.Reader(view.pid)
        return reader

    def _learn_mountpoints(self, upper_dirs: list[str]) -> None:
        """The filesystem each writable layer lives on (FilesystemIdentifier.mountpoint)."""
        wanted = [d for d in upper_dirs if d and d not in self._mountpoints]
        if not wanted:
            return
        sources: dict[str, str] = {}
        with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                rfields = right.split()
                sources[left.split()[4]] = rfields[1] if len(rfields) > 1 else ""
        for directory in wanted:
            best = max(
                (p for p in sources if directory == p or directory.startswith(p.rstrip("/") + "/")),
                key=len,
                default="/",
            )
            self._mountpoints[directory] = best
            self._devices[directory] = sources.get(best, "")

    # -- cpu rate -------------------------------------------------------------------------

    def _cpu_of(self, key: str, ts: int, usage: cgroups.Usage, started_ns: int) -> Cpu | None:
        if usage.cpu_ns is None:
            return None
        history = self._cpu.setdefault(key, deque(maxlen=HISTORY))
        nano_cores = None
        earlier = [(then, value) for then, value in history if ts - then >= MIN_WINDOW_NS]
        then, value = earlier[-1] if earlier else (started_ns, 0)
        if 0 < then < ts and usage.cpu_ns >= value:
            nano_cores = (usage.cpu_ns - value) * 1_000_000_000 // (ts - then)
        if not history or ts - history[-1][0] >= MIN_WINDOW_NS:
            history.append((ts, usage.cpu_ns))
        return Cpu(ts, usage.cpu_ns, nano_cores)

    def _live_keys(self) -> set[str]:
        ids = {v.id for v in self.containers.list()} | {v.id for v in self.sandboxes.list()}
        for key in [k for k in self.meter.tracked() if k not in ids]:
            self.meter.forget(key)
        self._cpu = {k: v for k, v in self._cpu.items() if k.removeprefix("pod:") in ids}
        kept_maps = (
            self._latest,
            self._latest_full,
            self._pod_readings,
            self._pod_readings_full,
            self._pods,
            self._pods_full,
        )
        for kept in kept_maps:
            for key in [k for k in kept if k not in ids]:
                del kept[key]
        # A pod's net/dev file holds its network namespace: kept only while the pod runs.
        running = {f"net:{v.id}" for v in self.sandboxes.list() if v.ready}
        return ids | {f"podcg:{i}" for i in ids} | running

    def _forget_gone(self, live: set[str]) -> None:
        """Close the handles of containers and pods that no longer exist (worker thread)."""
        with self._lock:
            for key in [k for k in self._handles if k not in live]:
                _, handle = self._handles.pop(key)
                if handle is not None:
                    handle.close()
            for key in [k for k in self._netdevs if k not in live]:
                self._netdevs.pop(key).close()


def _oldest_usable(max_age_ns: int) -> int:
    """The earliest reading time a call may use: with max_age_ns 0, none already taken."""
    now = time.time_ns()
    return now - max_age_ns if max_age_ns else now + 1


def _running(view: ContainerView) -> bool:
    return view.state == "running"


def _memory(ts: int, usage: cgroups.Usage) -> Memory:
    available = None
    if usage.memory_limit is not None and usage.memory_working_set is not None:
        available = max(0, usage.memory_limit - usage.memory_working_set)
    return Memory(
        timestamp_ns=ts,
        usage=usage.memory_usage,
        working_set=usage.memory_working_set,
        available=available,
        rss=usage.memory_rss,
        page_faults=usage.page_faults,
        major_page_faults=usage.major_page_faults,
    )


def _swap(ts: int, usage: cgroups.Usage) -> Swap | None:
    if usage.swap_usage is None:
        return None
    available = None
    if usage.swap_limit is not None:
        available = max(0, usage.swap_limit - usage.swap_usage)
    return Swap(ts, usage.swap_usage, available)
