"""Runtime identity and readiness: what Version, Status and RuntimeConfig report.

All three answer from memory (crishim.engine.state keeps the daemon's state current
in the background): the kubelet polls Status every few seconds and crictl sends
Version with every command, and neither should cost the daemon a request.
RuntimeReady is the engine's heartbeat verdict (at most one beat and one ping
timeout old). NetworkReady: in cni mode, whether a usable CNI config was found
(kept current by crishim.network's watcher); in docker mode, whether Docker's
default bridge network exists with an address range.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field

import structlog

from crishim import __version__
from crishim.common import deadlines, errors
from crishim.config import Config
from crishim.engine.docker import versions
from crishim.engine.docker.types import EngineInfo
from crishim.engine.state import Engine
from crishim.network.pods import PodNetworks

log = structlog.get_logger(__name__)

RUNTIME_NAME = "docker"
CRI_API_VERSION = "v1"
# What the kubelet's own VersionResponse.version has always been.
KUBELET_API_VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Readiness:
    conditions: tuple[Condition, ...]
    handlers: tuple[str, ...]
    info: dict[str, str] = field(default_factory=dict)
    # Every handler's feature: Docker 25+ on Linux 5.12+ (docker.versions).
    recursive_read_only: bool = False


@dataclass(frozen=True, slots=True)
class VersionInfo:
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


class RuntimeStatus:
    """Answers identity and readiness questions; remembers the pod CIDR."""

    def __init__(self, config: Config, engine: Engine, networks: PodNetworks) -> None:
        self.config = config
        self.engine = engine
        self.docker = engine.docker
        self.networks = networks

    async def version(self) -> VersionInfo:
        """The engine's version as last known (also while Docker does not answer:
        `crictl info` and the kubelet must still see a runtime; Status says it is not ready)."""
        engine = self.docker.version
        if engine is None:  # never reached yet: ask once, or fail with why
            async with deadlines.limit(self.config.docker_ping_timeout, "docker version"):
                engine = await self.docker.connect()
        return VersionInfo(RUNTIME_NAME, engine.version, CRI_API_VERSION)

    async def readiness(self, verbose: bool = False) -> Readiness:
        engine = self.engine
        if not engine.reachable or engine.info is None:
            runtime = Condition("RuntimeReady", False, "DockerDaemonNotReady", engine.error)
            network = Condition(
                "NetworkReady",
                False,
                "DockerDaemonNotReady",
                "docker is not reachable, so neither is its network",
            )
            return Readiness((runtime, network), ("",), self._info(None) if verbose else {})
        runtime = Condition("RuntimeReady", True)
        network = self._cni_condition() if self.networks.mode == "cni" else self._bridge_condition()
        handlers = ("", *engine.info.runtimes)
        version = self.docker.version
        rro = version is not None and versions.recursive_read_only(
            version.negotiated_api_version, os.uname().release
        )
        info = self._info(engine.info) if verbose else {}
        return Readiness((runtime, network), handlers, info, recursive_read_only=rro)

    def _cni_condition(self) -> Condition:
        ready = self.networks.readiness()
        if ready.ready and ready.message:  # ready, with a warning (the node's firewall)
            return Condition("NetworkReady", True, "PodTrafficMayBeDropped", ready.message)
        if ready.ready:
            return Condition("NetworkReady", True)
        return Condition("NetworkReady", False, "NetworkPluginNotReady", ready.message)

    def _bridge_condition(self) -> Condition:
        bridge = self.engine.bridge
        if bridge.state is None:
            return Condition("NetworkReady", False, "NetworkPluginNotReady", bridge.error)
        if not bridge.state.subnets:
            return Condition(
                "NetworkReady",
                False,
                "NetworkPluginNotReady",
                "docker's default bridge network has no address range",
            )
        return Condition("NetworkReady", True)

    def _info(self, engine: EngineInfo | None) -> dict[str, str]:
        v = self.docker.version
        docker = {"endpoint": self.docker.endpoint, "reachable": engine is not None}
        if v is not None:
            docker |= {
                "version": v.version,
                "apiVersion": v.api_version,
                "minApiVersion": v.min_api_version,
                "negotiatedApiVersion": v.negotiated_api_version,
                "kernelVersion": v.kernel_version,
            }
        if engine is not None:
            docker |= {
                "storageDriver": engine.storage_driver,
                "cgroupDriver": engine.cgroup_driver,
                "cgroupVersion": engine.cgroup_version,
                "rootDir": engine.docker_root_dir,
                "defaultRuntime": engine.default_runtime,
                "runtimes": list(engine.runtimes),
            }
        return {
            "docker": json.dumps(docker),
            "config": json.dumps(self.config.as_dict()),
            "crishim": json.dumps({"version": __version__}),
            "podCIDRs": json.dumps(list(self.networks.pod_cidrs)),
            "network": json.dumps(self.networks.describe()),
        }

    async def cgroup_driver(self) -> str:
        """'systemd' or 'cgroupfs', as Docker actually runs containers."""
        info = await self.engine.current_info()
        return "systemd" if info.cgroup_driver == "systemd" else "cgroupfs"

    def set_pod_cidr(self, value: str) -> None:
        """Remember the node's pod CIDR(s): one or two (dual-stack), comma-separated."""
        cidrs = tuple(c.strip() for c in value.split(",") if c.strip())
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise errors.InvalidArgument(
                    f"runtime_config.network_config.pod_cidr: {cidr!r} is not a CIDR"
                ) from None
        if len(cidrs) > 2:
            raise errors.InvalidArgument(
                "runtime_config.network_config.pod_cidr: at most two CIDRs"
            )
        if cidrs != self.networks.pod_cidrs:
            log.info("pod_cidr_updated", pod_cidrs=list(cidrs))
        # New pods get these as CNI's ipRanges (plugins that declare the capability).
        self.networks.pod_cidrs = cidrs
