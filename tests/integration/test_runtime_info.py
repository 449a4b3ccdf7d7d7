"""Version, Status, RuntimeConfig and UpdateRuntimeConfig, as the kubelet calls them."""

from __future__ import annotations

import json

import grpc
import pytest

from crishim.api.runtime import v1 as api
from tests.harness.clients import Official, Own
from tests.harness.procs import wait_for


def engine_version(dockerd) -> str:
    return dockerd.docker("version", "--format", "{{.Server.Version}}").strip()


def conditions(response) -> dict:
    return {c.type: c for c in response.status.conditions}


def test_official_client_gets_docker_and_the_daemon_version(official: Official, dockerd) -> None:
    response = official.runtime.Version(official.pb.VersionRequest(version="v1"), timeout=10)
    assert response.runtime_name == "docker"
    assert response.runtime_version == engine_version(dockerd)
    assert response.runtime_api_version == "v1"


async def test_own_client_gets_the_same_version(own: Own, dockerd) -> None:
    response = await own.runtime.version(api.VersionRequest(version="v1"))
    assert (response.runtime_name, response.runtime_version) == ("docker", engine_version(dockerd))


def test_status_is_ready_with_a_live_daemon(official: Official) -> None:
    response = official.runtime.Status(official.pb.StatusRequest(), timeout=10)
    conds = conditions(response)
    assert conds["RuntimeReady"].status is True
    assert conds["NetworkReady"].status is True
    assert dict(response.info) == {}, "info is only for verbose requests"
    assert "" in [h.name for h in response.runtime_handlers]


def test_what_startup_made_is_left_out_of_garbage_collection(crishim) -> None:
    """A full collection walked every object startup made and held the loop ~45 ms at
    200 pods; crishim freezes them before it serves, and says how many."""
    (serving,) = [e for e in crishim.events() if e.get("event") == "crishim_serving"]
    assert serving["gc_frozen"] > 10_000  # at least the modules' functions and classes


def test_verbose_status_reports_the_engine_and_config(official: Official, dockerd, crishim) -> None:
    response = official.runtime.Status(official.pb.StatusRequest(verbose=True), timeout=10)
    docker = json.loads(response.info["docker"])
    assert docker["version"] == engine_version(dockerd)
    assert (
        docker["apiVersion"]
        == dockerd.docker("version", "--format", "{{.Server.APIVersion}}").strip()
    )
    assert docker["storageDriver"] == "overlay2"
    assert docker["cgroupDriver"] in ("cgroupfs", "systemd")
    assert json.loads(response.info["config"])["state_dir"] == str(crishim.state_dir)


def test_runtime_config_reports_the_cgroup_driver_docker_uses(official: Official, dockerd) -> None:
    driver = dockerd.docker("info", "--format", "{{.CgroupDriver}}").strip()
    response = official.runtime.RuntimeConfig(official.pb.RuntimeConfigRequest(), timeout=10)
    expected = official.pb.SYSTEMD if driver == "systemd" else official.pb.CGROUPFS
    assert response.linux.cgroup_driver == expected


def test_update_runtime_config_remembers_the_pod_cidr(official: Official) -> None:
    pb = official.pb
    request = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr="10.244.1.0/24,fd00:10:244:1::/64")
        )
    )
    official.runtime.UpdateRuntimeConfig(request, timeout=10)
    info = official.runtime.Status(pb.StatusRequest(verbose=True), timeout=10).info
    assert json.loads(info["podCIDRs"]) == ["10.244.1.0/24", "fd00:10:244:1::/64"]


def test_update_runtime_config_rejects_a_bad_cidr_naming_the_field(official: Official) -> None:
    pb = official.pb
    request = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.244.1.0/33"))
    )
    with pytest.raises(grpc.RpcError) as err:
        official.runtime.UpdateRuntimeConfig(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pod_cidr" in err.value.details()


def test_status_without_docker_is_not_ready_and_crishim_keeps_serving(
    dockerd_factory, crishim_factory, official_stubs
) -> None:
    daemon = dockerd_factory()
    proc = crishim_factory(daemon.endpoint)
    client = Official(proc.socket, *official_stubs)
    try:
        pb = client.pb
        assert conditions(client.runtime.Status(pb.StatusRequest(), timeout=10))[
            "RuntimeReady"
        ].status
        engine = client.runtime.Version(pb.VersionRequest(), timeout=10).runtime_version

        daemon.stop_daemon()

        def runtime_ready() -> bool:
            return conditions(client.runtime.Status(pb.StatusRequest(), timeout=10))[
                "RuntimeReady"
            ].status

        # Status answers from memory; the heartbeat (and the broken event stream) tell it.
        wait_for(lambda: not runtime_ready(), 15, "RuntimeReady false after docker stopped")
        down = conditions(client.runtime.Status(pb.StatusRequest(), timeout=20))
        assert down["RuntimeReady"].status is False
        assert down["RuntimeReady"].reason == "DockerDaemonNotReady"
        assert "cannot connect" in down["RuntimeReady"].message
        assert down["NetworkReady"].status is False
        # Version answers from what was last known: the runtime is there, not ready.
        version = client.runtime.Version(pb.VersionRequest(), timeout=10)
        assert (version.runtime_name, version.runtime_version) == ("docker", engine)

        daemon.start()
        wait_for(runtime_ready, 15, "RuntimeReady true after docker started again")
        assert proc.proc.poll() is None, "crishim must still be running"
    finally:
        client.close()


def test_crishim_starts_and_serves_while_docker_is_frozen(
    dockerd_factory, crishim_factory, official_stubs
) -> None:
    daemon = dockerd_factory()
    daemon.pause()
    try:
        proc = crishim_factory(daemon.endpoint)  # waits until crishim serves
        client = Official(proc.socket, *official_stubs)
        try:

            def ready() -> tuple[bool, str]:
                c = conditions(client.runtime.Status(client.pb.StatusRequest(), timeout=10))
                return c["RuntimeReady"].status, c["RuntimeReady"].message

            frozen, message = ready()
            assert frozen is False
            assert "did not finish" in message
            daemon.resume()
            wait_for(lambda: ready()[0], 20, "RuntimeReady true once docker thawed")
        finally:
            client.close()
    finally:
        daemon.resume()
    assert any(e.get("event") == "docker_unavailable_at_start" for e in proc.events())
