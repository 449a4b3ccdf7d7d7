"""Malformed, truncated and oversized requests get a clear status; crishim keeps serving.

The oracle for "malformed" is the official protobuf runtime: a buffer it
refuses must get INVALID_ARGUMENT from crishim, and one it accepts must not.
Damaged requests go to ListPodSandbox (a nested message, a map, strings, and
no side effects): a damaged RunPodSandbox that happens to be valid would
really create a pod.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import grpc
import pytest

from tests.harness.clients import Official, official_accepts
from tests.integration.test_containers import pod  # noqa: F401  (fixture)

LIST_PODS = "/runtime.v1.RuntimeService/ListPodSandbox"
UPDATE_CONFIG = "/runtime.v1.RuntimeService/UpdateRuntimeConfig"
VERSION = "/runtime.v1.RuntimeService/Version"


def raw_call(official: Official, path: str, payload: bytes) -> grpc.StatusCode:
    return raw_call_details(official, path, payload)[0]


def raw_call_details(official: Official, path: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    try:
        official.channel.unary_unary(path)(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def sample_list_request(pb) -> bytes:
    pod_filter = pb.PodSandboxFilter(
        id="0123456789abcdef",
        state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY),
        label_selector={"app": "nginx", "tier": "web", "": ""},
    )
    return pb.ListPodSandboxRequest(filter=pod_filter).SerializeToString()


def judged_like_the_official_runtime(official: Official, pb, payload: bytes) -> None:
    code, details = raw_call_details(official, LIST_PODS, payload)
    if official_accepts(pb.ListPodSandboxRequest, payload):
        assert code == grpc.StatusCode.OK, (payload.hex(), code, details)
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (payload.hex(), code)
        assert "malformed ListPodSandboxRequest" in details


def test_every_truncation_of_a_request_is_judged_like_the_official_runtime(
    official: Official, pb
) -> None:
    data = sample_list_request(pb)
    for cut in range(1, len(data)):
        judged_like_the_official_runtime(official, pb, data[:cut])


def test_hundreds_of_random_requests_never_crash_crishim(official: Official, pb, crishim) -> None:
    rng = random.Random(20261122)
    seen = set()
    for i in range(300):
        payload = rng.randbytes(rng.randint(1, 200))
        path = (LIST_PODS, UPDATE_CONFIG, VERSION)[i % 3]
        code = raw_call(official, path, payload)
        seen.add(code)
        assert code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.OK,  # valid by chance, e.g. unknown fields only
        ), f"request {i} to {path}: {code}"
    assert grpc.StatusCode.INVALID_ARGUMENT in seen
    # Still serving, and no call fell through to the "internal error" path.
    assert official.runtime.Version(pb.VersionRequest(), timeout=10).runtime_name == "docker"
    assert not [e for e in crishim.events() if e.get("event") == "rpc_internal_error"]


def test_mutated_requests_are_judged_like_the_official_runtime(official: Official, pb) -> None:
    rng = random.Random(7)
    data = sample_list_request(pb)
    for _ in range(200):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        judged_like_the_official_runtime(official, pb, bytes(mutated))


def test_a_malformed_request_is_logged_with_its_status(official: Official, crishim) -> None:
    assert (
        raw_call(official, UPDATE_CONFIG, b"\x0a\x05\x0a\x03") == grpc.StatusCode.INVALID_ARGUMENT
    )
    events = [e for e in crishim.events() if e.get("event") == "rpc"]
    last = [e for e in events if e.get("rpc") == "UpdateRuntimeConfig"][-1]
    assert last["code"] == "INVALID_ARGUMENT"
    assert "malformed UpdateRuntimeConfigRequest" in last["detail"]
    assert last["level"] == "warning"


def test_an_oversized_request_is_refused(official: Official, pb) -> None:
    big = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="x" * (17 << 20)))
    )
    with pytest.raises(grpc.RpcError) as err:
        official.runtime.UpdateRuntimeConfig(big, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit" in err.value.details()
    assert official.runtime.Version(pb.VersionRequest(), timeout=10).runtime_name == "docker"


# -- issue 12: out-of-range enums and escaping log paths ---------------------------------


def _sandbox_with(pb, **kw):
    from tests.integration.test_sandboxes import sandbox_config

    return sandbox_config(pb, **kw)


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("protocol", "port_mappings.protocol"),
        ("seccomp", "profile_type"),
        ("network-mode", "namespace_options.network"),
        ("pid-mode", "namespace_options.pid"),
    ],
)
def test_an_undeclared_enum_value_in_a_sandbox_is_invalid_argument(official, case, field) -> None:
    pb = official.pb
    config = _sandbox_with(pb)
    if case == "protocol":
        config.port_mappings.add(protocol=99, container_port=80, host_port=8080)
    elif case == "seccomp":
        config.linux.security_context.seccomp.profile_type = 7
    elif case == "network-mode":
        config.linux.security_context.namespace_options.network = 9
    else:
        config.linux.security_context.namespace_options.pid = 17
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("propagation", "mounts.propagation"),
        ("pid-mode", "namespace_options.pid"),
        ("stop-signal", "stop_signal"),
        ("log-up", "leaves the log directory"),
        ("log-absolute", "must be relative"),
        ("log-no-directory", "log_directory must be absolute"),
    ],
)
def test_a_bad_container_request_is_invalid_argument(official, pod, case, field) -> None:  # noqa: F811
    pb = official.pb
    sandbox_id, sandbox = pod
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=f"bad-{case}"),
        image=pb.ImageSpec(image="crishim-test/busybox:latest"),
        log_path="c/0.log",
    )
    sandbox = pb.PodSandboxConfig.FromString(sandbox.SerializeToString())
    if case == "propagation":
        config.mounts.add(container_path="/x", host_path="/tmp", propagation=42)
    elif case == "pid-mode":
        config.linux.security_context.namespace_options.pid = 17
    elif case == "stop-signal":
        config.stop_signal = 999
    elif case == "log-up":
        config.log_path = "sub/../../../escaped.log"
    elif case == "log-absolute":
        config.log_path = "/tmp/escaped.log"
    else:
        sandbox.log_directory = ""
        config.log_path = "here.log"
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox
            ),
            timeout=30,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()


# -- issue 12: what Docker would answer with a 500, or accept --------------------------


def _containers(dockerd) -> set[str]:
    return set(dockerd.docker("ps", "-aq", "--no-trunc").split())


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("name-dots", "config.metadata.name"),
        ("name-long", "config.metadata.name"),
        ("name-underscore", "config.metadata.name"),
        ("name-slash", "config.metadata.name"),
        ("name-empty", "config.metadata.name"),
        ("namespace-dots", "config.metadata.namespace"),
        ("uid-dots", "config.metadata.uid"),
        ("hostname-long", "config.hostname"),
        ("hostname-slash", "config.hostname"),
        ("dns-server", "config.dns_config.servers"),
        ("host-ip", "host_ip"),
        ("host-port-twice", "mapped twice"),
        ("sctp-host-port", "SCTP"),
        ("sysctl-hostname", "kernel.hostname"),
        ("run-as-user", "run_as_user"),
        ("huge-user", "run_as_user"),
        ("groups", "supplemental_groups"),
        ("empty-label-key", "config.labels"),
    ],
)
def test_a_pod_docker_would_refuse_is_invalid_argument(official, dockerd, case, field) -> None:
    pb = official.pb
    config = _sandbox_with(pb)
    sc = config.linux.security_context
    if case == "name-dots":
        config.metadata.name = ".."
    elif case == "name-long":
        config.metadata.name = "x" * 254
    elif case == "name-underscore":
        config.metadata.name = "a_b"
    elif case == "name-slash":
        config.metadata.name = "/x"
    elif case == "name-empty":
        config.metadata.name = ""
    elif case == "namespace-dots":
        config.metadata.namespace = ".."
    elif case == "uid-dots":
        config.metadata.uid = ".."
    elif case == "hostname-long":
        config.hostname = "h" * 300
    elif case == "hostname-slash":
        config.hostname = "a/b"
    elif case == "dns-server":
        config.dns_config.servers[:] = ["not-an-ip"]
    elif case == "host-ip":
        config.port_mappings.add(container_port=80, host_port=18181, host_ip="not-an-ip")
    elif case == "host-port-twice":
        config.port_mappings.add(container_port=80, host_port=18182)
        config.port_mappings.add(container_port=81, host_port=18182)
    elif case == "sctp-host-port":  # the suite's crishim runs Docker's bridge
        config.port_mappings.add(protocol=pb.SCTP, container_port=80, host_port=18183)
    elif case == "sysctl-hostname":
        config.linux.sysctls["kernel.hostname"] = "evil"
    elif case == "run-as-user":
        sc.run_as_user.value = -1
    elif case == "huge-user":
        sc.run_as_user.value = 2**63 - 1
    elif case == "groups":
        sc.supplemental_groups.extend([-5])
    else:
        config.labels[""] = "x"
    before = _containers(dockerd)
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert field in refused.value.details()
    assert _containers(dockerd) == before, "nothing was created"


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("mount-relative", "container_path"),
        ("mount-colon", "container_path"),
        ("device-permissions", "permissions"),
        ("cpu-shares", "cpu_shares"),
        ("seccomp-dev-zero", "not a regular file"),
        ("seccomp-fifo", "not a regular file"),
        ("seccomp-not-json", "not JSON"),
        ("name-underscore", "config.metadata.name"),
    ],
)
def test_a_container_docker_would_refuse_is_invalid_argument(
    official,
    dockerd,
    pod,  # noqa: F811
    workdir,
    case,
    field,
) -> None:
    pb = official.pb
    sandbox_id, sandbox = pod
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=f"bad-{case}"),
        image=pb.ImageSpec(image="crishim-test/busybox:latest"),
        log_path="c/0.log",
    )
    seccomp = config.linux.security_context.seccomp
    if case == "mount-relative":
        config.mounts.add(container_path="data", host_path="/tmp")
    elif case == "mount-colon":
        config.mounts.add(container_path="/data:rw", host_path="/tmp")
    elif case == "device-permissions":
        config.devices.add(container_path="/dev/null2", host_path="/dev/null", permissions="xyz")
    elif case == "cpu-shares":
        config.linux.resources.cpu_shares = -5
    elif case == "seccomp-dev-zero":
        seccomp.profile_type, seccomp.localhost_ref = pb.SecurityProfile.Localhost, "/dev/zero"
    elif case == "seccomp-fifo":
        fifo = workdir / "seccomp-fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        seccomp.profile_type, seccomp.localhost_ref = pb.SecurityProfile.Localhost, str(fifo)
    elif case == "seccomp-not-json":
        bad = workdir / "seccomp-bad.json"
        bad.write_text("{ not json")
        seccomp.profile_type, seccomp.localhost_ref = pb.SecurityProfile.Localhost, str(bad)
    else:
        config.metadata.name = "a_b"  # '_' separates the parts of the Docker name
    before = _containers(dockerd)
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox
            ),
            timeout=30,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert field in refused.value.details()
    assert _containers(dockerd) == before, "nothing was created"


def test_a_missing_mount_source_is_invalid_argument_and_holds_nothing(
    official,
    dockerd,
    crishim,
    pod,  # noqa: F811
    workdir,
) -> None:
    """Checked in a worker-thread trip before the create: refused before Docker, with no
    container (a create's mark), log directory or name left behind; the same name works
    once the path exists."""
    pb = official.pb
    sandbox_id, sandbox = pod
    source = workdir / f"mount-source-{uuid.uuid4().hex[:8]}"
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="mounts-missing"),
        image=pb.ImageSpec(image="crishim-test/busybox:latest"),
        command=["sleep", "300"],
        log_path="mounts-missing/0.log",
    )
    config.mounts.add(container_path="/data", host_path=str(source))
    request = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox
    )
    before = _containers(dockerd)
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.CreateContainer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert str(source) in refused.value.details()
    assert _containers(dockerd) == before, "nothing was created"
    assert not (Path(sandbox.log_directory) / "mounts-missing").exists()
    source.mkdir()
    (source / "hello").write_text("hi")
    cid = official.runtime.CreateContainer(request, timeout=30).container_id
    official.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
    out = official.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["cat", "/data/hello"], timeout=10), timeout=30
    )
    assert out.stdout == b"hi"
    assert (Path(sandbox.log_directory) / "mounts-missing").is_dir()


def test_a_negative_stop_timeout_is_invalid_argument(official, pod) -> None:  # noqa: F811
    from tests.integration.test_containers import create

    cid = create(official, pod, "stoppable", ["sleep", "300"])
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.StopContainer(
            official.pb.StopContainerRequest(container_id=cid, timeout=-1), timeout=30
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_names_as_critest_and_crictl_users_write_them_run_and_read_back(official) -> None:
    """critest names its pods and containers with capitals; Kubernetes' DNS rules are the
    API server's. A pod and a container so named run, and List/Status give the names back."""
    pb = official.pb
    suffix = uuid.uuid4()
    config = _sandbox_with(pb, name=f"create-PodSandbox-for-container-{suffix}")
    config.metadata.namespace = "NamespaceOption.Test-1"
    config.hostname = "podhost"
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    try:
        cname = f"Container-For-{suffix}"
        cid = official.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name=cname),
                    image=pb.ImageSpec(image="crishim-test/busybox:latest"),
                    command=["sleep", "300"],
                    log_path="c/0.log",
                ),
                sandbox_config=config,
            ),
            timeout=60,
        ).container_id
        status = official.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30
        ).status
        assert status.metadata.name == config.metadata.name
        assert status.metadata.namespace == "NamespaceOption.Test-1"
        listed = official.runtime.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id)),
            timeout=30,
        ).containers
        assert [(c.id, c.metadata.name) for c in listed] == [(cid, cname)]
    finally:
        official.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
