"""Containers of a pod: created into their sandbox's namespaces, read from the store.

A container joins its sandbox's network and IPC namespaces (Docker's
`container:<sandbox id>` modes) and its PID namespace as the request says.
Its output goes to Docker's json-file log, the durable buffer the CRI log
follower (crishim.logs.copier) reads from. Stop and Remove are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from crishim.common import cachedpath, cgroups, errors
from crishim.engine import labels
from crishim.engine.docker import DockerClient, versions
from crishim.engine.docker.types import BindMount, ContainerSpec, EngineInfo, ImageMount, Resources
from crishim.engine.store import Record, Store
from crishim.logs.copier import touch
from crishim.pods import cgroupres, validate
from crishim.pods.sandboxes import Sandboxes, SandboxView, systemd_cgroup_parent
from crishim.pods.security import Profile, docker_security_opts

log = structlog.get_logger(__name__)

# Docker's json-file log is the buffer between a container and its CRI log file:
# big enough to cover a crishim restart, bounded so a chatty container cannot fill the disk.
LOG_MAX_SIZE = "50m"
LOG_MAX_FILE = 2
_PROPAGATION = {"private": "rprivate", "host_to_container": "rslave", "bidirectional": "rshared"}


@dataclass(frozen=True, slots=True)
class MountRequest:
    host_path: str
    container_path: str
    readonly: bool = False
    propagation: str = "private"  # private | host_to_container | bidirectional
    selinux_relabel: bool = False
    recursive_read_only: bool = False  # submounts read-only too (with readonly)
    image: str = ""  # an image volume (KEP-4639) instead of a host path
    image_sub_path: str = ""


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    sandbox_id: str
    meta: labels.ContainerMeta
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[MountRequest, ...] = ()
    devices: tuple[tuple[str, str, str], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_directory: str = ""
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: Resources = field(default_factory=Resources)
    cgroup_resources: cgroupres.CgroupResources = field(default_factory=cgroupres.CgroupResources)
    oom_score_adj: int = 0
    cgroup_parent: str = ""
    pid_mode: str = "pod"  # pod | container | node | target
    target_id: str = ""
    privileged: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    supplemental_groups: tuple[int, ...] = ()
    readonly_rootfs: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    seccomp: Profile = field(default_factory=Profile)
    apparmor: Profile = field(default_factory=Profile)
    selinux: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""


@dataclass(frozen=True, slots=True)
class ContainerView:
    id: str
    sandbox_id: str
    meta: labels.ContainerMeta
    state: str  # created | running | exited | unknown
    created_at_ns: int
    started_at_ns: int
    finished_at_ns: int
    exit_code: int
    reason: str
    message: str
    image: str
    image_id: str
    labels: dict[str, str]
    annotations: dict[str, str]
    log_path: str
    record: Record


def state_of(status: str) -> str:
    if status in ("running", "paused", "restarting"):
        return "running"
    if status == "created":
        return "created"
    if status in ("exited", "dead"):
        return "exited"
    return "unknown"


def _user(request: ContainerRequest) -> str:
    if request.run_as_username and request.run_as_user is not None:
        raise errors.InvalidArgument("run_as_user and run_as_username are mutually exclusive")
    user = request.run_as_username or (
        str(request.run_as_user) if request.run_as_user is not None else ""
    )
    if request.run_as_group is not None:
        if not user:
            raise errors.InvalidArgument("run_as_group requires run_as_user or run_as_username")
        user += f":{request.run_as_group}"
    return user


def _bind(mount: MountRequest, source: str, selinux: bool) -> BindMount:
    return BindMount(
        source,
        mount.container_path,
        mount.readonly,
        _PROPAGATION[mount.propagation],
        # Docker ignores a relabel where SELinux is off; said only where it is on, since
        # only Binds can say it, and they cannot say "read-only, not recursively".
        mount.selinux_relabel and selinux,
        mount.recursive_read_only,
    )


def selinux_enabled(info: EngineInfo) -> bool:
    """Whether the daemon runs with SELinux (its /info security options say so)."""
    return any(o == "name=selinux" or o.startswith("name=selinux,") for o in info.security_options)


def _check_recursive_read_only(mounts: tuple[MountRequest, ...], api: str) -> None:
    """Recursive read-only binds: what the CRI requires of them, and what Docker can do."""
    for mount in mounts:
        if not mount.recursive_read_only:
            continue
        where = f"mount {mount.container_path!r}"
        if not mount.readonly:
            raise errors.InvalidArgument(f"{where}: recursive_read_only requires readonly")
        if mount.propagation != "private":
            raise errors.InvalidArgument(
                f"{where}: recursive_read_only requires private propagation"
            )
        if not versions.recursive_read_only(api, os.uname().release):
            raise errors.FailedPrecondition(
                f"{where}: recursive read-only mounts need Docker Engine API 1.44 (Docker 25)"
                f" and Linux 5.12; this daemon speaks {api or 'nothing (unreachable)'} on"
                f" Linux {os.uname().release} (Status reports recursive_read_only_mounts=false)"
            )


IMAGE_MOUNT_API = (1, 48)  # Docker 28: mounts of type "image"


def _real_path(path: str) -> str:
    """The path with every symlink followed, as the kernel resolves it (blocking).

    An O_PATH handle (nothing is opened for reading, a device or fifo included)
    and its /proc link: three system calls, where os.path.realpath lstats every
    component (~30 µs a kubelet mount path, against ~6 µs).
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise errors.InvalidArgument(f"mount host path {path} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise errors.InvalidArgument(f"mount host path {path!r} cannot be used: {reason}") from None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _container_spec(
    request: ContainerRequest,
    sandbox: SandboxView,
    name: str,
    info: EngineInfo,
    image_mounts: tuple[ImageMount, ...],
    oom: int,
    security: tuple[str, ...],
) -> ContainerSpec:
    """The Docker create of a checked request, in the sandbox's namespaces; its bind
    mounts are made from the mounts' real paths inside the create's block."""
    pid_mode = {
        "pod": f"container:{sandbox.id}",
        "container": "",
        "node": "host",
        "target": f"container:{request.target_id}",
    }[request.pid_mode]
    cgroup_parent = request.cgroup_parent
    if info.cgroup_driver == "systemd":
        cgroup_parent = systemd_cgroup_parent(cgroup_parent)
    return ContainerSpec(
        name=name,
        image=request.image,
        labels=labels.container_labels(
            request.labels,
            request.annotations,
            sandbox_id=sandbox.id,
            log_directory=request.log_directory,
            log_path=request.log_path,
        )
        | request.cgroup_resources.labels(),
        entrypoint=request.command or None,
        cmd=request.args or None,
        env=tuple(f"{k}={v}" for k, v in request.envs),
        working_dir=request.working_dir,
        user=_user(request),
        network_mode=f"container:{sandbox.id}",
        ipc_mode=f"container:{sandbox.id}",
        pid_mode=pid_mode,
        cgroup_parent=cgroup_parent,
        privileged=request.privileged,
        readonly_rootfs=request.readonly_rootfs,
        group_add=tuple(str(g) for g in request.supplemental_groups),
        security_opt=security,
        oom_score_adj=oom,
        runtime=sandbox.docker_runtime,
        log_max_size=LOG_MAX_SIZE,
        log_max_file=LOG_MAX_FILE,
        bind_mounts=(),
        image_mounts=image_mounts,
        devices=request.devices,
        cap_add=request.cap_add,
        cap_drop=request.cap_drop,
        masked_paths=request.masked_paths,
        readonly_paths=request.readonly_paths,
        resources=request.resources,
        tty=request.tty,
        open_stdin=request.stdin,
        stdin_once=request.stdin_once,
        stop_signal=request.stop_signal,
    )


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark a side trip's error as seen when the call failed first (it has its own error)."""
    if not future.cancelled():
        future.exception()


