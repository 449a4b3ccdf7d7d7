"""Streaming benchmarks: exec round trip and port-forward throughput, beside Docker's own exec.

exec_true_crishim:  Exec RPC + SPDY upgrade + streams + `true` + v4 status, end to end
exec_true_docker:   the same command straight through Docker's exec API (create, start, inspect)
portforward_MBps:   100 MB from busybox httpd in a pod through crishim's SPDY port-forward
docker_exec_MBps:   the same 100 MB file read by `cat` through Docker's exec API
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from crishim.api.runtime import v1 as api
from crishim.engine.docker import DockerClient
from crishim.engine.docker.streams import Demuxer
from crishim.streaming.spdyio import connect_spdy

SIZE_MB = 100


async def _crishim_exec(own, cid: str) -> None:
    url = (await own.runtime.exec(api.ExecRequest(container_id=cid, cmd=["true"], stdout=True))).url
    session, _, pump = await connect_spdy(url, ["v4.channel.k8s.io"])
    error = await session.open_stream({"streamtype": "error"})
    stdout = await session.open_stream({"streamtype": "stdout"})
    while await stdout.read():
        pass
    status = b""
    while chunk := await error.read():
        status += chunk
    assert b"Success" in status, status
    session.abort()
    pump.cancel()


async def _docker_exec(docker: DockerClient, cid: str, cmd: list[str]) -> int:
    exec_id = await docker.exec_create(cid, cmd, stdin=False, tty=False)
    stream = await docker.exec_start(exec_id, tty=False)
    demux, total = Demuxer(), 0
    while data := await stream.reader.read(256 * 1024):
        total += sum(len(c.data) for c in demux.feed(data))
    await stream.close()
    await docker.exec_inspect(exec_id)
    return total


async def _portforward_bytes(own, sandbox_id: str, port: int) -> int:
    url = (await own.runtime.port_forward(api.PortForwardRequest(pod_sandbox_id=sandbox_id))).url
    session, _, pump = await connect_spdy(url, ["portforward.k8s.io"])
    headers = {"port": str(port), "requestid": "0"}
    error = await session.open_stream({**headers, "streamtype": "error"})
    data = await session.open_stream({**headers, "streamtype": "data"})
    await data.write(b"GET /big HTTP/1.0\r\n\r\n")
    await data.close()
    total = 0
    while chunk := await data.read(256 * 1024):
        total += len(chunk)
    assert not await error.read()
    session.abort()
    pump.cancel()
    return total


async def streaming_bench(
    own, docker_endpoint: str, cid: str, sandbox_id: str, calls: int, summary
) -> dict:
    docker = DockerClient(docker_endpoint)
    await docker.connect()
    try:
        await _crishim_exec(own, cid)  # warm up
        crishim_exec, docker_exec = [], []
        for _ in range(calls):
            start = time.perf_counter()
            await _crishim_exec(own, cid)
            crishim_exec.append(time.perf_counter() - start)
            start = time.perf_counter()
            await _docker_exec(docker, cid, ["true"])
            docker_exec.append(time.perf_counter() - start)

        start = time.perf_counter()
        forwarded = await _portforward_bytes(own, sandbox_id, 8080)
        forward_s = time.perf_counter() - start
        start = time.perf_counter()
        read = await _docker_exec(docker, cid, ["cat", "/www/big"])
        exec_s = time.perf_counter() - start
    finally:
        await docker.close()
    return {
        "exec_true_crishim": summary(crishim_exec),
        "exec_true_docker": summary(docker_exec),
        "portforward_MBps": round(forwarded / forward_s / 1e6, 1),
        "portforward_bytes": forwarded,
        "docker_exec_MBps": round(read / exec_s / 1e6, 1),
        "docker_exec_bytes": read,
    }


def setup_pod(official, workdir: Path) -> tuple[str, str]:
    """A pod with busybox httpd serving a 100 MB file on 8080; (sandbox id, container id)."""
    pb = official.pb
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="bench", namespace="bench", uid="bench-uid"),
        log_directory=str(workdir / "pods"),
    )
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    script = (
        f"mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count={SIZE_MB} 2>/dev/null; "
        "httpd -f -p 8080 -h /www"
    )
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="web"),
        image=pb.ImageSpec(image="crishim-test/busybox:latest"),
        command=["sh", "-c", script],
        log_path="web.log",
    )
    cid = official.runtime.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
        ),
        timeout=60,
    ).container_id
    official.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    deadline = time.time() + 60
    while time.time() < deadline:
        probe = official.runtime.ExecSync(
            pb.ExecSyncRequest(
                container_id=cid,
                cmd=["wget", "-qO-", "-s", "http://127.0.0.1:8080/big"],
                timeout=10,
            ),
            timeout=20,
        )
        if probe.exit_code == 0:
            break
        time.sleep(0.5)
    return sandbox_id, cid


def run(official, own_factory, docker_endpoint: str, workdir: Path, calls: int, summary) -> dict:
    sandbox_id, cid = setup_pod(official, workdir)

    async def go() -> dict:
        own = own_factory()
        try:
            return await streaming_bench(own, docker_endpoint, cid, sandbox_id, calls, summary)
        finally:
            own.close()

    try:
        return asyncio.run(go())
    finally:
        official.runtime.RemovePodSandbox(
            official.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
