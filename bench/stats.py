"""ListContainerStats, ListPodSandboxStats and ListPodSandboxMetrics over many running
containers.

For each count, containers are added (10 per pod by default, each `sleep`) until that many
run, then the calls are timed: client round trip, crishim's own server time
(its `rpc` log events) and crishim's CPU time per call (/proc/<pid>/stat);
first back to back, then `spaced` calls a sampler round apart, as the kubelet
polls (each of those follows new readings); then `crictl stats`' cadence (two calls a
second apart, crictl_cadence); then a kubelet-like mix of list calls and metrics scrapes
over `mix_seconds` (kubelet_mix).
Containers are made through the CRI, four at a time.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import uuid
from pathlib import Path

from crishim.stats import collector
from tests.harness import cgroupdirs
from tests.harness.clients import Official
from tests.harness.crishim import CrishimProcess

PER_POD = 10


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Fleet:
    """Pods as the kubelet makes them: each in a pod cgroup of its own (cgroupfs), under
    one parent of the fleet's, removed with it."""

    def __init__(self, client: Official, per_pod: int = PER_POD) -> None:
        self.client = client
        self.per_pod = per_pod
        self.pods: list[tuple[str, object]] = []
        self.containers = 0
        self.cgroup_root = cgroupdirs.unique_parent("crishim-bench")

    def new_pod(self):
        pb = self.client.pb
        name, uid = f"stats-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="bench", uid=uid),
            hostname=name,
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{self.cgroup_root}/pod{uid}"),
        )
        sid = self.client.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=config), timeout=120
        ).pod_sandbox_id
        return sid, config

    def start_container(self, pod, i: int) -> None:
        pb, rt = self.client.pb, self.client.runtime
        sid, config = pod
        cid = rt.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sid,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name=f"c{i}"),
                    image=pb.ImageSpec(image="crishim-test/busybox:latest"),
                    command=["sleep", "100000"],
                ),
                sandbox_config=config,
            ),
            timeout=120,
        ).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)

    def grow(self, count: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            while self.containers < count:
                batch = min(self.per_pod, count - self.containers)
                pod = self.new_pod()
                self.pods.append(pod)
                list(pool.map(lambda i, p=pod: self.start_container(p, i), range(batch)))
                self.containers += batch

    def remove(self) -> None:
        pb = self.client.pb
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda p: self.client.runtime.RemovePodSandbox(
                        pb.RemovePodSandboxRequest(pod_sandbox_id=p[0]), timeout=120
                    ),
                    self.pods,
                )
            )
        self.pods, self.containers = [], 0
        cgroupdirs.remove(self.cgroup_root)


def _server_ms(proc: CrishimProcess, offset: int, rpc: str) -> list[float]:
    return [
        e["duration_ms"] / 1000
        for e in proc.events()[offset:]
        if e.get("event") == "rpc" and e.get("rpc") == rpc
    ]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def kubelet_mix(proc: CrishimProcess, client: Official, summary, seconds: int) -> dict:
    """A node's steady state: both stats lists every 10 s (the kubelet's summary),
    a metrics scrape every 15 s (Prometheus on /metrics/cadvisor), the sampler's
    rounds between them. Scrape server time, list server time, crishim CPU per second."""
    pb, rt = client.pb, client.runtime
    rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=120)  # first: reads
    offset = len(proc.events())
    cpu0, start = _cpu_seconds(proc.proc.pid), time.monotonic()
    for step in range(seconds // 5):
        if step % 2 == 0:
            rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=120)
            rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=120)
        if step % 3 == 2:
            rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=120)
        time.sleep(max(0.0, start + 5 * (step + 1) - time.monotonic()))
    cpu = (_cpu_seconds(proc.proc.pid) - cpu0) / (time.monotonic() - start)
    return {
        "seconds": seconds,
        "scrape_server": summary(_server_ms(proc, offset, "ListPodSandboxMetrics")),
        "pod_list_server": summary(_server_ms(proc, offset, "ListPodSandboxStats")),
        "crishim_cpu_ms_per_s": round(cpu * 1000, 1),
    }


