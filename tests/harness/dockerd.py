"""A private Docker daemon for the test suite.

Its own data root, exec root, pidfile and socket under a temp dir, and its own
bridge with an address range no other interface on the machine uses, so it
cannot disturb (or be disturbed by) a daemon already running. iptables rules
are left alone (--iptables=false): the suite's containers talk only to the
host over their bridge. Stopping it ends exactly the process it started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.harness.procs import run, stop_process, umount_below, unix_http_ok, wait_for

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = run("ip", "-4", "-o", "addr", "show") + run("ip", "-4", "route", "show")
    nets = []
    for word in out.split():
        if "/" in word and word[0].isdigit():
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for third in range(200, 255):
        candidate = ipaddress.ip_network(f"10.233.{third}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise RuntimeError("no free 10.233.x.0/24 range for the test bridge")


class PrivateDockerd:
    def __init__(self, root: Path, name: str, *extra: str) -> None:
        self.root = root
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
            self.subnet = pick_subnet()
            gateway = f"{next(self.subnet.hosts())}/{self.subnet.prefixlen}"
            run("ip", "link", "add", self.name, "type", "bridge")
            run("ip", "addr", "add", gateway, "dev", self.name)
            run("ip", "link", "set", self.name, "up")
        args = [
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
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 60, f"private dockerd {self.name} (see {self.log_path})")
        return self

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
        if self.subnet is not None:
            subprocess.run(["ip", "link", "del", self.name], check=False, capture_output=True)
            self.subnet = None
        umount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def docker(self, *args: str, input: bytes | None = None) -> str:
        """The docker CLI against this daemon (used by the harness to set things up)."""
        env = {"DOCKER_HOST": self.endpoint, "DOCKER_CONFIG": str(self.config_dir)}
        return run(DOCKER, *args, env=env, input=input)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def unique_name(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 100000}"[:15]
