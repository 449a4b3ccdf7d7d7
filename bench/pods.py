"""Pod start and stop in cni mode beside docker mode, and the CNI plugins' share.

Start is RunPodSandbox; stop is StopPodSandbox + RemovePodSandbox, each through
the official client, `cycles` times per mode, one pod at a time. cni mode runs
crishim in a network namespace of its own with the bridge + host-local +
portmap conflist of the test suite (tests/harness/cni.py); docker mode is a
crishim on the same daemon with Docker's bridge. The plugin time is read from
crishim's own `cni_plugin_ran` log events (ADD during a start, DEL during a
stop), summed per pod.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

from tests.harness.clients import Official
from tests.harness.cni import CniNode, Network
from tests.harness.crishim import CrishimProcess


def _config(pb):
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="bench", uid=str(uuid.uuid4())),
        hostname=name,
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=0)],
    )


def _cycles(client: Official, cycles: int) -> tuple[list[float], list[float]]:
    pb, rt = client.pb, client.runtime
    starts, stops = [], []
    for _ in range(cycles):
        t0 = time.perf_counter()
        sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=_config(pb)), timeout=120)
        t1 = time.perf_counter()
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid.pod_sandbox_id), timeout=60)
        rt.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sid.pod_sandbox_id), timeout=60
        )
        starts.append(t1 - t0)
        stops.append(time.perf_counter() - t1)
    return starts, stops


def _plugin_ms(events: list[dict]) -> dict[str, list[float]]:
    """Per RPC call (ADD in RunPodSandbox, DEL in StopPodSandbox): summed plugin ms."""
    per_call: dict[str, list[float]] = defaultdict(list)
    current: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("event") == "cni_plugin_ran":
            current[e["command"]] += e["duration_ms"]
        elif e.get("event") == "rpc" and e.get("rpc") in ("RunPodSandbox", "StopPodSandbox"):
            command = "ADD" if e["rpc"] == "RunPodSandbox" else "DEL"
            per_call[command].append(current.pop(command, 0.0))
    return per_call


def run(docker_endpoint: str, root: Path, stubs, cycles: int, summary) -> dict:
    results: dict = {"cycles": cycles}
    docker_mode = CrishimProcess(root / "pods-docker", docker_endpoint)
    docker_mode.start()
    client = Official(docker_mode.socket, *stubs)
    try:
        _cycles(client, 3)  # warm up
        starts, stops = _cycles(client, cycles)
        results["docker_mode"] = {"start": summary(starts), "stop": summary(stops)}
    finally:
        client.close()
        docker_mode.stop()

    network = Network("bench-pods", "cni0", ("10.99.0.0/16",), root / "pods-cni" / "ipam")
    node = CniNode(root / "pods-cni", docker_endpoint, "crbenchns", network).start()
    client = Official(node.crishim.socket, *stubs)
    try:
        _cycles(client, 3)
        offset = len(node.crishim.events())
        starts, stops = _cycles(client, cycles)
        plugin = _plugin_ms(node.crishim.events()[offset:])
        results["cni_mode"] = {
            "start": summary(starts),
            "stop": summary(stops),
            "plugins_add_ms": summary([ms / 1000 for ms in plugin["ADD"]]),
            "plugins_del_ms": summary([ms / 1000 for ms in plugin["DEL"]]),
        }
    finally:
        client.close()
        node.stop()
    return results
