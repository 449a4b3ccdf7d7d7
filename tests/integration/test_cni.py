"""Pod networking through CNI, with Debian's real plugins (bridge, host-local, portmap).

Each test runs crishim in cni mode inside a network namespace of its own (see
tests/harness/cni.py): the bridge, veths and iptables rules the plugins make
live there and vanish with it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import pytest

from crishim.common import rfc3339
from tests.harness.clients import Official
from tests.harness.cni import CniNode
from tests.harness.paths import LOG_ROOT
from tests.harness.procs import run, wait_for
from tests.integration.test_sandboxes import resolver_lines

HTTPD = [
    "sh",
    "-c",
    "mkdir -p /www && echo page-$(hostname) > /www/index.html && httpd -f -p 8080 -h /www",
]
PEER = Path(__file__).resolve().parents[1] / "peers" / "spdy" / "client.js"


class Node:
    """A CNI node and a client of its crishim; removes the pods it ran."""

    def __init__(self, node: CniNode | None, client: Official) -> None:
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
            with contextlib.suppress(grpc.RpcError):
                self.remove(sandbox_id)

    def on_host(self, *cmd: str) -> str:
        """A command in the node's host network (the test namespace in cni mode)."""
        return self.node.netns.run(*cmd) if self.node else run(*cmd)

    @property
    def host_prefix(self) -> tuple[str, ...]:
        return self.node.netns.prefix if self.node else ()


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


def http_get(run, ip: str, port: int, nc: str = "nc") -> str:
    """The body of GET / on ip:port, fetched with busybox nc by `run` (retried while refused).

    (busybox wget cannot be used: the test image has no NSS modules for it.)
    """
    host = f"[{ip}]" if ":" in ip else ip
    script = f"printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | {nc} -w 3 {ip} {port}"
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
    assert sorted(resolver_lines(resolv)) == [
        "nameserver 10.96.0.10",
        "options ndots:5",
        "search cni.svc.cluster.local",
    ]
    # The loopback works inside the pod (the kubelet's probes and sidecars use it).
    assert "127.0.0.1" in in_pod(dockerd, sandbox_id, "ip", "-4", "addr", "show", "lo")


def sandbox_pid(dockerd, sandbox_id: str) -> int:
    return int(dockerd.docker("inspect", "--format", "{{.State.Pid}}", sandbox_id))


def test_a_host_port_reaches_the_pod_through_portmap(cni, dockerd) -> None:
    n = cni()
    pb = n.pb
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=18080)
    config = n.config(port_mappings=[mapping])
    sandbox_id = n.run(config)
    n.serve_http(sandbox_id)
    page = http_get(n.on_host, n.node.network.gateway, 18080, "busybox nc")
    assert page.strip() == f"page-{config.hostname}"
    # portmap's per-pod DNAT chain exists while the pod runs, and goes with it.
    assert any("dport 18080" in r for r in n.node.netns.nat_rules())
    n.stop(sandbox_id)
    assert not any("dport 18080" in r for r in n.node.netns.nat_rules())


def test_a_dual_stack_network_gives_an_ipv4_and_an_ipv6_address(cni, dockerd) -> None:
    n = cni(subnets=("10.99.0.0/24", "fd99:c0de:1::/64"))
    sandbox_id = n.run()
    network = n.status(sandbox_id).status.network
    assert ipaddress.ip_address(network.ip) in ipaddress.ip_network("10.99.0.0/24")
    (extra,) = network.additional_ips
    assert ipaddress.ip_address(extra.ip) in ipaddress.ip_network("fd99:c0de:1::/64")
    shown = in_pod(dockerd, sandbox_id, "ip", "addr", "show", "eth0")
    assert f"inet {network.ip}/24" in shown
    assert f"inet6 {extra.ip}/64" in shown


def _assert_nothing_left(n: Node) -> None:
    assert n.node.network.reservations() == []
    assert n.node.netns.veths() == []
    assert not any("CNI-DN" in r or "dport 18081" in r for r in n.node.netns.nat_rules())
    assert n.node.netns_handles() == []


