"""Two builds of crishim side by side on one daemon: which makes CreateContainer cheaper.

    git worktree add --detach /tmp/before <rev>
    .venv/bin/python bench/paired.py /tmp/before .     # trees: A, then B

The overhead table (bench/overhead.py) compares one build with Docker; between
two builds, run one after the other, the daemon's drift on a VM (its create
time moved 12 -> 22 ms within an afternoon here) hides a change of half a
millisecond. So both builds run at once, each a crishim from its own source
tree behind its own recording proxy on the same private dockerd, and take turns
in blocks: a block is `--per` CreateContainer + RemoveContainer calls in a pod of
its own, kubelet-shaped (mounts, ...) or the overhead table's small request
(`--shape small`); with `--shape exec`, `--per` ExecSync calls of `true` in a
started container of its pod; with `--shape pod`, `--per` RunPodSandbox calls (each
pod then stopped and removed); or, with `--shape metrics`, `--per` ListPodSandboxMetrics
scrapes over `--pods` pods that A made (both builds serve them), whose own time is
their server time. A call's own time is its server time (the rpc log
event) minus its Docker time (the union of its requests at the proxy), as the
overhead table's; per block, the median. Then, over the blocks (the first of
each build is a warm-up, left out), each build's median, the median of the
paired differences B - A, and in how many pairs B was lower. The order in which
the two take their turns alternates, so neither always follows the other.

Prints one JSON document. Run on purpose, never by the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import overhead, stats
from tests.harness import images as test_images
from tests.harness.clients import Official, generate_official_stubs
from tests.harness.crishim import CrishimProcess
from tests.harness.dockerd import PrivateDockerd, unique_name
from tests.harness.dockerproxy import RecordingProxy


class Build:
    """One tree's crishim, its proxy, client and pod."""

    def __init__(self, tree: Path, root: Path, docker_socket: Path, stubs) -> None:
        self.tree = tree
        root.mkdir(parents=True)
        self.proxy = RecordingProxy(root, docker_socket).start()
        self.proc = CrishimProcess(
            root / "crishim", self.proxy.endpoint, env={"PYTHONPATH": str(tree / "src")}
        ).start()  # at debug: every rpc event
        self.client = Official(self.proc.socket, *stubs)
        self.rec = overhead.Recorder(self.proxy, self.proc)
        pb, rt = self.client.pb, self.client.runtime
        self.config = overhead._sandbox_config(pb)
        request = pb.RunPodSandboxRequest(config=self.config)
        self.pod = rt.RunPodSandbox(request, timeout=60).pod_sandbox_id
        self.made = 0
        self.probe: str | None = None  # the started container that --shape exec runs in
        self.blocks: list[float] = []  # each block's median own time, ms

    def block(self, per: int, shape: str) -> None:
        pb, rt = self.client.pb, self.client.runtime
        if shape == "metrics":  # the fleet's scrape: no Docker request, own time = server time
            for _ in range(per):
                self.rec.call(
                    "scrape",
                    "ListPodSandboxMetrics",
                    lambda: rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=60),
                )
            self._end_block("scrape", docker=False)
            return
        if shape == "exec":
            self._exec_block(per)
            return
        if shape == "pod":
            self._pod_block(per)
            return
        for _ in range(per):
            self.made += 1
            name = f"c{self.made}"
            if shape == "kubelet":
                request = overhead._kubelet_shaped_request(pb, self.pod, self.config, name)
            else:  # the overhead table's small request: no mounts
                request = overhead._create_request(
                    pb, self.pod, self.config, name, ["sleep", "300"]
                )
            made = self.rec.call(
                "create", "CreateContainer", lambda r=request: rt.CreateContainer(r, timeout=60)
            )
            rt.RemoveContainer(pb.RemoveContainerRequest(container_id=made.container_id))
        self._end_block("create")

    def _exec_block(self, per: int) -> None:
        """`per` ExecSync calls of `true` in a started container of the build's pod, as a
        kubelet's exec probe makes them."""
        pb, rt = self.client.pb, self.client.runtime
        if self.probe is None:
            sleeper = ["sleep", "3000"]
            request = overhead._create_request(pb, self.pod, self.config, "probe", sleeper)
            self.probe = rt.CreateContainer(request, timeout=60).container_id
            rt.StartContainer(pb.StartContainerRequest(container_id=self.probe), timeout=60)
        request = pb.ExecSyncRequest(container_id=self.probe, cmd=["true"], timeout=10)
        for _ in range(per):
            self.rec.call("exec", "ExecSync", lambda: rt.ExecSync(request, timeout=60))
        self._end_block("exec")

    def _pod_block(self, per: int) -> None:
        """`per` RunPodSandbox calls (the overhead table's pod), each stopped and removed."""
        pb, rt = self.client.pb, self.client.runtime
        for _ in range(per):
            request = pb.RunPodSandboxRequest(config=overhead._sandbox_config(pb))
            made = self.rec.call(
                "run", "RunPodSandbox", lambda r=request: rt.RunPodSandbox(r, timeout=60)
            )
            sid = made.pod_sandbox_id
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        self._end_block("run")

    def _end_block(self, name: str, docker: bool = True) -> None:
        """The block's median own time: each `name` call's server time, less its Docker
        time unless `docker` is False (a scrape's own time is its server time)."""
        self.rec.collect()
        own = [
            server - (overhead._union_ms(asked) if docker else 0.0)
            for server, asked in self.rec.calls[name]
        ]
        self.rec.calls.clear()
        self.rec.cpu.clear()
        self.blocks.append(statistics.median(own))

    def close(self) -> None:
        pb, rt = self.client.pb, self.client.runtime
        try:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self.pod), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self.pod), timeout=60)
        finally:
            self.client.close()
            self.proc.stop()
            self.proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="source tree A (its src/ is run)")
    parser.add_argument("b", type=Path, help="source tree B")
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--per", type=int, default=20, help="creates per block")
    parser.add_argument(
        "--shape",
        choices=("kubelet", "small", "metrics", "exec", "pod"),
        default="kubelet",
        help="the create request; metrics: ListPodSandboxMetrics over --pods pods; exec:"
        " ExecSync of `true` in a started container; pod: RunPodSandbox",
    )
    parser.add_argument("--pods", type=int, default=200, help="with --shape metrics")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    root = Path(tempfile.mkdtemp(prefix="crpaired-", dir="/tmp"))
    overhead.LOGS = root / "logs"
    dockerd = PrivateDockerd(root / "dockerd", unique_name("crpaired")).start()
    builds: list[Build] = []
    fleet = None
    try:
        stubs = generate_official_stubs(root / "stubs")
        test_images.build(dockerd, root / "build")
        socket = Path(dockerd.endpoint.removeprefix("unix://"))
        for name, tree in (("a", args.a), ("b", args.b)):
            builds.append(Build(tree.resolve(), root / name, socket, stubs))
        a, b = builds
        if args.shape == "metrics":  # made through A; both builds serve them
            fleet = stats.Fleet(a.client, per_pod=1)
            fleet.grow(args.pods)
        for i in range(args.blocks + 1):
            for build in (a, b) if i % 2 == 0 else (b, a):
                build.block(args.per, args.shape)
        pairs = list(zip(a.blocks[1:], b.blocks[1:], strict=True))
        result = {
            "call": (
                f"ListPodSandboxMetrics over {args.pods} pods, server time, ms"
                if args.shape == "metrics"
                else "ExecSync of `true`, own time = server - Docker, ms"
                if args.shape == "exec"
                else "RunPodSandbox, own time = server - Docker, ms"
                if args.shape == "pod"
                else f"CreateContainer ({args.shape}-shaped), own time = server - Docker, ms"
            ),
            "a": {"tree": str(a.tree), "p50_of_blocks": round(statistics.median(a.blocks[1:]), 3)},
            "b": {"tree": str(b.tree), "p50_of_blocks": round(statistics.median(b.blocks[1:]), 3)},
            "b_minus_a_p50": round(statistics.median(y - x for x, y in pairs), 3),
            "pairs_b_lower": sum(y < x for x, y in pairs),
            "pairs": len(pairs),
        }
        print(json.dumps(result, indent=1))
    finally:
        if fleet is not None:
            fleet.remove()
        for build in builds:
            build.close()
        dockerd.destroy()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
