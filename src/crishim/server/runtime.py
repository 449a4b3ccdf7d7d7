"""runtime.v1.RuntimeService.

Implemented so far: Version, Status, RuntimeConfig, UpdateRuntimeConfig, and
the sandbox RPCs (server/sandbox.py), the container lifecycle RPCs
(server/container.py), Exec/Attach/PortForward (server/streams.py), and the
stats, metrics and events RPCs (server/stats.py).
Every other RPC is inherited from the generated base, which answers
UNIMPLEMENTED (the code the kubelet treats as "not supported", never UNKNOWN).
"""

from __future__ import annotations

import grpclib.const

from crishim.api.runtime import v1 as api
from crishim.engine.status import KUBELET_API_VERSION, Readiness, RuntimeStatus
from crishim.logs.copier import LogManager
from crishim.pods.checkpoints import Checkpointer
from crishim.pods.containers import Containers
from crishim.pods.events import EventHub
from crishim.pods.sandboxes import Sandboxes
from crishim.server.container import ContainerRPCs
from crishim.server.listing import KeptAnswer, WireEntries
from crishim.server.protowire import Encoded
from crishim.server.sandbox import SandboxRPCs
from crishim.server.stats import StatsEntries, StatsRPCs
from crishim.server.streams import StreamRPCs
from crishim.stats.collector import StatsCollector
from crishim.streaming.server import StreamingServer


class RuntimeService(SandboxRPCs, ContainerRPCs, StreamRPCs, StatsRPCs, api.RuntimeServiceBase):
    def __init__(
        self,
        status: RuntimeStatus,
        sandboxes: Sandboxes,
        containers: Containers,
        logs: LogManager,
        streaming: StreamingServer,
        stats: StatsCollector,
        events: EventHub,
        checkpointer: Checkpointer,
    ) -> None:
        self._status = status
        self._sandboxes = sandboxes
        self._containers = containers
        self._logs = logs
        self._streaming = streaming
        self._stats = stats
        self._events = events
        self._checkpointer = checkpointer
        self._container_entries = WireEntries(1)  # ListContainersResponse.containers
        self._sandbox_entries = WireEntries(1)  # ListPodSandboxResponse.items
        self._status_entries = WireEntries(3)  # PodSandboxStatusResponse.containers_statuses
        self._stats_entries = StatsEntries()
        self._status_answer = KeptAnswer()
        self._version_answer = KeptAnswer()
        stats.on_sample = self.warm_stats_lists

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The generated handlers, but ListPodSandboxMetrics': its 3 MB answer (200 pods)
        is sent from its pods' entries (crishim.server.sending)."""
        mapping = super().__mapping__()
        path = "/runtime.v1.RuntimeService/ListPodSandboxMetrics"
        mapping[path] = mapping[path]._replace(func=self.list_pod_sandbox_metrics_rpc)
        return mapping

    async def version(self, message: api.VersionRequest) -> Encoded:
        """Asked before every crictl command and by every kubelet start: encoded once per
        engine version."""
        v = await self._status.version()
        return Encoded(
            self._version_answer.get(
                v,
                lambda: api.VersionResponse(
                    version=KUBELET_API_VERSION,
                    runtime_name=v.runtime_name,
                    runtime_version=v.runtime_version,
                    runtime_api_version=v.runtime_api_version,
                ),
            )
        )

    async def status(self, message: api.StatusRequest) -> Encoded:
        """Polled every few seconds: the answer is encoded once per distinct readiness."""
        ready = await self._status.readiness(verbose=message.verbose)
        return Encoded(self._status_answer.get(ready, lambda: self._status_response(ready)))

    @staticmethod
    def _status_response(ready: Readiness) -> api.StatusResponse:
        return api.StatusResponse(
            status=api.RuntimeStatus(
                conditions=[
                    api.RuntimeCondition(
                        type=c.type, status=c.status, reason=c.reason, message=c.message
                    )
                    for c in ready.conditions
                ]
            ),
            info=ready.info,
            runtime_handlers=[
                api.RuntimeHandler(
                    name=name,
                    features=api.RuntimeHandlerFeatures(
                        recursive_read_only_mounts=ready.recursive_read_only
                    ),
                )
                for name in ready.handlers
            ],
            features=api.RuntimeFeatures(),
        )

    async def runtime_config(self, message: api.RuntimeConfigRequest) -> api.RuntimeConfigResponse:
        driver = await self._status.cgroup_driver()
        return api.RuntimeConfigResponse(
            linux=api.LinuxRuntimeConfiguration(
                cgroup_driver=api.CgroupDriver.SYSTEMD
                if driver == "systemd"
                else api.CgroupDriver.CGROUPFS
            )
        )

    async def update_runtime_config(
        self, message: api.UpdateRuntimeConfigRequest
    ) -> api.UpdateRuntimeConfigResponse:
        config = message.runtime_config
        if config is not None and config.network_config is not None:
            self._status.set_pod_cidr(config.network_config.pod_cidr)
        return api.UpdateRuntimeConfigResponse()
