"""Stats, metrics and events: ContainerStats, PodSandboxStats (List/Stream), the cAdvisor
metrics (ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics) and
GetContainerEvents. Translation only: the numbers come from crishim.stats."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from crishim.api.runtime import v1 as api
from crishim.common import errors, tasks
from crishim.pods.containers import Containers, ContainerView
from crishim.pods.events import CREATED, DELETED, STARTED, STOPPED, EventHub
from crishim.pods.sandboxes import Sandboxes, SandboxView
from crishim.server import protowire as w
from crishim.server import sending
from crishim.server.container import selected
from crishim.server.listing import WireEntries, chunks
from crishim.server.sandbox import to_sandbox_status
from crishim.stats import collector, metrics, netdev

_EVENT_TYPES = {
    CREATED: api.ContainerEventType.CONTAINER_CREATED_EVENT,
    STARTED: api.ContainerEventType.CONTAINER_STARTED_EVENT,
    STOPPED: api.ContainerEventType.CONTAINER_STOPPED_EVENT,
    DELETED: api.ContainerEventType.CONTAINER_DELETED_EVENT,
}
_GAUGE = 1  # MetricType: COUNTER = 0 (the default, not written), GAUGE = 1

# Responses are written in wire form (server/protowire.py): betterproto2 needs
# ~0.5 ms per ContainerStats. Field numbers are the CRI schema's (protos/).


def _cpu(cpu: collector.Cpu | None) -> bytes | None:
    if cpu is None:
        return None  # CpuUsage: timestamp 1, usage_core_nano_seconds 2, usage_nano_cores 3
    return (
        w.uint(1, cpu.timestamp_ns)
        + w.uint64_value(2, cpu.usage_ns)
        + w.uint64_value(3, cpu.nano_cores)
    )


def _memory(m: collector.Memory | None) -> bytes | None:
    if m is None:
        return None  # MemoryUsage: timestamp 1, working_set 2, available 3, usage 4, rss 5, ...
    return (
        w.uint(1, m.timestamp_ns)
        + w.uint64_value(2, m.working_set)
        + w.uint64_value(3, m.available)
        + w.uint64_value(4, m.usage)
        + w.uint64_value(5, m.rss)
        + w.uint64_value(6, m.page_faults)
        + w.uint64_value(7, m.major_page_faults)
    )


def container_attributes(v: ContainerView) -> bytes:
    """ContainerAttributes: id 1, metadata 2, labels 3, annotations 4."""
    return (
        w.string(1, v.id)
        + w.message(2, w.string(1, v.meta.name) + w.uint(2, v.meta.attempt))
        + w.string_map(3, v.labels)
        + w.string_map(4, v.annotations)
    )


def container_stats(s: collector.ContainerStats, attributes: bytes | None = None) -> bytes:
    """A ContainerStats message: attributes 1, cpu 2, memory 3, writable_layer 4, swap 5.

    `attributes` is field 1 already written (the same for every reading of a view).
    """
    if attributes is None:
        attributes = w.message(1, container_attributes(s.view))
    layer = None
    if s.layer is not None:  # FilesystemUsage: timestamp 1, fs_id 2, used_bytes 3, inodes 4
        layer = (
            w.uint(1, s.layer.timestamp_ns)
            + w.message(2, w.string(1, s.layer.mountpoint))
            + w.uint64_value(3, s.layer.bytes)
            + w.uint64_value(4, s.layer.inodes)
        )
    swap = None
    if s.swap is not None:  # SwapUsage: timestamp 1, available 2, usage 3
        swap = (
            w.uint(1, s.swap.timestamp_ns)
            + w.uint64_value(2, s.swap.available)
            + w.uint64_value(3, s.swap.usage)
        )
    return (
        attributes
        + w.optional_message(2, _cpu(s.cpu))
        + w.optional_message(3, _memory(s.memory))
        + w.optional_message(4, layer)
        + w.optional_message(5, swap)
    )


def _interface(i: netdev.Interface) -> bytes:
    """NetworkInterfaceUsage: name 1, rx_bytes 2, rx_errors 3, tx_bytes 4, tx_errors 5."""
    return (
        w.string(1, i.name)
        + w.uint64_value(2, i.rx_bytes)
        + w.uint64_value(3, i.rx_errors)
        + w.uint64_value(4, i.tx_bytes)
        + w.uint64_value(5, i.tx_errors)
    )


def pod_attributes(v: SandboxView) -> bytes:
    """PodSandboxAttributes: id 1, metadata 2, labels 3, annotations 4."""
    m = v.meta
    return (
        w.string(1, v.id)
        + w.message(
            2,
            w.string(1, m.name)
            + w.string(2, m.uid)
            + w.string(3, m.namespace)
            + w.uint(4, m.attempt),
        )
        + w.string_map(3, v.labels)
        + w.string_map(4, v.annotations)
    )


def pod_stats(p: collector.PodStats, member=None, attributes: bytes | None = None) -> bytes:
    """A PodSandboxStats message: attributes 1, linux 2.

    `member(c)` gives a container's whole LinuxPodSandboxStats.containers entry
    (field 5 included), e.g. from a cache; by default it is encoded here.
    `attributes` is field 1 already written.
    """
    if attributes is None:
        attributes = w.message(1, pod_attributes(p.view))
    network = None
    if p.network is not None:  # NetworkUsage: timestamp 1, default_interface 2, interfaces 3
        default = [i for i in p.network.interfaces if i.name == p.network.default]
        others = [i for i in p.network.interfaces if i.name != p.network.default]
        network = (
            w.uint(1, p.network.timestamp_ns)
            + (w.message(2, _interface(default[0])) if default else b"")
            + w.repeated(3, (_interface(i) for i in others))
        )
    process = None
    if p.processes is not None:  # ProcessUsage: timestamp 1, process_count 2
        process = w.uint(1, p.timestamp_ns) + w.uint64_value(2, p.processes)
    linux = (  # LinuxPodSandboxStats: cpu 1, memory 2, network 3, process 4, containers 5
        w.optional_message(1, _cpu(p.cpu))
        + w.optional_message(2, _memory(p.memory))
        + w.optional_message(3, network)
        + w.optional_message(4, process)
        + (
            b"".join(member(c) for c in p.containers)
            if member is not None
            else w.repeated(5, (container_stats(c) for c in p.containers))
        )
    )
    return attributes + w.message(2, linux)


# Metric: name 1, timestamp 2, metric_type 3, label_values 4, value 5. At 200 pods a
# call encodes ~10 000 metrics, so each is a join of parts made once: the name and the
# type per descriptor, the base label values per container, a timestamp per reading,
# a metric's own label values (cpu, device, interface) per distinct tuple.
_NAMES = {d.name: w.string(1, d.name) for d in metrics.DESCRIPTORS}
_TYPES = {d.name: w.uint(3, _GAUGE if d.kind == metrics.GAUGE else 0) for d in metrics.DESCRIPTORS}
_BASE = len(metrics.BASE_LABELS)
_METRIC = w.key(2, w.LEN)  # ContainerMetrics.metrics / PodSandboxMetrics.metrics
_VALUE, _ZERO = w.key(5, w.LEN), w.message(5, b"")  # UInt64Value: zero is an empty one
_VALUE_FIELD = w.key(1, w.VARINT)
_EXTRAS: dict[tuple[str, ...], bytes] = {}  # a metric's own label values, encoded


def _extra(values: tuple[str, ...]) -> bytes:
    encoded = _EXTRAS.get(values)
    if encoded is None:
        if len(_EXTRAS) > 4096:  # interface and device names: a handful per node
            _EXTRAS.clear()
        encoded = _EXTRAS[values] = w.strings(4, values)
    return encoded


def _metric_entries(
    samples: Sequence[metrics.Sample], who: metrics.ContainerIdentity, out: list[bytes]
) -> int:
    """Append the Metric entries (field 2) of one container's samples, all labelled as
    `who`, to `out` in parts; return their size. Joined once, with their pod's."""
    base = w.strings(4, who.values())
    stamps: dict[int, bytes] = {}
    varint, small = w.varint, w.SMALL
    size = 0
    for name, _kind, labels, value, ts in samples:
        stamp = stamps.get(ts)
        if stamp is None:
            stamp = stamps[ts] = w.uint(2, ts)
        if value > 0:
            number = varint(value)
            wrapped = _VALUE + small[len(number) + 1] + _VALUE_FIELD + number
        else:
            wrapped = _ZERO
        extra = _extra(labels[_BASE:]) if len(labels) > _BASE else b""
        body = b"".join((_NAMES[name], stamp, _TYPES[name], base, extra, wrapped))
        length = varint(len(body))
        out += (_METRIC, length, body)
        size += 1 + len(length) + len(body)
    return size


