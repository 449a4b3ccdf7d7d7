"""Creates cut short leave nothing behind, and a retry always succeeds.

crishim runs behind the recording proxy (tests/harness/dockerproxy.py), which
holds back a chosen Docker request: that stops crishim at an exact point of
RunPodSandbox or CreateContainer, to cancel the call or SIGKILL crishim there.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from crishim.engine import labels
from crishim.pods import markjournal
from tests.harness.clients import Official
from tests.harness.dockerproxy import RecordingProxy
from tests.harness.images import PAUSE_IMAGE
from tests.harness.procs import wait_for
from tests.integration.test_sandboxes import sandbox_config


@pytest.fixture
def node(dockerd, crishim_factory, official_stubs, workdir: Path):
    """(proxy, crishim process, a function making a client) behind a recording proxy."""
    proxy = RecordingProxy(workdir, dockerd.socket).start()
    clients: list[Official] = []

    def client(proc) -> Official:
        c = Official(proc.socket, *official_stubs)
        clients.append(c)
        return c

    try:
        yield proxy, crishim_factory(proxy.endpoint), client
    finally:
        proxy.release()
        for c in clients:
            c.close()
        proxy.stop()


def named(dockerd, name: str) -> list[tuple[str, str]]:
    """(id, status) of the daemon's containers whose name contains `name`."""
    out = dockerd.docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Status}} {{.Names}}")
    return [(line.split()[0], line.split()[1]) for line in out.splitlines() if name in line]


def in_background(fn) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except grpc.RpcError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def killed_mid_run(proxy, proc, official: Official, config, pattern: str, reached: bool) -> None:
    """RunPodSandbox held at `pattern` by the proxy, crishim SIGKILLed there, then released."""
    pb = official.pb
    proxy.hold(pattern, reached_docker=reached)
    thread, _ = in_background(
        lambda: official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=30)
    )
    wait_for(lambda: proxy.waiting() == 1, 10, f"{pattern} held at the proxy")
    proc.signal(signal.SIGKILL)
    proc.wait(30)
    proxy.release()  # what was under way reaches Docker (or not): a pause that never runs
    thread.join(30)


def token_of(dockerd, container_id: str) -> list[str]:
    """The create token crishim gave the container (its label), as a one-item list."""
    fmt = '{{index .Config.Labels "' + labels.CREATE_TOKEN_LABEL + '"}}'
    return [dockerd.docker("inspect", "--format", fmt, container_id).strip()]


def written_finished(proc, dockerd, container_id: str) -> None:
    """Write the container's create token to the stopped crishim's journal, as its
    call would have at its end."""
    (token,) = token_of(dockerd, container_id)
    assert token
    with open(proc.state_dir / "creating" / markjournal.JOURNAL, "a") as f:
        f.write(f'="{token}"\n')


START = r"^POST /containers/[0-9a-f]{64}/start$"
CREATE = r"^POST /containers/create$"


@pytest.fixture(params=["quiet", "starved"])
def machine(request):
    """The test on a quiet machine, and again with CPU hogs on every core."""
    if request.param == "starved":
        request.getfixturevalue("starved")
    return request.param


def test_a_cancelled_run_pod_sandbox_leaves_nothing_and_a_retry_succeeds(
    node, dockerd, machine
) -> None:
    proxy, proc, client = node
    official = client(proc)
    pb = official.pb
    config = sandbox_config(pb)
    proxy.hold(r"^POST /containers/create$")
    thread, result = in_background(
        lambda: official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=2)
    )
    wait_for(lambda: proxy.waiting() == 1, 10, "the create held at the proxy")
    thread.join(10)
    assert result["error"].code() == grpc.StatusCode.DEADLINE_EXCEEDED
    proxy.release()  # Docker now creates the pause for a caller that is gone
    wait_for(lambda: not named(dockerd, config.metadata.name), 30, "the orphan pause removed")
    retry = official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
    official.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=retry.pod_sandbox_id), timeout=60
    )


@pytest.mark.parametrize("held", ["start", "create"])
def test_a_crishim_killed_mid_create_leaves_nothing_after_restart(node, dockerd, held) -> None:
    proxy, proc, client = node
    official = client(proc)
    pb = official.pb
    config = sandbox_config(pb)
    if held == "start":  # created; killed before the start was sent
        killed_mid_run(proxy, proc, official, config, START, reached=False)
    else:  # killed while Docker was creating
        killed_mid_run(proxy, proc, official, config, CREATE, reached=True)
    wait_for(lambda: bool(named(dockerd, config.metadata.name)), 10, "the leftover created")
    assert [status for _, status in named(dockerd, config.metadata.name)] == ["Created"]

    proc.start()  # the same state dir: it finds its mark of the unfinished create
    wait_for(lambda: not named(dockerd, config.metadata.name), 30, "the leftover removed")
    official = client(proc)
    retry = official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
    assert retry.pod_sandbox_id
    official.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=retry.pod_sandbox_id), timeout=60
    )


def test_a_retry_replaces_a_leftover_that_never_ran(node, dockerd) -> None:
    proxy, proc, client = node
    official = client(proc)
    pb = official.pb
    config = sandbox_config(pb)
    killed_mid_run(proxy, proc, official, config, START, reached=False)
    (leftover,) = named(dockerd, config.metadata.name)
    # As if its create had been written finished: the start leaves it, the retry meets it.
    written_finished(proc, dockerd, leftover[0])
    offset = proc.log_size()
    proc.start()
    checked = '"event": "create_leftovers_checked"'
    wait_for(lambda: checked in proc.log_since(offset), 30, "the start's check of leftovers")
    assert named(dockerd, config.metadata.name) == [leftover]
    official = client(proc)
    retry = official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
    assert retry.pod_sandbox_id != leftover[0]
    assert [i for i, _ in named(dockerd, config.metadata.name)] == [retry.pod_sandbox_id]
    official.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=retry.pod_sandbox_id), timeout=60
    )


