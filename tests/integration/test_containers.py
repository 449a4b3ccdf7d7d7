"""Containers of a pod through the official client, on the private dockerd.

Until the CRI log follower lands, container output is read with `docker logs`
and `docker exec` on the private daemon.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from tests.harness.clients import Official
from tests.harness.procs import wait_for
from tests.integration.test_sandboxes import sandbox_config


@pytest.fixture
def pod(official: Official):
    """A running sandbox (removed with its containers after the test) and its config."""
    pb = official.pb
    config = sandbox_config(pb)
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    yield sandbox_id, config
    official.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
    )


def create(
    official: Official, pod, name: str, command: list[str], start: bool = True, **config_kw
) -> str:
    pb = official.pb
    sandbox_id, sandbox = pod
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=config_kw.pop("attempt", 0)),
        image=pb.ImageSpec(image=config_kw.pop("image", "crishim-test/busybox:latest")),
        command=command,
        log_path=f"{name}/0.log",
        labels={"io.kubernetes.container.name": name, "role": name},
        annotations={"io.kubernetes.container.hash": "ad01c60e"},
        **config_kw,
    )
    container_id = official.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox),
        timeout=60,
    ).container_id
    if start:
        official.runtime.StartContainer(
            pb.StartContainerRequest(container_id=container_id), timeout=60
        )
    return container_id


def status(official: Official, container_id: str):
    return official.runtime.ContainerStatus(
        official.pb.ContainerStatusRequest(container_id=container_id), timeout=30
    ).status


def wait_exited(official: Official, container_id: str, timeout: float = 30):
    wait_for(
        lambda: status(official, container_id).state == official.pb.CONTAINER_EXITED,
        timeout,
        "exit",
    )
    return status(official, container_id)


def test_two_containers_share_network_and_ipc(official: Official, pod, dockerd) -> None:
    server = create(
        official,
        pod,
        "server",
        ["sh", "-c", "echo shared > /dev/shm/marker; echo hello-over-localhost | nc -l -p 8080"],
    )
    wait_for(
        lambda: "8080" in dockerd.docker("exec", server, "netstat", "-ltn"), 20, "the server socket"
    )
    client = create(official, pod, "client", ["sh", "-c", "nc 127.0.0.1 8080; cat /dev/shm/marker"])
    assert wait_exited(official, client).exit_code == 0
    assert dockerd.docker("logs", client) == "hello-over-localhost\nshared\n"


def test_env_working_dir_user_and_image_run_as_given(official: Official, pod, dockerd) -> None:
    pb = official.pb
    container = create(
        official,
        pod,
        "app",
        ["sh", "-c", "echo $GREETING; pwd; id -u; id -g; sleep 300"],
        envs=[pb.KeyValue(key="GREETING", value="hi there")],
        working_dir="/tmp",
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=1000)
            )
        ),
    )
    wait_for(lambda: len(dockerd.docker("logs", container).splitlines()) == 4, 20, "the output")
    assert dockerd.docker("logs", container).splitlines() == ["hi there", "/tmp", "1000", "1000"]
    s = status(official, container)
    assert s.state == pb.CONTAINER_RUNNING
    assert s.image.image == "crishim-test/busybox:latest"
    assert s.image_ref.startswith("sha256:")
    assert (
        s.image_ref
        == official.image.ImageStatus(
            pb.ImageStatusRequest(image=pb.ImageSpec(image="crishim-test/busybox:latest")),
            timeout=30,
        ).image.id
    ), "ContainerStatus.image_ref is what ImageStatus reports as id"


def test_a_readonly_mount_is_enforced(official: Official, pod, dockerd, workdir) -> None:
    pb = official.pb
    ro, rw = workdir / f"ro-{uuid.uuid4().hex[:6]}", workdir / f"rw-{uuid.uuid4().hex[:6]}"
    ro.mkdir()
    rw.mkdir()
    (ro / "given.txt").write_text("from the host\n")
    container = create(
        official,
        pod,
        "mounts",
        ["sleep", "300"],
        mounts=[
            pb.Mount(host_path=str(ro), container_path="/ro", readonly=True),
            pb.Mount(host_path=str(rw), container_path="/rw"),
        ],
    )
    assert dockerd.docker("exec", container, "cat", "/ro/given.txt") == "from the host\n"
    with pytest.raises(RuntimeError, match="Read-only file system"):
        dockerd.docker("exec", container, "touch", "/ro/new")
    dockerd.docker("exec", container, "touch", "/rw/new")
    assert (rw / "new").exists()
    mounts = {m.container_path: m for m in status(official, container).mounts}
    assert mounts["/ro"].readonly is True
    assert mounts["/rw"].readonly is False


def test_a_missing_host_path_is_refused(official: Official, pod) -> None:
    pb = official.pb
    with pytest.raises(grpc.RpcError) as err:
        create(
            official,
            pod,
            "nomount",
            ["true"],
            start=False,
            mounts=[pb.Mount(host_path="/no/such/dir", container_path="/x")],
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/no/such/dir" in err.value.details()


def test_exit_codes_are_reported_with_completed_or_error(official: Official, pod) -> None:
    ok = create(official, pod, "ok", ["sh", "-c", "exit 0"])
    bad = create(official, pod, "bad", ["sh", "-c", "exit 3"])
    done = wait_exited(official, ok)
    assert (done.exit_code, done.reason) == (0, "Completed")
    assert done.finished_at >= done.started_at > 0
    failed = wait_exited(official, bad)
    assert (failed.exit_code, failed.reason) == (3, "Error")


def test_a_memory_limit_oom_kills_and_is_reported(official: Official, pod) -> None:
    pb = official.pb
    limit = 32 * 1024 * 1024
    container = create(
        official,
        pod,
        "hog",
        ["sh", "-c", 'a=x; while :; do a="$a$a"; done'],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(
                memory_limit_in_bytes=limit, memory_swap_limit_in_bytes=limit
            )
        ),
    )
    s = wait_exited(official, container, 60)
    assert s.reason == "OOMKilled"
    assert s.resources.linux.memory_limit_in_bytes == limit


def test_stop_honours_the_grace_period_and_the_trap_runs(official: Official, pod, workdir) -> None:
    pb = official.pb
    shared = workdir / f"trap-{uuid.uuid4().hex[:6]}"
    shared.mkdir()
    container = create(
        official,
        pod,
        "trapper",
        [
            "sh",
            "-c",
            'trap "echo trapped > /shared/trap; exit 0" TERM; touch /shared/set; '
            "while :; do sleep 1; done",
        ],
        mounts=[pb.Mount(host_path=str(shared), container_path="/shared")],
    )
    # Running is not enough on a busy machine: the shell may not have set its trap yet.
    wait_for((shared / "set").exists, 30, "the trap set")
    official.runtime.StopContainer(
        pb.StopContainerRequest(container_id=container, timeout=20), timeout=60
    )
    s = status(official, container)
    assert s.state == pb.CONTAINER_EXITED
    assert s.exit_code == 0, "exited from the trap, not killed"
    assert (shared / "trap").read_text() == "trapped\n"
    # Idempotent, and timeout 0 on a running container kills at once.
    official.runtime.StopContainer(
        pb.StopContainerRequest(container_id=container, timeout=0), timeout=60
    )
    official.runtime.StopContainer(
        pb.StopContainerRequest(container_id="c" * 64, timeout=0), timeout=60
    )


def test_list_containers_filters(official: Official, pod) -> None:
    pb = official.pb
    sandbox_id = pod[0]
    running = create(official, pod, "runner", ["sleep", "300"])
    created = create(official, pod, "waiter", ["sleep", "300"], start=False)

    def ids(**kw):
        f = pb.ContainerFilter(**kw) if kw else None
        return {
            c.id
            for c in official.runtime.ListContainers(
                pb.ListContainersRequest(filter=f), timeout=30
            ).containers
        }

    assert {running, created} <= ids()
    assert ids(id=running) == {running}
    assert ids(id=running[:13]) == {running}
    assert ids(pod_sandbox_id=sandbox_id) == {running, created}
    assert ids(
        pod_sandbox_id=sandbox_id, state=pb.ContainerStateValue(state=pb.CONTAINER_CREATED)
    ) == {created}
    assert ids(pod_sandbox_id=sandbox_id, label_selector={"role": "runner"}) == {running}
    listed = next(
        c
        for c in official.runtime.ListContainers(pb.ListContainersRequest(), timeout=30).containers
        if c.id == running
    )
    assert listed.metadata.name == "runner"
    assert dict(listed.annotations) == {"io.kubernetes.container.hash": "ad01c60e"}
    assert listed.image_id.startswith("sha256:")


def test_pod_sandbox_status_carries_every_container_of_the_pod(official: Official, pod) -> None:
    """With its timestamp set, the kubelet's evented PLEG takes PodSandboxStatus's
    containers_statuses as the pod's every container, in any state: each as
    ContainerStatus shows it, the first process's user included."""
    pb = official.pb
    sandbox_id = pod[0]

    def in_pod():
        response = official.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30
        )
        assert response.timestamp > 0
        assert response.status.id == sandbox_id
        return {c.id: c for c in response.containers_statuses}

    assert in_pod() == {}
    running = create(official, pod, "runner", ["sleep", "300"])
    created = create(official, pod, "waiter", ["sleep", "300"], start=False)
    exited = create(official, pod, "done", ["sh", "-c", "sleep 1; exit 3"])
    assert in_pod()[exited].state == pb.CONTAINER_RUNNING
    wait_exited(official, exited)
    statuses = in_pod()  # as the container is now, not as it was at the last call
    assert set(statuses) == {running, created, exited}
    for container_id, carried in statuses.items():
        assert carried == status(official, container_id)
    assert statuses[running].HasField("user")  # busybox's sleep runs as root
    assert statuses[running].user.linux.uid == statuses[running].user.linux.gid == 0
    assert not statuses[created].HasField("user")  # no process yet
    assert statuses[exited].exit_code == 3
    assert statuses[created].state == pb.CONTAINER_CREATED
    official.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=exited), timeout=60)
    assert set(in_pod()) == {running, created}