_CONTAINER_METRICS = w.key(3, w.LEN)
METRICS_YIELD_EVERY = 25  # pods (~2 ms of encoding) between a scrape's yields to the loop


def pod_metrics(
    pod_id: str,
    pause: tuple[metrics.ContainerIdentity, Sequence[metrics.Sample]],
    containers: Sequence[tuple[str, metrics.ContainerIdentity, Sequence[metrics.Sample]]],
) -> bytes:
    """One PodSandboxMetrics (pod_sandbox_id 1, metrics 2, container_metrics 3, each a
    ContainerMetrics: container_id 1, metrics 2), joined once from its parts."""
    out = [w.string(1, pod_id)]
    _metric_entries(pause[1], pause[0], out)
    for container_id, who, samples in containers:
        parts = [w.string(1, container_id)]
        size = len(parts[0]) + _metric_entries(samples, who, parts)
        out += (_CONTAINER_METRICS, w.varint(size))
        out += parts
    return b"".join(out)


# A list entry (field 1) and a pod's member entry (field 5) differ in their key
# byte only: a member is made from the container's list entry. So do an event's
# container status (field 5) and PodSandboxStatus's (field 3).
_ENTRY_KEY, _MEMBER_KEY = w.key(1, w.LEN), w.key(5, w.LEN)
_EVENT_STATUS_KEY = w.key(5, w.LEN)  # ContainerEventResponse.containers_statuses
assert len(_ENTRY_KEY) == len(_MEMBER_KEY) == len(_EVENT_STATUS_KEY) == len(w.key(3, w.LEN)) == 1