def test_a_cancelled_create_container_leaves_nothing(node, dockerd, machine) -> None:
    proxy, proc, client = node
    official = client(proc)
    pb = official.pb
    config = sandbox_config(pb)
    sid = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=60
    ).pod_sandbox_id
    try:
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sid,
            sandbox_config=config,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="late"),
                image=pb.ImageSpec(image="crishim-test/busybox:latest"),
                command=["sleep", "300"],
                log_path="late/0.log",
            ),
        )
        proxy.hold(r"^POST /containers/create$")
        thread, result = in_background(lambda: official.runtime.CreateContainer(request, timeout=2))
        wait_for(lambda: proxy.waiting() == 1, 10, "the create held at the proxy")
        thread.join(10)
        assert result["error"].code() == grpc.StatusCode.DEADLINE_EXCEEDED
        proxy.release()
        wait_for(lambda: not named(dockerd, "k8s_late_"), 30, "the orphan container removed")
        cid = official.runtime.CreateContainer(request, timeout=60).container_id
        assert [i for i, _ in named(dockerd, "k8s_late_")] == [cid]
    finally:
        official.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60
        )


def outcome(fn) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def test_twenty_random_sigkills_mid_create_leave_docker_and_the_cri_in_agreement(
    node, dockerd
) -> None:
    _, proc, client = node
    official = client(proc)
    pb = official.pb
    rng = random.Random(2026_11_23)
    config = sandbox_config(pb)
    home = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=60
    ).pod_sandbox_id
    uids = {config.metadata.uid}
    for i in range(20):
        if i % 2:
            pod_config = sandbox_config(pb)
            uids.add(pod_config.metadata.uid)

            def call(c: Official, pod_config=pod_config):
                return c.runtime.RunPodSandbox(
                    pb.RunPodSandboxRequest(config=pod_config), timeout=30
                ).pod_sandbox_id
        else:
            request = pb.CreateContainerRequest(
                pod_sandbox_id=home,
                sandbox_config=config,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name=f"c{i}"),
                    image=pb.ImageSpec(image="crishim-test/busybox:latest"),
                    command=["sleep", "300"],
                    log_path=f"c{i}/0.log",
                ),
            )

            def call(c: Official, request=request):
                return c.runtime.CreateContainer(request, timeout=30).container_id

        thread, _ = in_background(lambda call=call, c=official: call(c))
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere in the call, or after it
        proc.signal(signal.SIGKILL)
        proc.wait(30)
        thread.join(30)
        proc.start()
        official = client(proc)
        # The kubelet's retry (it never saw an answer): made now, or ALREADY_EXISTS
        # when the killed call had finished.
        code, made = outcome(lambda call=call, c=official: call(c))
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS), (i, made)
        if code == grpc.StatusCode.ALREADY_EXISTS and i % 2:  # the killed call had finished
            (pod,) = [
                p
                for p in official.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
                if p.metadata.uid == pod_config.metadata.uid
            ]
            assert pod.state == pb.SANDBOX_READY, f"kill {i}: a leftover blocks the retry"
        # Docker holds nothing of these pods that the CRI does not list.
        rt = official.runtime
        cri = {p.id for p in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items}
        cri |= {c.id for c in rt.ListContainers(pb.ListContainersRequest()).containers}
        names = dockerd.docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
        ours = {line.split()[0] for line in names.splitlines() if any(u in line for u in uids)}
        assert ours <= cri, f"kill {i}: Docker has objects the CRI does not list: {ours - cri}"
    for pod in official.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
        if pod.metadata.uid in uids:
            official.runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60
            )


def test_the_sweep_removes_a_never_run_pause_but_not_a_created_container(
    dockerd, crishim_factory, official_stubs, workdir: Path
) -> None:
    """No retry, no mark: the periodic sweep alone removes the leftover pause."""
    proxy = RecordingProxy(workdir, dockerd.socket).start()
    proc = crishim_factory(proxy.endpoint, env={"CRISHIM_LEFTOVER_SWEEP_SECONDS": "1"})
    official = Official(proc.socket, *official_stubs)
    pb = official.pb
    try:
        # A created container its CreateContainer finished, waiting for StartContainer.
        pod_config = sandbox_config(pb)
        pod_id = official.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=pod_config), timeout=60
        ).pod_sandbox_id
        waiting = official.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                sandbox_config=pod_config,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name="waiting"),
                    image=pb.ImageSpec(image=PAUSE_IMAGE),
                ),
            ),
            timeout=60,
        ).container_id

        # Its token is written (UNMARK_DELAY after the call) before the kill below.
        (token,) = token_of(dockerd, waiting)
        wait_for(lambda: token in markjournal.read(proc.state_dir / "creating")[1], 10, "written")
        config = sandbox_config(pb)
        killed_mid_run(proxy, proc, official, config, START, reached=False)
        (leftover,) = named(dockerd, config.metadata.name)
        written_finished(proc, dockerd, leftover[0])  # as if finished: only the sweep finds it
        proc.start()
        wait_for(lambda: not named(dockerd, config.metadata.name), 30, "the sweep removing it")
        assert any(e.get("event") == "leftover_pauses_removed" for e in proc.events())
        official.close()
        official = Official(proc.socket, *official_stubs)
        status = official.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=waiting), timeout=30
        ).status
        assert status.state == pb.CONTAINER_CREATED, "a created container is not a leftover"
        official.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    finally:
        official.close()
        proxy.release()
        proxy.stop()
