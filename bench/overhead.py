"""Side by side: each RPC's server time against the Docker calls it makes.

crishim runs against a recording proxy on the Docker socket
(tests/harness/dockerproxy.py), which times every Docker request at the
socket, from the moment its body was passed on to the end of the daemon's
answer: Docker's own cost, timed directly. crishim's server time per call is
its own `rpc` log event (`duration_ms`: decode, handler, encode). Each call is
made alone, so the Docker requests that start while it runs are the ones it
made (the heartbeat's `/_ping` is left out; event-driven inspects that a call
triggers are counted with it when they land inside it).

PullImage and RemoveImage (of an image only the local registry has) are measured
in turn after the pods, and PullImage once more with the image present
("PullImage present": the kubelet's Always pull policy, which Docker answers
"up to date").

ExecSync runs `true` in the started container, as a kubelet's exec probe runs its
command: Docker's exec create, its start (a hijacked stream, timed until the
daemon ends it) and the inspects that read the exit code.

CreateContainer is measured twice: the bench's small request, and a request
shaped as the kubelet sends one (mounts, environment, labels, annotations,
resources, security context), made in the same pod after RemoveContainer.

Per RPC also crishim's CPU time while the call ran (all its threads, from
/proc/<pid>/task/*/schedstat): its own work, which the daemon's varying times
do not blur as they blur the overhead (work an event triggers after the call
is not counted).

Per RPC: server p50, Docker p50 (the union of its requests' intervals, so
concurrent requests count once), the requests per call, the overhead (the
median of each call's server - Docker) and the ratio (server p50 / Docker
p50). The proxy's own hop adds latency on crishim's side of each request; it
is measured (`GET /_ping` through the proxy minus direct) and reported, with
the overhead corrected for it as `overhead_corrected_ms`.

`thread_trip_us`: what one worker-thread trip (`asyncio.to_thread` of a
no-op) costs on this machine, measured in the bench's own process, back to
back and after 20 ms idle (as calls come from a kubelet). A CreateContainer
whose mount sources are not all in the kernel's lookup cache makes one such
trip before Docker's create (crishim.common.cachedpath); on a VM, waking a thread that
slept costs most of it.

Then a table of the polled calls at 0, 200 and 1000 containers: 10 running
pods and the rest created (not started: a started container per slot would
not fit this machine), server p50 and Docker requests per call. The daemon
holds NODE_IMAGES images beside the test images (bench/run.py imports them),
as a node does: ListImages answers for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import socket
import statistics
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.harness.clients import Official
from tests.harness.crishim import CrishimProcess
from tests.harness.dockerproxy import RecordingProxy, Request

BUSYBOX = "crishim-test/busybox:latest"
NODE_IMAGES = 100


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost")
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _ping_ms(path: Path, n: int = 200) -> float:
    conn = _UnixHTTP(path)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", "/_ping")
        conn.getresponse().read()
        samples.append(time.perf_counter() - t)
    conn.close()
    return statistics.median(samples) * 1000


def _union_ms(requests: list[Request]) -> float:
    spans = sorted((r.sent, r.done) for r in requests if r.done is not None)
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total * 1000


_ID = re.compile(r"[0-9a-f]{64}|(?<=/containers/)(?!create$|json$)[^/]+")


def _kinds(samples: list[tuple[float, list[Request]]]) -> dict[str, float]:
    """Each kind of Docker request (ids and names replaced by {id}), per call on average."""
    counts: dict[str, int] = defaultdict(int)
    for _, reqs in samples:
        for r in reqs:
            counts[_ID.sub("{id}", str(r))] += 1
    return {k: round(v / len(samples), 2) for k, v in sorted(counts.items())}


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far, in ns (schedstat: finer than /proc/pid/stat's
    clock ticks, fine enough for one call)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


class Recorder:
    """Makes calls one at a time and pairs each with its Docker requests, server time and
    crishim's CPU time while it ran (whatever the daemon took, this is crishim's own work)."""

    def __init__(self, proxy: RecordingProxy, proc: CrishimProcess) -> None:
        self.proxy = proxy
        self.proc = proc
        self.calls: dict[str, list[tuple[float, list[Request]]]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self._offset = len(proc.events())
        self._order: list[tuple[str, str]] = []

    def call(self, name: str, method: str, fn):
        assert self.proc.proc is not None
        pid = self.proc.proc.pid
        start = self.proxy.mark()
        cpu = _cpu_ns(pid)
        result = fn()
        self.cpu[name].append((_cpu_ns(pid) - cpu) / 1e6)
        asked = [r for r in self.proxy.requests(start) if str(r) != "GET /_ping"]
        self.calls[name].append((0.0, asked))
        self._order.append((name, method))
        return result

    def collect(self) -> None:
        """Fill in server times from crishim's rpc log events, in call order per method."""
        events = self.proc.events()[self._offset :]
        by_method: dict[str, list[float]] = defaultdict(list)
        for e in events:
            if e.get("event") == "rpc" and e.get("code") == "OK":
                by_method[e["rpc"]].append(float(e["duration_ms"]))
        seen: dict[str, int] = defaultdict(int)
        index: dict[str, int] = defaultdict(int)
        for name, method in self._order:
            times = by_method.get(method, [])
            k = seen[method]
            seen[method] += 1
            i = index[name]
            index[name] += 1
            server = times[k] if k < len(times) else float("nan")
            self.calls[name][i] = (server, self.calls[name][i][1])
        self._offset += len(events)
        self._order.clear()

    def table(self, hop_ms: float) -> dict:
        out = {}
        for name, samples in self.calls.items():
            server = statistics.median(s for s, _ in samples)
            docker = statistics.median(_union_ms(reqs) for _, reqs in samples)
            per_call = statistics.mean(len(reqs) for _, reqs in samples)
            # Per call, then the median: the daemon's times vary by several ms from call
            # to call, and a difference of two medians carried that noise into it.
            overhead = statistics.median(s - _union_ms(reqs) for s, reqs in samples)
            out[name] = {
                "n": len(samples),
                "server_p50_ms": round(server, 3),
                "docker_p50_ms": round(docker, 3),
                "docker_requests_per_call": round(per_call, 2),
                "docker_requests": _kinds(samples),
                "overhead_ms": round(overhead, 3),
                "overhead_corrected_ms": round(overhead - hop_ms * per_call, 3),
                "ratio": round(server / docker, 3) if docker > 0 else None,
                "crishim_cpu_p50_ms": round(statistics.median(self.cpu[name]), 3),
            }
        self.calls.clear()
        self.cpu.clear()
        return out


