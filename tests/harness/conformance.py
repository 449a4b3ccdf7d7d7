"""The conformance kit of ../shared/conformance (critest, crictl, cri-dockerd), and a node
to run it on.

A conformance node is a network namespace of the test's own holding everything
critest talks to: a private dockerd (its bridge, and what its containers call the
host network), the kit's registry on 127.0.0.1:443, crishim in cni mode with a
bridge network of the test's, and critest or crictl themselves (all through
`nsenter --net`). So the suite's pods, host-network pods and hostPorts are
reached exactly as on a node, and nothing on the machine's own network is touched.

The kit's setup.sh builds stand-ins for every image critest pulls into the daemon
and starts the registry that answers for registry.k8s.io and gcr.io (it adds an
/etc/hosts line and /etc/docker/certs.d/<host>/ca.crt, as the kit documents). Each
node gets a kit home of its own (setup.sh's KIT), so its registry is its own, and
the node stops it (`setup.sh --stop`, by its pidfile). Every kit home uses the one
CA of the machine's default kit home: certs.d holds one CA per registry name for
every dockerd, and two nodes (the suite on two engines at once) must not replace
each other's; they share its busybox root filesystem too. Both are made (by the kit's
own scripts) under an exclusive lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.cni import PLUGIN_DIR, Network, TestNetns
from tests.harness.crishim import CrishimProcess
from tests.harness.dockerd import PrivateDockerd, unique_name

REPO = Path(__file__).resolve().parents[2]
KIT = Path(os.environ.get("CRISHIM_CONFORMANCE_KIT") or REPO.parent / "shared" / "conformance")
CRITEST_SH = KIT / "critest.sh"
CRICTL = KIT / "bin" / "crictl"
CRI_DOCKERD_SH = KIT / "start-cri-dockerd.sh"
# The machine's default kit home (setup.sh's KIT): its CA is the one every node uses,
# and its rootfs.tar the one every node's images are built from.
SHARED_CA = Path("/opt/cri-conformance/registry/certs")
SHARED_ROOTFS = Path("/opt/cri-conformance/images/rootfs.tar")
LOCK = Path("/tmp/crishim-conformance-kit.lock")
PAUSE = "registry.k8s.io/pause:3.6"


def present() -> bool:
    return CRITEST_SH.is_file() and CRICTL.is_file()


class ConformanceNode:
    """A namespace with a private dockerd, the kit's registry and images, and crishim."""

    made = 0  # nodes of this process: each namespace and bridge named apart

    def __init__(self, root: Path, *crishim_flags: str) -> None:
        ConformanceNode.made += 1
        n = ConformanceNode.made
        self.root = root
        self.netns = TestNetns(unique_name(f"crtcf{n}x"))
        self.kit_home = root / "kit"
        # --experimental: Docker's checkpoints (crictl checkpoint) need it.
        self.dockerd = PrivateDockerd(
            root / "dockerd", unique_name(f"crtcb{n}x"), "--experimental", netns=self.netns
        )
        self.conf_dir = root / "net.d"
        self.network = Network("crt-conformance", "cni0", ("10.88.0.0/16",), root / "ipam")
        self.crishim = CrishimProcess(
            root / "crishim",
            self.dockerd.endpoint,
            "--network-plugin=cni",
            f"--cni-conf-dir={self.conf_dir}",
            f"--cni-bin-dir={PLUGIN_DIR}",
            f"--cni-cache-dir={root / 'cni-cache'}",
            f"--cri-dockerd-root={root / 'cri-dockerd'}",
            f"--pause-image={PAUSE}",
            *crishim_flags,
            prefix=self.netns.prefix,
        )
        self._registry_started = False

    @property
    def socket(self) -> Path:
        return self.crishim.socket

    def start(self, crishim: bool = True) -> ConformanceNode:
        """Everything; with crishim=False all but crishim (a test starts it later)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.netns.create()
        self.dockerd.start()
        self._setup_kit()
        self.network.write(self.conf_dir)
        if crishim:
            self.crishim.start()
        return self

    def _setup_kit(self) -> None:
        log = self.root / "setup.log"
        certs = self.kit_home / "registry" / "certs"
        with open(LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (SHARED_CA / "server.crt").exists():
                shutil.copytree(SHARED_CA, certs, dirs_exist_ok=True)
            self._rootfs(log)
            self._registry_started = True
            with log.open("ab") as out:
                proc = subprocess.run(
                    [*self.netns.prefix, str(KIT / "setup.sh"), self.dockerd.endpoint],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._kit_env(),
                    check=False,
                    timeout=900,
                )
            if proc.returncode:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"setup.sh failed ({proc.returncode}): {tail}")
            if not (SHARED_CA / "server.crt").exists():
                shutil.copytree(certs, SHARED_CA, dirs_exist_ok=True)

    def _rootfs(self, log: Path) -> None:
        """The busybox root filesystem of the kit's images: make-rootfs.sh downloads Debian's
        busybox package, which the node's namespace cannot, so it runs outside, once a machine."""
        made = self.kit_home / "images" / "rootfs.tar"
        if not SHARED_ROOTFS.exists():
            shutil.copytree(KIT / "images", self.kit_home / "images", dirs_exist_ok=True)
            with log.open("ab") as out:
                subprocess.run(
                    [str(self.kit_home / "images" / "make-rootfs.sh")],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=self._kit_env(), check=True, timeout=300,
                )  # fmt: skip
            SHARED_ROOTFS.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(made, SHARED_ROOTFS)
        made.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_ROOTFS, made)

    def _kit_env(self) -> dict[str, str]:
        # setup.sh calls the docker CLI by name: Debian's, which speaks to both engines.
        path = f"/usr/bin:{os.environ.get('PATH', '/bin')}"
        return {**os.environ, "KIT": str(self.kit_home), "PATH": path}

    def run(self, *cmd: str, timeout: float = 120, check: bool = True) -> str:
        """A command inside the node's namespace (crictl, curl); its standard output."""
        proc = subprocess.run(
            [*self.netns.prefix, *cmd],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode:
            said = proc.stderr.decode()
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {said}")
        return proc.stdout.decode()

    def crictl_args(self, *args: str, socket: Path | None = None) -> list[str]:
        endpoint = f"unix://{socket or self.socket}"
        return [
            *self.netns.prefix,
            str(CRICTL),
            "--runtime-endpoint", endpoint,
            "--image-endpoint", endpoint,
            "--timeout", "60s",
            *args,
        ]  # fmt: skip

    def crictl(self, *args: str, timeout: float = 120, socket: Path | None = None) -> str:
        """crictl (the kit's) against this node's crishim (or the CRI at `socket`); its
        standard output."""
        proc = subprocess.run(
            self.crictl_args(*args, socket=socket),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if proc.returncode:
            said = proc.stderr.decode()
            raise RuntimeError(f"crictl {' '.join(args)} failed ({proc.returncode}): {said}")
        return proc.stdout.decode()

    def critest(self, out: Path, *flags: str, timeout: float = 1500) -> list[Spec]:
        """critest.sh against this node's crishim; every spec of its report."""
        return run_critest([*self.netns.prefix, str(CRITEST_SH)], self.socket, out, *flags,
                           timeout=timeout)  # fmt: skip

    def stop(self) -> None:
        self.crishim.stop()
        if self._registry_started:
            subprocess.run(
                [str(KIT / "setup.sh"), "--stop"], env=self._kit_env(), check=False,
                capture_output=True,
            )  # fmt: skip
        self.dockerd.destroy()
        self.netns.destroy()


@dataclass(frozen=True)
class Spec:
    name: str
    state: str  # passed | failed | skipped | panicked | timedout | pending
    message: str

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "panicked", "timedout")


def run_critest(
    command: list[str], cri_socket: Path, out: Path, *flags: str, timeout: float = 1500
) -> list[Spec]:
    """critest.sh (`command`) against the socket; every spec of its report."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "critest.sh.log").open("wb") as log:
        subprocess.run(
            [*command, f"unix://{cri_socket}", *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OUT": str(out)},
            check=False,
            timeout=timeout,
        )
    report = out / "report.json"
    if not report.exists():
        tail = (out / "critest.sh.log").read_text()[-3000:]
        raise RuntimeError(f"critest wrote no report: {tail}")
    specs = []
    for suite in json.loads(report.read_text()):
        for s in suite.get("SpecReports") or []:
            if s.get("LeafNodeType") != "It":
                continue
            name = " ".join([*(s.get("ContainerHierarchyTexts") or []), s.get("LeafNodeText", "")])
            message = " ".join(((s.get("Failure") or {}).get("Message") or "").split())
            specs.append(Spec(name, s["State"], message))
    return specs


def expected_failures(path: Path, engine: str) -> dict[str, str]:
    """Spec name -> reason, for the lines of `path` that apply to `engine` (its major.minor).

    A line is `<engines>: <spec name> -- <reason>`, engines a comma list like 20.10,28.5
    or `all`; '#' starts a comment line.
    """
    major_minor = ".".join(engine.split(".")[:2])
    wanted: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        engines, rest = line.split(":", 1)
        name, _, reason = rest.partition(" -- ")
        if engines.strip() == "all" or major_minor in [e.strip() for e in engines.split(",")]:
            wanted[name.strip()] = reason.strip()
    return wanted


# One line per critest run, printed in the session's summary (tests/conftest.py).
SUMMARY: list[str] = []
