"""Pure pieces of sandboxes, containers and logs."""

from __future__ import annotations

import pytest

from crishim.engine.docker.types import LogChunk
from crishim.logs.copier import cri_line
from crishim.pods.containers import state_of
from crishim.pods.sandboxes import negative_oom_score_allowed, resolv_conf, systemd_cgroup_parent


@pytest.mark.parametrize(
    ("parent", "slice_name"),
    [
        pytest.param(
            "/kubepods/burstable/pod1f2e", "kubepods-burstable-pod1f2e.slice", id="cgroupfs"
        ),
        pytest.param("/kubepods", "kubepods.slice", id="top"),
        pytest.param(
            "kubepods-besteffort.slice", "kubepods-besteffort.slice", id="already-systemd"
        ),
        pytest.param("/kube-pods/x", "kube_pods-x.slice", id="dash-escaped"),
        pytest.param("", "", id="none"),
    ],
)
def test_systemd_cgroup_parent(parent, slice_name) -> None:
    assert systemd_cgroup_parent(parent) == slice_name


def test_cap_sys_resource_is_read_from_the_bounding_set() -> None:
    assert negative_oom_score_allowed("CapBnd:\t000001ffffffffff\n") is True
    assert negative_oom_score_allowed("CapBnd:\t000001fffeffffff\n") is False  # this VM
    assert negative_oom_score_allowed("Name:\tx\n") is True


def test_resolv_conf_holds_exactly_what_was_given() -> None:
    assert resolv_conf(("1.1.1.1",), ("a.local",), ("ndots:5",)) == (
        "nameserver 1.1.1.1\nsearch a.local\noptions ndots:5\n"
    )
    assert resolv_conf(("1.1.1.1",), (), ()) == "nameserver 1.1.1.1\n"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("created", "created"),
        ("running", "running"),
        ("paused", "running"),
        ("restarting", "running"),
        ("exited", "exited"),
        ("dead", "exited"),
        ("removing", "unknown"),
    ],
)
def test_docker_status_to_cri_state(status, state) -> None:
    assert state_of(status) == state


def test_cri_lines_from_docker_messages() -> None:
    full = cri_line(LogChunk("stdout", b"2026-11-22T10:00:00.123456789Z hello world\n"))
    assert full == (1795341600123456789, b"2026-11-22T10:00:00.123456789Z stdout F hello world\n")
    part = cri_line(LogChunk("stderr", b"2026-11-22T10:00:00Z half a line"))
    assert part[1] == b"2026-11-22T10:00:00Z stderr P half a line\n"
    assert cri_line(LogChunk("stdout", b"no-timestamp-here")) is None
    assert cri_line(LogChunk("stdout", b"garbage text\n")) is None


def test_a_pod_with_only_the_required_fields_converts() -> None:
    # A config without DNS, linux options, labels or ports (crictl's smallest pod.json).
    from crishim.api.runtime import v1 as api
    from crishim.server.container import container_request
    from crishim.server.sandbox import sandbox_request

    config = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    request = sandbox_request(api.RunPodSandboxRequest(config=config))
    assert (request.meta.name, list(request.dns_servers), list(request.port_mappings)) == (
        "p",
        [],
        [],
    )
    container = container_request(
        api.CreateContainerRequest(
            pod_sandbox_id="s",
            config=api.ContainerConfig(
                metadata=api.ContainerMetadata(name="c"), image=api.ImageSpec(image="busybox")
            ),
        )
    )
    assert (container.meta.name, container.image) == ("c", "busybox")


def test_only_a_teardown_without_a_pinned_namespace_waits_for_the_pause(tmp_path) -> None:
    """StopPodSandbox stops the pause while the network is torn down, unless the
    teardown reads the running pause's namespace."""
    from crishim.network.checkpoint import Checkpoint
    from crishim.network.pods import PodNetworks

    nets = PodNetworks("cni", tmp_path, str(tmp_path / "net.d"), "/usr/lib/cni")
    pinned = Checkpoint("a", {}, netns=str(tmp_path / "netns" / "a"))
    nets._cache = {
        "a": pinned,
        "torn": Checkpoint("torn", {}, netns="", torn_down=True),
        "unpinned": Checkpoint("unpinned", {}, netns=""),
    }
    assert nets.teardown_needs_pause("a", "none") is False
    assert nets.teardown_needs_pause("torn", "none") is False  # nothing left to do
    assert nets.teardown_needs_pause("unpinned", "none") is True
    # No checkpoint of ours: a pod cri-dockerd set up, adopted from its pause's namespace.
    assert nets.teardown_needs_pause("cri-dockerd-pod", "none") is True
    assert nets.teardown_needs_pause("docker-network-pod", "bridge") is False
