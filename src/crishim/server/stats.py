"""Stats, metrics and events: ContainerStats, PodSandboxStats (List/Stream), the cAdvisor
metrics (ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics) and
GetContainerEvents. Translation only: the numbers come from crishim.stats."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from crishim import errors
from crishim.api.runtime import v1 as api
from crishim.containers import Containers, ContainerView
from crishim.events import CREATED, DELETED, STARTED, STOPPED, EventHub
from crishim.sandboxes import Sandboxes, SandboxView
from crishim.server.container import to_status
from crishim.server.listing import chunks
from crishim.server.sandbox import to_sandbox_status
from crishim.stats import collector, metrics

_EVENT_TYPES = {
    CREATED: api.ContainerEventType.CONTAINER_CREATED_EVENT,
    STARTED: api.ContainerEventType.CONTAINER_STARTED_EVENT,
    STOPPED: api.ContainerEventType.CONTAINER_STOPPED_EVENT,
    DELETED: api.ContainerEventType.CONTAINER_DELETED_EVENT,
}
_KINDS = {metrics.COUNTER: api.MetricType.COUNTER, metrics.GAUGE: api.MetricType.GAUGE}


def _u64(value: int | None) -> api.UInt64Value | None:
    return None if value is None else api.UInt64Value(value=max(0, value))


def _cpu(cpu: collector.Cpu | None) -> api.CpuUsage | None:
    if cpu is None:
        return None
    return api.CpuUsage(
        timestamp=cpu.timestamp_ns,
        usage_core_nano_seconds=_u64(cpu.usage_ns),
        usage_nano_cores=_u64(cpu.nano_cores),
    )


def _memory(m: collector.Memory | None) -> api.MemoryUsage | None:
    if m is None:
        return None
    return api.MemoryUsage(
        timestamp=m.timestamp_ns,
        working_set_bytes=_u64(m.working_set),
        available_bytes=_u64(m.available),
        usage_bytes=_u64(m.usage),
        rss_bytes=_u64(m.rss),
        page_faults=_u64(m.page_faults),
        major_page_faults=_u64(m.major_page_faults),
    )


def to_container_stats(s: collector.ContainerStats) -> api.ContainerStats:
    v = s.view
    layer = None
    if s.layer is not None:
        layer = api.FilesystemUsage(
            timestamp=s.layer.timestamp_ns,
            fs_id=api.FilesystemIdentifier(mountpoint=s.layer.mountpoint),
            used_bytes=_u64(s.layer.bytes),
            inodes_used=_u64(s.layer.inodes),
        )
    swap = None
    if s.swap is not None:
        swap = api.SwapUsage(
            timestamp=s.swap.timestamp_ns,
            swap_usage_bytes=_u64(s.swap.usage),
            swap_available_bytes=_u64(s.swap.available),
        )
    return api.ContainerStats(
        attributes=api.ContainerAttributes(
            id=v.id,
            metadata=api.ContainerMetadata(name=v.meta.name, attempt=v.meta.attempt),
            labels=v.labels,
            annotations=v.annotations,
        ),
        cpu=_cpu(s.cpu),
        memory=_memory(s.memory),
        writable_layer=layer,
        swap=swap,
    )


def _interface(i) -> api.NetworkInterfaceUsage:
    return api.NetworkInterfaceUsage(
        name=i.name,
        rx_bytes=_u64(i.rx_bytes),
        rx_errors=_u64(i.rx_errors),
        tx_bytes=_u64(i.tx_bytes),
        tx_errors=_u64(i.tx_errors),
    )


def to_pod_stats(p: collector.PodStats) -> api.PodSandboxStats:
    v = p.view
    network = None
    if p.network is not None:
        default = [i for i in p.network.interfaces if i.name == p.network.default]
        others = [i for i in p.network.interfaces if i.name != p.network.default]
        network = api.NetworkUsage(
            timestamp=p.network.timestamp_ns,
            default_interface=_interface(default[0]) if default else None,
            interfaces=[_interface(i) for i in others],
        )
    process = None
    if p.processes is not None:
        process = api.ProcessUsage(timestamp=p.timestamp_ns, process_count=_u64(p.processes))
    return api.PodSandboxStats(
        attributes=api.PodSandboxAttributes(
            id=v.id,
            metadata=api.PodSandboxMetadata(
                name=v.meta.name, uid=v.meta.uid, namespace=v.meta.namespace, attempt=v.meta.attempt
            ),
            labels=v.labels,
            annotations=v.annotations,
        ),
        linux=api.LinuxPodSandboxStats(
            cpu=_cpu(p.cpu),
            memory=_memory(p.memory),
            network=network,
            process=process,
            containers=[to_container_stats(c) for c in p.containers],
        ),
    )


def _container_matches(v: ContainerView, f: api.ContainerStatsFilter | None) -> bool:
    if f is None:
        return True
    if f.id and not v.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not v.sandbox_id.startswith(f.pod_sandbox_id):
        return False
    return all(v.labels.get(k) == val for k, val in f.label_selector.items())


def _pod_matches(v: SandboxView, f: api.PodSandboxStatsFilter | None) -> bool:
    if f is None:
        return True
    if f.id and not v.id.startswith(f.id):
        return False
    return all(v.labels.get(k) == val for k, val in f.label_selector.items())


def _metric(s: metrics.Sample) -> api.Metric:
    return api.Metric(
        name=s.name,
        timestamp=s.timestamp_ns,
        metric_type=_KINDS[s.kind],
        label_values=list(s.labels),
        value=api.UInt64Value(value=max(0, s.value)),
    )


class StatsRPCs:
    """The stats, metrics and events part of RuntimeService (mixed into it)."""

    _containers: Containers
    _sandboxes: Sandboxes
    _stats: collector.StatsCollector
    _events: EventHub

    # -- containers ------------------------------------------------------------------

    async def container_stats(
        self, message: api.ContainerStatsRequest
    ) -> api.ContainerStatsResponse:
        if not message.container_id:
            raise errors.InvalidArgument("container_id is required")
        view = self._containers.get(message.container_id)
        (stats,) = await self._stats.containers_stats([view])
        return api.ContainerStatsResponse(stats=to_container_stats(stats))

    async def _container_stats(
        self, f: api.ContainerStatsFilter | None
    ) -> list[api.ContainerStats]:
        views = [v for v in self._containers.list() if _container_matches(v, f)]
        return [to_container_stats(s) for s in await self._stats.containers_stats(views)]

    async def list_container_stats(
        self, message: api.ListContainerStatsRequest
    ) -> api.ListContainerStatsResponse:
        return api.ListContainerStatsResponse(stats=await self._container_stats(message.filter))

    async def stream_container_stats(
        self, message: api.StreamContainerStatsRequest
    ) -> AsyncIterator[api.StreamContainerStatsResponse]:
        for chunk in chunks(await self._container_stats(message.filter)):
            yield api.StreamContainerStatsResponse(container_stats=chunk)

    # -- pods --------------------------------------------------------------------------

    async def pod_sandbox_stats(
        self, message: api.PodSandboxStatsRequest
    ) -> api.PodSandboxStatsResponse:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        view = self._sandboxes.get(message.pod_sandbox_id)
        (stats,) = await self._stats.pods_stats([view])
        return api.PodSandboxStatsResponse(stats=to_pod_stats(stats))

    async def _pod_stats(self, f: api.PodSandboxStatsFilter | None) -> list[api.PodSandboxStats]:
        views = [v for v in self._sandboxes.list() if _pod_matches(v, f)]
        return [to_pod_stats(p) for p in await self._stats.pods_stats(views)]

    async def list_pod_sandbox_stats(
        self, message: api.ListPodSandboxStatsRequest
    ) -> api.ListPodSandboxStatsResponse:
        return api.ListPodSandboxStatsResponse(stats=await self._pod_stats(message.filter))

    async def stream_pod_sandbox_stats(
        self, message: api.StreamPodSandboxStatsRequest
    ) -> AsyncIterator[api.StreamPodSandboxStatsResponse]:
        for chunk in chunks(await self._pod_stats(message.filter)):
            yield api.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)

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

    async def _pod_metrics(self) -> list[api.PodSandboxMetrics]:
        out = []
        for pod in await self._stats.pods_stats(self._sandboxes.list()):
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
                samples = metrics.container_samples(who, c, device)
                per_container.append(
                    api.ContainerMetrics(
                        container_id=c.view.id, metrics=[_metric(s) for s in samples]
                    )
                )
            out.append(
                api.PodSandboxMetrics(
                    pod_sandbox_id=v.id,
                    metrics=[_metric(s) for s in metrics.pause_samples(pause, pod)],
                    container_metrics=per_container,
                )
            )
        return out

    async def list_pod_sandbox_metrics(
        self, message: api.ListPodSandboxMetricsRequest
    ) -> api.ListPodSandboxMetricsResponse:
        return api.ListPodSandboxMetricsResponse(pod_metrics=await self._pod_metrics())

    async def stream_pod_sandbox_metrics(
        self, message: api.StreamPodSandboxMetricsRequest
    ) -> AsyncIterator[api.StreamPodSandboxMetricsResponse]:
        for chunk in chunks(await self._pod_metrics()):
            yield api.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)

    # -- events ----------------------------------------------------------------------------

    async def get_container_events(
        self, message: api.GetEventsRequest
    ) -> AsyncIterator[api.ContainerEventResponse]:
        async for event in self._events.subscribe():
            sandbox = None
            with contextlib.suppress(errors.NotFound):
                sandbox = to_sandbox_status(self._sandboxes.get(event.sandbox_id))
            statuses = [
                to_status(c) for c in self._containers.list() if c.sandbox_id == event.sandbox_id
            ]
            yield api.ContainerEventResponse(
                container_id=event.container_id,
                container_event_type=_EVENT_TYPES[event.kind],
                created_at=event.created_at_ns,
                pod_sandbox_status=sandbox,
                containers_statuses=statuses,
            )
