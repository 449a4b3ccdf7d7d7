"""Malformed, truncated and oversized requests get a clear status; crishim keeps serving.

The oracle for "malformed" is the official protobuf runtime: a buffer it
refuses must get INVALID_ARGUMENT from crishim, and one it accepts must not.
Damaged requests go to ListPodSandbox (a nested message, a map, strings, and
no side effects): a damaged RunPodSandbox that happens to be valid would
really create a pod.
"""

from __future__ import annotations

import random

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
