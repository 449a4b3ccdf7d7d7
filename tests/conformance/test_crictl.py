"""crictl, as an operator types it, against a real crishim.

The kit's crictl 1.36.0 runs inside the conformance node's namespace (so its
streaming URLs and port-forwards reach crishim's loopback, as on a node), table
output as well as JSON: every command an operator reaches for works end to end.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.conformance import ConformanceNode
from tests.harness.procs import free_port, wait_for

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
CLEAR_SCREEN = "\x1b[2J\x1b[H"  # crictl stats' table starts with it
SPARE = "gcr.io/k8s-staging-cri-tools/test-image-2:latest"  # pulled and removed


def _write(path: Path, doc: dict) -> str:
    """A config file for crictl."""
    path.write_text(json.dumps(doc))
    return str(path)


@contextlib.contextmanager
def _background(node: ConformanceNode, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """crictl running while the block does (logs -f, events, port-forward); ended after."""
    proc = subprocess.Popen(
        node.crictl_args(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    got = b""
    end = time.monotonic() + timeout
    while wanted not in got and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    return got


def _in_terminal(node: ConformanceNode, *args: str, typed: bytes, wanted: bytes) -> bytes:
    """crictl with a terminal for stdin and stdout (exec -it, attach -it): what it printed
    once `wanted` shows, after `typed` was typed."""
    main, sub = pty.openpty()
    proc = subprocess.Popen(node.crictl_args(*args), stdin=sub, stdout=sub, stderr=sub)
    os.close(sub)
    try:
        time.sleep(1)  # the stream is set up before the keys arrive
        os.write(main, typed)
        return _read_until(main, wanted, 30)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(main)


class Configs:
    """Pod and container configs as crictl's README shows them, each pod its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()

    def pod(self) -> tuple[str, str]:
        """(name, config file) of a new pod."""
        name = f"crictl-Pod-{uuid.uuid4().hex[:8]}"
        doc = {
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "log_directory": str(self.root / name),
            "linux": {},
        }
        return name, _write(self.root / f"{name}.json", doc)

    def container(self, cname: str, command: list[str], **extra) -> str:
        doc = {
            "metadata": {"name": cname},
            "image": {"image": BUSYBOX},
            "command": command,
            "log_path": f"{cname}.log",
            "linux": {},
            **extra,
        }
        return _write(self.root / f"{cname}-{uuid.uuid4().hex[:6]}.json", doc)


