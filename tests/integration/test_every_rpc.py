"""Every RPC of both services answers, none of them UNIMPLEMENTED.

The list of RPCs comes from the official descriptor of protos/, so an RPC
added to the schema is covered without editing this test.
"""

from __future__ import annotations

import grpc
import pytest

from tests.harness.clients import Official

OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
OPEN = grpc.StatusCode.DEADLINE_EXCEEDED  # an event stream stays open until the caller leaves
# What each RPC answers to an empty request.
IMPLEMENTED = {
    "RuntimeService": {
        "Version": OK,
        "Status": OK,
        "RuntimeConfig": OK,
        "UpdateRuntimeConfig": OK,
        "ListPodSandbox": OK,
        "RunPodSandbox": INVALID,  # metadata is required
        "StopPodSandbox": INVALID,  # an id is required
        "RemovePodSandbox": INVALID,
        "PodSandboxStatus": INVALID,
        "ListContainers": OK,
        "StreamPodSandboxes": OK,
        "StreamContainers": OK,
        "CreateContainer": INVALID,  # sandbox id, metadata and image are required
        "StartContainer": INVALID,  # an id is required
        "StopContainer": INVALID,
        "RemoveContainer": INVALID,
        "ContainerStatus": INVALID,
        "UpdateContainerResources": INVALID,
        "ExecSync": INVALID,
        "ReopenContainerLog": INVALID,
        "Exec": INVALID,  # one of stdin, stdout, stderr is required
        "Attach": INVALID,
        "PortForward": INVALID,  # a sandbox id is required
        "ContainerStats": INVALID,  # an id is required
        "ListContainerStats": OK,
        "StreamContainerStats": OK,
        "PodSandboxStats": INVALID,
        "ListPodSandboxStats": OK,
        "StreamPodSandboxStats": OK,
        "ListMetricDescriptors": OK,
        "ListPodSandboxMetrics": OK,
        "StreamPodSandboxMetrics": OK,
        "GetContainerEvents": OPEN,
        "UpdatePodSandboxResources": INVALID,  # a sandbox id is required
        "CheckpointContainer": INVALID,  # a container id is required
    },
    "ImageService": {
        "ListImages": OK,
        "StreamImages": OK,
        "ImageFsInfo": OK,
        "ImageStatus": INVALID,  # an image must be named
        "PullImage": INVALID,
        "RemoveImage": INVALID,
    },
}


def all_methods(pb):
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            yield service, method


def call(official: Official, service, method):
    path = f"/{service.full_name}/{method.name}"
    request_cls = official.pb.__dict__[method.input_type.name]
    response_cls = official.pb.__dict__[method.output_type.name]
    kwargs = {
        "request_serializer": request_cls.SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    if method.server_streaming:
        timeout = 2 if method.name == "GetContainerEvents" else 10
        return list(official.channel.unary_stream(path, **kwargs)(request_cls(), timeout=timeout))
    return official.channel.unary_unary(path, **kwargs)(request_cls(), timeout=10)


def test_the_schema_has_both_services_and_the_newest_rpcs(pb) -> None:
    names = {f"{s.name}/{m.name}" for s, m in all_methods(pb)}
    assert len(names) == 41
    for rpc in (
        "RuntimeService/UpdatePodSandboxResources",
        "RuntimeService/StreamContainers",
        "RuntimeService/RuntimeConfig",
        "ImageService/StreamImages",
    ):
        assert rpc in names


def test_every_rpc_answers(official: Official, pb) -> None:
    outcomes = {}
    for service, method in all_methods(pb):
        try:
            call(official, service, method)
            outcomes[method.name] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            outcomes[method.name] = exc.code()
        expected = IMPLEMENTED[service.name].get(method.name, grpc.StatusCode.UNIMPLEMENTED)
        got = outcomes[method.name]
        assert got == expected, f"{service.name}/{method.name} answered {got}"
    assert grpc.StatusCode.UNKNOWN not in outcomes.values()
    assert grpc.StatusCode.UNIMPLEMENTED not in outcomes.values(), "every RPC is real"


def test_an_rpc_missing_from_the_schema_is_unimplemented(official: Official) -> None:
    call = official.channel.unary_unary("/runtime.v1.RuntimeService/NoSuchCall")
    with pytest.raises(grpc.RpcError) as err:
        call(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