@pytest.mark.parametrize("pause_killed_first", [False, True], ids=["pause-alive", "pause-killed"])
def test_a_sigkilled_crishim_tears_down_after_restart(cni, dockerd, pause_killed_first) -> None:
    n = cni()
    pb = n.pb
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=18081)
    sandbox_id = n.run(port_mappings=[mapping])
    ip = n.status(sandbox_id).status.network.ip
    assert n.node.network.reservations() == [ip]
    assert len(n.node.netns.veths()) == 1
    assert n.node.netns_handles() == [sandbox_id]
    n.node.crishim.signal(signal.SIGKILL)
    n.node.crishim.wait(30)
    if pause_killed_first:
        dockerd.docker("kill", sandbox_id)
    n.node.crishim.start()
    # The IP survives the restart (from the checkpoint), as the kubelet expects.
    assert n.status(sandbox_id).status.network.ip == ip
    n.stop(sandbox_id)
    _assert_nothing_left(n)
    assert n.node.checkpoints() == [sandbox_id]  # until RemovePodSandbox
    n.remove(sandbox_id)
    assert n.node.checkpoints() == []


# A plugin chained after bridge and portmap. Its DEL (the first of the chain's DELs)
# waits until the pod's pause has stopped (bounded), and fails once if told to.
AWAIT_PAUSE_PLUGIN = """#!{python}
import json, os, subprocess, sys, time
conf = json.load(sys.stdin)
command = os.environ["CNI_COMMAND"]
def answer(value, code=0):
    json.dump(value, sys.stdout)
    sys.exit(code)
if command == "VERSION":
    answer({{"cniVersion": conf.get("cniVersion", "1.0.0"),
            "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}})
if command != "DEL":
    answer(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}})
sandbox, log = os.environ["CNI_CONTAINERID"], conf["log"]
deadline = time.monotonic() + conf["waitSeconds"]
while subprocess.run(
    [conf["docker"], "-H", conf["dockerHost"], "inspect", "-f", "{{{{.State.Running}}}}", sandbox],
    capture_output=True, text=True,
).stdout.strip() == "true":
    if time.monotonic() > deadline:
        msg = "DEL ran, the pause ran on"
        answer({{"cniVersion": conf["cniVersion"], "code": 11, "msg": msg}}, 1)
    time.sleep(0.05)
with open(log, "a") as f:
    f.write("DEL with the pause stopped\\n")
if os.path.exists(conf["failOnce"]):
    os.remove(conf["failOnce"])
    answer({{"cniVersion": conf["cniVersion"], "code": 11, "msg": "DEL failed as told"}}, 1)
"""