@pytest.fixture(scope="module")
def configs(conformance_node: ConformanceNode, workdir: Path) -> Configs:
    conformance_node.crictl("pull", BUSYBOX)
    return Configs(workdir / f"crictl-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def pod(conformance_node: ConformanceNode, configs: Configs) -> Iterator[tuple[str, str]]:
    """(id, config file) of a running pod shared by the module's tests."""
    node = conformance_node
    _, config = configs.pod()
    pod_id = node.crictl("runp", config).strip()
    yield pod_id, config
    node.crictl("stopp", pod_id)
    node.crictl("rmp", pod_id)


def _run(node: ConformanceNode, configs: Configs, pod, cname: str, command, **extra) -> str:
    pod_id, pod_config = pod
    cid = node.crictl("create", pod_id, configs.container(cname, command, **extra), pod_config)
    node.crictl("start", cid.strip())
    return cid.strip()


def test_version_info_and_runtime_config(conformance_node) -> None:
    node = conformance_node
    version = node.crictl("version")
    assert "RuntimeName:  docker" in version
    assert "RuntimeApiVersion:  v1" in version
    info = json.loads(node.crictl("info"))
    conditions = {c["type"]: c["status"] for c in info["status"]["conditions"]}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    assert "cgroup" in node.crictl("runtime-config").lower()


def test_images_pull_inspect_and_remove(conformance_node) -> None:
    node = conformance_node
    pulled = node.crictl("pull", SPARE)
    assert "Image is up to date for sha256:" in pulled
    image_id = pulled.rsplit(" ", 1)[-1].strip()
    table = node.crictl("images")
    assert table.splitlines()[0].split()[:3] == ["IMAGE", "TAG", "IMAGE"]
    assert any(
        line.split()[:2] == [SPARE.rsplit(":", 1)[0], "latest"] for line in table.splitlines()
    )
    assert image_id.removeprefix("sha256:")[:13] in node.crictl("images", "-q")
    status = json.loads(node.crictl("inspecti", SPARE))["status"]
    assert status["id"] == image_id
    assert SPARE in status["repoTags"]
    fs = json.loads(node.crictl("imagefsinfo"))
    assert int(fs["status"]["imageFilesystems"][0]["usedBytes"]["value"]) > 0
    assert "Deleted: " + SPARE in node.crictl("rmi", SPARE)
    assert SPARE.rsplit(":", 1)[0] not in node.crictl("images")


def test_pods_and_containers_run_list_inspect_stop_and_remove(conformance_node, configs) -> None:
    node = conformance_node
    name, pod_config = configs.pod()
    pod_id = node.crictl("runp", pod_config).strip()
    try:
        pods = node.crictl("pods", "--name", name)
        assert pods.splitlines()[1].split()[:1] == [pod_id[:13]]
        assert "Ready" in pods
        assert node.crictl("pods", "-q", "--name", name).split() == [pod_id]
        status = json.loads(node.crictl("inspectp", pod_id))["status"]
        assert status["state"] == "SANDBOX_READY"
        assert status["metadata"]["name"] == name
        assert status["network"]["ip"].startswith("10.88.")
        lifecycle = configs.container("lifecycle", ["sleep", "300"])
        cid = node.crictl("create", pod_id, lifecycle, pod_config).strip()
        assert json.loads(node.crictl("inspect", cid))["status"]["state"] == "CONTAINER_CREATED"
        node.crictl("start", cid)
        ps = node.crictl("ps", "--pod", pod_id)
        assert ps.splitlines()[0].split()[:2] == ["CONTAINER", "IMAGE"]
        assert cid[:13] in ps
        assert "Running" in ps
        assert json.loads(node.crictl("inspect", cid))["status"]["state"] == "CONTAINER_RUNNING"
        node.crictl("update", "--memory", "67108864", cid)
        resources = json.loads(node.crictl("inspect", cid))["status"]["resources"]["linux"]
        assert int(resources["memoryLimitInBytes"]) == 67108864
        node.crictl("stop", "--timeout", "2", cid)
        assert json.loads(node.crictl("inspect", cid))["status"]["state"] == "CONTAINER_EXITED"
        assert cid[:13] in node.crictl("ps", "-a", "--pod", pod_id)
        node.crictl("rm", cid)
        assert cid[:13] not in node.crictl("ps", "-a", "--pod", pod_id)
        node.crictl("stopp", pod_id)
        assert "NotReady" in node.crictl("pods", "--name", name)
    finally:
        node.crictl("rmp", "-f", pod_id)
    assert node.crictl("pods", "-q", "--name", name).split() == []


def test_logs_whole_tail_since_and_follow(conformance_node, configs, pod) -> None:
    node = conformance_node
    cid = _run(
        node,
        configs,
        pod,
        "talker",
        ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 3; echo late; sleep 300"],
    )
    wait_for(lambda: "line5" in node.crictl("logs", cid), 30, "the first lines")
    assert node.crictl("logs", cid).split() == [f"line{i}" for i in range(1, 6)]
    assert node.crictl("logs", "--tail", "2", cid).split() == ["line4", "line5"]
    with _background(node, "logs", "-f", cid) as follower:
        assert follower.stdout is not None
        seen = _read_until(follower.stdout.fileno(), b"late", 30)
    assert b"line1" in seen
    assert b"late" in seen
    assert node.crictl("logs", "--since", "1s", cid).split() in ([], ["late"])
    assert "late" in node.crictl("logs", "--since", "60s", cid)


def test_exec_sync_interactive_and_attach(conformance_node, configs, pod) -> None:
    node = conformance_node
    cid = _run(node, configs, pod, "shell", ["sleep", "300"])
    assert node.crictl("exec", "-s", cid, "echo", "synced").strip() == "synced"
    assert node.crictl("exec", cid, "sh", "-c", "echo streamed").strip() == "streamed"
    with pytest.raises(RuntimeError, match="exit code 3"):
        node.crictl("exec", cid, "sh", "-c", "exit 3")
    out = _in_terminal(
        node, "exec", "-it", cid, "sh", typed=b"echo in-$((40+2))\nexit\n", wanted=b"in-42"
    )
    assert b"in-42" in out
    tty = _run(node, configs, pod, "attachable", ["sh"], stdin=True, tty=True)
    out = _in_terminal(node, "attach", "-it", tty, typed=b"echo at-$((6*7))\n", wanted=b"at-42")
    assert b"at-42" in out


def test_port_forward_reaches_the_pods_port(conformance_node, configs, pod) -> None:
    node = conformance_node
    _run(
        node,
        configs,
        pod,
        "web",
        ["sh", "-c", "mkdir -p /w && echo served-by-pod > /w/index.html && httpd -f -p 8080 -h /w"],
    )
    port = free_port()
    with _background(node, "port-forward", pod[0], f"{port}:8080"):
        body = ""

        def fetched() -> bool:
            nonlocal body
            body = node.run("curl", "-sf", "-m", "5", f"http://127.0.0.1:{port}/", check=False)
            return "served-by-pod" in body

        wait_for(fetched, 30, "the page through port-forward", interval=0.5)


def test_stats_twenty_times_in_a_row_with_twenty_containers(conformance_node, configs) -> None:
    """crictl stats samples twice a second apart: each run must see newer CPU readings."""
    node = conformance_node
    _, pod_config = configs.pod()
    busy_pod = node.crictl("runp", pod_config).strip()
    try:
        busy = (busy_pod, pod_config)
        ids = {_run(node, configs, busy, f"many{i}", ["sleep", "300"])[:13] for i in range(20)}
        for i in range(20):
            table = node.crictl("stats", "--pod", busy_pod) if i % 2 else None
            if table is not None:
                rows = table.removeprefix(CLEAR_SCREEN).splitlines()
                assert rows[0].split()[:3] == ["CONTAINER", "NAME", "CPU"]
                assert {row.split()[0] for row in rows[1:]} == ids
            else:
                stats = json.loads(node.crictl("stats", "-o", "json", "--pod", busy_pod))["stats"]
                assert {s["attributes"]["id"][:13] for s in stats} == ids
        pods = json.loads(node.crictl("statsp", "-o", "json", "--id", busy_pod))["stats"]
        assert pods[0]["attributes"]["id"] == busy_pod
        assert int(pods[0]["linux"]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
        assert "POD" in node.crictl("statsp", "--id", busy_pod).splitlines()[0]
        descriptors = json.loads(node.crictl("metricdescs"))["descriptors"]
        assert "container_cpu_usage_seconds_total" in {d["name"] for d in descriptors}
        metrics = json.loads(node.crictl("metricsp"))["podMetrics"]
        assert busy_pod in {m["podSandboxId"] for m in metrics}
    finally:
        node.crictl("rmp", "-f", busy_pod)


def test_events_stream_what_happens(conformance_node, configs, pod) -> None:
    node = conformance_node
    with _background(node, "events", "-o", "json") as events:
        time.sleep(1)
        cid = _run(node, configs, pod, "evented", ["sleep", "300"])
        assert events.stdout is not None
        seen = _read_until(events.stdout.fileno(), b"CONTAINER_STARTED_EVENT", 30)
    assert cid.encode() in seen
    assert b"CONTAINER_CREATED_EVENT" in seen


def test_checkpoint_exports_the_container_or_says_why_criu_cannot(
    conformance_node, configs, pod, workdir
) -> None:
    """crictl checkpoint: Docker's checkpoint with CRIU where the kernel lets CRIU work;
    else CRIU's own reason, clearly (this machine: CRIU 3.17 on kernel 6.18 cannot)."""
    node = conformance_node
    cid = _run(node, configs, pod, "checkpointed", ["sh", "-c", "echo x > /f; sleep 300"])
    archive = workdir / f"crictl-checkpoint-{cid[:12]}.tar"
    criu = subprocess.run(["criu", "check"], capture_output=True, text=True)
    if criu.returncode == 0:
        node.crictl("checkpoint", f"--export={archive}", cid, timeout=300)
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert {"config.dump", "spec.dump", "rootfs-diff.tar"} <= set(names)
    else:
        with pytest.raises(RuntimeError) as refused:
            node.crictl("checkpoint", f"--export={archive}", cid, timeout=300)
        said = str(refused.value)
        assert "FailedPrecondition" in said or "FAILED_PRECONDITION" in said, said
        assert "docker could not checkpoint" in said
        assert "criu" in said.lower()
        assert not archive.exists()
    assert json.loads(node.crictl("inspect", cid))["status"]["state"] == "CONTAINER_RUNNING"