class StatsEntries:
    """The stats lists in wire form: each entry encoded once per stats object (the
    collector keeps one while nothing it shows changed), attributes once per view,
    and the last answer of each list kept while the collector returns that very list."""

    def __init__(self) -> None:
        self.containers = WireEntries(1)  # ListContainerStatsResponse.stats
        self.pods = WireEntries(1)  # ListPodSandboxStatsResponse.stats
        self._container_attributes = WireEntries(1)  # ContainerStats.attributes
        self._pod_attributes = WireEntries(1)  # PodSandboxStats.attributes
        # pod id -> (what its metrics entry shows, the entry: ListPodSandboxMetricsResponse
        # field 1, the reading last asked for: the same one shows the same)
        self._metrics: dict[str, tuple[tuple, bytes, collector.PodStats]] = {}
        # kind -> (the collector's list, its entries, their join)
        self._answers: dict[str, tuple[object, list[bytes], bytes]] = {}
        self._asked_at: dict[str, float] = {}  # kind -> monotonic time of its last call

    def asked(self, kind: str) -> None:
        self._asked_at[kind] = time.monotonic()

    def wanted(self, kind: str) -> bool:
        """Asked for within the collector's demand window (worth encoding ahead)."""
        return time.monotonic() - self._asked_at.get(kind, -1e9) < collector.DEMAND_WINDOW

    def container(self, s: collector.ContainerStats) -> bytes:
        v = s.view
        attributes = self._container_attributes.entry(v.id, v, lambda: container_attributes(v))
        return self.containers.entry(v.id, s, lambda: container_stats(s, attributes))

    def member(self, s: collector.ContainerStats) -> bytes:
        return _MEMBER_KEY + self.container(s)[1:]

    def pod(self, p: collector.PodStats) -> bytes:
        v = p.view
        attributes = self._pod_attributes.entry(v.id, v, lambda: pod_attributes(v))
        return self.pods.entry(v.id, p, lambda: pod_stats(p, self.member, attributes))

    def answered(self, kind: str, found: list) -> bool:
        """Whether the kept answer of this list is the one for `found`."""
        kept = self._answers.get(kind)
        return kept is not None and kept[0] is found

    def answer(self, kind: str, found: list, encode) -> tuple[list[bytes], bytes]:
        """The entries of `found` and their join, reused while `found` is the same list."""
        kept = self._answers.get(kind)
        if kept is None or kept[0] is not found:
            entries = [encode(x) for x in found]
            kept = self._answers[kind] = (found, entries, b"".join(entries))
        return kept[1], kept[2]

    def prune(self, containers: Sequence[ContainerView], pods: Sequence[SandboxView]) -> None:
        """Drop the entries of objects gone (once they outnumber the live ones)."""
        for cache in (self.containers, self._container_attributes):
            cache.prune(lambda: [c.id for c in containers], len(containers))
        for cache in (self.pods, self._pod_attributes):
            cache.prune(lambda: [p.id for p in pods], len(pods))
        if len(self._metrics) > 2 * len(pods) + 64:
            alive = {p.id for p in pods}
            self._metrics = {k: v for k, v in self._metrics.items() if k in alive}

    def has_metrics(self, p: collector.PodStats) -> bool:
        kept = self._metrics.get(p.view.id)
        return kept is not None and (kept[2] is p or kept[0] == _shown_by_metrics(p))

    def metrics(self, p: collector.PodStats, encode) -> bytes:
        """The pod's metrics entry, encoded once per reading it shows."""
        kept = self._metrics.get(p.view.id)
        if kept is not None and kept[2] is p:  # the same (frozen) reading: what it shows too
            return kept[1]
        shown = _shown_by_metrics(p)
        if kept is None or kept[0] != shown:
            kept = (shown, w.message(1, encode(p)), p)
        else:
            kept = (shown, kept[1], p)
        self._metrics[p.view.id] = kept
        return kept[1]


