"""A private Docker daemon for the test suite.

Its own data root, exec root, pidfile and socket under a temp dir, and its own
bridge with an address range no other interface on the machine uses, so it
cannot disturb (or be disturbed by) a daemon already running. The daemon leaves
iptables alone (--iptables=false): the suite's containers talk to the host and to
each other over their bridge. Where the machine's own Docker runs, FORWARD drops
by default and the kernel passes bridged traffic through it, so the harness
accepts its bridge's own traffic there (`-i <bridge> -o <bridge>`, as Docker does
for docker0) and removes that rule with the bridge. Stopping it ends exactly the
process it started.

Which engine: Debian's dockerd (20.10), or the one CRISHIM_TEST_DOCKERD names
(scripts/test.sh runs the suite once more on the Docker 28.5 of
../shared/engines). Its folder goes first on PATH, so that it finds its own
docker-proxy; containerd and runc are Debian's for both.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.harness.cni import TestNetns
from tests.harness.procs import run, stop_process, umount_below, unix_http_ok, wait_for

DEBIAN_DOCKERD = "/usr/sbin/dockerd"
DOCKERD = os.environ.get("CRISHIM_TEST_DOCKERD") or DEBIAN_DOCKERD
DOCKER = "/usr/bin/docker"


def engine_env() -> dict[str, str]:
    """The environment the engine runs in: its own folder first on PATH."""
    folder = str(Path(DOCKERD).parent)
    return {**os.environ, "PATH": f"{folder}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def engine_version() -> str:
    """`dockerd --version`'s number, e.g. 20.10.24 or 28.5.2."""
    out = subprocess.run([DOCKERD, "--version"], capture_output=True, text=True, check=True)
    words = out.stdout.replace(",", " ").split()
    return words[words.index("version") + 1] if "version" in words else out.stdout.strip()


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = run("ip", "-4", "-o", "addr", "show") + run("ip", "-4", "route", "show")
    nets = []
    for word in out.split():
        if "/" in word and word[0].isdigit():
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(word, strict=False))
    return nets


# Inside a namespace of its own nothing else uses any range.
NETNS_SUBNET = ipaddress.ip_network("10.233.200.0/24")


def pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    # Two sessions at once (the suite on two engines) start at different ranges.
    start = os.getpid() % 55
    for third in [200 + (start + i) % 55 for i in range(55)]:
        candidate = ipaddress.ip_network(f"10.233.{third}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise RuntimeError("no free 10.233.x.0/24 range for the test bridge")


class PrivateDockerd:
    def __init__(self, root: Path, name: str, *extra: str, netns: TestNetns | None = None) -> None:
        self.root = root
        # A network namespace of its own (the conformance node): its bridge, its
        # containers' host network and its registry on 127.0.0.1 all live there.
        self.netns = netns
        self.name = name  # also the bridge name: at most 15 characters
        self.extra = extra  # more dockerd flags (e.g. --experimental)
        self.socket = root / "docker.sock"
        self.endpoint = f"unix://{self.socket}"
        self.config_dir = root / "client-config"  # the docker CLI's, never ~/.docker
        self.log_path = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.subnet: ipaddress.IPv4Network | None = None

    def start(self) -> PrivateDockerd:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(exist_ok=True)
        if self.subnet is None:
            self.subnet = pick_subnet() if self.netns is None else NETNS_SUBNET
            gateway = f"{next(self.subnet.hosts())}/{self.subnet.prefixlen}"
            ip = ("ip",) if self.netns is None else ("ip", "-n", self.netns.name)
            run(*ip, "link", "add", self.name, "type", "bridge")
            run(*ip, "addr", "add", gateway, "dev", self.name)
            run(*ip, "link", "set", self.name, "up")
            if self.netns is None:
                run("iptables", "-w", "-I", "FORWARD", *self._forward_rule())
        args = [
            *(self.netns.prefix if self.netns is not None else ()),
            DOCKERD,
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host={self.endpoint}",
            f"--bridge={self.name}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--storage-driver=overlay2",
            *self.extra,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=engine_env()
            )
        wait_for(self._ready, 60, f"private dockerd {self.name} (see {self.log_path})")
        return self

    def _forward_rule(self) -> list[str]:
        comment = ["-m", "comment", "--comment", f"crishim tests {self.name}"]
        return ["-i", self.name, "-o", self.name, *comment, "-j", "ACCEPT"]

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dockerd exited: {self.log_path.read_text()[-2000:]}")
        return unix_http_ok(self.socket)

    def stop_daemon(self) -> None:
        """Stop the daemon only (it can be started again); its bridge stays."""
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        self.stop_daemon()
        if self.subnet is not None and self.netns is None:
            subprocess.run(["ip", "link", "del", self.name], check=False, capture_output=True)
            delete = ["iptables", "-w", "-D", "FORWARD", *self._forward_rule()]
            subprocess.run(delete, check=False, capture_output=True)
            self.subnet = None
        umount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def docker(self, *args: str, input: bytes | None = None) -> str:
        """The docker CLI against this daemon (used by the harness to set things up)."""
        env = {"DOCKER_HOST": self.endpoint, "DOCKER_CONFIG": str(self.config_dir)}
        return run(DOCKER, *args, env=env, input=input)

    @property
    def api(self) -> tuple[int, int]:
        """The daemon's highest API version, e.g. (1, 41) for 20.10, (1, 51) for 28.5."""
        major, minor = self.docker("version", "--format", "{{.Server.APIVersion}}").split(".")
        return int(major), int(minor)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def unique_name(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 100000}"[:15]