LOGS = Path("/tmp")  # replaced by run() with a directory under the bench's root


def _sandbox_config(pb):
    name = f"ovh-{uuid.uuid4().hex[:8]}"
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="bench", uid=str(uuid.uuid4())),
        hostname=name,
        log_directory=str(LOGS / name),
    )


def _create_request(pb, sandbox_id: str, sandbox_config, name: str, command: list[str], **config):
    return pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id,
        sandbox_config=sandbox_config,
        config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=BUSYBOX),
            command=command,
            log_path=f"{name}/0.log",
            **config,
        ),
    )


def _kubelet_shaped_request(pb, sandbox_id: str, sandbox_config, name: str):
    """A CreateContainer as the kubelet sends one for a plain Deployment's container: its
    mounts (/etc/hosts, the termination log, the service account token), environment,
    labels, annotations, resources and security context."""
    mounts = LOGS / "kubelet-mounts"
    for f in ("hosts", "termination-log"):
        (mounts / f).parent.mkdir(parents=True, exist_ok=True)
        (mounts / f).touch()
    (mounts / "token").mkdir(exist_ok=True)
    meta = sandbox_config.metadata
    return _create_request(
        pb,
        sandbox_id,
        sandbox_config,
        name,
        ["sleep", "300"],
        envs=[
            pb.KeyValue(key=f"SERVICE_{i}_PORT", value=f"tcp://10.96.0.{i}:80") for i in range(12)
        ],
        mounts=[
            pb.Mount(container_path="/etc/hosts", host_path=str(mounts / "hosts")),
            pb.Mount(
                container_path="/dev/termination-log",
                host_path=str(mounts / "termination-log"),
            ),
            pb.Mount(
                container_path="/var/run/secrets/kubernetes.io/serviceaccount",
                host_path=str(mounts / "token"),
                readonly=True,
            ),
        ],
        labels={
            "io.kubernetes.container.name": name,
            "io.kubernetes.pod.name": meta.name,
            "io.kubernetes.pod.namespace": meta.namespace,
            "io.kubernetes.pod.uid": meta.uid,
        },
        annotations={
            "io.kubernetes.container.hash": "ad01c60e",
            "io.kubernetes.container.restartCount": "0",
            "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
            "io.kubernetes.container.terminationMessagePolicy": "File",
            "io.kubernetes.pod.terminationGracePeriod": "30",
        },
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(
                cpu_period=100000,
                cpu_quota=50000,
                cpu_shares=512,
                memory_limit_in_bytes=128 << 20,
            ),
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER),
                seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
                masked_paths=["/proc/kcore", "/proc/keys"],
                readonly_paths=["/proc/bus", "/proc/sys"],
            ),
        ),
    )


