"""Pod sandboxes through the official client: run, status, list, stop, remove, adoption."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import grpc
import pytest

from tests.harness import images
from tests.harness.clients import Official
from tests.harness.paths import LOG_ROOT
from tests.harness.procs import wait_for


def resolver_lines(resolv_conf: str) -> list[str]:
    """What a resolver reads of a resolv.conf: Docker 28 adds comments and blank lines."""
    return [line for line in resolv_conf.splitlines() if line and not line.startswith("#")]


def sandbox_config(pb, name: str | None = None, **linux_kw):
    name = name or f"pod-{uuid.uuid4().hex[:8]}"
    uid = str(uuid.uuid4())
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="tests", uid=uid, attempt=0),
        hostname=name,
        log_directory=str(LOG_ROOT / f"tests_{name}_{uid}"),
        dns_config=pb.DNSConfig(
            servers=["10.96.0.10", "10.96.0.11"],
            searches=["tests.svc.cluster.local", "svc.cluster.local"],
            options=["ndots:5", "timeout:2"],
        ),
        labels={"app": name, "io.kubernetes.pod.namespace": "tests", "tier": "web"},
        annotations={"kubernetes.io/config.source": "api", "empty": ""},
        linux=pb.LinuxPodSandboxConfig(**linux_kw),
    )


@contextlib.contextmanager
def running_pod(client: Official):
    """(sandbox id, config) of a pod run through `client`, removed again on the way out."""
    pb = client.pb
    config = sandbox_config(pb)
    sandbox_id = client.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    try:
        yield sandbox_id, config
    finally:
        client.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )


@pytest.fixture
def pods(official: Official):
    """Run sandboxes; every one is removed after the test."""
    created = []

    def run(config, handler: str = "") -> str:
        response = official.runtime.RunPodSandbox(
            official.pb.RunPodSandboxRequest(config=config, runtime_handler=handler), timeout=120
        )
        created.append(response.pod_sandbox_id)
        return response.pod_sandbox_id

    yield run
    for sandbox_id in created:
        official.runtime.RemovePodSandbox(
            official.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )


def status(official: Official, sandbox_id: str, verbose: bool = False):
    return official.runtime.PodSandboxStatus(
        official.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose), timeout=30
    )


def listing(official: Official, **filter_kw):
    pb = official.pb
    request = pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(**filter_kw) if filter_kw else None
    )
    return official.runtime.ListPodSandbox(request, timeout=30).items


def in_container(dockerd, container_id: str, *cmd: str) -> str:
    return dockerd.docker("exec", container_id, *cmd)


def test_a_sandbox_runs_with_its_metadata_hostname_and_dns(
    official: Official, pods, dockerd
) -> None:
    pb = official.pb
    config = sandbox_config(pb)
    sandbox_id = pods(config)
    s = status(official, sandbox_id).status
    assert s.id == sandbox_id
    assert s.state == pb.SANDBOX_READY
    assert s.metadata == config.metadata
    assert dict(s.labels) == dict(config.labels)
    assert dict(s.annotations) == dict(config.annotations)
    assert abs(s.created_at / 1e9 - time.time()) < 120
    assert s.network.ip.startswith(str(dockerd.subnet.network_address)[:-1])
    assert s.linux.namespaces.options.network == pb.POD
    assert in_container(dockerd, sandbox_id, "hostname").strip() == config.metadata.name
    resolv = in_container(dockerd, sandbox_id, "cat", "/etc/resolv.conf")
    assert sorted(resolver_lines(resolv)) == [
        "nameserver 10.96.0.10",
        "nameserver 10.96.0.11",
        "options ndots:5 timeout:2",
        "search tests.svc.cluster.local svc.cluster.local",
    ], "exactly the servers, searches and options given"


def test_the_docker_names_and_labels_follow_cri_dockerd(official: Official, pods, dockerd) -> None:
    config = sandbox_config(official.pb)
    sandbox_id = pods(config)
    m = config.metadata
    name = dockerd.docker("inspect", "--format", "{{.Name}}", sandbox_id).strip()
    assert name == f"/k8s_POD_{m.name}_{m.namespace}_{m.uid}_0"
    docker_labels = json.loads(
        dockerd.docker("inspect", "--format", "{{json .Config.Labels}}", sandbox_id)
    )
    assert docker_labels["io.kubernetes.docker.type"] == "podsandbox"
    assert docker_labels["annotation.kubernetes.io/config.source"] == "api"


def test_a_host_network_sandbox_uses_the_host_network_and_given_dns(
    official: Official, pods, dockerd
) -> None:
    pb = official.pb
    config = sandbox_config(
        pb,
        security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
        ),
    )
    sandbox_id = pods(config)
    s = status(official, sandbox_id).status
    assert s.linux.namespaces.options.network == pb.NODE
    assert not s.HasField("network")
    assert (
        dockerd.docker("inspect", "--format", "{{.HostConfig.NetworkMode}}", sandbox_id).strip()
        == "host"
    )
    resolv = in_container(dockerd, sandbox_id, "cat", "/etc/resolv.conf")
    assert resolv.splitlines()[0] == "nameserver 10.96.0.10"


def test_port_mappings_become_docker_port_bindings(official: Official, pods, dockerd) -> None:
    pb = official.pb
    config = sandbox_config(pb)
    config.port_mappings.add(
        protocol=pb.TCP, container_port=80, host_port=18080, host_ip="127.0.0.1"
    )
    config.port_mappings.add(protocol=pb.UDP, container_port=53, host_port=0)  # no host port
    sandbox_id = pods(config)
    bindings = json.loads(
        dockerd.docker("inspect", "--format", "{{json .HostConfig.PortBindings}}", sandbox_id)
    )
    assert bindings == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}


def test_what_crishim_asks_docker_for_security_and_oom(
    pod_cgroup: str, official: Official, pods, dockerd, crishim
) -> None:
    pb = official.pb
    config = sandbox_config(
        pb,
        cgroup_parent=f"{pod_cgroup}/pod1",
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        security_context=pb.LinuxSandboxSecurityContext(
            run_as_user=pb.Int64Value(value=0),
            supplemental_groups=[2000],
            readonly_rootfs=True,
            seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
        ),
    )
    sandbox_id = pods(config)
    host = json.loads(dockerd.docker("inspect", "--format", "{{json .HostConfig}}", sandbox_id))
    assert host["CgroupParent"] == f"{pod_cgroup}/pod1"  # cgroupfs driver: as given
    assert host["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert host["ReadonlyRootfs"] is True
    assert host["GroupAdd"] == ["2000"]
    assert "seccomp=unconfined" in host["SecurityOpt"]
    assert host["IpcMode"] == "shareable"
    user = dockerd.docker("inspect", "--format", "{{.Config.User}}", sandbox_id).strip()
    assert user == "0"
    # This VM lacks CAP_SYS_RESOURCE: -998 would fail at start, so crishim asks for 0, once warned.
    assert host["OomScoreAdj"] == 0
    assert [e for e in crishim.events() if e.get("event") == "oom_score_adj_fallback"]


def test_stop_is_idempotent_and_status_is_never_stale(official: Official, pods) -> None:
    pb = official.pb
    sandbox_id = pods(sandbox_config(pb))
    for _ in range(2):
        official.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        # Read right after the write returned: the store must already know.
        assert status(official, sandbox_id).status.state == pb.SANDBOX_NOTREADY
    official.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="f" * 64), timeout=30)


def test_remove_is_idempotent_and_unknown_ids_are_not_found(official: Official, pods) -> None:
    pb = official.pb
    sandbox_id = pods(sandbox_config(pb))
    for _ in range(2):
        official.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
    assert sandbox_id not in [s.id for s in listing(official)]
    with pytest.raises(grpc.RpcError) as err:
        status(official, sandbox_id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_filters_by_id_state_and_labels(official: Official, pods) -> None:
    pb = official.pb
    a, b = pods(sandbox_config(pb)), pods(sandbox_config(pb))
    official.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b), timeout=60)
    assert {a, b} <= {s.id for s in listing(official)}
    assert [s.id for s in listing(official, id=a)] == [a]
    assert [s.id for s in listing(official, id=a[:12])] == [a]
    ready = {s.id for s in listing(official, state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))}
    assert a in ready
    assert b not in ready
    app_a = status(official, a).status.labels["app"]
    assert [s.id for s in listing(official, label_selector={"app": app_a, "tier": "web"})] == [a]
    assert listing(official, label_selector={"app": app_a, "tier": "db"}) == []


def test_the_same_pod_and_attempt_twice_already_exists(official: Official, pods) -> None:
    config = sandbox_config(official.pb)
    pods(config)
    with pytest.raises(grpc.RpcError) as err:
        pods(config)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize("handler", ["", "docker", "runc"])
def test_known_runtime_handlers_are_accepted(official: Official, pods, handler) -> None:
    sandbox_id = pods(sandbox_config(official.pb), handler)
    assert status(official, sandbox_id).status.runtime_handler == handler


def test_an_unknown_runtime_handler_is_refused(official: Official, pods) -> None:
    with pytest.raises(grpc.RpcError) as err:
        pods(sandbox_config(official.pb), "kata-qemu")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kata-qemu" in err.value.details()


def test_bad_metadata_is_invalid_naming_the_field(official: Official, pods) -> None:
    pb = official.pb
    config = sandbox_config(pb)
    config.metadata.name = "bad_name"
    with pytest.raises(grpc.RpcError) as err:
        pods(config)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.metadata.name" in err.value.details()


def test_a_sandbox_stopped_behind_crishims_back_is_seen_through_events(
    official: Official, pods, dockerd
) -> None:
    pb = official.pb
    sandbox_id = pods(sandbox_config(pb))
    dockerd.docker("stop", "-t", "1", sandbox_id)
    wait_for(
        lambda: status(official, sandbox_id).status.state == pb.SANDBOX_NOTREADY,
        20,
        "the stop event",
    )


def test_a_sandbox_created_by_cri_dockerd_is_adopted(
    official: Official, dockerd, test_images
) -> None:
    pb = official.pb
    uid = str(uuid.uuid4())
    name = f"k8s_POD_legacy_kube-system_{uid}_2"
    labels = {
        "io.kubernetes.docker.type": "podsandbox",
        "io.kubernetes.container.name": "POD",
        "io.kubernetes.pod.name": "legacy",
        "io.kubernetes.pod.namespace": "kube-system",
        "io.kubernetes.pod.uid": uid,
        "annotation.kubernetes.io/config.seen": "2025-01-01T00:00:00Z",
    }
    args = [f"--label={k}={v}" for k, v in labels.items()]
    sandbox_id = dockerd.docker("run", "-d", "--name", name, *args, test_images.pause).strip()
    wait_for(lambda: sandbox_id in [s.id for s in listing(official)], 20, "adoption")
    s = status(official, sandbox_id).status
    assert (s.metadata.name, s.metadata.namespace, s.metadata.uid, s.metadata.attempt) == (
        "legacy",
        "kube-system",
        uid,
        2,
    )
    assert dict(s.annotations) == {"kubernetes.io/config.seen": "2025-01-01T00:00:00Z"}
    assert "io.kubernetes.container.name" not in s.labels
    official.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    official.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
    )
    assert not dockerd.docker("ps", "-aq", "--filter", f"id={sandbox_id}").strip()


def test_a_sandbox_that_fails_to_start_is_undone(official: Official, dockerd) -> None:
    pb = official.pb
    config = sandbox_config(pb, sysctls={"net.ipv4.no_such_setting": "1"})
    with pytest.raises(grpc.RpcError):
        official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120)
    m = config.metadata
    name = f"k8s_POD_{m.name}_{m.namespace}_{m.uid}_0"
    assert not dockerd.docker("ps", "-aq", "--filter", f"name={name}").strip(), "create undone"
    assert config.metadata.name not in [s.metadata.name for s in listing(official)]


def test_the_store_resyncs_after_docker_restarts(private_node) -> None:
    daemon, proc, client = private_node
    pb = client.pb
    sandbox_id = client.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=sandbox_config(pb)), timeout=120
    ).pod_sandbox_id
    daemon.stop_daemon()  # its containers stop with it; crishim's event stream breaks
    daemon.start()
    wait_for(lambda: status(client, sandbox_id).status.state == pb.SANDBOX_NOTREADY, 30, "resync")
    # Events flow again: a sandbox created behind crishim's back shows up.
    uid = "resync-uid"
    other = daemon.docker(
        "create",
        "--name",
        f"k8s_POD_late_tests_{uid}_0",
        "--label",
        "io.kubernetes.docker.type=podsandbox",
        images.PAUSE_IMAGE,
    ).strip()
    wait_for(lambda: other in [s.id for s in listing(client)], 30, "the new sandbox")
    assert any(e.get("event") == "store_events_lost" for e in proc.events())


def test_a_pod_with_huge_annotations_does_not_break_the_event_stream(
    official: Official, pods, dockerd, crishim
) -> None:
    pb = official.pb
    config = sandbox_config(pb)
    for i in range(8):  # ~640 KiB of labels in every Docker event of this pod
        config.annotations[f"example.com/big-{i}"] = "x" * 80_000
    before = len(crishim.events())
    pods(config)
    # A pod only the event stream can bring in: made with the docker CLI.
    uid = str(uuid.uuid4())
    cli_pod = dockerd.docker(
        "run", "-d", "--name", f"k8s_POD_cli_tests_{uid}_0", "--network", "none",
        "--label", "io.kubernetes.docker.type=podsandbox", images.PAUSE_IMAGE,
    ).strip()  # fmt: skip
    try:
        wait_for(lambda: cli_pod in [p.id for p in listing(official)], 10, "the CLI pod listed")
        troubles = [
            e
            for e in crishim.events()[before:]
            if e.get("event") in ("store_events_lost", "store_events_failed")
        ]
        assert troubles == []
    finally:
        dockerd.docker("rm", "-f", cli_pod)