def _shown_by_metrics(p: collector.PodStats) -> tuple:
    """What a pod's metrics entry shows, but for its containers' writable layers. The
    meter renews each layer alone every 30 s (collector: _current), which would make a
    new entry for nearly every pod between the round that encoded them and the scrape;
    so an entry shows the layers as of the full reading it was made from, and the next
    full round's entry the newer ones (cAdvisor measured layers once a minute)."""
    return (
        p.view.record,
        p.timestamp_ns,
        p.cgroup,
        tuple((c.view.record, c.timestamp_ns, c.cgroup) for c in p.containers),
    )


def _every_container(f: api.ContainerStatsFilter | None) -> bool:
    return f is None or not (f.id or f.pod_sandbox_id or f.label_selector)


def _every_pod(f: api.PodSandboxStatsFilter | None) -> bool:
    return f is None or not (f.id or f.label_selector)


def _pod_matches(v: SandboxView, f: api.PodSandboxStatsFilter | None) -> bool:
    if f is None:
        return True
    if f.id and not v.id.startswith(f.id):
        return False
    return all(v.labels.get(k) == val for k, val in f.label_selector.items())


class StatsRPCs:
    """The stats, metrics and events part of RuntimeService (mixed into it)."""

    _containers: Containers
    _sandboxes: Sandboxes
    _stats: collector.StatsCollector
    _events: EventHub
    _stats_entries: StatsEntries
    # ContainerRPCs': a sandbox's container statuses, in wire form, under a given key
    _statuses_in: Callable[[str, bytes | None], Awaitable[bytes]]

    async def warm_stats_lists(self, metrics: bool = False) -> None:
        """After a sampler round (collector.on_sample): encode the unfiltered lists asked
        for lately, and with `metrics` (after a full round a scrape may follow) every
        pod's metrics, so that the next calls find their answer made. The entries are
        encoded a few at a time, yielding between, so that a call arriving meanwhile
        waits for a few entries (~1 ms), not for both lists (~5-10 ms at 200 pods)
        or a whole scrape (~30 ms)."""
        entries = self._stats_entries
        if entries.wanted("containers"):
            await self._container_stats(None)  # kept by StatsEntries
        if entries.wanted("pods"):
            await self._pod_stats(None)
        if metrics:
            await self._pod_metrics()

    # -- containers ------------------------------------------------------------------

    async def container_stats(
        self, message: api.ContainerStatsRequest
    ) -> api.ContainerStatsResponse:
        if not message.container_id:
            raise errors.InvalidArgument("container_id is required")
        view = self._containers.get(message.container_id)
        (stats,) = await self._stats.containers_stats([view])
        return w.Encoded(w.message(1, container_stats(stats)))  # type: ignore[return-value]

    async def _container_stats(
        self, f: api.ContainerStatsFilter | None, age: int = collector.LIST_MAX_AGE_NS
    ) -> tuple[list[bytes], bytes]:
        """Wire entries (field 1) of the selected containers' stats, from readings at most
        `age` old, and their join."""
        everyone = self._containers.list()
        views = everyone if _every_container(f) else [v for v in everyone if selected(v, f)]
        found = await self._stats.containers_stats(views, max_age_ns=age)
        entries = self._stats_entries
        answer = await self._answer("containers", found, entries.container)
        entries.prune(everyone, self._sandboxes.list())
        return answer

    async def _answer(self, kind: str, found: list, encode) -> tuple[list[bytes], bytes]:
        """StatsEntries.answer, with a new list's entries encoded a few at a time first,
        yielding between: a call that finds a round's reading before the round's own
        encoding (warm_stats_lists) made them held the loop for all of them (10-14 ms
        in one step at 200 pods)."""
        if not self._stats_entries.answered(kind, found):
            async for x in tasks.in_steps(found, collector.BUILD_YIELD_EVERY):
                encode(x)  # kept by StatsEntries: the answer below joins them
        return self._stats_entries.answer(kind, found, encode)

    def _asked(self, kind: str) -> int:
        """A client's list call of `kind`: how old its readings may be."""
        self._stats.asked()
        self._stats_entries.asked(kind)
        return self._stats.list_age(kind)

    async def list_container_stats(
        self, message: api.ListContainerStatsRequest
    ) -> api.ListContainerStatsResponse:
        age = self._asked("containers")
        _, joined = await self._container_stats(message.filter, age)
        self._stats.answered("containers")
        return w.Encoded(joined)  # type: ignore[return-value]

    async def stream_container_stats(
        self, message: api.StreamContainerStatsRequest
    ) -> AsyncIterator[api.StreamContainerStatsResponse]:
        age = self._asked("containers")
        items, _ = await self._container_stats(message.filter, age)
        self._stats.answered("containers")
        for chunk in chunks(items):
            yield w.Encoded(b"".join(chunk))  # type: ignore[misc]

    # -- pods --------------------------------------------------------------------------

    async def pod_sandbox_stats(
        self, message: api.PodSandboxStatsRequest
    ) -> api.PodSandboxStatsResponse:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        view = self._sandboxes.get(message.pod_sandbox_id)
        (stats,) = await self._stats.pods_stats([view])
        return w.Encoded(w.message(1, pod_stats(stats)))  # type: ignore[return-value]

    async def _pod_stats(
        self, f: api.PodSandboxStatsFilter | None, age: int = collector.LIST_MAX_AGE_NS
    ) -> tuple[list[bytes], bytes]:
        """Wire entries (field 1) of the selected pods' stats, from readings at most `age`
        old, and their join."""
        everyone = self._sandboxes.list()
        views = everyone if _every_pod(f) else [v for v in everyone if _pod_matches(v, f)]
        found = await self._stats.pods_stats(views, max_age_ns=age)
        entries = self._stats_entries
        answer = await self._answer("pods", found, entries.pod)
        entries.prune(self._containers.list(), everyone)
        return answer

    async def list_pod_sandbox_stats(
        self, message: api.ListPodSandboxStatsRequest
    ) -> api.ListPodSandboxStatsResponse:
        age = self._asked("pods")
        _, joined = await self._pod_stats(message.filter, age)
        self._stats.answered("pods")
        return w.Encoded(joined)  # type: ignore[return-value]

    async def stream_pod_sandbox_stats(
        self, message: api.StreamPodSandboxStatsRequest
    ) -> AsyncIterator[api.StreamPodSandboxStatsResponse]:
        age = self._asked("pods")
        items, _ = await self._pod_stats(message.filter, age)
        self._stats.answered("pods")
        for chunk in chunks(items):
            yield w.Encoded(b"".join(chunk))  # type: ignore[misc]

    # -- metrics -------------------------------------------------------------------------

    async def list_metric_descriptors(
        self, message: api.ListMetricDescriptorsRequest
    ) -> api.ListMetricDescriptorsResponse:
        return api.ListMetricDescriptorsResponse(
            descriptors=[
                api.MetricDescriptor(name=d.name, help=d.help, label_keys=list(d.label_keys))
                for d in metrics.DESCRIPTORS
            ]
        )

    def _metrics_of(self, pod: collector.PodStats) -> bytes:
        v = pod.view
        info = v.info
        pause = metrics.ContainerIdentity(
            container="POD",
            id=pod.cgroup,
            image=str(info.get("image", "")),
            name=str(info.get("name", "")),
            namespace=v.meta.namespace,
            pod=v.meta.name,
        )
        per_container = []
        for c in pod.containers:
            who = metrics.ContainerIdentity(
                container=c.view.meta.name,
                id=c.cgroup,
                image=c.view.image,
                name=c.view.record.info.name,
                namespace=v.meta.namespace,
                pod=v.meta.name,
            )
            device = self._stats.filesystem(c.view.record.info.upper_dir).device
            per_container.append((c.view.id, who, metrics.container_samples(who, c, device)))
        return pod_metrics(v.id, (pause, metrics.pause_samples(pause, pod)), per_container)

    async def _pod_metrics(self) -> list[bytes]:
        """Wire entries (field 1) of every pod's metrics, from the latest full reading.
        An entry is encoded once per reading (StatsEntries.metrics): after the round
        that encoded them (warm_stats_lists), a scrape joins what is made. The join is
        not kept: ~15 KB per pod, it would double what the entries hold, and making it
        again costs ~0.1 ms at 200 pods."""
        everyone = self._sandboxes.list()
        age = collector.METRICS_MAX_AGE_NS
        found = await self._stats.pods_stats(everyone, full=True, max_age_ns=age)
        entries = self._stats_entries
        # Other calls go on while a large node's scrape (or round) encodes.
        new = [p for p in found if not entries.has_metrics(p)]
        async for pod in tasks.in_steps(new, METRICS_YIELD_EVERY):
            entries.metrics(pod, self._metrics_of)
        out = [entries.metrics(p, self._metrics_of) for p in found]
        entries.prune(self._containers.list(), everyone)
        return out

    async def list_pod_sandbox_metrics_rpc(self, stream: Any) -> None:
        """ListPodSandboxMetrics, in place of the generated handler (RuntimeService.
        __mapping__): the answer goes out from its entries, not joined
        (crishim.server.sending)."""
        request = await stream.recv_message()
        assert request is not None  # unary: grpclib has answered an empty stream already
        self._stats.metrics_asked()
        await sending.send_unary_parts(stream, await self._pod_metrics())

    async def stream_pod_sandbox_metrics(
        self, message: api.StreamPodSandboxMetricsRequest
    ) -> AsyncIterator[api.StreamPodSandboxMetricsResponse]:
        self._stats.metrics_asked()
        for chunk in chunks(await self._pod_metrics()):
            yield w.Encoded(b"".join(chunk))  # type: ignore[misc]

    # -- events ----------------------------------------------------------------------------

    async def get_container_events(
        self, message: api.GetEventsRequest
    ) -> AsyncIterator[api.ContainerEventResponse]:
        async for event in self._events.subscribe():
            sandbox = None
            with contextlib.suppress(errors.NotFound):
                sandbox = to_sandbox_status(self._sandboxes.get(event.sandbox_id))
            head = api.ContainerEventResponse(
                container_id=event.container_id,
                container_event_type=_EVENT_TYPES[event.kind],
                created_at=event.created_at_ns,
                pod_sandbox_status=sandbox,
            )
            # containers_statuses (field 5): PodSandboxStatus's cached entries, re-keyed
            statuses = await self._statuses_in(event.sandbox_id, _EVENT_STATUS_KEY)
            yield w.Encoded(bytes(head) + statuses)  # type: ignore[misc]
