"""A kubelet-shaped soak: a full node's pods and the kubelet's polls, for minutes, then what
is left that should not be.

The node is a conformance node (tests/harness/conformance.py): a namespace of its
own with a private dockerd, the kit's images, a bridge CNI network, and the runtime
under test in cni mode: crishim, or the kit's cri-dockerd 0.4.3 for comparison
(`--peer cri-dockerd`). The driver behaves as the kubelet does on a full node:

    pods        `--pods` (default 110, the kubelet's maximum), two containers each: one
                printing a line a second (its CRI log), one idle (the probed one)
    PLEG        ListPodSandbox + ListContainers every second; GetContainerEvents held open
    stats       ListContainerStats + ListPodSandboxStats every 10 s, ImageFsInfo every 10 s
    metrics     ListPodSandboxMetrics every 15 s (crishim only: cri-dockerd lacks it)
    probes      one ExecSync (`true`) per pod every 10 s, spread over the 10 s
    churn       one pod replaced every 2 s (stop, remove, run a new one with its two)

with the kubelet's deadlines (2 min for lifecycle calls, 10 s for polls) and a retry of
a call whose deadline passed. It prints, as JSON on the last line: per RPC the count,
failures and p50/p99 ms; the runtime's and dockerd's CPU % and the runtime's RSS over
time; and at the end what exists beyond the live pods: containers, pinned network
namespaces, veths, reserved addresses, checkpoints, pods' log directories, the
runtime's open file descriptors (against the start).

    .venv/bin/python -m bench.soak --minutes 30 [--pods 110] [--peer cri-dockerd]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpclib
from grpclib.client import Channel

from crishim.api.runtime import v1 as api
from tests.harness import conformance
from tests.harness.procs import stop_process, umount_below, wait_for

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
LIFECYCLE_DEADLINE = 120.0  # the kubelet's --runtime-request-timeout
POLL_DEADLINE = 10.0
WARM_UP = 16.0  # seconds of polls before the open files are counted (a stats round is 10)


@dataclass
class Calls:
    ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # RPCs the runtime does not implement: the kubelet falls back (cAdvisor, generic PLEG)
    unsupported: set[str] = field(default_factory=set)

    async def call(self, name: str, fn, *, deadline: float, retries: int = 2):
        """One CRI call as the kubelet makes it: its deadline, retried when that passes."""
        if name in self.unsupported:
            return None
        for attempt in range(retries + 1):
            t0 = time.perf_counter()
            try:
                # grpclib's timeout did not end one of cri-dockerd's stats calls (it hung
                # the loop for the rest of a run): the kubelet's context would have.
                out = await asyncio.wait_for(fn(timeout=deadline), deadline + 5)
            except grpclib.GRPCError as exc:
                if exc.status == grpclib.Status.UNIMPLEMENTED:
                    self.unsupported.add(name)
                    return None
                self.failed[name].append(f"{exc.status.name}: {exc.message}")
                if exc.status != grpclib.Status.DEADLINE_EXCEEDED or attempt == retries:
                    return None
                continue
            except (TimeoutError, OSError) as exc:
                self.failed[name].append(repr(exc))
                if attempt == retries:
                    return None
                continue
            self.ms[name].append((time.perf_counter() - t0) * 1000)
            return out
        return None

    def table(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in sorted(self.ms.items()):
            out[name] = {
                "calls": len(values),
                "failed": len(self.failed.get(name, ())),
                **percentiles(values),
            }
        for name, errors in self.failed.items():
            out.setdefault(name, {"calls": 0, "failed": len(errors)})
        return out


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50 and p99 of call times in ms, as every table of the benches shows them."""
    ordered = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fds(pid: int) -> dict[str, int]:
    """The process's open file descriptors by kind."""
    kinds: dict[str, int] = defaultdict(int)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("/sys/fs/cgroup/"):
                kinds["cgroup files"] += 1
            elif target.startswith("/proc/"):
                kinds["/proc files"] += 1
            elif target.endswith(".log"):
                kinds["log files"] += 1
            elif ":" in target and not target.startswith("/"):
                kinds[target.split(":")[0]] += 1  # socket, pipe, anon_inode
            else:
                kinds["other files"] += 1
    return dict(kinds)


