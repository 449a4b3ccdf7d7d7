"""crishim's resident memory: idle, with many pods, and across many pod cycles.

RSS (VmRSS of the crishim process) is read at start, with `pods` running pods
(one `sleep` container each) after a few rounds of the calls the kubelet polls,
and every `every` cycles of a pod's whole life (run, create, start, stop,
remove; four at a time). Flat means the last readings do not climb.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from bench.stats import Fleet, rss_mb
from tests.harness.clients import Official
from tests.harness.crishim import CrishimProcess


def _cycle(fleet: Fleet) -> None:
    pb, rt = fleet.client.pb, fleet.client.runtime
    pod = fleet.new_pod()
    fleet.start_container(pod, 0)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod[0]), timeout=120)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod[0]), timeout=120)


def _poll(client: Official, rounds: int = 5) -> None:
    pb, rt = client.pb, client.runtime
    for _ in range(rounds):
        rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=60)
        rt.ListContainers(pb.ListContainersRequest(), timeout=60)
        rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=60)
        rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=60)


def run(docker_endpoint: str, root: Path, stubs, pods: int, cycles: int, every: int = 100):
    proc = CrishimProcess(root / "memory-crishim", docker_endpoint, "--log-level=info").start()
    client = Official(proc.socket, *stubs)
    pid = proc.proc.pid
    out: dict = {"rss_mb_at_start": rss_mb(pid)}
    try:
        fleet = Fleet(client, per_pod=1)
        fleet.grow(pods)
        _poll(client)
        out[f"rss_mb_with_{len(fleet.pods)}_pods"] = rss_mb(pid)
        fleet.remove()
        _poll(client)
        out["rss_mb_after_removing_them"] = rss_mb(pid)
        readings = []
        done = 0
        cycler = Fleet(client)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            while done < cycles:
                batch = min(every, cycles - done)
                list(pool.map(lambda _i: _cycle(cycler), range(batch)))
                done += batch
                _poll(client, 1)
                readings.append({"cycles": done, "rss_mb": rss_mb(pid)})
        cycler.remove()  # no pods left: the pod cgroups their pods left behind
        out["rss_mb_across_pod_cycles"] = readings
    finally:
        client.close()
        proc.stop()
    return out