def _resolve_sources(
    mounts: tuple[MountRequest, ...], real_path: Callable[[str], str | None] = _real_path
) -> list[str] | None:
    """Real host paths (symlinks followed); a missing one is an error (CRI). With
    cachedpath.real_path (on the event loop): None when any needs the blocking lookup."""
    sources = []
    for mount in mounts:
        real = "" if mount.image else real_path(mount.host_path)
        if real is None:
            return None
        sources.append(real)
    return sources


@dataclass(frozen=True, slots=True)
class ProcessUser:
    """The identity a container's first process runs with (ContainerStatus.user)."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def process_user(status_text: str) -> ProcessUser | None:
    """Effective uid, gid and supplemental groups from /proc/<pid>/status."""
    fields = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    try:
        return ProcessUser(
            uid=int(fields["Uid"][1]),
            gid=int(fields["Gid"][1]),
            groups=tuple(int(g) for g in fields.get("Groups", [])),
        )
    except (KeyError, IndexError, ValueError):
        return None


def _read_status(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except OSError:
        return None


def _validate_resources(res: Resources, where: str) -> None:
    validate.non_negative(res.cpu_shares, f"{where}.cpu_shares")
    validate.non_negative(res.cpu_period, f"{where}.cpu_period")
    validate.cpu_quota(res.cpu_quota, f"{where}.cpu_quota")
    validate.non_negative(res.memory_limit_in_bytes, f"{where}.memory_limit_in_bytes")


def _validate(request: ContainerRequest) -> None:
    """What Docker, runc or crishim's names cannot carry (crishim.pods.validate), before Docker."""
    validate.name_part(request.meta.name, "config.metadata.name")
    for i, mount in enumerate(request.mounts):
        validate.container_path(mount.container_path, f"config.mounts[{i}].container_path")
    for i, (_host, container, permissions) in enumerate(request.devices):
        validate.container_path(container, f"config.devices[{i}].container_path")
        validate.device_permissions(permissions, f"config.devices[{i}].permissions")
    validate.label_keys(request.labels, "config.labels")
    validate.label_keys(request.annotations, "config.annotations")
    _validate_resources(request.resources, "config.linux.resources")
    validate.oom_score_adj(request.oom_score_adj, "config.linux.resources.oom_score_adj")
    sc = "config.linux.security_context"
    validate.user_id(request.run_as_user, f"{sc}.run_as_user")
    validate.user_id(request.run_as_group, f"{sc}.run_as_group")
    validate.group_ids(request.supplemental_groups, f"{sc}.supplemental_groups")