class Driver:
    def __init__(self, socket: Path, root: Path, pods: int, metrics: bool) -> None:
        self.channel = Channel(path=str(socket))
        self.rt = api.RuntimeServiceStub(self.channel)
        self.images = api.ImageServiceStub(self.channel)
        self.root = root
        self.want = pods
        self.metrics = metrics
        self.calls = Calls()
        self.live: dict[str, tuple[api.PodSandboxConfig, list[str]]] = {}
        self.made = 0
        self.probing: set[asyncio.Future] = set()
        self.stopping = asyncio.Event()

    def _config(self) -> api.PodSandboxConfig:
        self.made += 1
        name, uid = f"soak-{self.made}-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace="soak", uid=uid),
            hostname=name,
            log_directory=str(self.root / "pods" / f"soak_{name}_{uid}"),
            linux=api.LinuxPodSandboxConfig(),
        )

    async def run_pod(self) -> None:
        config = self._config()
        made = await self.calls.call(
            "RunPodSandbox",
            lambda timeout: self.rt.run_pod_sandbox(
                api.RunPodSandboxRequest(config=config), timeout=timeout
            ),
            deadline=LIFECYCLE_DEADLINE,
        )
        if made is None:
            return
        pod_id = made.pod_sandbox_id
        containers = []
        for cname, command in (
            ("talker", ["sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 1; done"]),
            ("idle", ["sleep", "100000"]),
        ):
            # The kubelet makes the container's log directory before CreateContainer.
            (Path(config.log_directory) / cname).mkdir(parents=True, exist_ok=True)
            request = api.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                sandbox_config=config,
                config=api.ContainerConfig(
                    metadata=api.ContainerMetadata(name=cname),
                    image=api.ImageSpec(image=BUSYBOX),
                    command=command,
                    log_path=f"{cname}/0.log",
                    linux=api.LinuxContainerConfig(),
                ),
            )
            created = await self.calls.call(
                "CreateContainer",
                lambda timeout, r=request: self.rt.create_container(r, timeout=timeout),
                deadline=LIFECYCLE_DEADLINE,
            )
            if created is None:
                continue
            cid = created.container_id
            await self.calls.call(
                "StartContainer",
                lambda timeout, c=cid: self.rt.start_container(
                    api.StartContainerRequest(container_id=c), timeout=timeout
                ),
                deadline=LIFECYCLE_DEADLINE,
            )
            containers.append(cid)
        self.live[pod_id] = (config, containers)

    async def remove_pod(self, pod_id: str) -> None:
        self.live.pop(pod_id, None)
        for name, request in (
            ("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=pod_id)),
            ("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=pod_id)),
        ):
            method = (
                self.rt.stop_pod_sandbox if name == "StopPodSandbox" else self.rt.remove_pod_sandbox
            )
            await self.calls.call(
                name,
                lambda timeout, m=method, r=request: m(r, timeout=timeout),
                deadline=LIFECYCLE_DEADLINE,
            )

    # -- the kubelet's loops -------------------------------------------------------------

    async def every(self, seconds: float, step) -> None:
        while True:
            started = time.monotonic()
            await step()
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))

    async def relist(self) -> None:
        await self.calls.call(
            "ListPodSandbox",
            lambda timeout: self.rt.list_pod_sandbox(api.ListPodSandboxRequest(), timeout=timeout),
            deadline=POLL_DEADLINE,
        )
        await self.calls.call(
            "ListContainers",
            lambda timeout: self.rt.list_containers(api.ListContainersRequest(), timeout=timeout),
            deadline=POLL_DEADLINE,
        )

    async def stats(self) -> None:
        for name, fn in (
            ("ListContainerStats", lambda t: self.rt.list_container_stats(
                api.ListContainerStatsRequest(), timeout=t)),
            ("ListPodSandboxStats", lambda t: self.rt.list_pod_sandbox_stats(
                api.ListPodSandboxStatsRequest(), timeout=t)),
            ("ImageFsInfo", lambda t: self.images.image_fs_info(
                api.ImageFsInfoRequest(), timeout=t)),
        ):  # fmt: skip
            await self.calls.call(name, lambda timeout, f=fn: f(timeout), deadline=POLL_DEADLINE)

    async def scrape(self) -> None:
        await self.calls.call(
            "ListPodSandboxMetrics",
            lambda timeout: self.rt.list_pod_sandbox_metrics(
                api.ListPodSandboxMetricsRequest(), timeout=timeout
            ),
            deadline=POLL_DEADLINE,
        )

    async def probes(self) -> None:
        """One ExecSync per pod every 10 s, spread over the 10 s; as the kubelet, none for a
        pod it has begun to remove."""
        while True:
            pods = list(self.live)
            gap = 10.0 / max(1, len(pods))
            for pod_id in pods:
                _, containers = self.live.get(pod_id, (None, []))
                if len(containers) == 2:
                    request = api.ExecSyncRequest(
                        container_id=containers[1], cmd=["true"], timeout=5
                    )
                    probe = asyncio.ensure_future(
                        self.calls.call(
                            "ExecSync",
                            lambda timeout, r=request: self.rt.exec_sync(r, timeout=timeout),
                            deadline=POLL_DEADLINE,
                        )
                    )
                    self.probing.add(probe)  # held until done: a probe is never lost
                    probe.add_done_callback(self.probing.discard)
                await asyncio.sleep(gap)

    async def churn(self) -> None:
        """A pod replaced every 2 s, until `stopping`: a replacement under way is finished,
        so that what is counted at the end is the runtime's, not a half-made replacement."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.stopping.wait()
                    return
            if self.live:
                await self.remove_pod(next(iter(self.live)))
            await self.run_pod()

    async def events(self) -> None:
        while True:
            t0 = time.perf_counter()
            try:
                async for _ in self.rt.get_container_events(api.GetEventsRequest()):
                    self.calls.ms["GetContainerEvents (events)"].append(0.0)
            except grpclib.GRPCError as exc:
                if exc.status == grpclib.Status.UNIMPLEMENTED:
                    self.calls.unsupported.add("GetContainerEvents")
                    return  # the kubelet's generic PLEG relists instead
                self.calls.failed["GetContainerEvents"].append(f"{exc.status.name}: {exc.message}")
            except (TimeoutError, OSError) as exc:
                self.calls.failed["GetContainerEvents"].append(repr(exc))
            self.calls.ms["GetContainerEvents (reconnect)"].append((time.perf_counter() - t0) * 1e3)
            await asyncio.sleep(1)


async def _soak(args, node: conformance.ConformanceNode, socket: Path, runtime_pid: int) -> dict:
    driver = Driver(socket, node.root, args.pods, metrics=args.peer == "crishim")
    for start in range(0, args.pods, 10):  # as a node fills: a few pods at once
        await asyncio.gather(*(driver.run_pod() for _ in range(min(10, args.pods - start))))
    churn = asyncio.ensure_future(driver.churn())
    loops = [
        driver.every(1.0, driver.relist),
        driver.every(10.0, driver.stats),
        driver.probes(),
        driver.events(),
    ]
    if driver.metrics:
        loops.append(driver.every(15.0, driver.scrape))
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    await asyncio.sleep(WARM_UP)  # every loop has run once: its handles are open
    fds_start = _fds(runtime_pid)
    hz = os.sysconf("SC_CLK_TCK")
    samples = []
    end = time.monotonic() + args.minutes * 60
    last = (time.monotonic(), _cpu_ticks(runtime_pid), _cpu_ticks(node.dockerd.pid))
    while time.monotonic() < end:
        await asyncio.sleep(min(args.sample, max(0.1, end - time.monotonic())))
        now = (time.monotonic(), _cpu_ticks(runtime_pid), _cpu_ticks(node.dockerd.pid))
        span = now[0] - last[0]
        samples.append(
            {
                "t_s": round(args.minutes * 60 - (end - now[0]), 1),
                "runtime_cpu_pct": round(100 * (now[1] - last[1]) / hz / span, 1),
                "dockerd_cpu_pct": round(100 * (now[2] - last[2]) / hz / span, 1),
                "runtime_rss_mb": round(_rss_mb(runtime_pid), 1),
            }
        )
        last = now
    driver.stopping.set()
    await asyncio.wait_for(churn, 2 * LIFECYCLE_DEADLINE)  # its replacement under way ends
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*driver.probing, return_exceptions=True)  # the last probes answer
    live = dict(driver.live)
    fds_end = _fds(runtime_pid)
    driver.channel.close()
    return {
        "runtime": args.peer,
        "pods": args.pods,
        "minutes": args.minutes,
        "pods_made": driver.made,
        "calls": driver.calls.table(),
        "failures": {k: v[:5] for k, v in driver.calls.failed.items()},
        "unsupported": sorted(driver.calls.unsupported),
        "samples": samples,
        "leftovers": leftovers(node, live, args.peer, fds_start, fds_end),
    }


def leftovers(node, live: dict, peer: str, fds_start: dict, fds_end: dict) -> dict[str, int]:
    """What exists beyond the live pods (each 0 on a runtime that leaks nothing)."""
    live_ids = set(live)
    live_containers = {c for _, cs in live.values() for c in cs}
    docker = node.dockerd.docker("ps", "-aq", "--no-trunc").split()
    extra_containers = [c for c in docker if c not in live_ids and c not in live_containers]
    veths = len(node.netns.veths()) - len(live)
    reserved = len(node.network.reservations()) - len(live)
    out = {
        "containers": len(extra_containers),
        "veths": veths,
        "reserved_ips": reserved,
        "open_fds_gained": sum(fds_end.values()) - sum(fds_start.values()),
    }
    if peer == "crishim":
        state = node.crishim.state_dir
        handles = list((state / "netns").iterdir()) if (state / "netns").is_dir() else []
        out["netns_handles"] = len([h for h in handles if h.name not in live_ids])
        checkpoints = list((state / "sandboxes").glob("*.json"))
        out["checkpoints"] = len([p for p in checkpoints if p.stem not in live_ids])
    logs = list((node.root / "pods").iterdir()) if (node.root / "pods").is_dir() else []
    # The kubelet removes a removed pod's log directory; the runtime never should need to.
    out["pod_log_dirs_of_removed_pods (the kubelet's to remove)"] = len(logs) - len(live)
    for kind in sorted(set(fds_start) | set(fds_end)):
        gained = fds_end.get(kind, 0) - fds_start.get(kind, 0)
        if gained:
            out[f"open_fds_gained:{kind}"] = gained
    return out


@contextlib.contextmanager
def node_with(*, crishim: bool, cri_dockerd: bool, prefix: str):
    """A conformance node with crishim and/or the kit's cri-dockerd on its daemon and CNI
    config; yields the node and cri-dockerd's (process, socket) or None. Stops exactly
    what it started."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    node = conformance.ConformanceNode(root, "--log-level=info")
    node.start(crishim=crishim)
    peer = None
    try:
        if cri_dockerd:
            socket = root / "cri-dockerd" / "cri-dockerd.sock"
            socket.parent.mkdir()
            peer = subprocess.Popen(
                [*node.netns.prefix, str(conformance.CRI_DOCKERD_SH), str(node.dockerd.socket),
                 str(socket), str(node.conf_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for(socket.exists, 60, "cri-dockerd's socket")
        # nsenter execs the script, which execs cri-dockerd: the runtime's own pid.
        yield node, (peer, socket) if peer is not None else None
    finally:
        if peer is not None:
            stop_process(peer, timeout=30)
        node.stop()
        # The live pods' pinned netns handles stay mounted under the state dir once the
        # runtime is gone (as on a node); the node's root is ours, so nothing stays mounted.
        umount_below(root)


def run(args) -> dict:
    crishim = args.peer == "crishim"
    with node_with(crishim=crishim, cri_dockerd=not crishim, prefix="soak-") as (node, peer):
        if peer is None:
            socket, pid = node.socket, node.crishim.proc.pid
        else:
            socket, pid = peer[1], peer[0].pid
        return asyncio.run(_soak(args, node, socket, pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--peer", choices=("crishim", "cri-dockerd"), default="crishim")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    result = run(args)
    for name, row in result["calls"].items():
        print(f"{name:32} {row}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
