"""Malformed, truncated and oversized requests get a clear status; crishim keeps serving.

The oracle for "malformed" is the official protobuf runtime: a buffer it
refuses must get INVALID_ARGUMENT from crishim, and one it accepts must not.
"""

from __future__ import annotations

import random

import grpc
import pytest

from tests.harness.clients import Official, official_accepts

RUN_POD = "/runtime.v1.RuntimeService/RunPodSandbox"
UPDATE_CONFIG = "/runtime.v1.RuntimeService/UpdateRuntimeConfig"
VERSION = "/runtime.v1.RuntimeService/Version"


def raw_call(official: Official, path: str, payload: bytes) -> grpc.StatusCode:
    try:
        official.channel.unary_unary(path)(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def sample_run_pod_request(pb) -> bytes:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name="nginx", uid="1f7a-uid", namespace="default", attempt=1
        ),
        hostname="nginx",
        log_directory="/var/log/pods/default_nginx_1f7a-uid",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["default.svc.cluster.local"]),
        port_mappings=[pb.PortMapping(container_port=80, host_port=8080)],
        labels={"app": "nginx", "": ""},
        annotations={"kubernetes.io/config.seen": "2026-11-22T10:00:00Z"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/besteffort/pod1f7a",
            security_context=pb.LinuxSandboxSecurityContext(run_as_user=pb.Int64Value(value=0)),
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        ),
    )
    return pb.RunPodSandboxRequest(config=config, runtime_handler="").SerializeToString()


def test_every_truncation_of_a_request_is_judged_like_the_official_runtime(
    official: Official, pb
) -> None:
    data = sample_run_pod_request(pb)
    for cut in range(1, len(data)):
        prefix = data[:cut]
        code = raw_call(official, RUN_POD, prefix)
        if official_accepts(pb.RunPodSandboxRequest, prefix):
            # A cut at a field boundary is a valid (shorter) message: it reaches the handler.
            assert code == grpc.StatusCode.UNIMPLEMENTED, f"cut at {cut}: {code}"
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"cut at {cut}: {code}"


def test_hundreds_of_random_requests_never_crash_crishim(official: Official, pb, crishim) -> None:
    rng = random.Random(20261122)
    seen = set()
    for i in range(300):
        payload = rng.randbytes(rng.randint(1, 200))
        path = (RUN_POD, UPDATE_CONFIG, VERSION)[i % 3]
        code = raw_call(official, path, payload)
        seen.add(code)
        assert code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.UNIMPLEMENTED,  # valid by chance, for an RPC not built yet
            grpc.StatusCode.OK,  # valid by chance, e.g. unknown fields only
        ), f"request {i} to {path}: {code}"
    assert grpc.StatusCode.INVALID_ARGUMENT in seen
    # Still serving, and no call fell through to the "internal error" path.
    assert official.runtime.Version(pb.VersionRequest(), timeout=10).runtime_name == "docker"
    assert not [e for e in crishim.events() if e.get("event") == "rpc_internal_error"]


def test_mutated_requests_are_judged_like_the_official_runtime(official: Official, pb) -> None:
    rng = random.Random(7)
    data = bytearray(sample_run_pod_request(pb))
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        code = raw_call(official, RUN_POD, bytes(mutated))
        if official_accepts(pb.RunPodSandboxRequest, bytes(mutated)):
            assert code == grpc.StatusCode.UNIMPLEMENTED
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, bytes(mutated).hex()


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