class Containers:
    def __init__(self, docker: DockerClient, store: Store, sandboxes: Sandboxes) -> None:
        self.docker = docker
        self.store = store
        self.sandboxes = sandboxes
        # (pid the identity was read from, identity): kept after the process ends.
        self._users: dict[str, tuple[int, ProcessUser]] = {}
        self._views: dict[str, tuple[Record, ContainerView | None]] = {}  # id -> (record, view)
        self._listed: tuple[object, tuple[ContainerView, ...]] = (None, ())  # (records, views)
        # (views, sandbox id -> its containers' views): grouped once per list
        self._grouped: tuple[object, dict[str, tuple[ContainerView, ...]]] = (None, {})
        self._log_made: set[str] = set()  # ids whose create made their log file, not started yet

    @staticmethod
    async def _cgroup_mounts() -> cgroups.Mounts:
        return await asyncio.to_thread(cgroups.host_mounts)

    async def create(self, request: ContainerRequest) -> str:
        """CreateContainer: check the request, learn what the host allows, build the
        Docker spec, then create it (its bind mounts and log file made meanwhile)."""
        sandbox = self.sandboxes.get(request.sandbox_id)  # NotFound for unknown sandboxes
        image_mounts = self._checked(request)
        info = await self.sandboxes.engine.current_info()
        oom, security = await self._host_options(request)
        name = labels.container_name(sandbox.meta, request.meta)
        spec = _container_spec(request, sandbox, name, info, image_mounts, oom, security)

        def taken() -> errors.CrishimError:
            return errors.AlreadyExists(
                f"container {request.meta.name} attempt {request.meta.attempt} "
                f"already exists in sandbox {sandbox.id[:12]}"
            )

        # A retry of a call still in this process: its container, or a clean slate.
        if landed := await self.sandboxes.creator.landed(name):
            return landed
        container_id = await self._create(request, spec, selinux_enabled(info), taken)
        # Said on the call's own rpc line: one line per create, naming what it made.
        structlog.contextvars.bind_contextvars(container_id=container_id, name=name)
        return container_id

    def _checked(self, request: ContainerRequest) -> tuple[ImageMount, ...]:
        """What Docker, runc or this daemon would refuse, refused first; the image mounts."""
        labels.validate_container(request.meta)
        if not request.image:
            raise errors.InvalidArgument("config.image.image is required")
        _validate(request)
        image_mounts = tuple(
            ImageMount(m.image, m.container_path, m.image_sub_path)
            for m in request.mounts
            if m.image
        )
        api_version = self.docker.version.negotiated_api_version if self.docker.version else ""
        _check_recursive_read_only(request.mounts, api_version)
        if image_mounts and (not api_version or versions.parse(api_version) < IMAGE_MOUNT_API):
            raise errors.FailedPrecondition(
                "image volumes need Docker Engine API 1.48 (Docker 28) or newer; "
                f"this daemon speaks {api_version or 'nothing (unreachable)'}"
            )
        if request.pid_mode == "target" and not request.target_id:
            raise errors.InvalidArgument("namespace_options.target_id is required for TARGET")
        cgroupres.validate(request.cgroup_resources)
        return image_mounts

    async def _host_options(self, request: ContainerRequest) -> tuple[int, tuple[str, ...]]:
        """The OOM score the host allows, the security options of the request's profiles;
        cgroup resources the host's hierarchies cannot carry are refused."""
        oom = request.oom_score_adj
        if oom < 0 and await self.sandboxes.oom_score_adj() == 0:
            oom = 0  # the host cannot lower OOM scores (see the sandbox's warning)
        security: tuple[str, ...] = ()
        if not request.privileged:  # privileged: no confinement to describe
            security = await docker_security_opts(
                request.seccomp,
                request.apparmor,
                request.selinux,
                request.no_new_privs,
            )
        if request.cgroup_resources.hugepages or request.cgroup_resources.unified:
            mounts = await self._cgroup_mounts()
            await asyncio.to_thread(cgroupres.check_host, request.cgroup_resources, mounts)
        return oom, security

    async def _create(
        self,
        request: ContainerRequest,
        spec: ContainerSpec,
        selinux: bool,
        taken: Callable[[], errors.CrishimError],
    ) -> str:
        """The Docker create, marked: whatever fails or is cancelled inside removes the
        container again (crishim.pods.creating)."""
        log_file = None
        if request.log_directory and request.log_path:
            log_file = Path(request.log_directory, request.log_path)
        creator = self.sandboxes.creator
        async with creator.marked(spec.name, taken) as made:
            if request.mounts:
                sources = _resolve_sources(request.mounts, cachedpath.real_path)
                if sources is None:  # the kernel's cache could not say: ask in a thread
                    sources = await asyncio.to_thread(_resolve_sources, request.mounts)
                pairs = zip(request.mounts, sources, strict=True)
                binds = tuple(_bind(m, src, selinux) for m, src in pairs if not m.image)
                spec = replace(spec, bind_mounts=binds)
            # The log file (not StartContainer's to make) is made while Docker creates:
            # a trip of its own, off the call's path (a new file costs 0.1-0.5 ms here).
            touching = None
            if log_file is not None:
                touching = asyncio.ensure_future(asyncio.to_thread(touch, log_file))
                touching.add_done_callback(_retrieve)
            container_id = await creator.create(made, spec, taken)
            await self.store.refresh(container_id, covers=("create",))
            if touching is not None:
                await touching
        if log_file is not None:
            if len(self._log_made) > 10_000:  # a bound, not a policy: never started, never removed
                self._log_made.clear()
            self._log_made.add(container_id)
        return container_id

    def log_file_made(self, container_id: str) -> bool:
        """Whether this process's create of the container made its log file (asked once,
        by StartContainer: after a restart of crishim, or if unknown, it is made again)."""
        made = container_id in self._log_made
        self._log_made.discard(container_id)
        return made

    def _record(self, container_id: str) -> Record | None:
        record = self.store.get(container_id)
        return record if record is not None and record.cri.kind == labels.TYPE_CONTAINER else None

    def get(self, container_id: str) -> ContainerView:
        record = self._record(container_id)
        view = None
        if record is not None:  # the listed view while its record is the same
            hit = self._views.get(record.id)
            view = hit[1] if hit is not None and hit[0] is record else self.view(record)
        if view is None:
            raise errors.NotFound(f"container {container_id!r} not found")
        return view

    async def start(self, container_id: str) -> None:
        view = self.get(container_id)
        async with self.store.writing(view.id, ("start",)) as refresh:
            await self.docker.start_container(view.id)
            record = await refresh()
        wanted = cgroupres.CgroupResources.from_labels(view.record.info.labels)
        if record is not None and record.info.state.pid > 0:
            try:
                await self._apply_cgroup(record.info.state.pid, wanted)
            except errors.CrishimError:
                # Not left running without the limits it was created with.
                with contextlib.suppress(errors.CrishimError):
                    await self.docker.stop_container(view.id, 0)
                await self.store.refresh(view.id)
                raise

    async def _apply_cgroup(self, pid: int, wanted: cgroupres.CgroupResources) -> None:
        if wanted.hugepages or wanted.unified:
            mounts = await self._cgroup_mounts()
            await asyncio.to_thread(cgroupres.apply, wanted, pid, mounts)

    async def stop(self, container_id: str, timeout_s: int) -> None:
        """Signal, wait `timeout_s`, kill. Unknown or stopped: nothing to do (CRI)."""
        record = self._record(container_id)
        if record is None:
            return
        await self.sandboxes.stop_container(record.id, max(0, timeout_s))

    async def remove(self, container_id: str) -> None:
        """Force-remove; concurrent removals (also the pod's) share one Docker call."""
        self._log_made.discard(container_id)
        record = self._record(container_id)
        if record is None:
            return
        await self.sandboxes.remove_container(record.id)

    async def user(self, view: ContainerView) -> ProcessUser | None:
        """Who the container's first process is, read from the kernel while it runs."""
        pid = view.record.info.state.pid
        known = self._users.get(view.id)
        if known is not None and (pid <= 0 or known[0] == pid):
            return known[1]
        if pid <= 0 or view.state != "running":
            return None
        text = await asyncio.to_thread(_read_status, pid)
        found = process_user(text) if text else None
        if found is not None:
            if len(self._users) > 10_000:  # a bound, not a policy: entries are tiny
                self._users.clear()
            self._users[view.id] = (pid, found)
        return found

    async def update_resources(
        self,
        container_id: str,
        resources: Resources,
        cgroup_resources: cgroupres.CgroupResources | None = None,
    ) -> None:
        """In-place resize. A memory limit without a swap limit means no swap on top of it
        (the kubelet's NoSwap): Docker would otherwise keep the swap limit it set at create
        (twice the old memory) and refuse any memory limit above it."""
        view = self.get(container_id)
        _validate_resources(resources, "linux")
        cgroup_resources = cgroup_resources or cgroupres.CgroupResources()
        cgroupres.validate(cgroup_resources)
        await asyncio.to_thread(cgroupres.check_host, cgroup_resources, await self._cgroup_mounts())
        if resources.memory_limit_in_bytes and not resources.memory_swap_limit_in_bytes:
            resources = replace(
                resources, memory_swap_limit_in_bytes=resources.memory_limit_in_bytes
            )
        await self.docker.update_container(view.id, resources)
        pid = view.record.info.state.pid
        if view.state == "running" and pid > 0:
            await self._apply_cgroup(pid, cgroup_resources)
        await self.store.refresh(view.id)

    @staticmethod
    def view(record: Record) -> ContainerView | None:
        meta = labels.parse_container_name(record.info.name)
        if meta is None:
            return None
        info = record.info
        state = state_of(info.state.status)
        reason = ""
        if state == "exited":
            if info.state.oom_killed or record.oom_seen:
                reason = "OOMKilled"
            else:
                reason = "Completed" if info.state.exit_code == 0 else "Error"
        started, finished = info.state.started_at_ns, info.state.finished_at_ns
        if finished:
            # Docker stamps StartedAt after containerd's start returns, so a process that
            # exits at once can carry a FinishedAt a moment earlier; a user (and the
            # kubelet's duration maths) expects finished >= started.
            finished = max(finished, started)
        return ContainerView(
            id=info.id,
            sandbox_id=record.cri.sandbox_id,
            meta=meta,
            state=state,
            created_at_ns=info.created_at_ns,
            started_at_ns=started,
            finished_at_ns=finished,
            exit_code=info.state.exit_code,
            reason=reason,
            message=info.state.error,
            image=info.image,
            image_id=info.image_id,
            labels=record.cri.labels,
            annotations=record.cri.annotations,
            log_path=record.cri.log_path,
            record=record,
        )

    def list(self) -> tuple[ContainerView, ...]:
        """Every container: the same tuple while no record changed, and a view made once
        per version of its record (List* and the stats calls are polled)."""
        records = self.store.records(labels.TYPE_CONTAINER)
        if self._listed[0] is records:
            return self._listed[1]
        memo, self._views = self._views, {}
        out = []
        for record in records:
            hit = memo.get(record.id)
            view = hit[1] if hit is not None and hit[0] is record else self.view(record)
            self._views[record.id] = (record, view)
            if view is not None:
                out.append(view)
        self._listed = (records, tuple(out))
        return self._listed[1]

    def in_sandbox(self, sandbox_id: str) -> tuple[ContainerView, ...]:
        """The containers of one sandbox, any state, in list order."""
        views = self.list()
        if self._grouped[0] is not views:
            grouped: dict[str, list[ContainerView]] = {}
            for view in views:
                grouped.setdefault(view.sandbox_id, []).append(view)
            self._grouped = (views, {k: tuple(v) for k, v in grouped.items()})
        return self._grouped[1].get(sandbox_id, ())
