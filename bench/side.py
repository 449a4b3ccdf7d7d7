"""crishim beside cri-dockerd on one daemon: each RPC on a long-lived channel, and each
crictl command as a new process, taking turns.

One conformance node (tests/harness/conformance.py: its own namespace, dockerd, the
kit's images and a bridge CNI network) runs crishim and the kit's cri-dockerd 0.4.3
at once, on the same daemon and the same CNI config. `--pods` pods, made by crishim
with one running container each, are what both runtimes list (a pod made by one is
the other's too: crishim keeps cri-dockerd's names and labels).

    channel   one grpclib channel per runtime, held open as the kubelet holds one; per
              RPC, blocks of calls alternate between the two runtimes (the daemon's drift
              on a VM hides differences between runs made one after the other), with
              `--concurrency` callers at once; p50/p99 ms per runtime, and the runtime's
              CPU ms per call (its /proc ticks over its blocks: background work included)
    crictl    each command a new crictl process (a new connection), alternating; median
              ms, plus a pod's whole start (runp) and stop (stopp + rmp)

    .venv/bin/python -m bench.side [--pods 30] [--concurrency 1] [--calls 200]

A third server, bench/floor.py (grpclib answering Version, Status and ImageFsInfo with an
answer built once, nothing behind it), takes its turns too on those calls and commands:
the floor under crishim's time while it serves with grpclib.

Prints the tables on stderr and one JSON object on stdout: ratio is crishim / cri-dockerd,
over_floor crishim / grpclib-empty, floor_ratio grpclib-empty / cri-dockerd.
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
import time
import uuid
from pathlib import Path

import grpclib
from grpclib.client import Channel

from bench.soak import BUSYBOX, _cpu_ticks, node_with, percentiles
from crishim.api.runtime import v1 as api
from tests.harness.procs import stop_process, wait_for

BLOCK = 20  # calls per runtime per turn
BUDGET_S = 30.0  # at most this long per RPC and runtime (cri-dockerd's stats take seconds)
FLOOR = "grpclib-empty"  # bench/floor.py: what grpclib alone costs a near-empty call
FLOOR_COMMANDS = ("version", "info", "imagefsinfo")
SETTLE_S = 1.0  # after a pod's start and stop, before the next command


class Runtime:
    def __init__(self, name: str, socket: Path, pid: int) -> None:
        self.name, self.socket, self.pid = name, socket, pid
        self.channel = Channel(path=str(socket))
        self.rt = api.RuntimeServiceStub(self.channel)
        self.im = api.ImageServiceStub(self.channel)


def _rpcs(pod: str, container: str) -> dict:
    """RPC name -> a call on a Runtime (the kubelet's and crictl's polled calls)."""
    return {
        "Version": lambda r: r.rt.version(api.VersionRequest()),
        "Status": lambda r: r.rt.status(api.StatusRequest()),
        "ImageFsInfo": lambda r: r.im.image_fs_info(api.ImageFsInfoRequest()),
        "ImageStatus": lambda r: r.im.image_status(
            api.ImageStatusRequest(image=api.ImageSpec(image=BUSYBOX))
        ),
        "ListImages": lambda r: r.im.list_images(api.ListImagesRequest()),
        "ListPodSandbox": lambda r: r.rt.list_pod_sandbox(api.ListPodSandboxRequest()),
        "ListContainers": lambda r: r.rt.list_containers(api.ListContainersRequest()),
        "PodSandboxStatus": lambda r: r.rt.pod_sandbox_status(
            api.PodSandboxStatusRequest(pod_sandbox_id=pod)
        ),
        "PodSandboxStatus verbose": lambda r: r.rt.pod_sandbox_status(
            api.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
        ),
        "ContainerStatus": lambda r: r.rt.container_status(
            api.ContainerStatusRequest(container_id=container)
        ),
        "ContainerStatus verbose": lambda r: r.rt.container_status(
            api.ContainerStatusRequest(container_id=container, verbose=True)
        ),
        "ContainerStats": lambda r: r.rt.container_stats(
            api.ContainerStatsRequest(container_id=container)
        ),
        "ListContainerStats": lambda r: r.rt.list_container_stats(api.ListContainerStatsRequest()),
    }


async def _block(runtime: Runtime, call, n: int, concurrency: int) -> tuple[list[float], int]:
    """`n` calls by `concurrency` callers: each call's ms, and the runtime's CPU ticks."""
    ms: list[float] = []
    left = [n]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            t0 = time.perf_counter()
            await call(runtime)
            ms.append((time.perf_counter() - t0) * 1000)

    ticks = _cpu_ticks(runtime.pid)
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return ms, _cpu_ticks(runtime.pid) - ticks


def _summary(ms: list[float], ticks: int) -> dict:
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "calls": len(ms),
        **percentiles(ms),
        "cpu_ms_per_call": round(1000 * ticks / hz / len(ms), 3),
    }


async def channel_table(runtimes: list[Runtime], rpcs: dict, calls: int, concurrency: int):
    table = {}
    for name, call in rpcs.items():
        got = {r.name: ([], 0) for r in runtimes}
        spent = dict.fromkeys(got, 0.0)
        unsupported = set()
        for r in runtimes:  # warm: the first call of a kind opens what it needs
            try:
                await call(r)
            except grpclib.GRPCError as exc:
                if exc.status != grpclib.Status.UNIMPLEMENTED:
                    raise
                unsupported.add(r.name)
        turn = 0
        while any(
            len(got[r.name][0]) < calls and spent[r.name] < BUDGET_S and r.name not in unsupported
            for r in runtimes
        ):
            order = runtimes if turn % 2 == 0 else runtimes[::-1]
            turn += 1
            for r in order:
                ms, ticks = got[r.name]
                if len(ms) >= calls or spent[r.name] >= BUDGET_S or r.name in unsupported:
                    continue
                t0 = time.monotonic()
                more, more_ticks = await _block(r, call, min(BLOCK, calls - len(ms)), concurrency)
                spent[r.name] += time.monotonic() - t0
                got[r.name] = (ms + more, ticks + more_ticks)
        row = {}
        for r in runtimes:
            ms, ticks = got[r.name]
            row[r.name] = "UNIMPLEMENTED" if r.name in unsupported else _summary(ms, ticks)
        a, b, f = row["crishim"], row["cri-dockerd"], row.get(FLOOR)
        if isinstance(a, dict) and isinstance(f, dict):
            row["over_floor_p50"] = round(a["p50_ms"] / f["p50_ms"], 2)
            if isinstance(b, dict):
                row["floor_ratio_p50"] = round(f["p50_ms"] / b["p50_ms"], 2)
        elif f is not None:
            del row[FLOOR]  # a call the floor server does not answer
        if isinstance(a, dict) and isinstance(b, dict):
            row["ratio_p50"] = round(a["p50_ms"] / b["p50_ms"], 2)
            row["ratio_p99"] = round(a["p99_ms"] / b["p99_ms"], 2)
            row["ratio_cpu"] = (
                round(a["cpu_ms_per_call"] / b["cpu_ms_per_call"], 2)
                if b["cpu_ms_per_call"]
                else None
            )
        table[name] = row
        print(f"{name:28} {json.dumps(row)}", file=sys.stderr)
    return table


def _pod_json(root: Path, i: int) -> Path:
    name, uid = f"side-crictl-{i}-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    path = root / f"pod-{i}.json"
    path.write_text(
        json.dumps(
            {
                "metadata": {"name": name, "namespace": "side", "uid": uid, "attempt": 0},
                "hostname": name,
                "log_directory": str(root / "pods" / name),
                "linux": {},
            }
        )
    )
    return path


def crictl_table(node, runtimes: list[Runtime], pod: str, container: str, runs: int) -> dict:
    commands = {
        "version": ["version"],
        "info": ["info"],
        "imagefsinfo": ["imagefsinfo"],
        "images": ["images"],
        "pods": ["pods"],
        "ps -a": ["ps", "-a"],
        "inspect": ["inspect", container],
        "inspectp": ["inspectp", pod],
    }
    lifecycle = ("pod start (runp)", "pod stop (stopp+rmp)")
    serves = {  # command -> the runtimes that answer it (the floor server: a few only)
        label: [r for r in runtimes if r.name != FLOOR or label in FLOOR_COMMANDS]
        for label in (*commands, *lifecycle)
    }
    got: dict[str, dict[str, list[float]]] = {
        label: {r.name: [] for r in rs} for label, rs in serves.items()
    }
    for i in range(runs):
        order = runtimes if i % 2 == 0 else runtimes[::-1]
        for r in order:
            for label, args in commands.items():
                if r not in serves[label]:
                    continue
                t0 = time.perf_counter()
                node.crictl(*args, socket=r.socket)
                got[label][r.name].append((time.perf_counter() - t0) * 1000)
            if r not in serves[lifecycle[0]]:
                continue
            config = _pod_json(node.root, i)
            t0 = time.perf_counter()
            made = node.crictl("runp", str(config), socket=r.socket).strip()
            got["pod start (runp)"][r.name].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            node.crictl("stopp", made, socket=r.socket)
            node.crictl("rmp", made, socket=r.socket)
            got["pod stop (stopp+rmp)"][r.name].append((time.perf_counter() - t0) * 1000)
            # Both runtimes see the daemon's events of this pod's start and stop (crishim
            # follows them, inspecting what changed): the next runtime's commands start
            # once that is done, not in the middle of it.
            time.sleep(SETTLE_S)
    table = {}
    for label, by in got.items():
        row = {name: round(statistics.median(ms), 1) for name, ms in by.items()}
        row["ratio"] = round(row["crishim"] / row["cri-dockerd"], 2)
        if FLOOR in row:
            row["over_floor"] = round(row["crishim"] / row[FLOOR], 2)
            row["floor_ratio"] = round(row[FLOOR] / row["cri-dockerd"], 2)
        table[label] = row
        print(f"crictl {label:24} {json.dumps(row)}", file=sys.stderr)
    return table


async def _fill(runtime: Runtime, root: Path, pods: int) -> tuple[str, str]:
    """`pods` pods with a running container each; one pod's and one container's id."""
    made = []
    for start in range(0, pods, 10):
        made += await asyncio.gather(*(_pod(runtime, root) for _ in range(min(10, pods - start))))
    return made[0]


async def _pod(runtime: Runtime, root: Path) -> tuple[str, str]:
    name, uid = f"side-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="side", uid=uid),
        hostname=name,
        log_directory=str(root / "pods" / f"side_{name}_{uid}"),
        linux=api.LinuxPodSandboxConfig(),
    )
    pod = (await runtime.rt.run_pod_sandbox(api.RunPodSandboxRequest(config=config))).pod_sandbox_id
    (Path(config.log_directory) / "app").mkdir(parents=True, exist_ok=True)
    created = await runtime.rt.create_container(
        api.CreateContainerRequest(
            pod_sandbox_id=pod,
            sandbox_config=config,
            config=api.ContainerConfig(
                metadata=api.ContainerMetadata(name="app"),
                image=api.ImageSpec(image=BUSYBOX),
                command=["sleep", "100000"],
                log_path="app/0.log",
                linux=api.LinuxContainerConfig(),
            ),
        )
    )
    await runtime.rt.start_container(api.StartContainerRequest(container_id=created.container_id))
    return pod, created.container_id


async def _measure(args, node, peer_socket: Path, peer_pid: int, floor: Runtime) -> dict:
    runtimes = [
        Runtime("crishim", node.socket, node.crishim.proc.pid),
        Runtime("cri-dockerd", peer_socket, peer_pid),
    ]
    pod, container = await _fill(runtimes[0], node.root, args.pods)
    runtimes.append(floor)
    seen = {}
    for r in runtimes[:2]:
        listed = await r.rt.list_pod_sandbox(api.ListPodSandboxRequest())
        seen[r.name] = len(listed.items)
    print(f"pods listed: {seen}", file=sys.stderr)
    if args.hold:
        # For profiling by hand (py-spy, a client of one's own) on the filled node.
        held = {r.name: {"socket": str(r.socket), "pid": r.pid} for r in runtimes}
        print(json.dumps({"hold_s": args.hold, "pod": pod, "container": container, **held}),
              file=sys.stderr, flush=True)  # fmt: skip
        await asyncio.sleep(args.hold)
    channel = (
        await channel_table(runtimes, _rpcs(pod, container), args.calls, args.concurrency)
        if args.calls
        else {}
    )
    for r in runtimes:
        r.channel.close()
    crictl = (
        await asyncio.to_thread(crictl_table, node, runtimes, pod, container, args.crictl_runs)
        if args.crictl_runs
        else {}
    )
    return {
        "pods": args.pods,
        "pods_listed": seen,
        "concurrency": args.concurrency,
        "channel": channel,
        "crictl": crictl,
    }


@contextlib.contextmanager
def floor_server(root: Path):
    """bench/floor.py on a socket under `root`, as a Runtime; stopped by its PID."""
    socket = root / "floor.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", str(socket)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(socket.exists, 30, "the floor server's socket")
        yield proc, socket
    finally:
        stop_process(proc, timeout=10)


def run(args) -> dict:
    with (
        node_with(crishim=True, cri_dockerd=True, prefix="side-") as (node, peer),
        floor_server(node.root) as (floor, floor_socket),
    ):
        process, socket = peer

        async def measure() -> dict:
            # A Runtime's grpclib channel belongs to the loop it was made in.
            return await _measure(
                args, node, socket, process.pid, Runtime(FLOOR, floor_socket, floor.pid)
            )

        return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--calls", type=int, default=200, help="per RPC and runtime (0: crictl table only)"
    )
    parser.add_argument(
        "--hold", type=float, default=0, help="seconds to keep the filled node up first"
    )
    parser.add_argument("--crictl-runs", type=int, default=10, help="per command and runtime")
    args = parser.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
