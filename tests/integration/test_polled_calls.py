"""The calls the kubelet and crictl poll make no Docker request.

crishim runs here against a recording proxy on the Docker socket
(tests/harness/dockerproxy.py): every request it sends to the daemon is
counted. Polled calls are answered from memory kept current by Docker's events,
and from kernel files; the only request while they run is the background
heartbeat's `/_ping`, whose number depends on the time passed, not on the calls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from tests.harness.clients import Official
from tests.harness.dockerproxy import RecordingProxy
from tests.harness.procs import wait_for
from tests.integration.test_containers import create, status, wait_exited
from tests.integration.test_sandboxes import running_pod

ROUNDS = 15


@pytest.fixture
def recorded(dockerd, crishim_factory, official_stubs, workdir: Path):
    """(proxy, client) of a crishim whose every Docker request the proxy records."""
    proxy = RecordingProxy(workdir, dockerd.socket).start()
    try:
        proc = crishim_factory(proxy.endpoint)
        client = Official(proc.socket, *official_stubs)
        try:
            yield proxy, client
        finally:
            client.close()
            proc.stop()
    finally:
        proxy.stop()


def polled_calls(client: Official, sandbox_id: str, container_ids: list[str], image: str):
    pb, rt, im = client.pb, client.runtime, client.image
    spec = pb.ImageSpec(image=image)
    calls = {
        "Version": lambda: rt.Version(pb.VersionRequest()),
        "Status": lambda: rt.Status(pb.StatusRequest()),
        "Status verbose": lambda: rt.Status(pb.StatusRequest(verbose=True)),
        "RuntimeConfig": lambda: rt.RuntimeConfig(pb.RuntimeConfigRequest()),
        "ImageFsInfo": lambda: im.ImageFsInfo(pb.ImageFsInfoRequest()),
        "ListImages": lambda: im.ListImages(pb.ListImagesRequest()),
        "ListImages filtered": lambda: im.ListImages(
            pb.ListImagesRequest(filter=pb.ImageFilter(image=spec))
        ),
        "ImageStatus": lambda: im.ImageStatus(pb.ImageStatusRequest(image=spec, verbose=True)),
        "ImageStatus absent": lambda: im.ImageStatus(
            pb.ImageStatusRequest(image=pb.ImageSpec(image="crishim-test/absent:1"))
        ),
        "ListPodSandbox": lambda: rt.ListPodSandbox(pb.ListPodSandboxRequest()),
        "PodSandboxStatus": lambda: rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        ),
        "ListContainers": lambda: rt.ListContainers(pb.ListContainersRequest()),
        "ListContainers filtered": lambda: rt.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id))
        ),
        "ListContainerStats": lambda: rt.ListContainerStats(pb.ListContainerStatsRequest()),
        "ListPodSandboxStats": lambda: rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()),
        "PodSandboxStats": lambda: rt.PodSandboxStats(
            pb.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id)
        ),
        "ListPodSandboxMetrics": lambda: rt.ListPodSandboxMetrics(
            pb.ListPodSandboxMetricsRequest()
        ),
        "ListMetricDescriptors": lambda: rt.ListMetricDescriptors(
            pb.ListMetricDescriptorsRequest()
        ),
    }
    for cid in container_ids:
        calls[f"ContainerStatus {cid[:6]}"] = lambda cid=cid: rt.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid, verbose=True)
        )
        calls[f"ContainerStats {cid[:6]}"] = lambda cid=cid: rt.ContainerStats(
            pb.ContainerStatsRequest(container_id=cid)
        )
    return calls


def test_polled_calls_make_no_docker_request(recorded, test_images) -> None:
    proxy, client = recorded
    with running_pod(client) as the_pod:
        sandbox_id = the_pod[0]
        running = create(client, the_pod, "sleeper", ["sleep", "300"])
        done = create(client, the_pod, "done", ["true"])
        wait_exited(client, done)
        calls = polled_calls(client, sandbox_id, [running, done], test_images.busybox)
        for call in calls.values():  # every call answers (and nothing is first-time work)
            call()
        wait_for(lambda: not proxy.requests(time.monotonic() - 1.0), 30, "a quiet second")

        since = proxy.mark()
        for _ in range(ROUNDS):
            for call in calls.values():
                call()
        elapsed = time.monotonic() - since
        asked = proxy.requests(since)

    assert [str(r) for r in asked if str(r) != "GET /_ping"] == [], (
        f"{ROUNDS * len(calls)} polled calls asked Docker"
    )
    # The heartbeat: one ping every 2 s, however many calls came meanwhile.
    assert len(asked) <= elapsed / 2 + 2, f"{len(asked)} pings in {elapsed:.1f} s"


def test_the_image_cache_follows_changes_made_behind_crishims_back(
    recorded, dockerd, test_images
) -> None:
    proxy, client = recorded
    pb = client.pb
    ref = "crishim-test/cache-follow:1"

    def status_id() -> str:
        request = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
        return client.image.ImageStatus(request, timeout=30).image.id

    assert status_id() == ""
    dockerd.docker("tag", test_images.busybox, ref)
    try:
        busybox = dockerd.docker("image", "inspect", "-f", "{{.Id}}", test_images.busybox).strip()
        wait_for(lambda: status_id() == busybox, 10, "the new tag seen through Docker's events")
    finally:
        dockerd.docker("rmi", ref)
    wait_for(lambda: status_id() == "", 10, "the removed tag gone")
    # Learned from one list per change, not per call.
    assert [str(r) for r in proxy.requests() if "images" in str(r)].count("GET /images/json") >= 2


def _events_about(proxy: RecordingProxy, container_id: str) -> list[str]:
    """The actions of the events about a container that Docker has sent so far on
    crishim's (one, open) event stream."""
    (stream,) = [r for r in proxy.requests() if str(r) == "GET /events" and r.done is None]
    body = bytes(stream.events)
    lines = body[: body.rfind(b"\n") + 1].splitlines()  # whole lines only
    events = [json.loads(line) for line in lines if line.strip()]
    return [e["Action"] for e in events if (e.get("Actor") or {}).get("ID") == container_id]