def crictl_cadence(proc: CrishimProcess, client: Official, summary, pairs: int = 10) -> dict:
    """`crictl stats` as an operator types it: ListContainerStats twice, a second apart
    (crictl divides the CPU used between the readings by the time between them), a few
    seconds between commands. Every second call must show newer CPU readings."""
    pb = client.pb
    time.sleep(collector.DEMAND_INTERVAL * 2)
    offset = len(proc.events())
    cpu0 = _cpu_seconds(proc.proc.pid)
    newer = 0
    for _ in range(pairs):
        first = client.runtime.ListContainerStats(pb.ListContainerStatsRequest(), timeout=120)
        time.sleep(1)
        second = client.runtime.ListContainerStats(pb.ListContainerStatsRequest(), timeout=120)
        before = {s.attributes.id: s.cpu.timestamp for s in first.stats}
        newer += all(s.cpu.timestamp > before.get(s.attributes.id, 0) for s in second.stats)
        time.sleep(3)
    cpu = _cpu_seconds(proc.proc.pid) - cpu0
    return {
        "pairs": pairs,
        "pairs_with_newer_readings": newer,
        "server": summary(_server_ms(proc, offset, "ListContainerStats")),
        "crishim_cpu_ms_per_call": round(cpu * 1000 / (2 * pairs), 2),
    }


def run(
    docker_endpoint: str,
    root: Path,
    stubs,
    counts,
    calls: int,
    summary,
    per_pod: int = PER_POD,
    spaced: int = 10,
    mix_seconds: int = 90,
) -> dict:
    proc = CrishimProcess(root / "stats-crishim", docker_endpoint).start()
    client = Official(proc.socket, *stubs)
    fleet = Fleet(client, per_pod)
    pb = client.pb
    out: dict = {}
    try:
        for count in counts:
            fleet.grow(count)
            for rpc, request, call, items in (
                (
                    "ListContainerStats",
                    pb.ListContainerStatsRequest(),
                    client.runtime.ListContainerStats,
                    "stats",
                ),
                (
                    "ListPodSandboxStats",
                    pb.ListPodSandboxStatsRequest(),
                    client.runtime.ListPodSandboxStats,
                    "stats",
                ),
                (  # the kubelet's /metrics/cadvisor, with PodAndContainerStatsFromCRI
                    "ListPodSandboxMetrics",
                    pb.ListPodSandboxMetricsRequest(),
                    client.runtime.ListPodSandboxMetrics,
                    "pod_metrics",
                ),
            ):
                call(request, timeout=120)  # warm: cgroup paths found, layers queued
                time.sleep(1)
                offset = len(proc.events())
                cpu0 = _cpu_seconds(proc.proc.pid)
                rtt = []
                for _ in range(calls):
                    start = time.perf_counter()
                    reply = call(request, timeout=120)
                    rtt.append(time.perf_counter() - start)
                cpu = (_cpu_seconds(proc.proc.pid) - cpu0) / calls
                # As the kubelet polls: one call per sampler round or more apart, so
                # every call follows new readings (back to back, most find none).
                offset_spaced = len(proc.events())
                cpu1 = _cpu_seconds(proc.proc.pid)
                for _ in range(spaced):
                    time.sleep(collector.DEMAND_INTERVAL + 0.2)
                    call(request, timeout=120)
                cpu_spaced = (_cpu_seconds(proc.proc.pid) - cpu1) / spaced
                out[f"{rpc}_{count}"] = {
                    "items": len(getattr(reply, items)),
                    "bytes": reply.ByteSize(),
                    "pods": len(fleet.pods),
                    "crishim_rss_mb": rss_mb(proc.proc.pid),
                    "client": summary(rtt),
                    "server": summary(_server_ms(proc, offset, rpc)),
                    "crishim_cpu_ms_per_call": round(cpu * 1000, 2),
                    # sampler rounds and the lists' encoding between the calls included
                    "spaced": {
                        "server": summary(_server_ms(proc, offset_spaced, rpc)),
                        "crishim_cpu_ms_per_call": round(cpu_spaced * 1000, 2),
                    },
                }
            out[f"crictl_stats_{count}"] = crictl_cadence(proc, client, summary)
            out[f"kubelet_mix_{count}"] = kubelet_mix(proc, client, summary, mix_seconds)
    finally:
        fleet.remove()
        client.close()
        proc.stop()
    return out
