"""`crishim check`: can this node run crishim? One OK/WARN/FAIL line per check.

Exits non-zero when any check FAILs, so it can gate a deployment script.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crishim.common import errors
from crishim.config import Config
from crishim.engine.docker import DockerClient, versions
from crishim.logs import owner as logowner
from crishim.network import conf as cni_conf
from crishim.network import forward
from crishim.network.checkpoint import ADOPTED_WITHOUT_STATE, CheckpointDir
from crishim.server.listen import probe


@dataclass(frozen=True, slots=True)
class Result:
    level: str  # OK | WARN | FAIL
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.level:<4} {self.name}: {self.detail}"


def _writable_dir(path: Path) -> tuple[bool, str]:
    """Whether crishim could create files in `path` (creating it if needed, as serve does)."""
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        return False, f"{probe_dir} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".crishim-check-"):
            pass
    except OSError as exc:
        return False, f"cannot write in {probe_dir}: {exc.strerror}"
    return (
        True,
        "exists and is writable" if probe_dir == path else f"will be created under {probe_dir}",
    )


def host_cgroup_version() -> str:
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


async def run_checks(config: Config) -> list[Result]:
    results = await docker_checks(config)
    results += await asyncio.to_thread(host_checks, config)
    return results + await firewall_results(config)


async def firewall_results(config: Config) -> list[Result]:
    """Whether the node's FORWARD chain (Docker's policy DROP) would drop pod traffic."""
    if config.network_plugin != "cni":
        return []
    loaded = await asyncio.to_thread(
        cni_conf.load, Path(config.cni_conf_dir), cni_conf.split_path(config.cni_bin_dir)
    )
    if loaded.network is None:
        return []
    net = loaded.network
    found = await forward.diagnose(net.name, tuple(p.type for p in net.plugins))
    return [Result("OK" if found.ok else "WARN", "firewall", found.message)]


async def docker_checks(config: Config) -> list[Result]:
    docker = DockerClient(config.docker_endpoint, call_timeout=10)
    try:
        version = await docker.connect()
        info = await docker.info()
    except errors.CrishimError as exc:
        unknown = "not checked: Docker is unreachable"
        return [
            Result("FAIL", "docker", str(exc)),
            Result("FAIL", "storage driver", unknown),
            Result("FAIL", "cgroup driver", unknown),
        ]
    finally:
        await docker.close()
    slow = info.storage_driver in ("vfs", "devicemapper")
    storage = info.storage_driver + (" (slow and space-hungry; prefer overlay2)" if slow else "")
    return [
        Result(
            "OK",
            "docker",
            f"Docker {version.version} at {docker.endpoint}, API {version.api_version} "
            f"(crishim supports {versions.CLIENT_MIN}..{versions.CLIENT_MAX}, "
            f"uses {version.negotiated_api_version})",
        ),
        Result("WARN" if slow else "OK", "storage driver", storage),
        Result(
            "OK",
            "cgroup driver",
            f"{info.cgroup_driver} (Docker's cgroup v{info.cgroup_version}); "
            "set the kubelet's cgroupDriver to match",
        ),
        await asyncio.to_thread(_log_owner_result, config, info.docker_root_dir or docker.endpoint),
    ]


def _log_owner_result(config: Config, docker_root: str) -> Result:
    path = logowner.lock_path(config.lock_dir, docker_root)
    pid = logowner.owner_pid(path)
    if pid is None:
        return Result("OK", "log copy", "no other crishim copies this daemon's container logs")
    return Result(
        "WARN",
        "log copy",
        f"crishim pid {pid} copies this daemon's container logs ({path}); "
        "a crishim started now stays passive until that one ends",
    )


def host_checks(config: Config) -> list[Result]:
    """Checks of files and directories (blocking; run in a thread)."""
    results = []
    if host_cgroup_version() == "2":
        results.append(Result("OK", "cgroup version", "v2"))
    else:
        results.append(
            Result("WARN", "cgroup version", "v1 (deprecated by Kubernetes; v2 recommended)")
        )

    ok, detail = _writable_dir(Path(config.state_dir))
    results.append(Result("OK" if ok else "FAIL", "state dir", f"{config.state_dir} {detail}"))

    if config.listen.startswith("unix://"):
        path = Path(config.listen.removeprefix("unix://"))
        ok, detail = _writable_dir(path.parent)
        results.append(Result("OK" if ok else "FAIL", "socket dir", f"{path.parent} {detail}"))
        results.append(_socket_result(path))
    else:
        passed = os.environ.get("LISTEN_FDS") is not None
        results.append(
            Result("OK" if passed else "WARN", "socket", "fd:// (systemd socket activation)")
        )

    results.append(cni_result(config))
    adopted = adopted_without_state(config)
    if adopted is not None:
        results.append(adopted)
    return results


def adopted_without_state(config: Config) -> Result | None:
    """cri-dockerd's pods adopted without its CNI state (read from their namespaces)."""
    kept = CheckpointDir(Path(config.state_dir) / "sandboxes").load_all()
    ids = sorted(
        cp.sandbox_id[:12]
        for cp in kept.values()
        if cp.adopted_from == ADOPTED_WITHOUT_STATE and not cp.torn_down
    )
    if not ids:
        return None
    return Result(
        "WARN",
        "adopted pods",
        f"{len(ids)} pod(s) of cri-dockerd adopted without its CNI state ({', '.join(ids)}): "
        f"their addresses were read from their namespaces; set --cni-cache-dir "
        f"(now {config.cni_cache_dir}) and --cri-dockerd-root (now {config.cri_dockerd_root}) "
        "to where cri-dockerd kept its state",
    )


def cni_result(config: Config) -> Result:
    """What pods' networks will be: the CNI network found, or why there is none."""
    if config.network_plugin == "docker":
        return Result("OK", "network", "docker mode: pods use Docker's default bridge")
    loaded = cni_conf.load(Path(config.cni_conf_dir), cni_conf.split_path(config.cni_bin_dir))
    if loaded.network is None:
        # A cluster's network add-on usually installs its config after the node joins.
        return Result("WARN", "network", f"cni mode, NetworkReady stays false: {loaded.problem}")
    net = loaded.network
    plugins = ", ".join(p.type for p in net.plugins)
    return Result(
        "OK",
        "network",
        f"cni network {net.name!r} from {net.source} (cniVersion {net.cni_version}; "
        f"plugins {plugins}, found on {config.cni_bin_dir})",
    )


def _socket_result(path: Path) -> Result:
    state = probe(path)
    if state == "live":
        return Result("FAIL", "socket", f"{path} is served by another live process")
    if state == "not-a-socket":
        return Result("FAIL", "socket", f"{path} exists and is not a socket")
    if state == "stale":
        return Result("WARN", "socket", f"{path} is a stale socket; serve replaces it")
    return Result("OK", "socket", f"{path} is free")
