"""crishim.engine.docker against the suite's real dockerd: typed results, errors by status code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import pytest

from crishim.common import errors
from crishim.engine.docker import DockerClient
from crishim.engine.docker.streams import Demuxer
from crishim.engine.docker.types import RegistryAuth, Resources
from crishim.engine.state import DAEMON_ACTIONS
from crishim.engine.store.cache import CONTAINER_ACTIONS
from crishim.images.service import IMAGE_ACTIONS


@pytest.fixture
async def docker(dockerd):
    client = DockerClient(dockerd.endpoint)
    await client.connect()
    yield client
    await client.close()


@pytest.fixture
def container(dockerd, test_images):
    """A running busybox container, removed afterwards."""
    name = f"adapter-{uuid.uuid4().hex[:8]}"
    cid = dockerd.docker("run", "-d", "--name", name, test_images.busybox, "sleep", "300").strip()
    yield cid
    dockerd.docker("rm", "-f", cid)


async def test_connect_pins_the_highest_common_api_version(docker, dockerd) -> None:
    server_api = dockerd.docker("version", "--format", "{{.Server.APIVersion}}").strip()
    assert docker.version.api_version == server_api
    # The daemon's own maximum (20.10: 1.41, 28.5: 1.51), within crishim's 1.41..1.52.
    expected = ".".join(map(str, min(dockerd.api, (1, 52))))
    assert docker.version.negotiated_api_version == expected
    assert docker.api_prefix == f"/v{expected}"


async def test_info_and_the_default_bridge(docker, dockerd) -> None:
    info = await docker.info()
    assert info.storage_driver == "overlay2"
    assert info.docker_root_dir == str(dockerd.root / "data")
    assert "runc" in info.runtimes
    bridge = await docker.network("bridge")
    assert bridge.subnets == (str(dockerd.subnet),)


async def test_an_unreachable_daemon_is_unavailable_with_the_os_reason(tmp_path) -> None:
    client = DockerClient(f"unix://{tmp_path / 'none.sock'}")
    with pytest.raises(errors.Unavailable, match="No such file or directory"):
        await client.connect()


async def test_docker_errors_are_chosen_by_status_code(
    docker, dockerd, container, test_images
) -> None:
    with pytest.raises(errors.NotFound):
        await docker.update_container("no-such-container", Resources(cpu_shares=512))
    image_id = dockerd.docker("inspect", "--format", "{{.Image}}", container).strip()
    with pytest.raises(errors.FailedPrecondition):  # 409: the image is used by a container
        await docker.request(f"images/{image_id}", "DELETE")
    with pytest.raises(errors.InvalidArgument):  # 400
        await docker.request("containers/create", "POST", body={"Image": ""})


async def test_update_container_changes_the_running_limits(docker, dockerd, container) -> None:
    await docker.update_container(
        container,
        Resources(
            cpu_shares=512, memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=128 << 20
        ),
    )
    host = json.loads(dockerd.docker("inspect", "--format", "{{json .HostConfig}}", container))
    assert (host["CpuShares"], host["Memory"], host["MemorySwap"]) == (512, 64 << 20, 128 << 20)


async def test_disk_usage_counts_images_and_containers(docker, container, test_images) -> None:
    usage = await docker.disk_usage()
    assert usage.images_count >= 4
    assert usage.images_bytes > 0
    assert usage.containers_count >= 1


async def test_one_shot_stats_of_a_running_container(docker, container) -> None:
    sample = await docker.stats_once(container)
    assert sample.memory_usage_bytes > 0
    assert sample.pids >= 1
    assert sample.cpu_total_ns > 0


async def test_logs_keep_stdout_and_stderr_apart(docker, dockerd, test_images) -> None:
    cid = dockerd.docker(
        "run", "-d", test_images.busybox, "sh", "-c", "echo out-1; echo err-1 >&2; echo out-2"
    ).strip()
    try:
        dockerd.docker("wait", cid)
        chunks = [c async for c in docker.logs(cid)]
    finally:
        dockerd.docker("rm", "-f", cid)
    # One chunk per message, each prefixed with Docker's RFC 3339 timestamp.
    texts = [(c.stream, c.data.split(b" ", 1)[1]) for c in chunks]
    assert sorted(texts) == [("stderr", b"err-1\n"), ("stdout", b"out-1\n"), ("stdout", b"out-2\n")]
    assert [t for t in texts if t[0] == "stdout"] == [
        ("stdout", b"out-1\n"),
        ("stdout", b"out-2\n"),
    ]
    assert all(c.data[:4].isdigit() and c.data[10:11] == b"T" for c in chunks)


async def test_exec_stdin_half_close_ends_the_process(docker, container) -> None:
    exec_id, stream = await docker.exec_run(
        container, ["sh", "-c", "cat; echo done >&2"], stdin=True, tty=False
    )
    try:
        await stream.send(b"hello through stdin\n")
        stream.close_stdin()  # without the half-close, cat would wait forever
        raw = await stream.reader.read()
    finally:
        await stream.close()
    chunks = list(Demuxer().feed(raw))
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"hello through stdin\n"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"done\n"
    running, exit_code, _ = await docker.exec_inspect(exec_id)
    assert (running, exit_code) == (False, 0)


async def test_docker_sends_only_the_events_crishim_follows(docker, dockerd, test_images) -> None:
    """The store's subscription (the actions of every kind it follows), on a real daemon:
    an exec's three events, a kill's and a top's never leave Docker, and each that can
    change what the CRI reports arrives."""
    events = docker.events(
        ("container", "image", "daemon"), CONTAINER_ACTIONS | IMAGE_ACTIONS | DAEMON_ACTIONS
    )
    assert await anext(events) == ("", "subscribed", "")
    seen: list[tuple[str, str, str]] = []

    async def collect() -> None:
        async for event in events:
            seen.append(event)

    reader = asyncio.create_task(collect())
    name, ref = (
        f"filtered-{uuid.uuid4().hex[:8]}",
        f"crishim-test/filtered-{uuid.uuid4().hex[:8]}:1",
    )
    run = dockerd.docker
    try:
        cid = (
            await asyncio.to_thread(
                run, "create", "--name", name, test_images.busybox, "sleep", "300"
            )
        ).strip()
        for args in (
            ("start", cid),
            ("exec", cid, "true"),  # exec_create, exec_start, exec_die
            ("kill", "--signal", "WINCH", cid),  # kill (ignored by sleep)
            ("top", cid),
            ("pause", cid),
            ("unpause", cid),
            ("update", "--cpu-shares", "512", cid),
            ("rename", cid, f"{name}-renamed"),
            ("stop", "-t", "1", cid),  # kill twice, die, stop
            ("rm", cid),
            ("tag", test_images.busybox, ref),
            ("rmi", ref),
        ):
            await asyncio.to_thread(run, *args)
        os.kill(dockerd.pid, signal.SIGHUP)  # reload: runtimes may have changed
        for _ in range(100):
            if ("daemon", "reload") in [(k, a) for k, a, _ in seen]:
                break
            await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await events.aclose()
    mine = [a for k, a, actor in seen if k == "container" and actor == cid]
    assert mine[:6] == ["create", "start", "pause", "unpause", "update", "rename"]
    # 20.10 says die then stop, 28.5 stop then die: the store refreshes on either.
    assert sorted(mine[6:8]) == ["die", "stop"]
    assert mine[8:] == ["destroy"]
    assert [a for k, a, _ in seen if k == "image"] == ["tag", "untag"]
    assert [a for k, a, _ in seen if k == "daemon"] == ["reload"]


async def test_exec_in_a_missing_container_is_not_found_and_leaves_no_connection(
    docker,
) -> None:
    """exec_run opens the start's connection while Docker creates the exec: when the
    create fails, that connection is closed, not left open."""
    with pytest.raises(errors.NotFound):  # the pool's connection is open from here on
        await docker.exec_run("no-such-container", ["true"], stdin=False, tty=False)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(errors.NotFound):
            await docker.exec_run("no-such-container", ["true"], stdin=False, tty=False)
    assert len(os.listdir("/proc/self/fd")) == fds


async def test_registry_credentials_travel_in_the_auth_header(docker, registry, dockerd) -> None:
    image = f"{registry.address}/crishim-test/busybox"
    good = RegistryAuth(
        username=registry.username, password=registry.password, server_address=registry.address
    )
    progress = [p async for p in docker.pull(image, "1.0", good)]
    assert progress[-1].status.startswith("Status: ")
    assert dockerd.docker("image", "inspect", "--format", "{{.Id}}", f"{image}:1.0").startswith(
        "sha256:"
    )
    dockerd.docker("rmi", f"{image}:1.0")
    for auth in (RegistryAuth(username=registry.username, password="wrong"), RegistryAuth()):
        with pytest.raises(errors.CrishimError, match="auth"):
            [p async for p in docker.pull(image, "1.0", auth)]
    with pytest.raises(errors.NotFound):
        [p async for p in docker.pull(f"{registry.address}/crishim-test/nothing", "1.0", good)]


def test_the_auth_header_carries_every_credential_form() -> None:
    import base64

    from crishim.engine.docker.client import registry_auth_header

    auth = RegistryAuth(
        username="u",
        password="p",
        auth="dTpw",
        server_address="r.example:5000",
        identity_token="id-tok",
        registry_token="reg-tok",
    )
    decoded = json.loads(base64.urlsafe_b64decode(registry_auth_header(auth)))
    assert decoded == {
        "username": "u",
        "password": "p",
        "auth": "dTpw",
        "serveraddress": "r.example:5000",
        "identitytoken": "id-tok",
        "registrytoken": "reg-tok",
    }
    assert DockerClient("unix:///x").pull_headers(RegistryAuth()) == {}
