"""Container and pod stats, cAdvisor metrics and container events, through the official client.

The numbers are checked against what the containers do: a busy loop, memory
a process allocates and touches, a file read into the page cache, bytes sent
between two pods.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from crishim.common import cgroups
from crishim.stats import collector
from tests.harness.clients import Official
from tests.harness.procs import wait_for
from tests.integration.test_containers import create, pod, wait_exited  # noqa: F401
from tests.integration.test_sandboxes import sandbox_config

MiB = 1024 * 1024


def container_stats(official: Official, cid: str):
    return official.runtime.ContainerStats(
        official.pb.ContainerStatsRequest(container_id=cid), timeout=30
    ).stats


def pod_stats(official: Official, sandbox_id: str):
    return official.runtime.PodSandboxStats(
        official.pb.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id), timeout=30
    ).stats


def logs_say(dockerd, cid: str, text: str) -> bool:
    return text in dockerd.docker("logs", cid)


def test_a_busy_container_uses_about_a_core_and_an_idle_one_none(official, pod) -> None:  # noqa: F811
    busy = create(official, pod, "busy", ["sh", "-c", "while :; do :; done"])
    idle = create(official, pod, "idle", ["sleep", "300"])
    container_stats(official, busy)
    container_stats(official, idle)
    time.sleep(3)
    busy_cores = container_stats(official, busy).cpu.usage_nano_cores.value / 1e9
    idle_cores = container_stats(official, idle).cpu.usage_nano_cores.value / 1e9
    # At most one core; at least a share of one on a machine the other engine's leg (and
    # its CPU hogs) keeps busy too.
    assert 0.25 <= busy_cores <= 1.2
    assert idle_cores < 0.05
    assert container_stats(official, busy).cpu.usage_core_nano_seconds.value > 1e9


def hog(mib: int) -> list[str]:
    """A process that allocates and touches `mib` MiB (one string), then holds it."""
    program = (
        f'BEGIN {{ s = sprintf("%{mib * MiB}s", ""); print "allocated"; fflush(); '
        'system("sleep 300"); print length(s) }'
    )
    return ["awk", program]


def test_touched_memory_is_in_the_working_set(official, pod, dockerd) -> None:  # noqa: F811
    cid = create(official, pod, "hog", hog(64))
    wait_for(lambda: logs_say(dockerd, cid, "allocated"), 60, "64 MiB allocated")
    memory = container_stats(official, cid).memory
    assert memory.working_set_bytes.value >= 64 * MiB
    assert memory.rss_bytes.value >= 64 * MiB
    assert memory.usage_bytes.value >= memory.working_set_bytes.value
    assert memory.page_faults.value > 64 * MiB // 4096 // 2


def test_a_file_read_into_the_page_cache_is_not_in_the_working_set(
    official,
    pod,  # noqa: F811
    dockerd,
    workdir,
) -> None:
    data = Path(workdir) / f"cache-{uuid.uuid4().hex[:6]}"
    data.mkdir()
    # Written around the host's page cache (O_DIRECT, from a page-aligned buffer), so
    # the container's read is the first time these pages are cached: they are charged
    # to its cgroup, on the inactive list. One large read touches each page once.
    buffer = mmap.mmap(-1, MiB)
    buffer.write(os.urandom(MiB))
    fd = os.open(data / "big", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        for _ in range(64):
            os.write(fd, buffer)
    finally:
        os.close(fd)
    pb = official.pb
    cid = create(
        official,
        pod,
        "reader",
        ["sh", "-c", "dd if=/data/big of=/dev/null bs=64M; echo read; sleep 300"],
        mounts=[pb.Mount(container_path="/data", host_path=str(data), readonly=True)],
    )
    wait_for(lambda: logs_say(dockerd, cid, "read"), 60, "the file read")
    memory = container_stats(official, cid).memory
    cache = memory.usage_bytes.value - memory.working_set_bytes.value
    assert memory.usage_bytes.value >= 60 * MiB, "the read pages are charged to the container"
    assert cache >= 56 * MiB, "and they are inactive file cache"
    assert memory.working_set_bytes.value < 16 * MiB


def test_pod_stats_are_the_pod_cgroups_totals(official, pod_cgroup, dockerd) -> None:
    pb = official.pb
    config = sandbox_config(pb, cgroup_parent=pod_cgroup)
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    try:
        p = (sandbox_id, config)
        hogging = create(official, p, "hog", hog(16))
        idle = create(official, p, "idle", ["sleep", "300"])
        wait_for(lambda: logs_say(dockerd, hogging, "allocated"), 60, "16 MiB allocated")
        stats = pod_stats(official, sandbox_id)
        members = {c.attributes.id: c for c in stats.linux.containers}
        assert set(members) == {hogging, idle}
        ws = sum(c.memory.working_set_bytes.value for c in members.values())
        cpu = sum(c.cpu.usage_core_nano_seconds.value for c in members.values())
        pod_ws = stats.linux.memory.working_set_bytes.value
        pod_cpu = stats.linux.cpu.usage_core_nano_seconds.value
        # The pod cgroup holds the containers and the pause: at least their sum, and no
        # more than the pause's share above it (a sleeping shell: a few MiB, a little CPU).
        assert ws <= pod_ws <= ws + 8 * MiB
        assert cpu <= pod_cpu <= cpu + 200_000_000
        assert stats.linux.process.process_count.value >= 3  # pause, sh, sleep
        assert stats.attributes.metadata.name == config.metadata.name
    finally:
        official.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )


def test_network_bytes_grow_by_what_one_pod_sends_another(official, dockerd) -> None:
    pb = official.pb
    pods = []
    try:
        for _ in range(2):
            config = sandbox_config(pb)
            sid = official.runtime.RunPodSandbox(
                pb.RunPodSandboxRequest(config=config), timeout=120
            ).pod_sandbox_id
            pods.append((sid, config))
        (a, _), (b, _) = pods
        ip_b = official.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=b), timeout=30
        ).status.network.ip
        size = 2_000_000
        server = create(
            official,
            pods[1],
            "server",
            [
                "sh",
                "-c",
                f"mkdir /www; head -c {size} /dev/zero > /www/big; httpd -f -p 8080 -h /www",
            ],
        )
        wait_for(
            lambda: ":8080" in dockerd.docker("exec", server, "netstat", "-ltn"), 30, "listening"
        )
        before_a = pod_stats(official, a).linux.network.default_interface
        before_b = pod_stats(official, b).linux.network.default_interface
        assert before_a.name == "eth0"
        fetch = f"printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc {ip_b} 8080 | wc -c"
        fetcher = create(official, pods[0], "fetcher", ["sh", "-c", fetch])
        wait_for(lambda: dockerd.docker("logs", fetcher).strip() != "", 60, "the page fetched")
        assert int(dockerd.docker("logs", fetcher)) > size
        after_a = pod_stats(official, a).linux.network.default_interface
        after_b = pod_stats(official, b).linux.network.default_interface
        assert after_b.tx_bytes.value - before_b.tx_bytes.value >= size
        assert after_a.rx_bytes.value - before_a.rx_bytes.value >= size
        assert after_a.rx_errors.value == before_a.rx_errors.value
    finally:
        for sid, _ in pods:
            official.runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60
            )


def test_list_filters_and_exited_containers(official, pod) -> None:  # noqa: F811
    pb = official.pb
    running = create(official, pod, "runs", ["sleep", "300"])
    done = create(official, pod, "done", ["true"])
    wait_exited(official, done)
    listed = official.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=pod[0])),
        timeout=30,
    ).stats
    by_id = {s.attributes.id: s for s in listed}
    assert set(by_id) == {running, done}
    assert by_id[running].HasField("cpu")
    assert by_id[running].HasField("memory")
    # Exited: attributes and writable layer only, as the kubelet expects.
    assert not by_id[done].HasField("cpu")
    assert not by_id[done].HasField("memory")
    assert by_id[done].attributes.metadata.name == "done"
    by_label = official.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(
            filter=pb.ContainerStatsFilter(label_selector={"role": "runs"}, pod_sandbox_id=pod[0])
        ),
        timeout=30,
    ).stats
    assert [s.attributes.id for s in by_label] == [running]
    by_id_filter = official.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(id=running[:12])), timeout=30
    ).stats
    assert [s.attributes.id for s in by_id_filter] == [running]
    streamed = [
        s.attributes.id
        for chunk in official.runtime.StreamContainerStats(
            pb.StreamContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=pod[0])),
            timeout=30,
        )
        for s in chunk.container_stats
    ]
    assert sorted(streamed) == sorted([running, done])
    with pytest.raises(grpc.RpcError) as missing:
        container_stats(official, "f" * 64)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_every_field_crictl_prints_is_filled(official, pod, dockerd) -> None:  # noqa: F811
    """crictl stats: CONTAINER NAME CPU% MEM DISK INODES SWAP; statsp: POD POD-ID CPU% MEM."""
    pb = official.pb
    cid = create(official, pod, "web", ["sh", "-c", "echo x > /tmp/file; sleep 300"])
    wait_for(
        lambda: container_stats(official, cid).HasField("writable_layer"),
        60,
        "the writable layer measured",
    )
    s = container_stats(official, cid)
    assert s.attributes.id == cid
    assert s.attributes.metadata.name == "web"
    for field in ("usage_core_nano_seconds", "usage_nano_cores"):
        assert s.cpu.HasField(field), field
    assert s.cpu.timestamp > 0
    for field in ("working_set_bytes", "usage_bytes", "rss_bytes", "page_faults"):
        assert s.memory.HasField(field), field
    assert s.writable_layer.used_bytes.value > 0
    assert s.writable_layer.inodes_used.value >= 2  # /tmp and /tmp/file at least
    assert s.writable_layer.fs_id.mountpoint.startswith("/")
    assert s.swap.HasField("swap_usage_bytes")
    p = pod_stats(official, pod[0])
    assert p.attributes.id == pod[0]
    assert p.attributes.metadata.uid == pod[1].metadata.uid
    assert p.linux.cpu.HasField("usage_core_nano_seconds")
    assert p.linux.cpu.HasField("usage_nano_cores")
    assert p.linux.memory.HasField("working_set_bytes")
    assert p.linux.network.default_interface.HasField("rx_bytes")
    listed = official.runtime.ListPodSandboxStats(
        pb.ListPodSandboxStatsRequest(filter=pb.PodSandboxStatsFilter(id=pod[0])), timeout=30
    ).stats
    assert [x.attributes.id for x in listed] == [pod[0]]


def test_cgroup_v2_is_read_from_a_cgroup2_mount_of_the_tests_own(official, pod, workdir) -> None:  # noqa: F811
    """This machine is cgroup v1 (hybrid): its controllers are bound to v1, so a cgroup2
    mount has v2's core files only. cpu.stat is one of them: a busy container's CPU read
    through the v2 reader from a cgroup2 mount made here agrees with the v1 reading."""
    busy = create(official, pod, "busy", ["sh", "-c", "while :; do :; done"])
    point = Path(workdir) / f"cg2-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "none", str(point)], check=True)
    try:
        pid = int(
            official.runtime.ContainerStatus(
                official.pb.ContainerStatusRequest(container_id=busy, verbose=True), timeout=30
            )
            .info["info"]
            .split('"pid": ')[1]
            .split(",")[0]
        )
        v2 = cgroups.paths_from_proc(
            Path(f"/proc/{pid}/cgroup").read_text(), cgroups.Mounts(unified=str(point), v1={})
        )
        v1 = cgroups.locate(pid, cgroups.read_mounts())
        assert v2 is not None
        assert v2.v2 is not None
        assert v2.v2.startswith(str(point))
        time.sleep(1)
        first_v2, first_v1 = cgroups.read_once(v2).cpu_ns, cgroups.read_once(v1).cpu_ns
        assert first_v2 is not None
        assert first_v2 > 0
        assert abs(first_v2 - first_v1) < 100_000_000  # read a moment apart, same clock
    finally:
        subprocess.run(["umount", str(point)], check=True)


# -- metrics ------------------------------------------------------------------------------

# cAdvisor's names and label sets (cadvisor/metrics/prometheus.go), with the kubelet's
# base labels for container metrics.
BASE = ["container", "id", "image", "name", "namespace", "pod"]
CADVISOR = {
    "container_cpu_usage_seconds_total": [*BASE, "cpu"],
    "container_cpu_user_seconds_total": BASE,
    "container_cpu_system_seconds_total": BASE,
    "container_cpu_cfs_periods_total": BASE,
    "container_cpu_cfs_throttled_periods_total": BASE,
    "container_cpu_cfs_throttled_seconds_total": BASE,
    "container_memory_usage_bytes": BASE,
    "container_memory_working_set_bytes": BASE,
    "container_memory_rss": BASE,
    "container_memory_cache": BASE,
    "container_memory_mapped_file": BASE,
    "container_memory_swap": BASE,
    "container_memory_max_usage_bytes": BASE,
    "container_memory_failcnt": BASE,
    "container_oom_events_total": BASE,
    "container_processes": BASE,
    "container_fs_usage_bytes": [*BASE, "device"],
    "container_fs_inodes_total": [*BASE, "device"],
    "container_spec_memory_limit_bytes": BASE,
    "container_spec_cpu_period": BASE,
    "container_spec_cpu_quota": BASE,
    "container_spec_cpu_shares": BASE,
    "container_start_time_seconds": BASE,
    "container_last_seen": BASE,
    **{
        f"container_network_{d}_{w}_total": [*BASE, "interface"]
        for d in ("receive", "transmit")
        for w in ("bytes", "packets", "packets_dropped", "errors")
    },
}


def test_metric_descriptors_are_cadvisors(official) -> None:
    descriptors = official.runtime.ListMetricDescriptors(
        official.pb.ListMetricDescriptorsRequest(), timeout=30
    ).descriptors
    assert {d.name: list(d.label_keys) for d in descriptors} == CADVISOR
    assert all(d.help for d in descriptors)


def test_metric_values_agree_with_container_stats(official, pod, dockerd) -> None:  # noqa: F811
    pb = official.pb
    cid = create(
        official,
        pod,
        "quiet",
        ["sh", "-c", "echo x > /tmp/f; sleep 300"],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=256 * MiB)
        ),
    )
    wait_for(
        lambda: container_stats(official, cid).HasField("writable_layer"), 60, "layer measured"
    )
    stats = container_stats(official, cid)
    scraped = []

    def shows_the_layer() -> bool:
        # The metrics show the layer of the sampler's last full reading: one made
        # before the layer was measured has none yet (the next, <= 12 s, has it).
        metrics = official.runtime.ListPodSandboxMetrics(
            pb.ListPodSandboxMetricsRequest(), timeout=30
        ).pod_metrics
        (mine,) = [m for m in metrics if m.pod_sandbox_id == pod[0]]
        (cm,) = [c for c in mine.container_metrics if c.container_id == cid]
        scraped[:] = [mine, cm]
        return any(m.name == "container_fs_usage_bytes" for m in cm.metrics)

    wait_for(shows_the_layer, 30, "the metrics to show the measured layer")
    mine, cm = scraped
    by_name = {m.name: m for m in cm.metrics}
    keys = {d: k for d, k in CADVISOR.items()}
    for m in cm.metrics:
        assert len(m.label_values) == len(keys[m.name]), m.name
    labels = dict(
        zip(BASE, by_name["container_memory_working_set_bytes"].label_values, strict=False)
    )
    assert labels["container"] == "quiet"
    assert labels["pod"] == pod[1].metadata.name
    assert labels["namespace"] == pod[1].metadata.namespace
    assert labels["image"] == "crishim-test/busybox:latest"
    assert labels["name"].startswith("k8s_quiet_")
    assert labels["id"].endswith(cid)
    ws = by_name["container_memory_working_set_bytes"].value.value
    assert abs(ws - stats.memory.working_set_bytes.value) <= MiB
    cpu_s = by_name["container_cpu_usage_seconds_total"]
    assert cpu_s.label_values[-1] == "total"
    assert cpu_s.metric_type == pb.COUNTER
    assert cpu_s.value.value == stats.cpu.usage_core_nano_seconds.value // 1_000_000_000
    assert by_name["container_fs_usage_bytes"].value.value == stats.writable_layer.used_bytes.value
    assert by_name["container_spec_memory_limit_bytes"].value.value == 256 * MiB
    started = official.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid), timeout=30
    ).status.started_at
    assert by_name["container_start_time_seconds"].value.value == started // 1_000_000_000
    # The pod's own metrics (its pause container) carry the network.
    pod_names = {m.name for m in mine.metrics}
    assert "container_network_receive_bytes_total" in pod_names
    (rx,) = [m for m in mine.metrics if m.name == "container_network_receive_bytes_total"]
    assert rx.label_values[0] == "POD"
    assert rx.label_values[-1] == "eth0"
    pod_rx = pod_stats(official, pod[0]).linux.network.default_interface.rx_bytes.value
    assert pod_rx >= rx.value.value  # counters only grow


def _metric_stamps(official: Official, cid: str) -> list[int]:
    pb = official.pb
    pods = official.runtime.ListPodSandboxMetrics(
        pb.ListPodSandboxMetricsRequest(), timeout=30
    ).pod_metrics
    (cm,) = [c for p in pods for c in p.container_metrics if c.container_id == cid]
    return sorted({m.timestamp for m in cm.metrics})


def test_scrapes_within_a_round_show_one_recent_reading(official, pod) -> None:  # noqa: F811
    """Like the kubelet's cAdvisor: metrics come from a periodic reading, not a new one
    per scrape; each carries the time it was read, never older than a round allows."""
    cid = create(official, pod, "scraped", ["sleep", "300"])
    pairs = []
    for _ in range(3):  # a sampler round may fall between two calls: a few pairs
        pairs.append((_metric_stamps(official, cid), _metric_stamps(official, cid)))
        now = time.time_ns()
        for stamps in pairs[-1]:
            assert len(stamps) == 1  # one reading per container
            assert now - collector.METRICS_MAX_AGE_NS <= stamps[0] <= now
        if pairs[-1][0] == pairs[-1][1]:
            break
    assert any(first == second for first, second in pairs), pairs


# -- events ---------------------------------------------------------------------------------


class EventReader:
    """GetContainerEvents in a thread of its own, collecting what it receives."""

    def __init__(self, official: Official) -> None:
        self.events: list = []
        self.call = official.runtime.GetContainerEvents(official.pb.GetEventsRequest())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError:
            pass

    def of(self, container_id: str) -> list:
        return [e for e in self.events if e.container_id == container_id]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)


def test_container_events_reach_every_subscriber_in_order(official, pod) -> None:  # noqa: F811
    pb = official.pb
    readers = [EventReader(official), EventReader(official)]
    try:
        time.sleep(0.5)  # both subscribed
        cid = create(official, pod, "ev", ["sleep", "300"])
        for reader in readers:  # created and started, before the stop
            wait_for(lambda r=reader: len(r.of(cid)) >= 2, 30, "two events")
        running = official.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid), timeout=30
        ).status
        official.runtime.StopContainer(
            pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60
        )
        official.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
        expected = [
            pb.CONTAINER_CREATED_EVENT,
            pb.CONTAINER_STARTED_EVENT,
            pb.CONTAINER_STOPPED_EVENT,
            pb.CONTAINER_DELETED_EVENT,
        ]
        for reader in readers:
            wait_for(lambda r=reader: len(r.of(cid)) >= 4, 30, "four events")
            events = reader.of(cid)
            assert [e.container_event_type for e in events] == expected
            assert all(e.pod_sandbox_status.id == pod[0] for e in events)
            assert all(e.created_at > 0 for e in events)
            started = events[1]
            (status,) = [s for s in started.containers_statuses if s.id == cid]
            assert status == running  # as ContainerStatus shows it, the user included
            assert status.user.linux.uid == status.user.linux.gid == 0  # sleep runs as root
            assert not [s for s in events[3].containers_statuses if s.id == cid]
    finally:
        for reader in readers:
            reader.close()


def test_metrics_of_a_pod_with_a_cgroup_parent(official, pod_cgroup) -> None:
    """The kubelet gives every pod a cgroup parent; its metrics used to fail with INTERNAL."""
    pb = official.pb
    config = sandbox_config(pb, cgroup_parent=pod_cgroup)
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    try:
        metrics = official.runtime.ListPodSandboxMetrics(
            pb.ListPodSandboxMetricsRequest(), timeout=30
        ).pod_metrics
        (mine,) = [m for m in metrics if m.pod_sandbox_id == sandbox_id]
        names = {m.name for m in mine.metrics}
        assert "container_memory_working_set_bytes" in names
        assert "container_network_receive_bytes_total" in names
        assert pod_stats(official, sandbox_id).linux.memory.HasField("working_set_bytes")
    finally:
        official.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )


def test_the_list_calls_answer_from_recent_readings_and_follow_changes(
    official,
    pod,  # noqa: F811
    dockerd,
) -> None:
    """ListContainerStats/ListPodSandboxStats serve the sampler's readings, never older
    than a few seconds (each timestamp says when), and show a change soon after."""
    pb = official.pb
    idle = create(official, pod, "idle", ["sleep", "300"])
    # Allocates only after the first list calls have read it (and kept the reading).
    hogging = create(official, pod, "later", ["sh", "-c", 'sleep 3; exec "$0" "$1"', *hog(64)])

    def listed(request_kind: str):
        if request_kind == "containers":
            return {
                s.attributes.id: s
                for s in official.runtime.ListContainerStats(
                    pb.ListContainerStatsRequest(), timeout=30
                ).stats
            }
        return {
            s.attributes.id: s
            for s in official.runtime.ListPodSandboxStats(
                pb.ListPodSandboxStatsRequest(), timeout=30
            ).stats
        }

    for _ in range(12):
        asked_at = time.time_ns()
        containers = listed("containers")
        pods = listed("pods")
        for stats in (containers[idle], containers[hogging]):
            assert stats.cpu.timestamp >= asked_at - collector.LIST_MAX_AGE_NS
            assert stats.memory.timestamp >= asked_at - collector.LIST_MAX_AGE_NS
        assert pods[pod[0]].linux.cpu.timestamp >= asked_at - collector.LIST_MAX_AGE_NS
        time.sleep(0.5)
    wait_for(lambda: logs_say(dockerd, hogging, "allocated"), 60, "64 MiB allocated")
    wait_for(
        lambda: listed("containers")[hogging].memory.working_set_bytes.value >= 64 * MiB,
        2 * collector.LIST_MAX_AGE_NS / 1e9 + 10,
        "the allocation in ListContainerStats",
    )
    wait_for(
        lambda: (
            {c.attributes.id: c for c in listed("pods")[pod[0]].linux.containers}[
                hogging
            ].memory.working_set_bytes.value
            >= 64 * MiB
        ),
        2 * collector.LIST_MAX_AGE_NS / 1e9 + 10,
        "the allocation in ListPodSandboxStats",
    )


def test_two_list_calls_a_second_apart_show_a_newer_cpu_reading(official, pod) -> None:  # noqa: F811
    """`crictl stats` lists twice, a second apart, and divides the CPU used between the
    two readings by the time between them: the second must be newer, every time (it
    failed with 'cpu stat is not updated during sample' when both had one reading)."""
    pb = official.pb
    ids = [create(official, pod, f"fresh{i}", ["sleep", "300"]) for i in range(3)]

    def cpu_times(kind: str) -> dict[str, int]:
        if kind == "containers":
            found = official.runtime.ListContainerStats(pb.ListContainerStatsRequest(), timeout=30)
            return {s.attributes.id: s.cpu.timestamp for s in found.stats if s.attributes.id in ids}
        found = official.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=30)
        return {s.attributes.id: s.linux.cpu.timestamp for s in found.stats}

    for kind in ("containers", "pods"):
        before = cpu_times(kind)
        for _ in range(8):
            time.sleep(1)
            after = cpu_times(kind)
            for key, stamp in before.items():
                if key in after:
                    assert after[key] > stamp, (kind, key)
            before = after
