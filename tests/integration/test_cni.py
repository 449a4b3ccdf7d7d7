"""Pod networking through CNI, with Debian's real plugins (bridge, host-local, portmap).

Each test runs crishim in cni mode inside a network namespace of its own (see
tests/harness/cni.py): the bridge, veths and iptables rules the plugins make
live there and vanish with it.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import uuid

import grpc
import pytest

from tests.harness.clients import Official
from tests.harness.cni import CniNode
from tests.harness.paths import LOG_ROOT
from tests.harness.procs import wait_for

HTTPD = ["sh", "-c", "mkdir -p /www && echo page-$(hostname) > /www/index.html && httpd -f -p 8080 -h /www"]


class Node:
    """A CNI node and a client of its crishim; removes the pods it ran."""

    def __init__(self, node: CniNode, client: Official) -> None:
        self.node = node
        self.client = client
        self.pb = client.pb
        self.rt = client.runtime
        self.pods: list[str] = []

    def config(self, name: str | None = None, port_mappings=(), annotations=None, host=False):
        pb = self.pb
        name = name or f"pod-{uuid.uuid4().hex[:8]}"
        uid = str(uuid.uuid4())
        ns = pb.NamespaceOption(network=pb.NODE) if host else None
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="cni", uid=uid, attempt=0),
            hostname=name,
            log_directory=str(LOG_ROOT / f"cni_{name}_{uid}"),
            dns_config=pb.DNSConfig(
                servers=["10.96.0.10"], searches=["cni.svc.cluster.local"], options=["ndots:5"]
            ),
            port_mappings=list(port_mappings),
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)
            ),
        )

    def run(self, config=None, **kw) -> str:
        config = config or self.config(**kw)
        sandbox_id = self.rt.RunPodSandbox(
            self.pb.RunPodSandboxRequest(config=config), timeout=120
        ).pod_sandbox_id
        self.pods.append(sandbox_id)
        return sandbox_id

    def status(self, sandbox_id: str, verbose: bool = False):
        return self.rt.PodSandboxStatus(
            self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose), timeout=30
        )

    def stop(self, sandbox_id: str) -> None:
        self.rt.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)

    def remove(self, sandbox_id: str) -> None:
        self.rt.RemovePodSandbox(
            self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )

    def serve_http(self, sandbox_id: str) -> str:
        """A container in the pod serving page-<hostname> on port 8080."""
        pb = self.pb
        cid = self.rt.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name="web"),
                    image=pb.ImageSpec(image="crishim-test/busybox:latest"),
                    command=HTTPD,
                    log_path="web/0.log",
                ),
                sandbox_config=self.config(),
            ),
            timeout=60,
        ).container_id
        self.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        return cid

    def network_ready(self) -> tuple[bool, str, str]:
        status = self.rt.Status(self.pb.StatusRequest(), timeout=30).status
        (cond,) = [c for c in status.conditions if c.type == "NetworkReady"]
        return cond.status, cond.reason, cond.message

    def cleanup(self) -> None:
        for sandbox_id in self.pods:
            try:
                self.remove(sandbox_id)
            except grpc.RpcError:
                pass


@pytest.fixture
def cni(cni_node_factory, official_stubs):
    def make(*extra: str, **kw) -> Node:
        node = cni_node_factory(*extra, **kw)
        made.append(Node(node, Official(node.crishim.socket, *official_stubs)))
        return made[-1]

    made: list[Node] = []
    yield make
    for n in made:
        n.cleanup()
        n.client.close()


def in_pod(dockerd, sandbox_id: str, *cmd: str) -> str:
    return dockerd.docker("exec", sandbox_id, *cmd)


def http_get(run, ip: str, port: int) -> str:
    """The body of GET / on ip:port, fetched with busybox nc by `run` (retried while refused).

    (busybox wget cannot be used: the test image has no NSS modules for it.)
    """
    host = f"[{ip}]" if ":" in ip else ip
    script = f"printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 {ip} {port}"
    out = ""

    def fetched() -> bool:
        nonlocal out
        try:
            out = run("sh", "-c", script)
        except RuntimeError:
            return False
        return "\r\n\r\n" in out

    wait_for(fetched, 30, f"{host}:{port} answering", interval=0.3)
    return out.split("\r\n\r\n", 1)[1]


def test_pods_get_addresses_from_the_conflist_and_reach_each_other(cni, dockerd) -> None:
    n = cni()
    a, b = n.run(), n.run()
    subnet = ipaddress.ip_network("10.99.0.0/24")
    ips = {}
    for sandbox_id in (a, b):
        status = n.status(sandbox_id).status
        assert status.state == n.pb.SANDBOX_READY
        assert ipaddress.ip_address(status.network.ip) in subnet
        assert list(status.network.additional_ips) == []
        ips[sandbox_id] = status.network.ip
    assert ips[a] != ips[b]
    assert sorted(n.node.network.reservations()) == sorted(ips.values())
    # The pod's eth0 carries exactly that address.
    assert f"inet {ips[a]}/24" in in_pod(dockerd, a, "ip", "-4", "addr", "show", "eth0")
    n.serve_http(b)
    page = http_get(lambda *cmd: in_pod(dockerd, a, *cmd), ips[b], 8080)
    b_name = n.status(b).status.metadata.name
    assert page.strip() == f"page-{b_name}"


def test_dns_and_hostname_come_from_the_sandbox_config(cni, dockerd) -> None:
    n = cni()
    config = n.config()
    sandbox_id = n.run(config)
    assert in_pod(dockerd, sandbox_id, "hostname").strip() == config.hostname
    resolv = in_pod(dockerd, sandbox_id, "cat", "/etc/resolv.conf")
    assert sorted(resolv.split("\n")[:-1]) == [
        "nameserver 10.96.0.10",
        "options ndots:5",
        "search cni.svc.cluster.local",
    ]
    # The loopback works inside the pod (the kubelet's probes and sidecars use it).
    assert "127.0.0.1" in in_pod(dockerd, sandbox_id, "ip", "-4", "addr", "show", "lo")
