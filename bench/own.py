"""crishim's own time in each lifecycle call: its duration less the Docker API requests
and CNI plugin runs within it (the docker_ms and cni_ms of its log line, common/calltime.py).

One conformance node (its own namespace, dockerd, bridge CNI network), crishim alone;
`--pods` pods go through the kubelet's calls one call at a time, with `--beside` more
running beside them: RunPodSandbox, CreateContainer, StartContainer, StopContainer,
RemoveContainer, StopPodSandbox, RemovePodSandbox. Per RPC: the median duration, Docker
and CNI ms, the wait for an ended container's log copy (log_settle: Docker ending the
log stream, then the file's last write), and own = duration - docker - cni - log_settle
(StopPodSandbox runs DEL beside the pause's stop, so its own is a lower bound there).
The issue's goal: own within 2 ms.

    .venv/bin/python -m bench.own [--pods 20] [--beside 30]

Prints the table on stderr and one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

from grpclib.client import Channel

from bench.side import _pod as side_pod
from bench.soak import node_with
from crishim.api.runtime import v1 as api

RPCS = (
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
)


async def _lifecycle(rt: api.RuntimeServiceStub, root: Path, stop: bool) -> None:
    # bench/side.py's pod: a pause and one running busybox container.
    pod, cid = await side_pod(SimpleNamespace(rt=rt), root)
    if not stop:
        return
    await rt.stop_container(api.StopContainerRequest(container_id=cid, timeout=0))
    await rt.remove_container(api.RemoveContainerRequest(container_id=cid))
    await rt.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod))
    await rt.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod))


def _table(log: Path, since: int) -> dict:
    rows: dict[str, list[dict]] = {r: [] for r in RPCS}
    with log.open("rb") as f:
        f.seek(since)
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("event") == "rpc" and line.get("rpc") in rows and line["code"] == "OK":
                rows[line["rpc"]].append(line)
    table = {}
    for rpc, lines in rows.items():

        def median(key: str, lines=lines) -> float:
            return round(statistics.median(x.get(key, 0.0) for x in lines), 2)

        own = [
            x["duration_ms"] - sum(x.get(f"{k}_ms", 0.0) for k in ("docker", "cni", "log_settle"))
            for x in lines
        ]
        table[rpc] = {
            "calls": len(lines),
            "duration_ms": median("duration_ms"),
            "docker_ms": median("docker_ms"),
            "cni_ms": median("cni_ms"),
            "log_settle_ms": median("log_settle_ms"),
            "own_ms_p50": round(statistics.median(own), 2),
            "own_ms_max": round(max(own), 2),
        }
        print(f"{rpc:18} {json.dumps(table[rpc])}", file=sys.stderr)
    return table


async def _measure(node, pods: int, beside: int) -> dict:
    channel = Channel(path=str(node.socket))
    rt = api.RuntimeServiceStub(channel)
    try:
        for _ in range(beside):  # the node's other pods, running
            await _lifecycle(rt, node.root, stop=False)
        since = node.crishim.log_path.stat().st_size
        for _ in range(pods):
            await _lifecycle(rt, node.root, stop=True)
    finally:
        channel.close()
    return {"pods": pods, "beside": beside, "rpcs": _table(node.crishim.log_path, since)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--beside", type=int, default=30)
    args = parser.parse_args()
    with node_with(crishim=True, cri_dockerd=False, prefix="own-") as (node, _):
        print(json.dumps(asyncio.run(_measure(node, args.pods, args.beside))))


if __name__ == "__main__":
    main()
