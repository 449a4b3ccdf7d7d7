"""The hand-written stats and metrics encoding, decoded by the official protobuf runtime."""

from __future__ import annotations

import pytest

from crishim.engine import labels
from crishim.engine.docker.types import ContainerInfo, ContainerState
from crishim.engine.store import Record
from crishim.pods.containers import ContainerView
from crishim.pods.sandboxes import SandboxView
from crishim.server import protowire as w
from crishim.server.stats import _metric_entries, container_stats, pod_stats
from crishim.stats import collector, metrics, netdev


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63 - 1, 2**64 - 1])
def test_varints_decode_to_the_same_number(pb, n) -> None:
    assert pb.UInt64Value.FromString(w.uint(1, n)).value == n


def test_a_negative_int64_is_written_as_protobuf_writes_it(pb) -> None:
    assert w.varint(-1) == pb.Int64Value(value=-1).SerializeToString()[1:]


def _container_view() -> ContainerView:
    info = ContainerInfo(
        "c" * 64, "k8s_web_pod_ns_uid_2", 1, "img", "sha256:x", {},
        ContainerState("running", True, 0, False, 7, "", 5, 0), "", "", "", "", "", "", "",
    )  # fmt: skip
    return ContainerView(
        id="c" * 64,
        sandbox_id="s" * 64,
        meta=labels.ContainerMeta("web", 2),
        state="running",
        created_at_ns=1,
        started_at_ns=5,
        finished_at_ns=0,
        exit_code=0,
        reason="",
        message="",
        image="img",
        image_id="sha256:x",
        labels={"app": "web", "empty": ""},
        annotations={"note": "ünïcode"},
        log_path="",
        record=Record(info, labels.read({}), 1),
    )


STATS = collector.ContainerStats(
    view=_container_view(),
    cpu=collector.Cpu(111, 2_000_000_000, 0),
    memory=collector.Memory(111, 300, 200, None, 50, 9, 0),
    swap=collector.Swap(111, 0, None),
    layer=collector.Layer(99, "/var/lib/docker", 4096, 3),
    timestamp_ns=111,
)


def test_container_stats_decode_field_by_field(pb) -> None:
    s = pb.ContainerStats.FromString(container_stats(STATS))
    assert s.attributes.id == "c" * 64
    assert (s.attributes.metadata.name, s.attributes.metadata.attempt) == ("web", 2)
    assert dict(s.attributes.labels) == {"app": "web", "empty": ""}
    assert dict(s.attributes.annotations) == {"note": "ünïcode"}
    assert s.cpu.timestamp == 111
    assert s.cpu.usage_core_nano_seconds.value == 2_000_000_000
    assert s.cpu.HasField("usage_nano_cores")  # set to zero is still set
    assert s.cpu.usage_nano_cores.value == 0
    assert s.memory.usage_bytes.value == 300
    assert s.memory.working_set_bytes.value == 200
    assert not s.memory.HasField("available_bytes")  # no limit: unset
    assert (s.memory.rss_bytes.value, s.memory.page_faults.value) == (50, 9)
    assert s.memory.HasField("major_page_faults")
    assert s.swap.HasField("swap_usage_bytes")
    assert not s.swap.HasField("swap_available_bytes")
    assert s.writable_layer.fs_id.mountpoint == "/var/lib/docker"
    assert (s.writable_layer.used_bytes.value, s.writable_layer.inodes_used.value) == (4096, 3)
    exited = pb.ContainerStats.FromString(
        container_stats(collector.ContainerStats(view=_container_view()))
    )
    assert not exited.HasField("cpu")
    assert not exited.HasField("memory")


def test_pod_stats_decode_with_network_and_containers(pb) -> None:
    view = SandboxView(
        id="s" * 64, meta=labels.SandboxMeta("pod", "ns", "uid-1", 1), ready=True,
        created_at_ns=1, labels={"a": "b"}, annotations={}, runtime_handler="", ip="10.0.0.2",
        additional_ips=(), host_network=False, host_pid=False, host_ipc=False, pid=7,
        docker_runtime="", netns_path="", cgroup_parent="", info={}, record=None,
    )  # fmt: skip
    eth0 = netdev.Interface("eth0", 10, 1, 0, 0, 20, 2, 0, 0)
    eth1 = netdev.Interface("eth1", 30, 3, 1, 0, 40, 4, 2, 0)
    pod = collector.PodStats(
        view=view,
        cpu=collector.Cpu(5, 10, 1),
        memory=collector.Memory(5, 1, 1, 1, 1, 1, 1),
        network=collector.Network(6, (eth1, eth0)),
        processes=4,
        containers=(STATS,),
        pause=None,
        timestamp_ns=5,
    )
    p = pb.PodSandboxStats.FromString(pod_stats(pod))
    assert p.attributes.metadata.uid == "uid-1"
    assert p.attributes.metadata.attempt == 1
    assert dict(p.attributes.labels) == {"a": "b"}
    assert p.linux.network.default_interface.name == "eth0"
    assert p.linux.network.default_interface.tx_bytes.value == 20
    assert [i.name for i in p.linux.network.interfaces] == ["eth1"]
    assert p.linux.network.interfaces[0].rx_errors.value == 1
    assert p.linux.process.process_count.value == 4
    assert [c.attributes.id for c in p.linux.containers] == ["c" * 64]


