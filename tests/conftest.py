"""Fixtures of the whole suite: the real parts every integration test runs on.

Session-wide: one private dockerd, the test images built into it, one registry
with htpasswd auth holding those images, and one crishim serving on a temp
socket against that dockerd. Tests that must stop or break something start
their own (see the `factory` fixtures). Everything started is stopped by the
fixture that started it, by PID.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.harness import cgroupdirs
from tests.harness import images as images_mod
from tests.harness.clients import Official, Own, generate_official_stubs
from tests.harness.cni import CniNode, Network
from tests.harness.crishim import CrishimProcess
from tests.harness.dockerd import PrivateDockerd, unique_name
from tests.harness.procs import umount_below
from tests.harness.registry import Registry
from tests.harness.starve import CpuHogs
from tests.harness.tokens import TokenServer


def pytest_terminal_summary(terminalreporter) -> None:
    """The conformance leg's counts, in the test command's own output."""
    from tests.harness import conformance

    for line in conformance.SUMMARY:
        terminalreporter.write_line(f"conformance: {line}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--starve",
        action="store_true",
        help="run CPU hogs on every core for the whole session (tests/harness/starve.py)",
    )


@pytest.fixture(scope="session", autouse=True)
def _starved_session(request: pytest.FixtureRequest) -> Iterator[None]:
    """With --starve, the whole session runs on a machine whose cores are all busy."""
    if not request.config.getoption("--starve"):
        yield
        return
    hogs = CpuHogs().start()
    yield
    hogs.stop()


@pytest.fixture
def starved(request: pytest.FixtureRequest) -> Iterator[None]:
    """CPU hogs on every core while this test runs (already there with --starve)."""
    if request.config.getoption("--starve"):
        yield
        return
    hogs = CpuHogs().start()
    yield
    hogs.stop()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the suite starts its own dockerd and must run as root")


# A failed test's report carries what the session's crishim logged while it ran:
# the suite removes its workdir at the end, and with it the whole log.
_LOG_START = pytest.StashKey[int]()
LOG_LINES_ON_FAILURE = 150


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    proc = getattr(item, "funcargs", {}).get("crishim")
    if isinstance(proc, CrishimProcess):
        item.stash[_LOG_START] = proc.log_size()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed and _LOG_START in item.stash:
        proc = item.funcargs["crishim"]
        lines = proc.log_since(item.stash[_LOG_START]).splitlines()[-LOG_LINES_ON_FAILURE:]
        text = "\n".join(line[:600] for line in lines)
        report.sections.append(("crishim log during the test (last lines)", text))
    return report


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Short paths: unix socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="crt-", dir="/tmp"))
    yield root
    # A crishim in cni mode (the default) leaves its netns handle directory mounted on
    # itself, as it must on a node: unmount whatever the session left below its root.
    umount_below(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd(workdir: Path) -> Iterator[PrivateDockerd]:
    daemon = PrivateDockerd(workdir / "dockerd", unique_name("crtbr")).start()
    yield daemon
    daemon.destroy()


@pytest.fixture(scope="session")
def test_images(dockerd: PrivateDockerd, workdir: Path) -> images_mod.TestImages:
    return images_mod.build(dockerd, workdir / "build")


@pytest.fixture(scope="session")
def registry(
    workdir: Path, dockerd: PrivateDockerd, test_images: images_mod.TestImages
) -> Iterator[Registry]:
    reg = Registry(workdir / "registry").start()
    # Images of their own (own IDs), present only in the registry: tests pull and
    # remove them without touching the local test images.
    for base, name in (
        (test_images.busybox, "crishim-test/busybox:1.0"),
        (test_images.user_numeric, "crishim-test/user-numeric:1.0"),
        (test_images.user_named, "crishim-test/user-named:1.0"),
    ):
        local = images_mod.derive(dockerd, base, f"remote-{name}", workdir / "build", "registry")
        pushed = reg.push(dockerd, local, name)
        dockerd.docker("rmi", local, pushed)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(workdir: Path, dockerd: PrivateDockerd, test_images) -> Iterator[Registry]:
    """A registry with token auth (bearer JWTs from the harness's token server)."""
    tokens = TokenServer(workdir / "tokens", "crishim", "t0ken-pw").start()
    reg = Registry(workdir / "token-registry", "crishim", "t0ken-pw", tokens=tokens).start()
    local = images_mod.derive(
        dockerd,
        test_images.busybox,
        "remote-token/busybox:1.0",
        workdir / "build",
        "token registry",
    )
    pushed = reg.push(dockerd, local, "crishim-test/busybox:1.0")
    dockerd.docker("rmi", local, pushed)
    yield reg
    reg.stop()
    tokens.stop()


@pytest.fixture(scope="session")
def crishim(
    workdir: Path, dockerd: PrivateDockerd, test_images: images_mod.TestImages
) -> Iterator[CrishimProcess]:
    # test_images: the pause image must exist locally, or crishim would try to pull it.
    proc = CrishimProcess(workdir / "crishim", dockerd.endpoint).start()
    yield proc
    code = proc.stop()
    assert code == 0, f"crishim exited {code}: {proc.log_text()[-3000:]}"


@pytest.fixture(scope="session")
def official_stubs(workdir: Path) -> tuple[ModuleType, ModuleType]:
    return generate_official_stubs(workdir / "stubs")


@pytest.fixture(scope="session")
def pb(official_stubs: tuple[ModuleType, ModuleType]) -> ModuleType:
    """The official protobuf classes of runtime.v1."""
    return official_stubs[0]


@pytest.fixture
def official(
    crishim: CrishimProcess, official_stubs: tuple[ModuleType, ModuleType]
) -> Iterator[Official]:
    client = Official(crishim.socket, *official_stubs)
    yield client
    client.close()


@pytest.fixture
async def own(crishim: CrishimProcess) -> Iterator[Own]:
    client = Own(crishim.socket)
    yield client
    client.close()


@pytest.fixture
def dockerd_factory(workdir: Path) -> Iterator:
    """Start extra private daemons a test may stop, pause or break."""
    started: list[PrivateDockerd] = []

    def make(*extra: str) -> PrivateDockerd:
        root = Path(tempfile.mkdtemp(prefix="dockerd-", dir=workdir))
        d = PrivateDockerd(root, unique_name(f"crtb{len(started)}x"), *extra)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        d.destroy()


@pytest.fixture
def crishim_factory(workdir: Path, test_images: images_mod.TestImages) -> Iterator:
    """Start extra crishim processes; each is stopped (by PID) after the test.

    Depends on the test images so that a crishim on the session's daemon always finds
    its pause image locally (it would otherwise try to pull it from the internet).
    """
    started: list[CrishimProcess] = []

    def make(docker_endpoint: str, *extra: str, wait: bool = True, **kw) -> CrishimProcess:
        root = Path(tempfile.mkdtemp(prefix="crishim-", dir=workdir))
        proc = CrishimProcess(root, docker_endpoint, *extra, **kw)
        started.append(proc)
        return proc.start(wait=wait)

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def private_node(dockerd_factory, crishim_factory, official_stubs, workdir):
    """A Docker daemon of its own, with the test images, and a crishim on it.

    For tests that stop or restart Docker or crishim, or that need the only
    crishim on a daemon (every crishim copies all its daemon's container logs).
    Yields (daemon, crishim process, official client).
    """
    daemon = dockerd_factory()
    images_mod.build(daemon, workdir / f"build-{daemon.name}")
    proc = crishim_factory(daemon.endpoint)
    client = Official(proc.socket, *official_stubs)
    yield daemon, proc, client
    client.close()


@pytest.fixture
def cni_node_factory(workdir: Path, dockerd: PrivateDockerd, test_images) -> Iterator:
    """Start crishim in cni mode in a network namespace of its own (see harness/cni.py).

    The node's network is a bridge + host-local + portmap conflist over `subnets`;
    `configured=False` starts with an empty config dir (NetworkReady false) and
    leaves writing it to the test. Each node is stopped, and its namespace
    deleted, after the test.
    """
    started: list[CniNode] = []

    def make(
        *extra: str,
        subnets: tuple[str, ...] = ("10.99.0.0/24",),
        configured: bool = True,
        **network_kw,
    ) -> CniNode:
        root = Path(tempfile.mkdtemp(prefix="cni-", dir=workdir))
        name = unique_name(f"crtn{len(started)}x")
        network = Network("crt-pods", "cni0", subnets, root / "ipam", **network_kw)
        node = CniNode(root, dockerd.endpoint, name, network, *extra, configured=configured)
        started.append(node)
        return node.start()

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def pod_cgroup() -> Iterator[str]:
    """A pod cgroup parent of the test's own (cgroupfs), removed from every hierarchy after
    the test (request it before the fixtures that remove the test's pods)."""
    parent = cgroupdirs.unique_parent("crishim-test")
    yield parent
    cgroupdirs.remove(parent)
