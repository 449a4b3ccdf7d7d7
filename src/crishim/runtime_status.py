"""Runtime identity and readiness: what Version, Status and RuntimeConfig report.

RuntimeReady comes from a live Docker check on every call (the kubelet polls
Status every few seconds, and a stale "ready" would hide a dead daemon).
NetworkReady: in cni mode, whether a usable CNI config was found (kept
current by crishim.network's watcher, read from memory); in docker mode,
whether Docker's default bridge network exists with an address range.
Engine details and the bridge verdict change rarely, so they are refreshed at
most every DETAILS_TTL seconds: a Status call costs one Docker round trip,
the ping.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field

import structlog

from crishim import __version__, deadlines, errors
from crishim.config import Config
from crishim.docker import DockerClient
from crishim.docker.types import EngineInfo
from crishim.network.pods import PodNetworks

log = structlog.get_logger(__name__)

RUNTIME_NAME = "docker"
CRI_API_VERSION = "v1"
# What the kubelet's own VersionResponse.version has always been.
KUBELET_API_VERSION = "0.1.0"
DETAILS_TTL = 10.0


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


@dataclass(frozen=True, slots=True)
class VersionInfo:
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


class RuntimeStatus:
    """Answers identity and readiness questions; remembers the pod CIDR."""

    def __init__(self, config: Config, docker: DockerClient, networks: PodNetworks) -> None:
        self.config = config
        self.docker = docker
        self.networks = networks
        self._details: tuple[float, EngineInfo, Condition] | None = None

    async def version(self) -> VersionInfo:
        """Docker's version now, or the last one known while Docker does not answer:
        `crictl info` and the kubelet must still see a runtime (Status says it is not ready)."""
        try:
            async with deadlines.limit(self.config.docker_ping_timeout, "docker version"):
                engine = await self.docker.engine_version()
        except errors.CrishimError:
            if self.docker.version is None:
                raise
            engine = self.docker.version
        return VersionInfo(RUNTIME_NAME, engine.version, CRI_API_VERSION)

    async def readiness(self, verbose: bool = False) -> Readiness:
        try:
            async with deadlines.limit(self.config.docker_ping_timeout, "docker ping"):
                await self.docker.ping()
            info, network = await self._engine_details(refresh=verbose)
        except errors.CrishimError as exc:
            self._details = None
            log.warning("docker_not_ready", error=str(exc))
            runtime = Condition("RuntimeReady", False, "DockerDaemonNotReady", str(exc))
            network = Condition(
                "NetworkReady",
                False,
                "DockerDaemonNotReady",
                "docker is not reachable, so neither is its network",
            )
            return Readiness((runtime, network), ("",), self._info(None) if verbose else {})

        runtime = Condition("RuntimeReady", True)
        if self.networks.mode == "cni":
            network = self._cni_condition()
        handlers = ("", *info.runtimes)
        return Readiness((runtime, network), handlers, self._info(info) if verbose else {})

    async def _engine_details(self, refresh: bool) -> tuple[EngineInfo, Condition]:
        now = time.monotonic()
        if not refresh and self._details is not None and now - self._details[0] < DETAILS_TTL:
            return self._details[1], self._details[2]
        async with deadlines.limit(self.config.docker_ping_timeout, "docker info"):
            info = await self.docker.info()
        network = await self._network_condition()
        self._details = (now, info, network)
        return info, network

    def _cni_condition(self) -> Condition:
        ready = self.networks.readiness()
        if ready.ready:
            return Condition("NetworkReady", True)
        return Condition("NetworkReady", False, "NetworkPluginNotReady", ready.message)

    async def _network_condition(self) -> Condition:
        if self.networks.mode == "cni":
            return self._cni_condition()
        try:
            async with deadlines.limit(self.config.docker_ping_timeout, "docker network inspect"):
                bridge = await self.docker.network("bridge")
        except errors.NotFound:
            return Condition(
                "NetworkReady",
                False,
                "NetworkPluginNotReady",
                "docker's default bridge network does not exist",
            )
        except errors.CrishimError as exc:
            return Condition("NetworkReady", False, "NetworkPluginNotReady", str(exc))
        if not bridge.subnets:
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
        async with deadlines.limit(10, "docker info"):
            info = await self.docker.info()
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
