"""CNI config loading (libcni's rules), plugin stdin documents, and result parsing."""

from __future__ import annotations

import json
import os

import pytest

from crishim.common import errors
from crishim.network import conf
from crishim.network.cni import plugin_config, result_ips
from crishim.network.pods import (
    PodNetworkConfig,
    PortMapping,
    capability_args,
    cni_args,
    parse_bandwidth,
)

BRIDGE = {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}


@pytest.fixture
def bin_dir(tmp_path):
    """A plugin directory holding executables named bridge and portmap."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("bridge", "portmap"):
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return (str(directory),)


def write(directory, name: str, doc) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_an_empty_directory_names_itself(tmp_path, bin_dir) -> None:
    loaded = conf.load(tmp_path / "net.d", bin_dir)
    assert loaded.network is None
    assert str(tmp_path / "net.d") in loaded.problem


def test_the_first_file_in_lexical_order_wins(tmp_path, bin_dir) -> None:
    d = tmp_path / "net.d"
    write(d, "20-b.conflist", {"cniVersion": "1.0.0", "name": "b", "plugins": [BRIDGE]})
    write(d, "10-a.conflist", {"cniVersion": "1.0.0", "name": "a", "plugins": [BRIDGE]})
    write(d, "00-ignored.txt", "not a config")
    loaded = conf.load(d, bin_dir)
    assert loaded.network is not None
    assert loaded.network.name == "a"
    assert loaded.network.source.endswith("10-a.conflist")


def test_a_single_plugin_conf_is_wrapped_into_a_list(tmp_path, bin_dir) -> None:
    d = tmp_path / "net.d"
    write(d, "10-one.conf", {"cniVersion": "0.3.1", "name": "one", **BRIDGE})
    network = conf.load(d, bin_dir).network
    assert network is not None
    assert (network.name, network.cni_version) == ("one", "0.3.1")
    assert [p.type for p in network.plugins] == ["bridge"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        pytest.param("10-x.conflist", "{oops", "not valid JSON", id="bad-json"),
        pytest.param("10-x.conflist", {"name": "x", "plugins": []}, "no plugins", id="no-plugins"),
        pytest.param("10-x.conflist", {"plugins": [BRIDGE]}, "no network name", id="no-name"),
        pytest.param("10-x.conf", {"name": "x"}, "network type not found", id="conf-no-type"),
        pytest.param(
            "10-x.conflist",
            {"name": "x", "plugins": [{"type": "../../bin/sh"}]},
            "no valid type",
            id="type-with-path",
        ),
    ],
)
def test_a_broken_first_file_is_the_reported_problem(tmp_path, bin_dir, name, content, says):
    d = tmp_path / "net.d"
    write(d, name, content)
    write(d, "20-good.conflist", {"name": "good", "plugins": [BRIDGE]})
    loaded = conf.load(d, bin_dir)
    assert loaded.network is None
    assert name in loaded.problem
    assert says in loaded.problem


def test_a_missing_plugin_binary_is_named(tmp_path, bin_dir) -> None:
    d = tmp_path / "net.d"
    write(d, "10-x.conflist", {"name": "x", "plugins": [BRIDGE, {"type": "flannel"}]})
    loaded = conf.load(d, bin_dir)
    assert loaded.network is None
    assert "flannel" in loaded.problem
    assert bin_dir[0] in loaded.problem


def test_the_signature_changes_when_a_file_changes(tmp_path, bin_dir) -> None:
    d = tmp_path / "net.d"
    write(d, "10-x.conflist", {"name": "x", "plugins": [BRIDGE]})
    before = conf.signature(d, bin_dir)
    path = d / "10-x.conflist"
    os.utime(path, ns=(1, 1))
    assert conf.signature(d, bin_dir) != before


@pytest.mark.parametrize(
    ("version", "check", "gc"),
    [
        ("0.3.1", False, False),
        ("0.4.0", True, False),
        ("1.0.0", True, False),
        ("1.1.0", True, True),
    ],
)
def test_which_commands_a_version_has(version, check, gc) -> None:
    assert conf.supports_check(version) is check
    assert conf.supports_gc_and_status(version) is gc


def test_a_plugin_gets_name_version_prev_result_and_only_its_capabilities() -> None:
    network = conf.parse_list(
        {
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [BRIDGE, {"type": "portmap", "capabilities": {"portMappings": True}}],
        }
    )
    args = {"portMappings": [{"hostPort": 80}], "bandwidth": {"ingressRate": 1}}
    bridge = plugin_config(network, network.plugins[0], args, None)
    assert bridge["name"] == "pods"
    assert bridge["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in bridge
    assert "prevResult" not in bridge
    portmap = plugin_config(network, network.plugins[1], args, {"ips": []})
    assert portmap["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert portmap["prevResult"] == {"ips": []}


@pytest.mark.parametrize(
    ("result", "ips"),
    [
        pytest.param(
            {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                "ips": [
                    {"address": "fd00::5/64", "interface": 1},
                    {"address": "10.1.0.5/24", "interface": 1},
                    {"address": "10.1.0.1/24", "interface": 0},
                ],
            },
            ("10.1.0.5", "fd00::5"),
            id="1.0-dual-stack-ipv4-first-host-side-ignored",
        ),
        pytest.param(
            {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.2.0.9/16"}]},
            ("10.2.0.9",),
            id="0.3.1-no-interfaces",
        ),
        pytest.param(
            {"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.7/24"}}, ("10.3.0.7",), id="0.2.0"
        ),
        pytest.param(None, (), id="none"),
    ],
)
def test_pod_ips_from_a_result(result, ips) -> None:
    assert result_ips(result) == ips


@pytest.mark.parametrize(
    ("value", "bits"),
    [("10M", 10_000_000), ("1Gi", 2**30), ("500k", 500_000), ("1.5M", 1_500_000), ("2000", 2000)],
)
def test_bandwidth_quantities(value, bits) -> None:
    assert parse_bandwidth("kubernetes.io/ingress-bandwidth", value) == bits


@pytest.mark.parametrize("value", ["fast", "10X", "-1M", "1", "2E"])
def test_bad_bandwidth_is_invalid_argument(value) -> None:
    with pytest.raises(errors.InvalidArgument, match="ingress-bandwidth"):
        parse_bandwidth("kubernetes.io/ingress-bandwidth", value)


def test_capability_args_carry_host_ports_dns_bandwidth_and_ranges() -> None:
    config = PodNetworkConfig(
        namespace="ns",
        name="web",
        uid="u1",
        port_mappings=(PortMapping("tcp", 80, 8080, "127.0.0.1"), PortMapping("udp", 53, 0)),
        dns_servers=("10.96.0.10",),
        dns_searches=("ns.svc",),
        annotations={"kubernetes.io/egress-bandwidth": "1M"},
    )
    args = capability_args(config, ("10.244.1.0/24", "fd00:1::/64"))
    assert args["portMappings"] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
    ]
    assert args["dns"] == {"servers": ["10.96.0.10"], "searches": ["ns.svc"], "options": []}
    assert args["bandwidth"] == {"egressRate": 1_000_000, "egressBurst": 2**32 - 1}
    assert args["ipRanges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64"}]]
    assert dict(cni_args(config, "abc")) == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": "ns",
        "K8S_POD_NAME": "web",
        "K8S_POD_INFRA_CONTAINER_ID": "abc",
        "K8S_POD_UID": "u1",
    }