def test_same_name_and_attempt_twice_already_exists(official: Official, pod) -> None:
    create(official, pod, "twice", ["true"], start=False)
    with pytest.raises(grpc.RpcError) as err:
        create(official, pod, "twice", ["true"], start=False)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    create(official, pod, "twice", ["true"], start=False, attempt=1)


def test_remove_is_idempotent_and_status_of_unknown_is_not_found(official: Official, pod) -> None:
    pb = official.pb
    container = create(official, pod, "gone", ["sleep", "300"])
    for _ in range(2):
        official.runtime.RemoveContainer(
            pb.RemoveContainerRequest(container_id=container), timeout=60
        )
    with pytest.raises(grpc.RpcError) as err:
        status(official, container)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        official.runtime.StartContainer(pb.StartContainerRequest(container_id="d" * 64), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_in_an_unknown_sandbox_is_not_found(official: Official, pod) -> None:
    with pytest.raises(grpc.RpcError) as err:
        create(official, ("e" * 64, pod[1]), "orphan", ["true"], start=False)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_container_resources_applies_to_the_running_container(
    official: Official, pod, dockerd
) -> None:
    pb = official.pb
    container = create(official, pod, "resized", ["sleep", "300"])
    request = pb.UpdateContainerResourcesRequest(
        container_id=container,
        linux=pb.LinuxContainerResources(
            cpu_shares=512, memory_limit_in_bytes=96 << 20, memory_swap_limit_in_bytes=96 << 20
        ),
    )
    official.runtime.UpdateContainerResources(request, timeout=60)
    host = json.loads(dockerd.docker("inspect", "--format", "{{json .HostConfig}}", container))
    assert (host["CpuShares"], host["Memory"]) == (512, 96 << 20)
    assert status(official, container).resources.linux.cpu_shares == 512


def test_removing_the_sandbox_removes_its_containers(official: Official, dockerd) -> None:
    pb = official.pb
    config = sandbox_config(pb)
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    container = create(official, (sandbox_id, config), "member", ["sleep", "300"])
    official.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert status(official, container).state == pb.CONTAINER_EXITED
    official.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
    )
    assert not dockerd.docker("ps", "-aq", "--filter", f"id={container}").strip()


