"""Request rules checked before Docker (crishim.pods.validate) and the bounded seccomp read."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from crishim.common import errors
from crishim.pods import security
from crishim.pods import validate as rules

# critest 1.36.0's names (capitals, long uuids), crictl's examples, Kubernetes' own.
ACCEPTED_NAMES = [
    "create-PodSandbox-for-container-2b65fc47-8a9e-4d1c-a2a4-5b3e5f1d2c10",
    "NamespaceOption-PodSandbox-2b65fc47-8a9e-4d1c-a2a4-5b3e5f1d2c10",
    "container-for-create-test-2b65fc47-8a9e-4d1c-a2a4-5b3e5f1d2c10",
    "nginx-sandbox",
    "busybox",
    "default",
    "hdishd83djaidwnduwk28bcsb",
    "web-1",
    "a.b",
    "Upper",
    "x",
    "x" * 253,
]
REFUSED_NAMES = ["a_b", "..", ".", "/x", "a/b", "", "x" * 254, "-lead", "trail.", "a b", "a\0b"]


@pytest.mark.parametrize("name", ACCEPTED_NAMES)
def test_names_docker_can_carry_pass(name) -> None:
    rules.name_part(name, "config.metadata.name")


@pytest.mark.parametrize("name", REFUSED_NAMES, ids=repr)
def test_names_that_would_break_the_docker_name_are_invalid(name) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"config\.metadata\.name"):
        rules.name_part(name, "config.metadata.name")


def test_uids_as_the_api_server_and_static_pods_make_them_pass() -> None:
    rules.name_part("3f0c1a52-8d2e-4c43-9a51-0c8f3e1b7a11", "uid")
    rules.name_part("9f86d081884c7d659a2feaa0c55ad015", "uid")


@pytest.mark.parametrize("value", ["has space", "a/b", "x" * 65, "-lead", "a..b"])
def test_bad_hostnames_are_invalid(value) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"config\.hostname"):
        rules.hostname(value, "config.hostname")


def test_hostnames_pass_up_to_the_kernels_limit() -> None:
    for value in ("", "web-0", "Node-A.example.com", "x" * 64):
        rules.hostname(value, "config.hostname")


def test_ips() -> None:
    rules.ip("10.96.0.10", "dns")
    rules.ip("fd00::10", "dns")
    with pytest.raises(errors.InvalidArgument, match="not an IP address"):
        rules.ip("not-an-ip", "dns")


def test_host_ports_twice_and_sctp_on_dockers_bridge_are_invalid() -> None:
    twice = [("tcp", 80, 8080, ""), ("tcp", 81, 8080, "")]
    with pytest.raises(errors.InvalidArgument, match="mapped twice"):
        rules.port_mappings(twice, True, "config.port_mappings")
    rules.port_mappings(twice, False, "config.port_mappings")  # portmap takes it
    rules.port_mappings([("tcp", 80, 8080, ""), ("udp", 80, 8080, "")], True, "p")
    with pytest.raises(errors.InvalidArgument, match="SCTP"):
        rules.port_mappings([("sctp", 80, 8080, "")], True, "p")
    rules.port_mappings([("sctp", 80, 8080, "")], False, "p")  # CNI's portmap does SCTP
    with pytest.raises(errors.InvalidArgument, match="host_ip"):
        rules.port_mappings([("tcp", 80, 8080, "not-an-ip")], False, "p")


@pytest.mark.parametrize(
    ("name", "host_network", "reason"),
    [
        ("kernel.hostname", False, "hostname"),
        ("kernel.domainname", False, "hostname"),
        ("kernel.panic", False, "not namespaced"),
        ("net.ipv4.ip_forward", True, "host's network"),
        ("bad name", False, "not a sysctl name"),
        ("net..x", False, "not a sysctl name"),
    ],
)
def test_sysctls_runc_refuses_are_invalid(name, host_network, reason) -> None:
    with pytest.raises(errors.InvalidArgument, match=reason):
        rules.sysctls({name: "1"}, host_network, "config.linux.sysctls")


def test_namespaced_sysctls_pass() -> None:
    rules.sysctls(
        {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1",
         "fs.mqueue.msg_max": "20", "net/ipv4/tcp_syncookies": "1",
         "net/ipv4/conf/Eth0.100/forwarding": "1"},
        False, "s",
    )  # fmt: skip


def test_ids_the_kernel_carries_pass() -> None:
    for value in (0, 2**31, 2**32 - 2):
        rules.user_id(value, "run_as_user")


@pytest.mark.parametrize("value", [-1, 2**32 - 1, 2**63 - 1])
def test_ids_the_kernel_cannot_carry_are_invalid(value) -> None:
    with pytest.raises(errors.InvalidArgument, match="run_as_user"):
        rules.user_id(value, "run_as_user")
    with pytest.raises(errors.InvalidArgument):
        rules.group_ids([0, value], "supplemental_groups")


def test_paths_permissions_and_numbers() -> None:
    for bad in ("relative/x", "/a:b", "/nul\0"):
        with pytest.raises(errors.InvalidArgument):
            rules.container_path(bad, "mounts")
    rules.container_path("/data", "mounts")
    with pytest.raises(errors.InvalidArgument, match="rwm"):
        rules.device_permissions("xyz", "devices")
    rules.device_permissions("rw", "devices")
    with pytest.raises(errors.InvalidArgument):
        rules.non_negative(-2, "cpu_shares")
    rules.cpu_quota(-1, "cpu_quota")  # the kernel's "no limit"
    with pytest.raises(errors.InvalidArgument):
        rules.cpu_quota(-2, "cpu_quota")
    with pytest.raises(errors.InvalidArgument):
        rules.label_keys({"": "x"}, "labels")


# -- the seccomp profile read -----------------------------------------------------------


def _load(path: str) -> str:
    return asyncio.run(security.load_profile(path))


def test_a_profile_is_read_as_json(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    assert json.loads(_load(str(path))) == {"defaultAction": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: "/dev/zero", "not a regular file"),
        (lambda d: (os.mkfifo(d / "fifo"), str(d / "fifo"))[1], "not a regular file"),
        (lambda d: str(d), "not a regular file"),
        (lambda d: (d / "big").write_bytes(b" " * (2 << 20)) and str(d / "big"), "larger"),
        (lambda d: (d / "bad").write_text("{nope") and str(d / "bad"), "not JSON"),
        (lambda d: (d / "arr").write_text("[]") and str(d / "arr"), "defaultAction"),
        (lambda d: "relative.json", "absolute"),
        (lambda d: str(d / "missing.json"), "No such file"),
    ],
)
def test_a_bad_profile_path_is_invalid_argument_at_once(tmp_path, make, reason) -> None:
    path = make(tmp_path)
    # The reason, not "not read within": nothing waited for /dev/zero or the FIFO.
    with pytest.raises(errors.InvalidArgument, match=reason):
        _load(path)
