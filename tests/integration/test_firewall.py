"""Pods talk on a node whose firewall Docker owns: FORWARD's policy DROP, Docker's chains.

The node is a network namespace of the test's own (tests/harness/cni.py) in which
the firewall is laid out as Docker's daemon lays it on a real host (20.10's chains
or 28's), and crishim runs its default network (`crishim cni-config`'s). An
"outside" host is another namespace beyond a routed link. Pod to pod, pod to the
outside host (masqueraded) and a hostPort reached from the outside host all cross
FORWARD: each is dropped there unless crishim accepts its pods' traffic.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from crishim.network import default
from tests.harness import cni as cni_harness
from tests.harness.dockerd import unique_name
from tests.harness.procs import stop_process, wait_for
from tests.integration.test_cni import Node, cni, http_get, in_pod  # noqa: F401  (fixture)

UPLINK = ("10.234.9.1", "10.234.9.2")  # node, outside: a link only these namespaces have

# Docker's filter table, as each engine leaves it with no container of its own.
DOCKER_20 = [
    "-N DOCKER", "-N DOCKER-ISOLATION-STAGE-1", "-N DOCKER-ISOLATION-STAGE-2", "-N DOCKER-USER",
    "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
    "-A DOCKER-ISOLATION-STAGE-1 -j RETURN", "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
    "-A DOCKER-USER -j RETURN",
]  # fmt: skip
DOCKER_28 = [
    "-N DOCKER", "-N DOCKER-BRIDGE", "-N DOCKER-CT", "-N DOCKER-FORWARD",
    "-N DOCKER-INTERNAL", "-N DOCKER-USER",
    "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD",
    "-A DOCKER-FORWARD -j DOCKER-CT", "-A DOCKER-FORWARD -j DOCKER-INTERNAL",
    "-A DOCKER-FORWARD -j DOCKER-BRIDGE",
]  # fmt: skip


def dockers_firewall(netns: cni_harness.TestNetns, rules: list[str], v6: bool) -> None:
    """FORWARD policy DROP with `rules` (as iptables-restore lines), and br_netfilter on."""
    for tool, on in (("iptables-restore", True), ("ip6tables-restore", v6)):
        if on:
            text = "*filter\n:FORWARD DROP [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"
            netns.run("sh", "-c", f"printf '%s' '{text}' | {tool} --noflush")
    for knob in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        netns.run("sysctl", "-qw", f"net.bridge.{knob}=1")


@contextlib.contextmanager
def serving(netns: cni_harness.TestNetns, workdir: Path, port: int, text: str):
    """busybox httpd in `netns` serving `text` on `port` while the block runs."""
    root = workdir / f"www-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    (root / "index.html").write_text(text + "\n")
    cmd = (*netns.prefix, "busybox", "httpd", "-f", "-p", str(port), "-h", str(root))
    proc = subprocess.Popen(cmd)
    try:
        yield
    finally:
        stop_process(proc, timeout=10)


@pytest.fixture
def outside(cni_node_factory):
    """(node, outside host namespace) joined by a veth, the outside serving a page."""
    made: list[cni_harness.TestNetns] = []

    def make(node) -> cni_harness.TestNetns:
        far = cni_harness.TestNetns(unique_name("crtout")).create()
        made.append(far)
        near_if, far_if = unique_name("crtup"), unique_name("crtfar")
        node.netns.run("ip", "link", "add", near_if, "type", "veth", "peer", "name", far_if)
        node.netns.run("ip", "link", "set", far_if, "netns", far.name)
        node.netns.run("ip", "addr", "add", f"{UPLINK[0]}/24", "dev", near_if)
        node.netns.run("ip", "link", "set", near_if, "up")
        far.run("ip", "addr", "add", f"{UPLINK[1]}/24", "dev", far_if)
        far.run("ip", "link", "set", far_if, "up")
        return far

    yield make
    for far in made:
        far.destroy()


@pytest.mark.parametrize("engine", [DOCKER_20, DOCKER_28], ids=["docker-20.10", "docker-28"])
def test_pods_reach_each_other_the_node_and_beyond_under_dockers_firewall(
    cni,  # noqa: F811
    outside,
    dockerd,
    workdir: Path,
    engine,
) -> None:
    n: Node = cni(configured=False)
    node = n.node
    conflist = default.conflist()
    data_dir = workdir / f"ipam-{uuid.uuid4().hex[:6]}"  # never the machine's own store
    conflist["plugins"][0]["ipam"]["dataDir"] = str(data_dir)
    (node.conf_dir / default.FILENAME).write_text(json.dumps(conflist))
    dockers_firewall(node.netns, engine, v6=engine is DOCKER_28)
    far = outside(node)
    wait_for(lambda: n.network_ready()[0], 30, "the default network loaded")

    pb = n.pb
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=30080)
    a = n.run()
    b = n.run(n.config(port_mappings=[mapping]))
    ip_b = n.status(b).status.network.ip
    n.serve_http(b)
    b_name = n.status(b).status.metadata.name
    from_a = lambda *cmd: in_pod(dockerd, a, *cmd)  # noqa: E731
    # Pod to pod, across the bridge (br_netfilter: through FORWARD).
    assert http_get(from_a, ip_b, 8080).strip() == f"page-{b_name}"
    # Pod to the node (its gateway address), and to a host beyond it (masqueraded).
    with serving(node.netns, workdir, 18081, "node-page"):
        assert http_get(from_a, "10.88.0.1", 18081).strip() == "node-page"
    with serving(far, workdir, 18082, "far-page"):
        assert http_get(from_a, UPLINK[1], 18082).strip() == "far-page"
    # The hostPort, from the host beyond the node.
    from_far = lambda *cmd: far.run(*cmd)  # noqa: E731
    assert http_get(from_far, UPLINK[0], 30080, "busybox nc").strip() == f"page-{b_name}"
    # crishim's rules go with the pods: nothing is left after the last one.
    n.cleanup()
    n.pods.clear()
    for tool in ("iptables", "ip6tables"):
        left = [
            r for r in node.netns.run(f"{tool}-save", "-t", "filter").splitlines() if "crishim" in r
        ]
        assert left == [], tool
    assert not list((data_dir / default.NAME).glob("10.88.*"))


def test_check_says_whether_the_firewall_drops_the_configured_networks_pods(workdir) -> None:
    """crishim's own network: it accepts its pods; another's: a warning naming the cause."""
    import sys

    from tests.harness.cni import Network

    netns = cni_harness.TestNetns(unique_name("crtchk")).create()
    try:
        dockers_firewall(netns, DOCKER_28, v6=False)
        conf_dir = workdir / f"chk-{uuid.uuid4().hex[:6]}"

        def check() -> str:
            flags = (f"--cni-conf-dir={conf_dir}", "--cni-bin-dir=/usr/lib/cni")
            cmd = (*netns.prefix, sys.executable, "-m", "crishim", "check", *flags)
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout

        conf_dir.mkdir()
        (conf_dir / default.FILENAME).write_text(json.dumps(default.conflist()))
        assert "OK   firewall: FORWARD drops by default (Docker's firewall); crishim accepts" in (
            check()
        )
        (conf_dir / default.FILENAME).unlink()
        Network("someones", "br0", ("10.98.0.0/24",), workdir / "x").write(conf_dir)
        said = check()
        assert "WARN firewall: FORWARD drops by default" in said
        assert "network 'someones' was not written by crishim" in said
    finally:
        netns.destroy()


def test_network_ready_warns_when_the_firewall_may_drop_a_network_not_crishims(cni) -> None:  # noqa: F811
    """Still ready (the network may accept its pods itself), but saying why it may not."""
    n: Node = cni()  # the harness's own bridge network: someone else's, to crishim
    assert n.network_ready() == (True, "", "")
    dockers_firewall(n.node.netns, DOCKER_28, v6=False)
    # Looked at every minute, and at once when the config changes: written again.
    time.sleep(1.1)  # a new mtime
    n.node.network.write(n.node.conf_dir)
    wait_for(lambda: n.network_ready()[1] == "PodTrafficMayBeDropped", 30, "the warning")
    ready, _, message = n.network_ready()
    assert ready
    assert "network 'crt-pods' was not written by crishim" in message