def test_an_exec_costs_no_container_inspect_and_no_event(recorded) -> None:
    proxy, client = recorded
    pb = client.pb
    with running_pod(client) as the_pod:
        cid = create(client, the_pod, "probe", ["sleep", "300"])
        wait_for(lambda: not proxy.requests(time.monotonic() - 1.0), 30, "a quiet second")
        since = proxy.mark()
        for _ in range(3):  # what an exec probe does
            response = client.runtime.ExecSync(
                pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10), timeout=30
            )
            assert response.exit_code == 0
        time.sleep(1)  # Docker's exec events would have come
        asked = [str(r) for r in proxy.requests(since) if str(r) != "GET /_ping"]
        # Its events (exec_create, exec_start, exec_die) change no CRI state: Docker's
        # filter keeps them (nine lines of the container's labels) from crishim.
        assert _events_about(proxy, cid) == ["create", "start"]
        client.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1))
        wait_for(lambda: "die" in _events_about(proxy, cid), 10, "the stop's die")
    # The exec's own calls only.
    assert f"GET /containers/{cid}/json" not in asked, asked
    assert sum(r.startswith("POST /containers/") and r.endswith("/exec") for r in asked) == 3


def test_a_start_and_stop_cost_one_inspect_each_whatever_the_signals(recorded, dockerd) -> None:
    """Each call's own refresh is the only inspect it needs: its events (start; kill,
    die, stop) and the log copier's start and end tell nothing new. A graceful stop
    that times out sends two kills, and a signal from elsewhere one more."""
    proxy, client = recorded
    pb = client.pb
    with running_pod(client) as the_pod:
        # Ignores SIGTERM: the stop times out and Docker kills it.
        command = ["sh", "-c", "trap '' TERM; sleep 300"]
        cid = create(client, the_pod, "stopped", command, start=False)
        wait_for(lambda: not proxy.requests(time.monotonic() - 1.0), 30, "a quiet second")
        since = proxy.mark()
        client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
        time.sleep(0.5)
        dockerd.docker("kill", "--signal", "WINCH", cid)  # ignored by sleep: still running
        time.sleep(0.5)
        client.runtime.StopContainer(
            pb.StopContainerRequest(container_id=cid, timeout=1), timeout=30
        )
        assert status(client, cid).state == pb.CONTAINER_EXITED
        time.sleep(1)  # the stop's events have come and gone
        asked = [str(r) for r in proxy.requests(since)]
    inspects = asked.count(f"GET /containers/{cid}/json")
    # One per call (it was 5-6: the copier's start and end, each kill, the die).
    assert inspects == 2, asked


def test_an_invalid_image_reference_never_leaves_crishim(recorded) -> None:
    """Refused by the reference grammar: no pull sent to Docker, no registry probed.

    `UPPER/x` once made crishim look up the host `upper` while explaining the
    pull Docker had refused; `library/UPPER` and the rest never name a host.
    """
    proxy, client = recorded
    pb = client.pb
    since = proxy.mark()
    for bad in ("UPPER/x", "Registry/app:1", "library/UPPER", "busybox:-tag", "a//b"):
        request = pb.PullImageRequest(image=pb.ImageSpec(image=bad))
        with pytest.raises(grpc.RpcError) as err:
            client.image.PullImage(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "repository name" in err.value.details() or "tag" in err.value.details(), bad
    asked = [str(r) for r in proxy.requests(since) if str(r) != "GET /_ping"]
    assert asked == [], asked