def test_a_container_created_by_cri_dockerd_is_adopted(
    official: Official, pod, dockerd, test_images
) -> None:
    pb = official.pb
    sandbox_id, config = pod
    m = config.metadata
    labels = {
        "io.kubernetes.docker.type": "container",
        "io.kubernetes.sandbox.id": sandbox_id,
        "io.kubernetes.container.logpath": f"{config.log_directory}/legacy/0.log",
        "io.kubernetes.container.name": "legacy",
        "annotation.io.kubernetes.container.restartCount": "4",
    }
    name = f"k8s_legacy_{m.name}_{m.namespace}_{m.uid}_4"
    args = [f"--label={k}={v}" for k, v in labels.items()]
    cid = dockerd.docker(
        "run", "-d", "--name", name, *args, test_images.busybox, "sleep", "300"
    ).strip()
    wait_for(
        lambda: any(
            c.id == cid
            for c in official.runtime.ListContainers(
                pb.ListContainersRequest(), timeout=30
            ).containers
        ),
        20,
        "adoption",
    )
    s = status(official, cid)
    assert (s.metadata.name, s.metadata.attempt) == ("legacy", 4)
    assert s.log_path == f"{config.log_directory}/legacy/0.log"
    assert dict(s.annotations) == {"io.kubernetes.container.restartCount": "4"}
    official.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
    official.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    assert not dockerd.docker("ps", "-aq", "--filter", f"id={cid}").strip()