def lifecycle(rec: Recorder, client: Official, cycles: int) -> None:
    pb, rt = client.pb, client.runtime
    for _ in range(cycles):
        config = _sandbox_config(pb)
        sid = rec.call(
            "RunPodSandbox",
            "RunPodSandbox",
            lambda config=config: (
                rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
            ),
        )
        cid = rec.call(
            "CreateContainer",
            "CreateContainer",
            lambda config=config, sid=sid: (
                rt.CreateContainer(
                    _create_request(pb, sid, config, "app", ["sleep", "300"]),
                    timeout=60,
                ).container_id
            ),
        )
        for name, request in (
            ("StartContainer", pb.StartContainerRequest(container_id=cid)),
            ("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10)),
            ("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=0)),
            ("RemoveContainer", pb.RemoveContainerRequest(container_id=cid)),
            ("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid)),
            ("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid)),
        ):
            rec.call(name, name, lambda name=name, request=request: getattr(rt, name)(request))
            if name == "RemoveContainer":  # the pod lives on: a kubelet-shaped create in it
                kube = rec.call(
                    "CreateContainer (kubelet-shaped)",
                    "CreateContainer",
                    lambda config=config, sid=sid: (
                        rt.CreateContainer(
                            _kubelet_shaped_request(pb, sid, config, "kube"), timeout=60
                        ).container_id
                    ),
                )
                rec.call(
                    "RemoveContainer (kubelet-shaped)",
                    "RemoveContainer",
                    lambda kube=kube: rt.RemoveContainer(
                        pb.RemoveContainerRequest(container_id=kube)
                    ),
                )
    rec.collect()


def polled(rec: Recorder, client: Official, sid: str, cid: str, calls: int) -> None:
    pb, rt, im = client.pb, client.runtime, client.image
    spec = pb.ImageSpec(image=BUSYBOX)
    table = {
        "Version": lambda: rt.Version(pb.VersionRequest()),
        "Status": lambda: rt.Status(pb.StatusRequest()),
        "RuntimeConfig": lambda: rt.RuntimeConfig(pb.RuntimeConfigRequest()),
        "ImageFsInfo": lambda: im.ImageFsInfo(pb.ImageFsInfoRequest()),
        "ListImages": lambda: im.ListImages(pb.ListImagesRequest()),
        "ImageStatus": lambda: im.ImageStatus(pb.ImageStatusRequest(image=spec)),
        "ListPodSandbox": lambda: rt.ListPodSandbox(pb.ListPodSandboxRequest()),
        "ListContainers": lambda: rt.ListContainers(pb.ListContainersRequest()),
        "ListContainers filtered": lambda: rt.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sid))
        ),
        "PodSandboxStatus": lambda: rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sid)
        ),
        "ContainerStatus": lambda: rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)),
        "ListContainerStats": lambda: rt.ListContainerStats(pb.ListContainerStatsRequest()),
        "ListPodSandboxStats": lambda: rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()),
    }
    methods = {"ListContainers filtered": "ListContainers"}
    for fn in table.values():
        fn()  # warm
    for _ in range(calls):
        for name, fn in table.items():
            rec.call(name, methods.get(name, name), fn)
    rec.collect()