def test_the_network_goes_while_the_pause_stops_and_a_failed_teardown_is_retried(
    cni, dockerd, workdir
) -> None:
    """StopPodSandbox stops the pause while CNI DEL runs (in the namespace crishim
    pinned, which outlives the pause): a DEL that waits for the pause to stop
    completes. A DEL that fails fails the call and keeps the checkpoint and the
    pinned namespace; the kubelet's retry runs DEL again and leaves nothing."""
    plugins = Path(tempfile.mkdtemp(prefix="cni-bin-", dir=workdir))
    plugin = plugins / "await-pause"
    plugin.write_text(AWAIT_PAUSE_PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    n = cni(f"--cni-bin-dir=/usr/lib/cni:{plugins}")
    log, fail_once = plugins / "del.log", plugins / "fail-once"
    conflist = n.node.network.conflist()
    conflist["plugins"].append(
        {
            "type": "await-pause",
            "docker": shutil.which("docker"),
            "dockerHost": dockerd.endpoint,
            "waitSeconds": 20,
            "log": str(log),
            "failOnce": str(fail_once),
        }
    )
    (n.node.conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
    wait_for(lambda: _loads(n) == 2, 10, "the chain with await-pause loaded")
    sandbox_id = n.run()
    ip = n.status(sandbox_id).status.network.ip
    assert n.node.network.reservations() == [ip]

    fail_once.write_text("")
    with pytest.raises(grpc.RpcError) as failed:
        n.stop(sandbox_id)
    assert "DEL failed as told" in failed.value.details()
    running = dockerd.docker("inspect", "-f", "{{.State.Running}}", sandbox_id).strip()
    assert running == "false", "the pause stopped though the teardown failed"
    assert n.node.checkpoints() == [sandbox_id]
    assert n.node.netns_handles() == [sandbox_id], "the pinned namespace, for the retry"

    n.stop(sandbox_id)  # the kubelet's retry
    _assert_nothing_left(n)
    assert log.read_text().splitlines() == ["DEL with the pause stopped"] * 2
    n.remove(sandbox_id)
    assert n.node.checkpoints() == []


def test_network_ready_follows_the_config_directory(cni) -> None:
    n = cni(configured=False)
    ready, reason, message = n.network_ready()
    assert (ready, reason) == (False, "NetworkPluginNotReady")
    assert str(n.node.conf_dir) in message
    with pytest.raises(grpc.RpcError) as refused:
        n.run()
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ready" in refused.value.details()
    # A hostNetwork pod does not need the pod network.
    host_pod = n.run(host=True)
    assert n.status(host_pod).status.state == n.pb.SANDBOX_READY
    n.node.network.write(n.node.conf_dir)
    wait_for(lambda: n.network_ready()[0], 10, "NetworkReady after a conflist appeared")
    assert n.status(n.run()).status.network.ip.startswith("10.99.0.")


def test_a_broken_config_is_reported_by_name(cni) -> None:
    n = cni(configured=False)
    (n.node.conf_dir / "05-broken.conflist").write_text("{not json")
    wait_for(lambda: "05-broken.conflist" in n.network_ready()[2], 10, "the broken file named")
    (n.node.conf_dir / "05-broken.conflist").unlink()
    conflist = n.node.network.conflist()
    conflist["plugins"].append({"type": "no-such-plugin"})
    (n.node.conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
    wait_for(lambda: "no-such-plugin" in n.network_ready()[2], 10, "the missing plugin named")


def test_a_failing_plugin_fails_run_pod_sandbox_and_leaves_nothing(cni, dockerd) -> None:
    n = cni()
    # A range with room for one pod: host-local refuses the second, in its own words.
    conflist = n.node.network.conflist()
    conflist["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.99.0.0/30"}]]  # 1 address
    (n.node.conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
    wait_for(lambda: _loads(n) == 2, 10, "the small range loaded")
    first = n.run()
    before = set(dockerd.docker("ps", "-aq", "--no-trunc").split())
    with pytest.raises(grpc.RpcError) as failed:
        n.run()
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "host-local" in failed.value.details() or "no IP addresses" in failed.value.details()
    assert set(dockerd.docker("ps", "-aq", "--no-trunc").split()) == before
    assert n.node.checkpoints() == [first]
    assert len(n.node.netns.veths()) == 1


def _loads(n: Node) -> int:
    return sum(e.get("event") == "cni_config_loaded" for e in n.node.crishim.events())


def test_many_pod_cycles_leave_nothing_behind(cni) -> None:
    n = cni()

    def cycle(_: int) -> str:
        sandbox_id = n.rt.RunPodSandbox(
            n.pb.RunPodSandboxRequest(config=n.config()), timeout=120
        ).pod_sandbox_id
        ip = n.status(sandbox_id).status.network.ip
        n.stop(sandbox_id)
        n.remove(sandbox_id)
        return ip

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ips = list(pool.map(cycle, range(200)))
    assert all(ip.startswith("10.99.0.") for ip in ips)
    _assert_nothing_left(n)
    assert n.node.checkpoints() == []


# -- the critest networking checks, in both modes -------------------------------------


@pytest.fixture(params=["cni", "docker"])
def mode_node(request, cni, official):
    if request.param == "cni":
        yield cni()
    else:
        node = Node(None, official)
        yield node
        node.cleanup()


def test_critest_dns_config(mode_node, dockerd) -> None:
    config = mode_node.config()
    sandbox_id = mode_node.run(config)
    resolv = in_pod(dockerd, sandbox_id, "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv
    assert "search cni.svc.cluster.local" in resolv
    assert "options ndots:5" in resolv
    assert in_pod(dockerd, sandbox_id, "hostname").strip() == config.hostname


def test_critest_port_mapping(mode_node) -> None:
    pb = mode_node.pb
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=18082)
    config = mode_node.config(port_mappings=[mapping])
    sandbox_id = mode_node.run(config)
    mode_node.serve_http(sandbox_id)
    host = mode_node.node.network.gateway if mode_node.node else "127.0.0.1"
    page = http_get(mode_node.on_host, host, 18082, "busybox nc")
    assert page.strip() == f"page-{config.hostname}"


def test_critest_port_forward(mode_node) -> None:
    config = mode_node.config()
    sandbox_id = mode_node.run(config)
    mode_node.serve_http(sandbox_id)
    url = mode_node.rt.PortForward(
        mode_node.pb.PortForwardRequest(pod_sandbox_id=sandbox_id), timeout=30
    ).url
    results: list[dict] = []

    def served() -> bool:
        nonlocal url
        done = subprocess.run(
            [
                *mode_node.host_prefix,
                "node",
                str(PEER),
                "portforward",
                url,
                "--port",
                "8080",
                "--send",
                "GET / HTTP/1.0\r\n\r\n",
            ],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        results[:] = json.loads(done.stdout)
        if results[0]["error"]:
            url = mode_node.rt.PortForward(
                mode_node.pb.PortForwardRequest(pod_sandbox_id=sandbox_id), timeout=30
            ).url  # URLs are single-use
            time.sleep(0.3)
            return False
        return True

    wait_for(served, 30, "port-forward to httpd")
    assert f"page-{config.hostname}" in results[0]["data"]


def test_the_pod_cidr_from_update_runtime_config_reaches_host_local(cni) -> None:
    n = cni(configured=False)
    conflist = n.node.network.conflist()
    bridge = conflist["plugins"][0]
    bridge["capabilities"] = {"ipRanges": True}
    del bridge["ipam"]["ranges"]  # host-local then needs the runtime's ranges
    (n.node.conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
    wait_for(lambda: n.network_ready()[0], 10, "NetworkReady")
    pb = n.pb
    n.rt.UpdateRuntimeConfig(
        pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(
                network_config=pb.NetworkConfig(pod_cidr="10.98.7.0/24")
            )
        ),
        timeout=30,
    )
    ip = n.status(n.run()).status.network.ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.98.7.0/24")


@pytest.fixture
def host_ifbs():
    """The bandwidth plugin's ifb devices make the kernel load `ifb`, which creates ifb0 and
    ifb1 in the machine's own namespace: remove the ones that were not there before."""
    before = set(run("ip", "-o", "link", "show", "type", "ifb").split())
    yield
    for word in run("ip", "-o", "link", "show", "type", "ifb").split():
        name = word.rstrip(":")
        if word.endswith(":") and name.startswith("ifb") and word not in before:
            subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


def test_bandwidth_annotations_shape_the_pods_traffic(cni, dockerd, host_ifbs) -> None:
    n = cni(bandwidth=True)
    sandbox_id = n.run(
        annotations={
            "kubernetes.io/ingress-bandwidth": "1M",
            "kubernetes.io/egress-bandwidth": "2M",
        }
    )
    (veth,) = n.node.netns.veths()
    # Ingress to the pod is shaped on the host side of its veth (a token bucket).
    qdisc = n.on_host("tc", "qdisc", "show", "dev", veth)
    assert "tbf" in qdisc
    assert "rate 1Mbit" in qdisc
    with pytest.raises(grpc.RpcError) as bad:
        n.run(annotations={"kubernetes.io/ingress-bandwidth": "lots"})
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert n.node.checkpoints() == [sandbox_id]


def _cri_dockerd_pod(n: Node, dockerd) -> tuple[str, str]:
    """A pod as cri-dockerd leaves it: a pause with network none, CNI ADD by its libcni
    (the result cached under the CNI cache dir), and its own sandbox checkpoint."""
    import base64

    uid = str(uuid.uuid4())
    name = f"k8s_POD_legacy_cni_{uid}_0"
    sandbox_id = dockerd.docker(
        "run", "-d", "--name", name, "--network", "none",
        "--label", "io.kubernetes.docker.type=podsandbox",
        "--label", "io.kubernetes.pod.name=legacy",
        "--label", "io.kubernetes.pod.namespace=cni",
        "--label", f"io.kubernetes.pod.uid={uid}",
        "--label", "io.kubernetes.container.name=POD",
        "crishim-test/pause:latest",
    ).strip()  # fmt: skip
    pid = sandbox_pid(dockerd, sandbox_id)
    conflist = n.node.network.conflist()
    caps = {"portMappings": [{"hostPort": 18083, "containerPort": 8080, "protocol": "tcp"}]}
    args = [["IgnoreUnknown", "1"], ["K8S_POD_NAMESPACE", "cni"], ["K8S_POD_NAME", "legacy"]]
    result = None
    for plugin in conflist["plugins"]:
        stdin = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        if result is not None:
            stdin["prevResult"] = result
        if plugin["type"] == "portmap":
            stdin["runtimeConfig"] = caps
        env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": sandbox_id,
            "CNI_NETNS": f"/proc/{pid}/ns/net",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": ";".join("=".join(a) for a in args),
            "CNI_PATH": "/usr/lib/cni",
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        done = subprocess.run(
            [*n.host_prefix, f"/usr/lib/cni/{plugin['type']}"],
            input=json.dumps(stdin).encode(), capture_output=True, env=env, check=True,
        )  # fmt: skip
        result = json.loads(done.stdout)
    cache = n.node.root / "cni-cache" / "results"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{conflist['name']}-{sandbox_id}-eth0").write_text(
        json.dumps(
            {
                "kind": "cniCacheV1",
                "containerId": sandbox_id,
                "config": base64.b64encode(json.dumps(conflist).encode()).decode(),
                "ifName": "eth0",
                "networkName": conflist["name"],
                "cniArgs": args,
                "capabilityArgs": caps,
                "result": result,
            }
        )
    )
    checkpoint = n.node.root / "cri-dockerd" / "sandbox"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / sandbox_id).write_text(
        json.dumps(
            {
                "version": "v1",
                "name": "legacy",
                "namespace": "cni",
                "data": {
                    "port_mappings": [
                        {"protocol": "tcp", "container_port": 8080, "host_port": 18083}
                    ]
                },
                "checksum": 0,
            }
        )
    )
    return sandbox_id, result["ips"][0]["address"].split("/")[0]


def test_a_pod_adopted_from_cri_dockerd_is_torn_down_cleanly(cni, dockerd) -> None:
    n = cni()
    n.node.crishim.stop()
    sandbox_id, ip = _cri_dockerd_pod(n, dockerd)
    n.pods.append(sandbox_id)
    assert n.node.network.reservations() == [ip]
    n.node.crishim.start()
    # Adopted at start: its IP is reported, and its netns is pinned while the pause lives.
    assert n.status(sandbox_id).status.network.ip == ip
    assert n.node.netns_handles() == [sandbox_id]
    dockerd.docker("kill", sandbox_id)  # the pause dies first: DEL must still find the veth
    n.stop(sandbox_id)
    _assert_nothing_left(n)
    assert not any("18083" in r for r in n.node.netns.nat_rules())
    n.remove(sandbox_id)
    assert n.node.checkpoints() == []


def test_the_default_network_of_the_install_command_is_dual_stack(cni, dockerd) -> None:
    from crishim.network import default

    n = cni(configured=False)
    conflist = default.conflist()
    # Reservations under the test's directory instead of /var/lib/cni of the machine.
    conflist["plugins"][0]["ipam"]["dataDir"] = str(n.node.root / "ipam")
    (n.node.conf_dir / default.FILENAME).write_text(json.dumps(conflist))
    wait_for(lambda: n.network_ready()[0], 10, "NetworkReady with the default network")
    sandbox_id = n.run()
    network = n.status(sandbox_id).status.network
    assert ipaddress.ip_address(network.ip) in ipaddress.ip_network(default.IPV4_RANGE)
    assert [ipaddress.ip_address(a.ip) in ipaddress.ip_network(default.IPV6_RANGE)
            for a in network.additional_ips] == [True]  # fmt: skip
    # ipMasq: the pod's traffic out of the node is masqueraded while it runs.
    assert any(network.ip in r for r in n.node.netns.nat_rules())
    n.stop(sandbox_id)
    n.remove(sandbox_id)
    assert not any(network.ip in r for r in n.node.netns.nat_rules())
    assert n.node.netns.veths() == []


def test_exec_in_a_cni_pod_sees_the_pods_network(cni) -> None:
    n = cni()
    sandbox_id = n.run()
    ip = n.status(sandbox_id).status.network.ip
    cid = n.serve_http(sandbox_id)
    done = n.rt.ExecSync(
        n.pb.ExecSyncRequest(
            container_id=cid, cmd=["ip", "-4", "addr", "show", "eth0"], timeout=10
        ),
        timeout=30,
    )
    assert done.exit_code == 0
    assert f"inet {ip}/24" in done.stdout.decode()


def test_a_verbose_status_reports_the_pods_last_cni_check(cni, dockerd) -> None:
    """`crictl inspectp` shows a pod's CNI CHECK and when it ran: live on a pod's first
    ask, kept for the asks after it (run again behind them once 30 s old)."""
    n = cni()
    healthy, broken = n.run(), n.run()

    def check(sandbox_id: str) -> dict:
        return json.loads(n.status(sandbox_id, verbose=True).info["info"])["networkCheck"]

    before = time.time_ns()
    first = check(healthy)
    assert first["result"] == "ok"
    assert before <= rfc3339.to_ns(first["checkedAt"]) <= time.time_ns()
    assert check(healthy) == first  # the kept outcome, with the time it ran

    ip = n.status(broken).status.network.ip
    pid = sandbox_pid(dockerd, broken)
    run("nsenter", f"--net=/proc/{pid}/ns/net", "ip", "addr", "del", f"{ip}/24", "dev", "eth0")
    # bridge's CHECK: "Failed to match addr 10.99.0.3/24 on interface eth0"
    assert f"addr {ip}/24" in check(broken)["result"]
