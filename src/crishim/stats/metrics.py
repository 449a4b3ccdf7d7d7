"""cAdvisor's container metrics, from crishim's own stats, for the kubelet's /metrics/cadvisor.

With `PodAndContainerStatsFromCRI` the kubelet serves /metrics/cadvisor from
ListMetricDescriptors and ListPodSandboxMetrics instead of running cAdvisor.
Names, help and label sets are cAdvisor's (cadvisor/metrics/prometheus.go),
with the label set the kubelet gives cAdvisor's container metrics:
`container`, `id`, `image`, `name`, `namespace`, `pod`, then a metric's own
labels (`cpu`, `interface`, `device`). Label values as cAdvisor sets them for
a Docker container: `container` the CRI container name (`POD` for the
sandbox's pause container), `id` the cgroup path, `image` the image as
configured, `name` the Docker container name.

The CRI carries every value as an unsigned integer, so seconds are whole
seconds (as CRI-O reports them); bytes and counts are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from crishim.common import cgroups
from crishim.stats.collector import ContainerStats, Network, PodStats

BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")
COUNTER, GAUGE = "counter", "gauge"
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Descriptor:
    name: str
    help: str
    kind: str  # counter | gauge
    extra_labels: tuple[str, ...] = ()

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra_labels


class Sample(NamedTuple):  # ~10 000 per call at 200 pods: a tuple is made 4x faster
    name: str
    kind: str
    labels: tuple[str, ...]
    value: int
    timestamp_ns: int


@dataclass(frozen=True, slots=True)
class ContainerIdentity:
    """The base label values of one container (or of the pod's pause container)."""

    container: str
    id: str
    image: str
    name: str
    namespace: str
    pod: str

    def values(self) -> tuple[str, ...]:
        return (self.container, self.id, self.image, self.name, self.namespace, self.pod)


U = cgroups.Usage
_USAGE: list[tuple[Descriptor, Callable[[U], int | None]]] = [
    (
        Descriptor(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            COUNTER,
            ("cpu",),
        ),
        lambda u: u.cpu_ns // NS if u.cpu_ns is not None else None,
    ),
    (
        Descriptor(
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
            COUNTER,
        ),
        lambda u: u.cpu_user_ns // NS if u.cpu_user_ns is not None else None,
    ),
    (
        Descriptor(
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
            COUNTER,
        ),
        lambda u: u.cpu_system_ns // NS if u.cpu_system_ns is not None else None,
    ),
    (
        Descriptor(
            "container_cpu_cfs_periods_total",
            "Number of elapsed enforcement period intervals.",
            COUNTER,
        ),
        lambda u: u.cfs_periods,
    ),
    (
        Descriptor(
            "container_cpu_cfs_throttled_periods_total",
            "Number of throttled period intervals.",
            COUNTER,
        ),
        lambda u: u.cfs_throttled_periods,
    ),
    (
        Descriptor(
            "container_cpu_cfs_throttled_seconds_total",
            "Total time duration the container has been throttled.",
            COUNTER,
        ),
        lambda u: u.cfs_throttled_ns // NS if u.cfs_throttled_ns is not None else None,
    ),
    (
        Descriptor(
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was "
            "accessed",
            GAUGE,
        ),
        lambda u: u.memory_usage,
    ),
    (
        Descriptor("container_memory_working_set_bytes", "Current working set in bytes.", GAUGE),
        lambda u: u.memory_working_set,
    ),
    (
        Descriptor("container_memory_rss", "Size of RSS in bytes.", GAUGE),
        lambda u: u.memory_rss,
    ),
    (
        Descriptor("container_memory_cache", "Number of bytes of page cache memory.", GAUGE),
        lambda u: u.memory_cache,
    ),
    (
        Descriptor("container_memory_mapped_file", "Size of memory mapped files in bytes.", GAUGE),
        lambda u: u.memory_mapped_file,
    ),
    (
        Descriptor("container_memory_swap", "Container swap usage in bytes.", GAUGE),
        lambda u: u.swap_usage,
    ),
    (
        Descriptor(
            "container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", GAUGE
        ),
        lambda u: u.memory_max_usage,
    ),
    (
        Descriptor("container_memory_failcnt", "Number of memory usage hits limits", COUNTER),
        lambda u: u.memory_failcnt,
    ),
    (
        Descriptor(
            "container_oom_events_total",
            "Count of out of memory events observed for the container",
            COUNTER,
        ),
        lambda u: u.oom_kills,
    ),
    (
        Descriptor(
            "container_processes", "Number of processes running inside the container.", GAUGE
        ),
        lambda u: u.processes,
    ),
]

FS_USAGE = Descriptor(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    GAUGE,
    ("device",),
)
FS_INODES = Descriptor(
    "container_fs_inodes_total",
    "Number of Inodes",
    GAUGE,
    ("device",),
)
SPEC = [
    Descriptor("container_spec_memory_limit_bytes", "Memory limit for the container.", GAUGE),
    Descriptor("container_spec_cpu_period", "CPU period of the container.", GAUGE),
    Descriptor("container_spec_cpu_quota", "CPU quota of the container.", GAUGE),
    Descriptor("container_spec_cpu_shares", "CPU share of the container.", GAUGE),
]
START_TIME = Descriptor(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
    GAUGE,
)
LAST_SEEN = Descriptor(
    "container_last_seen", "Last time a container was seen by the exporter", GAUGE
)
_NETWORK: list[tuple[Descriptor, Callable[[object], int]]] = [
    (
        Descriptor(
            f"container_network_{direction}_{what}_total",
            f"Cumulative count of {text}",
            COUNTER,
            ("interface",),
        ),
        lambda i, attr=attr: getattr(i, attr),
    )
    for direction, what, text, attr in (
        ("receive", "bytes", "bytes received", "rx_bytes"),
        ("receive", "packets", "packets received", "rx_packets"),
        ("receive", "packets_dropped", "packets dropped while receiving", "rx_dropped"),
        ("receive", "errors", "errors encountered while receiving", "rx_errors"),
        ("transmit", "bytes", "bytes transmitted", "tx_bytes"),
        ("transmit", "packets", "packets transmitted", "tx_packets"),
        ("transmit", "packets_dropped", "packets dropped while transmitting", "tx_dropped"),
        ("transmit", "errors", "errors encountered while transmitting", "tx_errors"),
    )
]

DESCRIPTORS: tuple[Descriptor, ...] = (
    *(d for d, _ in _USAGE),
    FS_USAGE,
    FS_INODES,
    *SPEC,
    START_TIME,
    LAST_SEEN,
    *(d for d, _ in _NETWORK),
)


def _usage_samples(who: ContainerIdentity, usage: cgroups.Usage, ts: int) -> list[Sample]:
    out = []
    base = who.values()
    with_cpu = (*base, "total")
    for d, get in _USAGE:
        value = get(usage)
        if value is None:
            continue
        labels = with_cpu if d.extra_labels == ("cpu",) else base
        out.append(Sample(d.name, d.kind, labels, value, ts))
    return out


def container_samples(who: ContainerIdentity, stats: ContainerStats, device: str) -> list[Sample]:
    """Every metric of one container, from one stats reading."""
    ts = stats.timestamp_ns or time.time_ns()
    base = who.values()
    out = [Sample(LAST_SEEN.name, LAST_SEEN.kind, base, ts // NS, ts)]
    info = stats.view.record.info
    if stats.usage is not None:
        out += _usage_samples(who, stats.usage, ts)
        started = info.state.started_at_ns
        if started:
            out.append(Sample(START_TIME.name, START_TIME.kind, base, started // NS, ts))
    if stats.layer is not None:
        labels = (*base, device)
        out.append(Sample(FS_USAGE.name, FS_USAGE.kind, labels, stats.layer.bytes, ts))
        out.append(Sample(FS_INODES.name, FS_INODES.kind, labels, stats.layer.inodes, ts))
    r = info.resources
    limit = stats.usage.memory_limit if stats.usage is not None else None
    for d, value in zip(
        SPEC,
        (limit or r.memory_limit_in_bytes, r.cpu_period, r.cpu_quota, r.cpu_shares),
        strict=True,
    ):
        out.append(Sample(d.name, d.kind, base, max(0, value or 0), ts))
    return out


def pause_samples(who: ContainerIdentity, pod: PodStats) -> list[Sample]:
    """The pod's own metrics, on its pause container (container="POD"), network included."""
    ts = pod.timestamp_ns or time.time_ns()
    out = [Sample(LAST_SEEN.name, LAST_SEEN.kind, who.values(), ts // NS, ts)]
    if pod.pause is not None:
        out += _usage_samples(who, pod.pause, ts)
    if pod.network is not None:
        out += network_samples(who, pod.network)
    return out


def network_samples(who: ContainerIdentity, network: Network) -> list[Sample]:
    out = []
    base = who.values()
    for iface in network.interfaces:
        labels = (*base, iface.name)
        for d, get in _NETWORK:
            out.append(Sample(d.name, d.kind, labels, get(iface), network.timestamp_ns))
    return out
