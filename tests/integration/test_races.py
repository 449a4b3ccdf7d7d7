"""Calls that race on one object, as the kubelet, its garbage collector and retries do."""

from __future__ import annotations

import concurrent.futures

import grpc

from tests.harness.clients import Official
from tests.integration.test_containers import create
from tests.integration.test_sandboxes import sandbox_config


def test_concurrent_stops_and_removes_of_one_pod_all_succeed(official: Official, dockerd) -> None:
    pb, rt = official.pb, official.runtime
    pods = []
    for _ in range(4):
        config = sandbox_config(pb)
        sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        cid = create(official, (sid, config), "app", ["sleep", "300"])
        pods.append((sid, cid))

    def calls(sid: str, cid: str):
        return [
            lambda: rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0)),
            lambda: rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0)),
            lambda: rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid)),
            lambda: rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid)),
            *[lambda: rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))] * 4,
            *[lambda: rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))] * 8,
        ]

    failures = []

    def call(fn) -> None:
        try:
            fn()
        except grpc.RpcError as exc:
            failures.append(f"{exc.code()}: {exc.details()}")

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(call, [fn for sid, cid in pods for fn in calls(sid, cid)]))
    assert failures == []
    # A last RemovePodSandbox (the kubelet's retry) also succeeds, and nothing is left.
    for sid, _ in pods:
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    left = set(dockerd.docker("ps", "-aq", "--no-trunc").split())
    assert not left & {i for pod in pods for i in pod}
    listed = {s.id for s in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items}
    assert not listed & {sid for sid, _ in pods}
