"""`crishim check`: can this node run crishim? One OK/WARN/FAIL line per check.

Exits non-zero when any check FAILs, so it can gate a deployment script.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crishim import errors
from crishim.config import Config
from crishim.docker import DockerClient
from crishim.docker import versions
from crishim.listen import probe


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
    return True, "exists and is writable" if probe_dir == path else f"will be created under {probe_dir}"


def host_cgroup_version() -> str:
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


async def run_checks(config: Config) -> list[Result]:
    results: list[Result] = []
    docker = DockerClient(config.docker_endpoint, call_timeout=10)
    try:
        version = await docker.connect()
        info = await docker.info()
    except errors.CrishimError as exc:
        results.append(Result("FAIL", "docker", f"{docker.endpoint}: {exc}"))
        for name in ("storage driver", "cgroup driver"):
            results.append(Result("FAIL", name, "not checked: Docker is unreachable"))
    else:
        results.append(Result("OK", "docker", (
            f"Docker {version.version} at {docker.endpoint}, API {version.api_version} "
            f"(crishim supports {versions.CLIENT_MIN}..{versions.CLIENT_MAX}, "
            f"uses {version.negotiated_api_version})"
        )))  # fmt: skip
        slow = info.storage_driver in ("vfs", "devicemapper")
        results.append(Result("WARN" if slow else "OK", "storage driver", info.storage_driver
                              + (" (slow and space-hungry; prefer overlay2)" if slow else "")))  # fmt: skip
        results.append(Result("OK", "cgroup driver",
                              f"{info.cgroup_driver} (Docker's cgroup v{info.cgroup_version}); "
                              "set the kubelet's cgroupDriver to match"))  # fmt: skip
    finally:
        await docker.close()

    cg = host_cgroup_version()
    results.append(Result("OK" if cg == "2" else "WARN", "cgroup version",
                          "v2" if cg == "2" else "v1 (deprecated by Kubernetes; v2 recommended)"))  # fmt: skip

    ok, detail = _writable_dir(Path(config.state_dir))
    results.append(Result("OK" if ok else "FAIL", "state dir", f"{config.state_dir} {detail}"))

    if config.listen.startswith("unix://"):
        path = Path(config.listen.removeprefix("unix://"))
        ok, detail = _writable_dir(path.parent)
        results.append(Result("OK" if ok else "FAIL", "socket dir", f"{path.parent} {detail}"))
        state = probe(path)
        if state == "live":
            results.append(Result("FAIL", "socket", f"{path} is served by another live process"))
        elif state == "not-a-socket":
            results.append(Result("FAIL", "socket", f"{path} exists and is not a socket"))
        elif state == "stale":
            results.append(Result("WARN", "socket", f"{path} is a stale socket; serve replaces it"))
        else:
            results.append(Result("OK", "socket", f"{path} is free"))
    else:
        ok = os.environ.get("LISTEN_FDS") is not None
        results.append(Result("OK" if ok else "WARN", "socket",
                              "fd:// (systemd socket activation)"))  # fmt: skip

    conf_dir = Path(config.cni_conf_dir)
    confs = sorted(conf_dir.glob("*.conf*")) if conf_dir.is_dir() else []
    results.append(Result("OK", "cni", f"{len(confs)} config(s) in {conf_dir}") if confs else
                   Result("WARN", "cni", f"no config in {conf_dir}: pods use Docker's default bridge"))  # fmt: skip
    return results