def _metrics(samples: list[metrics.Sample], who: metrics.ContainerIdentity) -> bytes:
    """A ContainerMetrics' Metric entries (field 2), as a scrape's pod entry holds them."""
    out: list[bytes] = []
    _metric_entries(samples, who, out)
    return b"".join(out)


def test_metrics_decode_with_their_type_and_labels(pb) -> None:
    who = metrics.ContainerIdentity("app", "/kubepods/x", "", "k8s_app", "ns", "pod")
    gauge = metrics.Sample("container_memory_rss", metrics.GAUGE, (*who.values(), "extra"), 42, 7)
    counter = metrics.Sample("container_oom_events_total", metrics.COUNTER, who.values(), 0, 1)
    m, c = pb.ContainerMetrics.FromString(_metrics([gauge, counter], who)).metrics
    assert (m.name, m.timestamp, m.metric_type, m.value.value) == (
        "container_memory_rss",
        7,
        pb.GAUGE,
        42,
    )
    # Every label value in its place, an empty one too, and a metric's own after them.
    assert list(m.label_values) == ["app", "/kubepods/x", "", "k8s_app", "ns", "pod", "extra"]
    assert (c.name, c.metric_type, list(c.label_values)) == (
        "container_oom_events_total",
        pb.COUNTER,
        list(who.values()),
    )
    assert c.HasField("value")


def test_metrics_keep_each_samples_own_time_value_and_labels(pb) -> None:
    """Parts are encoded once and reused: each metric must still get its own."""
    who = metrics.ContainerIdentity("POD", "/kubepods/y", "pause", "k8s_POD", "ns", "pod")
    big, now = 2**40 + 5, 1_764_000_000_123_456_789
    samples = [
        metrics.Sample("container_network_receive_bytes_total", metrics.COUNTER,
                       (*who.values(), "eth0"), big, now),
        metrics.Sample("container_network_transmit_bytes_total", metrics.COUNTER,
                       (*who.values(), "eth1"), 300, now + 1),
        metrics.Sample("container_last_seen", metrics.GAUGE, who.values(), 128, now),
    ]  # fmt: skip
    decoded = pb.ContainerMetrics.FromString(_metrics(samples, who)).metrics
    assert [(m.name, m.timestamp, m.value.value, list(m.label_values)[6:]) for m in decoded] == [
        ("container_network_receive_bytes_total", now, big, ["eth0"]),
        ("container_network_transmit_bytes_total", now + 1, 300, ["eth1"]),
        ("container_last_seen", now, 128, []),
    ]
    assert all(list(m.label_values)[:6] == list(who.values()) for m in decoded)


def test_a_list_joined_from_cached_entries_is_the_whole_response(pb) -> None:
    from dataclasses import replace

    from crishim.api.runtime import v1 as api
    from crishim.server.container import to_container
    from crishim.server.listing import WireEntries

    views = [_container_view(), replace(_container_view(), id="d" * 64, state="exited")]
    entries = WireEntries(1)
    built = []

    def build(v):
        built.append(v.id)
        return to_container(v)

    def joined(vs):
        return b"".join(entries.entry(v.id, v, lambda v=v: build(v)) for v in vs)

    whole = bytes(api.ListContainersResponse(containers=[to_container(v) for v in views]))
    assert joined(views) == whole
    decoded = pb.ListContainersResponse.FromString(joined(views))
    assert [c.id for c in decoded.containers] == ["c" * 64, "d" * 64]
    assert decoded.containers[1].state == pb.CONTAINER_EXITED
    assert len(built) == 2
    # Same objects: nothing encoded again. A new version of one: that one only.
    changed = [views[0], replace(views[1], state="running")]
    assert pb.ListContainersResponse.FromString(joined(changed)).containers[1].state == (
        pb.CONTAINER_RUNNING
    )
    assert built == ["c" * 64, "d" * 64, "d" * 64]


def test_a_status_entry_is_made_again_for_its_process_user_only(pb) -> None:
    """PodSandboxStatus's containers_statuses: an entry per view and process user (the
    user is read once the process runs, and kept per process)."""
    from crishim.pods.containers import ProcessUser
    from crishim.server.container import to_status
    from crishim.server.listing import WireEntries

    view = _container_view()
    entries = WireEntries(3)  # PodSandboxStatusResponse.containers_statuses
    root, other = ProcessUser(0, 0, ()), ProcessUser(1000, 1000, (5, 6))
    built = []

    def carried(user):
        def build():
            built.append(user)
            return to_status(view, user)

        data = entries.entry(view.id, view, build, user)
        (status,) = pb.PodSandboxStatusResponse.FromString(data).containers_statuses
        return status

    assert not carried(None).HasField("user")
    assert carried(root).user.linux.uid == 0
    assert carried(root).user.linux.uid == 0  # the same view and user: kept
    linux = carried(other).user.linux
    assert (linux.uid, linux.gid, list(linux.supplemental_groups)) == (1000, 1000, [5, 6])
    assert built == [None, root, other]
