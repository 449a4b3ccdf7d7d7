"""A CNI node for the tests: a network namespace of its own standing in for the
node's host network, a CNI config directory, and crishim in cni mode inside it.

crishim is started under `nsenter --net=<netns>` (its network namespace only:
it shares the host's mount namespace, so its netns handles survive a restart,
as on a real node). The CNI plugins it runs inherit that namespace, so the
bridge, the host side of every veth and portmap's iptables rules all live in
the test's namespace; deleting it at the end removes every one of them, and
nothing on the machine's own network is touched. Address ranges are the
test's own (they exist only inside that namespace). host-local keeps its
reservations under the test's directory (`dataDir`), where tests can count them.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.procs import run, umount_below

PLUGIN_DIR = "/usr/lib/cni"
NETNS_DIR = Path("/run/netns")


class TestNetns:
    """A named network namespace (`ip netns add`), removed by destroy()."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = NETNS_DIR / name

    def create(self) -> TestNetns:
        run("ip", "netns", "add", self.name)
        run("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def destroy(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

    def run(self, *cmd: str, check: bool = True) -> str:
        """A command inside the namespace; its output."""
        if check:
            return run("ip", "netns", "exec", self.name, *cmd)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd], capture_output=True, check=False
        )
        return proc.stdout.decode() + proc.stderr.decode()

    def links(self) -> list[str]:
        out = json.loads(self.run("ip", "-j", "link", "show"))
        return [link["ifname"] for link in out]

    def veths(self) -> list[str]:
        return [name for name in self.links() if name.startswith("veth")]

    def nat_rules(self) -> list[str]:
        return [
            line
            for line in self.run("iptables-save", "-t", "nat").splitlines()
            if line.startswith("-A")
        ]

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a program in this namespace (and only this one)."""
        return ("nsenter", f"--net={self.path}")


@dataclass
class Network:
    """A bridge + host-local (+ portmap) network of the test run."""

    name: str
    bridge: str
    subnets: tuple[str, ...]
    data_dir: Path
    cni_version: str = "1.0.0"
    portmap: bool = True
    bandwidth: bool = False

    @property
    def gateway(self) -> str:
        net = self.subnets[0].split("/")[0]
        return net.rsplit(".", 1)[0] + ".1"

    def conflist(self) -> dict:
        plugins: list[dict] = [
            {
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": s}] for s in self.subnets],
                    "dataDir": str(self.data_dir),
                },
            }
        ]
        if self.portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        if self.bandwidth:
            plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
        return {"cniVersion": self.cni_version, "name": self.name, "plugins": plugins}

    def write(self, conf_dir: Path, filename: str = "10-test.conflist") -> Path:
        conf_dir.mkdir(parents=True, exist_ok=True)
        path = conf_dir / filename
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.conflist(), indent=2))
        os.replace(tmp, path)
        return path

    def reservations(self) -> list[str]:
        """Addresses host-local holds (one file per address, beside last_reserved_ip.*)."""
        directory = self.data_dir / self.name
        if not directory.is_dir():
            return []
        return sorted(
            p.name
            for p in directory.iterdir()
            if not p.name.startswith("last_reserved_ip") and p.name != "lock"
        )


class CniNode:
    """A test netns, a CNI config dir (with `network` written if `configured`), and
    crishim in cni mode inside the netns, on the given Docker daemon."""

    def __init__(
        self,
        root: Path,
        docker_endpoint: str,
        name: str,
        network: Network,
        *extra: str,
        configured: bool = True,
    ) -> None:
        from tests.harness.crishim import CrishimProcess

        self.root = root
        self.netns = TestNetns(name)
        self.conf_dir = root / "net.d"
        self.network = network
        self.configured = configured
        self.crishim = CrishimProcess(
            root / "crishim",
            docker_endpoint,
            "--network-plugin=cni",
            f"--cni-conf-dir={self.conf_dir}",
            f"--cni-bin-dir={PLUGIN_DIR}",
            f"--cni-cache-dir={root / 'cni-cache'}",
            f"--cri-dockerd-root={root / 'cri-dockerd'}",
            *extra,
            prefix=self.netns.prefix,
        )

    def start(self) -> CniNode:
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.netns.create()
        if self.configured:
            self.network.write(self.conf_dir)
        self.crishim.start()
        return self

    def stop(self) -> None:
        self.crishim.stop()
        self.netns.destroy()
        # crishim's netns handle directory is a mount point of its own (see network/netns.py).
        umount_below(self.root)

    @property
    def state_dir(self) -> Path:
        return self.crishim.state_dir

    def checkpoints(self) -> list[str]:
        directory = self.state_dir / "sandboxes"
        return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []

    def netns_handles(self) -> list[str]:
        directory = self.state_dir / "netns"
        return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
