"""A busy node: creation and cancellation keep their guarantees with every core taken.

CPU hogs run on every core (tests/harness/starve.py) while the kubelet's calls hit
their deadlines mid-way, as they do on a node packed with pods, and are retried at
once. Every retry gets a pod (or finds the pod the cut-short call finished, Ready),
and nothing of the calls cut short outlives them: no container, no address in
host-local's store, no veth.
"""

from __future__ import annotations

import random
import uuid

import grpc

from tests.harness.procs import wait_for
from tests.integration.test_cni import Node, cni  # noqa: F401  (fixture)
from tests.integration.test_half_created import named, outcome

CUT_SHORT = 8  # calls cut short by their deadline that the test retries
MAX_PODS = 30  # a bound: a machine so fast that few are cut short fails the test


def test_cancelled_runs_retried_at_once_get_their_pod_and_leak_nothing(
    cni,  # noqa: F811
    dockerd,
    starved,
) -> None:
    node: Node = cni()
    pb, rt = node.pb, node.rt
    rng = random.Random(2026_12_07)
    cut_short = 0
    configs = []
    while cut_short < CUT_SHORT and len(configs) < MAX_PODS:
        config = node.config(name=f"starved-{uuid.uuid4().hex[:6]}")
        configs.append(config)
        request = pb.RunPodSandboxRequest(config=config)
        code, answer = outcome(
            lambda r=request: rt.RunPodSandbox(r, timeout=rng.uniform(0.02, 0.5))
        )
        if code == grpc.StatusCode.OK:
            node.pods.append(answer.pod_sandbox_id)
            continue  # answered in time: nothing to retry
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, answer
        cut_short += 1
        # The kubelet's retry, at once, with its usual deadline.
        code, answer = outcome(lambda r=request: rt.RunPodSandbox(r, timeout=120))
        if code == grpc.StatusCode.OK:
            node.pods.append(answer.pod_sandbox_id)
            continue
        # Only where the cut-short call had finished: its pod is there, Ready.
        assert code == grpc.StatusCode.ALREADY_EXISTS, answer
        listed = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
        found = [p for p in listed if p.metadata.uid == config.metadata.uid]
        assert len(found) == 1, (answer, _creates_logged(node, config.metadata.uid))
        (pod,) = found
        assert pod.state == pb.SANDBOX_READY
        node.pods.append(pod.id)
    assert cut_short == CUT_SHORT, "calls were cut short (else the test tests little)"
    for sandbox_id in node.pods:
        status = node.status(sandbox_id).status
        assert status.state == pb.SANDBOX_READY
        assert status.network.ip
    for config in configs:
        assert len(named(dockerd, config.metadata.uid)) == 1, "one pause per pod"
    assert len(node.node.network.reservations()) == len(configs)
    node.cleanup()
    node.pods.clear()
    wait_for(lambda: not node.node.network.reservations(), 30, "every address released")
    wait_for(lambda: not node.node.netns.veths(), 30, "every veth gone")
    assert not any(named(dockerd, c.metadata.uid) for c in configs)


def _creates_logged(node: Node, uid: str) -> list[dict]:
    """What crishim said of the creates of pod `uid`: the why of a failure."""
    return [
        e
        for e in node.node.crishim.events()
        if str(e.get("event", "")).startswith("create_") and uid in str(e)
    ]
