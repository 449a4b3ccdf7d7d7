"""The harness's own promises, which later issues build on."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest


def run_in(dockerd, image: str, *cmd: str) -> str:
    return dockerd.docker("run", "--rm", image, *cmd).strip()


def test_images_have_the_users_they_claim(dockerd, test_images) -> None:
    assert run_in(dockerd, test_images.user_numeric, "id", "-u") == "1000"
    assert run_in(dockerd, test_images.user_named, "id", "-un") == "app"
    assert run_in(dockerd, test_images.busybox, "id", "-u") == "0"


def test_the_busybox_image_has_the_tools_tests_need(dockerd, test_images) -> None:
    listed = run_in(dockerd, test_images.busybox, "busybox", "--list").split()
    assert {"sh", "sleep", "nc", "httpd", "cat", "stty"} <= set(listed)


def test_the_pause_image_exits_at_once_on_sigterm(dockerd, test_images) -> None:
    cid = dockerd.docker("run", "-d", test_images.pause).strip()
    try:
        dockerd.docker("stop", "--time", "30", cid)
        state = dockerd.docker("inspect", "--format", "{{.State.ExitCode}}", cid).strip()
        assert state == "0", "exit 0 from the trap, not 137 from a SIGKILL after 30 s"
    finally:
        dockerd.docker("rm", "-f", cid)


def test_the_registry_refuses_anonymous_clients(registry) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{registry.address}/v2/", timeout=10)
    err.value.close()
    assert err.value.code == 401
