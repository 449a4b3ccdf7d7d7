"""CreateContainer, Start/Stop/RemoveContainer, ContainerStatus, ListContainers,
UpdateContainerResources."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Sequence

from crishim.api.runtime import v1 as api
from crishim.common import errors
from crishim.engine import labels
from crishim.logs.copier import LogManager
from crishim.pods.cgroupres import CgroupResources
from crishim.pods.checkpoints import Checkpointer
from crishim.pods.containers import (
    ContainerRequest,
    Containers,
    ContainerView,
    MountRequest,
    ProcessUser,
)
from crishim.pods.execsync import exec_sync
from crishim.server import protowire
from crishim.server.listing import WireEntries, chunks
from crishim.server.protowire import Encoded
from crishim.server.resources import (
    cgroup_resources,
    declared,
    or_empty,
    resources,
    to_linux_resources,
)
from crishim.server.sandbox import UNCONFINED, _profile

# ContainerStatusResponse.status (field 1): a kept PodSandboxStatus entry (field 3) re-keyed.
STATUS_KEY = protowire.key(1, protowire.LEN)

_STATES = {
    "created": api.ContainerState.CONTAINER_CREATED,
    "running": api.ContainerState.CONTAINER_RUNNING,
    "exited": api.ContainerState.CONTAINER_EXITED,
    "unknown": api.ContainerState.CONTAINER_UNKNOWN,
}
_PROPAGATION = {
    api.MountPropagation.PROPAGATION_PRIVATE: "private",
    api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "host_to_container",
    api.MountPropagation.PROPAGATION_BIDIRECTIONAL: "bidirectional",
}
_PROPAGATION_BACK = {
    "rslave": api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
    "slave": api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
    "rshared": api.MountPropagation.PROPAGATION_BIDIRECTIONAL,
    "shared": api.MountPropagation.PROPAGATION_BIDIRECTIONAL,
}
_PID_MODES = {
    api.NamespaceMode.POD: "pod",
    api.NamespaceMode.CONTAINER: "container",
    api.NamespaceMode.NODE: "node",
    api.NamespaceMode.TARGET: "target",
}


def _signal_name(signal: api.Signal) -> str:
    if signal == api.Signal.RUNTIME_DEFAULT:
        return ""
    name = signal.name
    for prefix, base in (("SIGRTMINPLUS", "SIGRTMIN+"), ("SIGRTMAXMINUS", "SIGRTMAX-")):
        if name.startswith(prefix):
            return base + name.removeprefix(prefix)
    return name


def _checked_mounts(mounts: list[api.Mount]) -> list[api.Mount]:
    """Mount options Docker cannot honour are refused, never silently dropped."""
    for m in mounts:
        where = f"mount {m.container_path!r}"
        if m.uid_mappings or m.gid_mappings:
            raise errors.FailedPrecondition(f"{where}: ID-mapped mounts are not supported")
        if m.image is not None and m.image.image and m.host_path:
            raise errors.InvalidArgument(f"{where}: host_path and image are exclusive")
    return mounts


def _unsupported(config: api.ContainerConfig) -> None:
    """Fields Docker cannot honour are refused, never silently dropped."""
    if config.CDI_devices:
        raise errors.FailedPrecondition("CDI devices are not supported by this Docker runtime")
    linux = or_empty(config.linux, api.LinuxContainerConfig)
    sc = linux.security_context
    if sc is None:
        return
    if sc.capabilities is not None and sc.capabilities.add_ambient_capabilities:
        raise errors.FailedPrecondition("ambient capabilities are not supported by Docker")
    if sc.supplemental_groups_policy == api.SupplementalGroupsPolicy.Strict:
        raise errors.FailedPrecondition(
            "supplemental_groups_policy Strict is not supported: Docker always adds the "
            "groups of the image's /etc/group (Status reports supplemental_groups_policy=false)"
        )


def _check_log_path(log_directory: str, log_path: str) -> None:
    """The CRI log file is log_path inside log_directory, never anywhere else.

    crishim writes it as root: `../x`, an absolute path or a directory-less relative
    path would put a file of the container's output wherever the request says.
    """
    if not log_path:
        return
    where = f"config.log_path {log_path!r}"
    if not log_directory or not os.path.isabs(log_directory):
        raise errors.InvalidArgument(f"{where}: sandbox_config.log_directory must be absolute")
    if os.path.isabs(log_path) or "\x00" in log_path:
        raise errors.InvalidArgument(f"{where}: must be relative to the log directory")
    base = os.path.normpath(log_directory)
    full = os.path.normpath(os.path.join(base, log_path))
    if not full.startswith(base.rstrip("/") + "/"):
        raise errors.InvalidArgument(f"{where}: leaves the log directory {log_directory}")


def container_request(message: api.CreateContainerRequest) -> ContainerRequest:
    config = message.config
    if not message.pod_sandbox_id:
        raise errors.InvalidArgument("pod_sandbox_id is required")
    if config is None or config.metadata is None:
        raise errors.InvalidArgument("config.metadata is required")
    if config.image is None or not config.image.image:
        raise errors.InvalidArgument("config.image.image is required")
    _unsupported(config)
    _check_log_path(
        or_empty(message.sandbox_config, api.PodSandboxConfig).log_directory, config.log_path
    )
    linux = or_empty(config.linux, api.LinuxContainerConfig)
    sc = or_empty(linux.security_context, api.LinuxContainerSecurityContext)
    ns = or_empty(sc.namespace_options, api.NamespaceOption)
    caps = or_empty(sc.capabilities, api.Capability)
    sandbox_config = or_empty(message.sandbox_config, api.PodSandboxConfig)
    sandbox_linux = or_empty(sandbox_config.linux, api.LinuxPodSandboxConfig)
    for m in config.mounts:
        is_image = m.image is not None and bool(m.image.image)
        if not m.container_path or not (m.host_path or is_image):
            raise errors.InvalidArgument(
                "config.mounts: container_path and a host_path or an image are required"
            )
    return ContainerRequest(
        sandbox_id=message.pod_sandbox_id,
        meta=labels.ContainerMeta(config.metadata.name, config.metadata.attempt),
        image=config.image.image,
        command=tuple(config.command),
        args=tuple(config.args),
        working_dir=config.working_dir,
        envs=tuple((e.key, e.value) for e in config.envs),
        mounts=tuple(
            MountRequest(
                m.host_path,
                m.container_path,
                m.readonly,
                _PROPAGATION[declared(m.propagation, "config.mounts.propagation")],
                m.selinux_relabel,
                m.recursive_read_only,
                image=m.image.image if m.image is not None else "",
                image_sub_path=m.image_sub_path,
            )
            for m in _checked_mounts(config.mounts)
        ),
        devices=tuple((d.host_path, d.container_path, d.permissions) for d in config.devices),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        log_directory=sandbox_config.log_directory,
        log_path=config.log_path,
        stdin=config.stdin,
        stdin_once=config.stdin_once,
        tty=config.tty,
        resources=resources(linux.resources),
        cgroup_resources=cgroup_resources(linux.resources),
        oom_score_adj=linux.resources.oom_score_adj if linux.resources else 0,
        cgroup_parent=sandbox_linux.cgroup_parent,
        pid_mode=_PID_MODES[declared(ns.pid, "linux.security_context.namespace_options.pid")],
        target_id=ns.target_id,
        privileged=sc.privileged,
        run_as_user=sc.run_as_user.value if sc.run_as_user is not None else None,
        run_as_group=sc.run_as_group.value if sc.run_as_group is not None else None,
        run_as_username=sc.run_as_username,
        supplemental_groups=tuple(sc.supplemental_groups),
        readonly_rootfs=sc.readonly_rootfs,
        cap_add=tuple(caps.add_capabilities),
        cap_drop=tuple(caps.drop_capabilities),
        no_new_privs=sc.no_new_privs,
        masked_paths=tuple(sc.masked_paths) if sc.masked_paths else None,
        readonly_paths=tuple(sc.readonly_paths) if sc.readonly_paths else None,
        seccomp=_profile(sc.seccomp, sc.seccomp_profile_path, UNCONFINED),
        apparmor=_profile(sc.apparmor, sc.apparmor_profile),
        selinux=tuple(
            (k, getattr(sc.selinux_options, k)) for k in ("user", "role", "type", "level")
        )
        if sc.selinux_options is not None
        else (),
        stop_signal=_signal_name(declared(config.stop_signal, "config.stop_signal")),
    )


def _meta(view: ContainerView) -> api.ContainerMetadata:
    return api.ContainerMetadata(name=view.meta.name, attempt=view.meta.attempt)


def selected(view: ContainerView, f: api.ContainerFilter | api.ContainerStatsFilter | None) -> bool:
    """The id, pod and label parts of a container filter (ListContainers, ListContainerStats)."""
    if f is None:
        return True
    if f.id and not view.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not view.sandbox_id.startswith(f.pod_sandbox_id):
        return False
    return all(view.labels.get(k) == v for k, v in f.label_selector.items())


def _matches(view: ContainerView, f: api.ContainerFilter | None) -> bool:
    if f is not None and f.state is not None and _STATES[view.state] != f.state.state:
        return False
    return selected(view, f)


def to_container(view: ContainerView) -> api.Container:
    return api.Container(
        id=view.id,
        pod_sandbox_id=view.sandbox_id,
        metadata=_meta(view),
        image=api.ImageSpec(image=view.image),
        image_ref=view.image_id,
        state=_STATES[view.state],
        created_at=view.created_at_ns,
        labels=view.labels,
        annotations=view.annotations,
        image_id=view.image_id,
    )


def to_status(view: ContainerView, user: ProcessUser | None = None) -> api.ContainerStatus:
    """The container's status; `user` is its first process's (Containers.user)."""
    info = view.record.info
    status = api.ContainerStatus(
        id=view.id,
        metadata=_meta(view),
        state=_STATES[view.state],
        created_at=view.created_at_ns,
        started_at=view.started_at_ns,
        finished_at=view.finished_at_ns,
        exit_code=view.exit_code,
        image=api.ImageSpec(image=view.image, user_specified_image=view.image),
        image_ref=view.image_id,
        reason=view.reason,
        message=view.message,
        labels=view.labels,
        annotations=view.annotations,
        mounts=[
            api.Mount(
                container_path=m.destination,
                host_path=m.source,
                readonly=m.read_only,
                propagation=_PROPAGATION_BACK.get(
                    m.propagation, api.MountPropagation.PROPAGATION_PRIVATE
                ),
            )
            for m in info.mounts
        ],
        log_path=view.log_path,
        resources=api.ContainerResources(
            linux=to_linux_resources(
                info.resources, info.oom_score_adj, CgroupResources.from_labels(info.labels)
            )
        ),
        image_id=view.image_id,
    )
    if user is not None:
        status.user = api.ContainerUser(
            linux=api.LinuxContainerUser(
                uid=user.uid, gid=user.gid, supplemental_groups=list(user.groups)
            )
        )
    return status


class ContainerRPCs:
    """The container part of RuntimeService (mixed into it)."""

    _containers: Containers
    _logs: LogManager
    _checkpointer: Checkpointer
    _status_entries: WireEntries  # PodSandboxStatusResponse.containers_statuses

    async def create_container(
        self, message: api.CreateContainerRequest
    ) -> api.CreateContainerResponse:
        return api.CreateContainerResponse(
            container_id=await self._containers.create(container_request(message))
        )

    async def start_container(
        self, message: api.StartContainerRequest
    ) -> api.StartContainerResponse:
        _require_id(message.container_id)
        await self._containers.start(message.container_id)
        if not self._containers.log_file_made(message.container_id):
            await self._logs.started(self._containers.get(message.container_id).log_path)
        return api.StartContainerResponse()

    async def stop_container(self, message: api.StopContainerRequest) -> api.StopContainerResponse:
        _require_id(message.container_id)
        if message.timeout < 0:  # the kubelet's grace period: never negative
            raise errors.InvalidArgument("timeout must not be negative")
        await self._containers.stop(message.container_id, int(message.timeout))
        return api.StopContainerResponse()

    async def remove_container(
        self, message: api.RemoveContainerRequest
    ) -> api.RemoveContainerResponse:
        _require_id(message.container_id)
        await self._containers.remove(message.container_id)
        return api.RemoveContainerResponse()

    async def container_status(self, message: api.ContainerStatusRequest) -> Encoded:
        """Polled by the kubelet: the status is the entry PodSandboxStatus keeps for the
        container (encoded once per view and user), under field 1 instead of 3."""
        _require_id(message.container_id)
        view = self._containers.get(message.container_id)
        user = await self._containers.user(view)  # kept per process: read once
        entry = self._status_entries.entry(view.id, view, lambda: to_status(view, user), user)
        data = STATUS_KEY + entry[1:]
        if message.verbose:
            i = view.record.info
            details = {
                "pid": i.state.pid,
                "name": i.name,
                "status": i.state.status,
                "user": i.user,
                "tty": i.tty,
                "stopSignal": i.stop_signal,
            }
            data += bytes(api.ContainerStatusResponse(info={"info": json.dumps(details)}))
        return Encoded(data)

    async def _statuses_in(self, sandbox_id: str, key: bytes | None = None) -> bytes:
        """PodSandboxStatusResponse.containers_statuses (field 3) for a sandbox's
        containers (the kubelet's evented PLEG takes them as the pod's every container),
        each as ContainerStatus shows it, joined from entries encoded once per view and
        user; with `key`, each entry under that one-byte key instead (another message's
        field of ContainerStatus: ContainerEventResponse's is field 5)."""
        entries = self._status_entries
        parts = []
        for v in self._containers.in_sandbox(sandbox_id):
            user = await self._containers.user(v)  # kept per process: read once
            entry = entries.entry(v.id, v, lambda v=v, u=user: to_status(v, u), user)
            parts.append(entry if key is None else key + entry[1:])
        data = b"".join(parts)
        everyone = self._containers.list()
        entries.prune(lambda: [v.id for v in everyone], len(everyone))
        return data

    def _selected_containers(
        self, views: Sequence[ContainerView], f: api.ContainerFilter | None
    ) -> Iterator[bytes]:
        """The entries (field 1 of ListContainersResponse and StreamContainersResponse)
        of the views `f` selects."""
        return self._container_entries.selected(views, _matches, f, to_container)

    async def list_containers(self, message: api.ListContainersRequest) -> Encoded:
        views = self._containers.list()
        entries = self._container_entries
        f = message.filter
        unfiltered = f is None or not (
            f.id or f.state is not None or f.pod_sandbox_id or f.label_selector
        )  # the kubelet's poll: its answer is kept
        data = entries.join(
            views if unfiltered else None, lambda: self._selected_containers(views, f)
        )
        entries.prune(lambda: [v.id for v in views], len(views))
        return Encoded(data)  # ListContainersResponse: field 1 repeated

    async def stream_containers(
        self, message: api.StreamContainersRequest
    ) -> AsyncIterator[api.StreamContainersResponse]:
        views = self._containers.list()
        for chunk in chunks(list(self._selected_containers(views, message.filter))):
            yield Encoded(b"".join(chunk))  # type: ignore[misc]

    async def exec_sync(self, message: api.ExecSyncRequest) -> api.ExecSyncResponse:
        _require_id(message.container_id)
        if not message.cmd:
            raise errors.InvalidArgument("cmd is required")
        if message.timeout < 0:
            raise errors.InvalidArgument("timeout must not be negative")
        view = self._containers.get(message.container_id)
        if view.state != "running":
            raise errors.FailedPrecondition(f"container {view.id[:12]} is not running")
        result = await exec_sync(
            self._containers.docker, view.id, list(message.cmd), message.timeout
        )
        return api.ExecSyncResponse(
            stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
        )

    async def checkpoint_container(
        self, message: api.CheckpointContainerRequest
    ) -> api.CheckpointContainerResponse:
        _require_id(message.container_id)
        if message.timeout < 0:
            raise errors.InvalidArgument("timeout must not be negative")
        await self._checkpointer.checkpoint(
            message.container_id, message.location, float(message.timeout)
        )
        return api.CheckpointContainerResponse()

    async def reopen_container_log(
        self, message: api.ReopenContainerLogRequest
    ) -> api.ReopenContainerLogResponse:
        _require_id(message.container_id)
        view = self._containers.get(message.container_id)
        await self._logs.reopen(view.id, view.state == "running", view.log_path)
        return api.ReopenContainerLogResponse()

    async def update_container_resources(
        self, message: api.UpdateContainerResourcesRequest
    ) -> api.UpdateContainerResourcesResponse:
        _require_id(message.container_id)
        await self._containers.update_resources(
            message.container_id, resources(message.linux), cgroup_resources(message.linux)
        )
        return api.UpdateContainerResourcesResponse()


def _require_id(container_id: str) -> None:
    if not container_id:
        raise errors.InvalidArgument("container_id is required")