def test_stream_rpcs_return_what_list_returns(official: Official, pod) -> None:
    pb = official.pb
    sandbox_id = pod[0]
    one = create(official, pod, "one", ["sleep", "300"])
    create(official, pod, "two", ["sleep", "300"], start=False)
    running = pb.ContainerFilter(
        pod_sandbox_id=sandbox_id, state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)
    )
    request = pb.StreamContainersRequest(filter=running)
    streamed = [c.id for r in official.runtime.StreamContainers(request) for c in r.containers]
    assert streamed == [one]  # the filter holds
    f = pb.ContainerFilter(pod_sandbox_id=sandbox_id)
    listed = official.runtime.ListContainers(
        pb.ListContainersRequest(filter=f), timeout=30
    ).containers
    streamed = [
        c
        for r in official.runtime.StreamContainers(pb.StreamContainersRequest(filter=f), timeout=30)
        for c in r.containers
    ]
    assert len(streamed) == 2
    assert {c.id: c for c in streamed} == {c.id: c for c in listed}  # whole, field by field
    pods = [
        s
        for r in official.runtime.StreamPodSandboxes(pb.StreamPodSandboxesRequest(), timeout=30)
        for s in r.pod_sandboxes
    ]
    assert [s.id for s in pods].count(sandbox_id) == 1
    listed_pods = official.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
    assert {s.id: s for s in pods} == {s.id: s for s in listed_pods}
    images = [
        i
        for r in official.image.StreamImages(pb.StreamImagesRequest(), timeout=30)
        for i in r.images
    ]
    assert images  # busybox and the pause image at least
    listed_images = official.image.ListImages(pb.ListImagesRequest(), timeout=30).images
    assert {i.id: i for i in images} == {i.id: i for i in listed_images}