def thread_trip_us(runs: int = 300) -> dict[str, float]:
    """p50 of a no-op worker-thread trip: back to back, and after 20 ms of idling."""

    def noop() -> None:
        return None

    async def measure() -> dict[str, float]:
        out = {}
        for name, idle in (("back_to_back_p50", 0.0), ("after_20ms_idle_p50", 0.02)):
            times = []
            for _ in range(runs):
                if idle:
                    await asyncio.sleep(idle)  # the loop idles in epoll, as between calls
                start = time.perf_counter_ns()
                await asyncio.to_thread(noop)
                times.append((time.perf_counter_ns() - start) / 1000)
            out[name] = round(statistics.median(times), 1)
        return out

    return asyncio.run(measure())


@dataclass(frozen=True)
class Pullable:
    """An image only the bench's registry has, and the credentials to pull it."""

    ref: str
    username: str
    password: str


def _image_requests(client: Official, image: Pullable):
    pb = client.pb
    auth = pb.AuthConfig(username=image.username, password=image.password)
    return (
        pb.PullImageRequest(image=pb.ImageSpec(image=image.ref), auth=auth),
        pb.RemoveImageRequest(image=pb.ImageSpec(image=image.ref)),
    )


def images(rec: Recorder, client: Official, image: Pullable, cycles: int) -> None:
    """RemoveImage then PullImage of the same image (from the local registry), `cycles` times
    (the image is there at the start: see run)."""
    service = client.image
    pull, remove = _image_requests(client, image)
    for _ in range(cycles):
        rec.call("RemoveImage", "RemoveImage", lambda: service.RemoveImage(remove, timeout=60))
        rec.call("PullImage", "PullImage", lambda: service.PullImage(pull, timeout=120))
        rec.call("PullImage present", "PullImage", lambda: service.PullImage(pull, timeout=120))
    rec.collect()


def run(
    docker_endpoint: str,
    root: Path,
    stubs,
    counts: list[int],
    cycles: int,
    calls: int,
    image: Pullable | None = None,
):
    global LOGS
    LOGS = root / "overhead-logs"
    docker_socket = Path(docker_endpoint.removeprefix("unix://"))
    proxy = RecordingProxy(root, docker_socket).start()
    proc = CrishimProcess(root / "overhead", proxy.endpoint)  # debug log: every rpc event
    proc.start()
    client = Official(proc.socket, *stubs)
    pb, rt = client.pb, client.runtime
    sandboxes: list[str] = []
    try:
        hop = _ping_ms(proxy.socket) - _ping_ms(docker_socket)
        if image is not None:  # a first pull, before the recording starts
            client.image.PullImage(_image_requests(client, image)[0], timeout=120)
        rec = Recorder(proxy, proc)
        lifecycle(rec, client, 3)  # warm up
        rec.table(hop)
        lifecycle(rec, client, cycles)
        if image is not None:
            images(rec, client, image, min(cycles, 20))
        result: dict = {
            "proxy_hop_ms": round(hop, 3),
            "thread_trip_us": thread_trip_us(),
            "lifecycle": rec.table(hop),
            "polled": {},
        }

        pods = []
        for _ in range(10):
            config = _sandbox_config(pb)
            sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
            sandboxes.append(sid.pod_sandbox_id)
            pods.append((sid.pod_sandbox_id, config))
        probe_sid, probe_config = pods[0]
        probe = rt.CreateContainer(
            _create_request(pb, probe_sid, probe_config, "probe", ["sleep", "3000"]),
            timeout=60,
        ).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=probe), timeout=60)
        made = 1
        for count in counts:
            while made < count:
                sid, config = pods[made % len(pods)]
                rt.CreateContainer(
                    _create_request(pb, sid, config, f"c{made}", ["true"]),
                    timeout=60,
                )
                made += 1
            time.sleep(2)  # let events settle
            polled(rec, client, probe_sid, probe, calls)
            result["polled"][f"{made} containers, {len(pods)} pods"] = rec.table(hop)
        return result
    finally:
        for sid in sandboxes:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
        client.close()
        proc.stop()
        proxy.stop()
