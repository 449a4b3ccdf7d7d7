"""crishim benchmarks; run on purpose, never by the test suite. Prints one JSON document.

    .venv/bin/python bench/run.py [--calls N]

Starts a private dockerd and crishim with the test harness (as root), then measures:
  - Version and Status round trips through crishim's own grpclib client and grpcio,
  - PullImage from a local registry (htpasswd auth), ImageStatus, and ListImages over
    100 images (the first call inspects every image, later ones read the ID cache),
  - exec round trip (`true`) through crishim's streaming server beside Docker's own exec
    API, and port-forward throughput for a 100 MB transfer beside `cat` through Docker exec,
  - pod start (RunPodSandbox) and stop (Stop + RemovePodSandbox) in cni mode beside docker
    mode, with the CNI plugins' time inside them (bench/pods.py),
  - ListContainerStats, ListPodSandboxStats and ListPodSandboxMetrics over 20, 200 (and
    --stats-counts) running containers: client and server time, crishim CPU per call, and
    a kubelet-like mix of list polls and metrics scrapes (bench/stats.py),
  - side by side: each RPC's server time against the Docker calls it makes, timed at
    the Docker socket by a recording proxy, and the polled calls at 0/200/1000
    containers (bench/overhead.py; `--only overhead`),
  - the codec cost of a ListContainersResponse of 1000 containers (betterproto2 vs the
    official protobuf runtime), the figure the list-path performance budget starts from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import memory as bench_memory
from bench import overhead as bench_overhead
from bench import pods as bench_pods
from bench import stats as bench_stats
from bench import streaming as bench_streaming
from crishim.api.runtime import v1 as api
from crishim.server import wire
from tests.harness import images as test_images
from tests.harness.clients import Official, Own, generate_official_stubs
from tests.harness.crishim import CrishimProcess
from tests.harness.dockerd import PrivateDockerd, unique_name
from tests.harness.procs import umount_below
from tests.harness.registry import Registry


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def timed_async(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def containers_response(n: int) -> api.ListContainersResponse:
    return api.ListContainersResponse(
        containers=[
            api.Container(
                id=f"{i:064x}",
                pod_sandbox_id=f"{i + 1:064x}",
                metadata=api.ContainerMetadata(name=f"app-{i}", attempt=1),
                image=api.ImageSpec(image="docker.io/library/nginx:1.27"),
                image_ref="sha256:" + "ab" * 32,
                state=api.ContainerState.CONTAINER_RUNNING,
                created_at=1_700_000_000_000_000_000 + i,
                labels={
                    "io.kubernetes.pod.name": f"web-{i}",
                    "io.kubernetes.pod.namespace": "default",
                },
                annotations={"io.kubernetes.container.hash": "1a2b3c4d"},
                image_id="sha256:" + "ab" * 32,
            )
            for i in range(n)
        ]
    )


def kubelet_create_request() -> api.CreateContainerRequest:
    """A CreateContainerRequest of the size a kubelet sends for an ordinary pod (~3.3 KB):
    labels, annotations, 20 env vars, 4 volume mounts, resources, security context."""
    labels = {f"app.kubernetes.io/label-{i}": "v" * 20 for i in range(8)}
    annotations = {f"kubernetes.io/annotation-{i}": "x" * 60 for i in range(6)}
    sandbox = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(
            name="web-7d9f8c6b5-abcde", namespace="default", uid="6f1c1a8e-1c0b-4a3e-9a76"
        ),
        hostname="web",
        log_directory="/var/log/pods/default_web_6f1c",
        dns_config=api.DnsConfig(
            servers=["10.96.0.10"],
            searches=["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            options=["ndots:5"],
        ),
        port_mappings=[api.PortMapping(protocol=api.Protocol.TCP, container_port=80)],
        labels=labels,
        annotations=annotations,
        linux=api.LinuxPodSandboxConfig(cgroup_parent="/kubepods/besteffort/pod6f1c"),
    )
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="app"),
        image=api.ImageSpec(image="registry.example/app:1.2.3"),
        command=["/bin/app"],
        args=["--port=80", "--verbose"],
        envs=[api.KeyValue(key=f"ENV_{i}", value="value" * 4) for i in range(20)],
        mounts=[
            api.Mount(container_path=f"/var/run/secrets/{i}", host_path=f"/var/lib/kubelet/{i}")
            for i in range(4)
        ],
        labels=labels,
        annotations=annotations,
        log_path="app/0.log",
        linux=api.LinuxContainerConfig(
            resources=api.LinuxContainerResources(
                cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=1 << 28
            ),
            security_context=api.LinuxContainerSecurityContext(
                masked_paths=["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list"],
                readonly_paths=["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
            ),
        ),
    )
    return api.CreateContainerRequest(
        pod_sandbox_id="a" * 64, config=config, sandbox_config=sandbox
    )


def codec_bench(pb, repeat: int = 5) -> dict:
    ours = containers_response(1000)
    data = bytes(ours)
    theirs = pb.ListContainersResponse.FromString(data)
    create = bytes(kubelet_create_request())
    return {
        # The server's decode of one kubelet-sized request (checked and decoded in one
        # walk), beside betterproto2's own parser and the official runtime's.
        "create_container_request_bytes": len(create),
        "create_container_decode": summary(
            timed(lambda: wire.decode(create, api.CreateContainerRequest), 500)
        ),
        "create_container_parse": summary(
            timed(lambda: api.CreateContainerRequest.parse(create), 500)
        ),
        "create_container_protobuf_parse": summary(
            timed(lambda: pb.CreateContainerRequest.FromString(create), 500)
        ),
        "list_containers_1000_bytes": len(data),
        "betterproto2_encode": summary(timed(lambda: bytes(ours), repeat)),
        "betterproto2_decode": summary(
            timed(lambda: api.ListContainersResponse.parse(data), repeat)
        ),
        "protobuf_encode": summary(timed(theirs.SerializeToString, repeat)),
        "protobuf_decode": summary(
            timed(lambda: pb.ListContainersResponse.FromString(data), repeat)
        ),
    }


async def rpc_bench(socket: Path, stubs, calls: int) -> dict:
    official = Official(socket, *stubs)
    own = Own(socket)
    try:
        pb = official.pb
        official.runtime.Version(pb.VersionRequest(), timeout=10)  # warm up
        await own.runtime.version(api.VersionRequest())
        return {
            "version_grpcio": summary(
                timed(lambda: official.runtime.Version(pb.VersionRequest()), calls)
            ),
            "version_grpclib": summary(
                await timed_async(lambda: own.runtime.version(api.VersionRequest()), calls)
            ),
            "status_grpcio": summary(
                timed(lambda: official.runtime.Status(pb.StatusRequest()), calls)
            ),
            "status_grpclib": summary(
                await timed_async(lambda: own.runtime.status(api.StatusRequest()), calls)
            ),
        }
    finally:
        official.close()
        own.close()


def tiny_image_tar(i: int) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"image {i}\n".encode()
        info = tarfile.TarInfo("id.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pullable(dockerd, registry, name: str) -> bench_overhead.Pullable:
    """An image of its own in the registry only: removing it between pulls touches nothing else."""
    work = registry.root.parent / "build"
    built = test_images.build(dockerd, work)
    local = test_images.derive(dockerd, built.busybox, f"{name}:latest", work, name)
    ref = registry.push(dockerd, local, f"{name}:1.0")
    dockerd.docker("rmi", ref, local)
    return bench_overhead.Pullable(ref, registry.username, registry.password)


def image_bench(dockerd, registry, socket: Path, stubs, calls: int) -> dict:
    ref = pullable(dockerd, registry, "bench/pullable").ref
    for i in range(100):
        dockerd.docker("import", "-", f"bench/tiny-{i}:latest", input=tiny_image_tar(i))
    client = Official(socket, *stubs)
    pb = client.pb
    auth = pb.AuthConfig(username=registry.username, password=registry.password)
    request = pb.PullImageRequest(image=pb.ImageSpec(image=ref), auth=auth)
    remove = pb.RemoveImageRequest(image=pb.ImageSpec(image=ref))
    try:
        pulls = []
        for _ in range(10):
            client.image.RemoveImage(remove, timeout=60)
            start = time.perf_counter()
            client.image.PullImage(request, timeout=120)
            pulls.append(time.perf_counter() - start)
        status = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
        list_request = pb.ListImagesRequest()
        cold = timed(lambda: client.image.ListImages(list_request, timeout=60), 1)
        count = len(client.image.ListImages(list_request, timeout=60).images)
        return {
            "pull_image_local_registry": summary(pulls),
            "image_status": summary(timed(lambda: client.image.ImageStatus(status), calls)),
            "list_images_count": count,
            "list_images_cold": summary(cold),
            "list_images_warm": summary(timed(lambda: client.image.ListImages(list_request), 50)),
        }
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--pod-cycles", type=int, default=30)
    parser.add_argument("--stats-counts", default="20,200", help="running containers, ascending")
    parser.add_argument("--stats-per-pod", type=int, default=10, help="containers per pod")
    parser.add_argument("--memory-pods", type=int, default=200)
    parser.add_argument("--memory-cycles", type=int, default=1000)
    parser.add_argument(
        "--only",
        choices=("pods", "stats", "overhead", "memory"),
        help="run one part only (with its setup) and print it",
    )
    parser.add_argument(
        "--overhead-counts", default="0,200,1000", help="containers for the polled-call table"
    )
    args = parser.parse_args()
    # stdout carries the JSON result only; the adapter's logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    root = Path(tempfile.mkdtemp(prefix="crb-", dir="/tmp"))
    dockerd = PrivateDockerd(root / "dockerd", unique_name("crbench")).start()
    crishim = CrishimProcess(root / "crishim", dockerd.endpoint, "--log-level=info")
    registry = Registry(root / "registry")
    try:
        crishim.start()
        registry.start()
        stubs = generate_official_stubs(root / "stubs")
        test_images.build(dockerd, root / "build")  # busybox and the pause image for pods
        counts = [int(c) for c in args.stats_counts.split(",")]
        overhead_counts = [int(c) for c in args.overhead_counts.split(",")]

        def overhead() -> dict:
            pull = pullable(dockerd, registry, "bench/overhead-pull")
            for i in range(bench_overhead.NODE_IMAGES):  # a node's images: ListImages sees them
                dockerd.docker("import", "-", f"bench/node-{i}:latest", input=tiny_image_tar(i))
            return bench_overhead.run(
                dockerd.endpoint, root, stubs, overhead_counts, args.pod_cycles, 20, pull
            )

        if args.only:
            parts = {
                "pods": lambda: bench_pods.run(
                    dockerd.endpoint, root, stubs, args.pod_cycles, summary
                ),
                "stats": lambda: bench_stats.run(
                    dockerd.endpoint, root, stubs, counts, 20, summary, args.stats_per_pod
                ),
                "memory": lambda: bench_memory.run(
                    dockerd.endpoint, root, stubs, args.memory_pods, args.memory_cycles
                ),
                "overhead": overhead,
            }
            json.dump({args.only: parts[args.only]()}, sys.stdout, indent=2)
            print()
            return
        official = Official(crishim.socket, *stubs)
        try:
            streams = bench_streaming.run(
                official,
                lambda: Own(crishim.socket),
                dockerd.endpoint,
                root,
                max(10, args.calls // 4),
                summary,
            )
        finally:
            official.close()
        result = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "rpc": asyncio.run(rpc_bench(crishim.socket, stubs, args.calls)),
            "images": image_bench(dockerd, registry, crishim.socket, stubs, args.calls),
            "codec": codec_bench(stubs[0]),
            "streaming": streams,
            "pods": bench_pods.run(dockerd.endpoint, root, stubs, args.pod_cycles, summary),
            "stats": bench_stats.run(dockerd.endpoint, root, stubs, counts, 20, summary),
            "overhead": overhead(),
        }
    finally:
        crishim.stop()
        registry.stop()
        dockerd.destroy()
        # As the suite's session teardown: a cni-mode crishim leaves its netns dir mounted.
        umount_below(root)
        shutil.rmtree(root, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
