"""Pod sandboxes: one pause container each, holding the pod's namespaces.

RunPodSandbox creates and starts the pause container (pulling the pause image
if absent) and undoes the create if the start fails. Stop and Remove are
idempotent, as the CRI requires: an unknown sandbox is already stopped and
already removed. Reads come from the store.

The pod's network is crishim.network's business: in cni mode the pause runs
with Docker's network `none` and CNI ADD attaches it once it runs (DEL on
stop, before the pause is stopped, as containerd orders it); in docker mode
it sits on Docker's default bridge with Docker port bindings. hostNetwork
pods use the host's network in both.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from crishim.common import errors
from crishim.common.coalesce import Coalescer
from crishim.engine import labels
from crishim.engine.docker import DockerClient
from crishim.engine.docker.types import ContainerSpec, PortBinding, RegistryAuth, Resources
from crishim.engine.state import Engine
from crishim.engine.store import Record, Store
from crishim.images.service import Images
from crishim.network.pods import PodNetworkConfig, PodNetworks, PortMapping
from crishim.pods import validate as rules
from crishim.pods.creating import Creator
from crishim.pods.podresources import PodResources, validate
from crishim.pods.security import Profile, docker_security_opts

log = structlog.get_logger(__name__)

RUNTIME_HANDLER_LABEL = "io.crishim.runtime-handler"
DEFAULT_HANDLERS = ("", "docker")
SANDBOX_STOP_GRACE = 10  # seconds, for the pause and any container still running
# dockershim's value: the pause container is the last process the OOM killer picks.
SANDBOX_OOM_SCORE_ADJ = -998
CAP_SYS_RESOURCE = 24


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    meta: labels.SandboxMeta
    hostname: str = ""
    log_directory: str = ""
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    privileged: bool = False
    readonly_rootfs: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    seccomp: Profile = field(default_factory=Profile)
    apparmor: Profile = field(default_factory=Profile)
    selinux: tuple[tuple[str, str], ...] = ()  # (user|role|type|level, value)
    runtime_handler: str = ""


@dataclass(frozen=True, slots=True)
class SandboxView:
    id: str
    meta: labels.SandboxMeta
    ready: bool
    created_at_ns: int
    labels: dict[str, str]
    annotations: dict[str, str]
    runtime_handler: str
    ip: str
    additional_ips: tuple[str, ...]
    host_network: bool
    host_pid: bool
    host_ipc: bool
    pid: int
    docker_runtime: str  # what the pod's containers must run with too
    netns_path: str  # the pinned network namespace of a CNI pod, else ""
    cgroup_parent: str  # the pod cgroup the kubelet made, "" when none was given
    info: dict[str, object]
    record: Record  # what the view was made from (its identity versions cached list entries)


def negative_oom_score_allowed(status_text: str) -> bool:
    """Whether the capability bounding set (from /proc/self/status) has CAP_SYS_RESOURCE."""
    for line in status_text.splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return True


def systemd_cgroup_parent(parent: str) -> str:
    """cgroupfs-style `/kubepods/burstable/pod1` as systemd's `kubepods-burstable-pod1.slice`."""
    if not parent or parent.endswith(".slice"):
        return parent
    parts = [p.replace("-", "_") for p in parent.strip("/").split("/") if p]
    return "-".join(parts) + ".slice" if parts else ""


def resolv_conf(
    servers: tuple[str, ...], searches: tuple[str, ...], options: tuple[str, ...]
) -> str:
    lines = [f"nameserver {s}" for s in servers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


class Sandboxes:
    def __init__(
        self,
        docker: DockerClient,
        store: Store,
        images: Images,
        networks: PodNetworks,
        *,
        pause_image: str,
        state_dir: Path,
        engine: Engine,
        creator: Creator,
    ) -> None:
        self.docker = docker
        self.creator = creator  # Docker creates that leave nothing behind
        self.engine = engine  # the daemon's settings, from memory
        # id -> (record, network checkpoint, view): views are remade only when one changed.
        self._views: dict[str, tuple[Record, object, SandboxView | None]] = {}
        # The last list: (the store's records it was made of, networks.version, views).
        self._listed: tuple[object, int, tuple[SandboxView, ...]] = (None, -1, ())
        self.store = store
        self.images = images
        self.networks = networks
        self.pause_image = pause_image
        self.pod_resources = PodResources(state_dir / "pod-resources")
        self._oom_allowed: bool | None = None
        self.ops = Coalescer()  # stop/remove runs shared by concurrent callers (and Containers)

    # -- run ----------------------------------------------------------------

    async def run(self, request: SandboxRequest) -> str:
        name = labels.sandbox_name(request.meta)
        self._validate(request)
        if request.run_as_group is not None and request.run_as_user is None:
            raise errors.InvalidArgument("linux.security_context.run_as_group requires run_as_user")
        self.networks.require_ready(request.host_network)
        network_config = PodNetworkConfig(
            namespace=request.meta.namespace,
            name=request.meta.name,
            uid=request.meta.uid,
            port_mappings=request.port_mappings,
            dns_servers=request.dns_servers,
            dns_searches=request.dns_searches,
            dns_options=request.dns_options,
            annotations=request.annotations,
        )
        info = await self.engine.current_info()
        runtime = self._runtime(request.runtime_handler, info.runtimes)
        if await self.images.status(self.pause_image) is None:
            log.info("pause_image_pull", image=self.pause_image)
            await self.images.pull(self.pause_image, RegistryAuth())
        spec = await self._spec(request, name, runtime, info.cgroup_driver)

        def taken() -> errors.CrishimError:
            return errors.AlreadyExists(
                f"a sandbox for pod {request.meta.namespace}/{request.meta.name} "
                f"attempt {request.meta.attempt} already exists"
            )

        # A retry of a call still in this process: its pod, or a clean slate.
        if landed := await self.creator.landed(name):
            structlog.contextvars.bind_contextvars(pod_sandbox_id=landed, name=name, joined=True)
            return landed
        # Whatever fails or is cancelled inside removes the pause again (crishim.pods.creating).
        async with self.creator.creating(spec, taken, replace_never_ran=True) as made:
            sandbox_id = made.id
            # The create event may come while the pause starts: the refresh tells it.
            async with self.store.writing(sandbox_id, ("create", "start")) as refresh:
                await self.docker.start_container(sandbox_id)
                record = await refresh()
            if request.host_network and (request.dns_servers or request.dns_searches):
                await self._write_resolv_conf(sandbox_id, record, request)
            if self.networks.docker_network_mode(request.host_network) == "none":
                pid = record.info.state.pid if record is not None else 0
                if pid <= 0:
                    raise errors.Unavailable(f"pause container {sandbox_id[:12]} is not running")
                await self.networks.setup(sandbox_id, pid, network_config)
        # Said on the call's own rpc line: one line per start, naming what it made.
        structlog.contextvars.bind_contextvars(pod_sandbox_id=sandbox_id, name=name)
        return sandbox_id

    def _validate(self, request: SandboxRequest) -> None:
        """What Docker, runc or crishim's names cannot carry (crishim.pods.validate as rules)."""
        meta = request.meta
        rules.name_part(meta.name, "config.metadata.name")
        rules.name_part(meta.namespace, "config.metadata.namespace")
        rules.name_part(meta.uid, "config.metadata.uid")
        rules.hostname(request.hostname, "config.hostname")
        for server in request.dns_servers:
            rules.ip(server, "config.dns_config.servers")
        rules.port_mappings(
            ((p.protocol, p.container_port, p.host_port, p.host_ip) for p in request.port_mappings),
            self.networks.uses_docker_ports(request.host_network),
            "config.port_mappings",
        )
        rules.label_keys(request.labels, "config.labels")
        rules.label_keys(request.annotations, "config.annotations")
        rules.sysctls(request.sysctls, request.host_network, "config.linux.sysctls")
        sc = "config.linux.security_context"
        rules.user_id(request.run_as_user, f"{sc}.run_as_user")
        rules.user_id(request.run_as_group, f"{sc}.run_as_group")
        rules.group_ids(request.supplemental_groups, f"{sc}.supplemental_groups")

    @staticmethod
    def _runtime(handler: str, runtimes: tuple[str, ...]) -> str:
        if handler in DEFAULT_HANDLERS:
            return ""
        if handler in runtimes:
            return handler
        known = ", ".join(sorted({*DEFAULT_HANDLERS[1:], *runtimes}))
        raise errors.InvalidArgument(
            f"runtime_handler {handler!r} is unknown; this node has: {known}"
        )

    async def oom_score_adj(self) -> int:
        if self._oom_allowed is None:
            status = await asyncio.to_thread(Path("/proc/self/status").read_text)
            self._oom_allowed = negative_oom_score_allowed(status)
            if not self._oom_allowed:
                log.warning(
                    "oom_score_adj_fallback",
                    wanted=SANDBOX_OOM_SCORE_ADJ,
                    using=0,
                    reason="CAP_SYS_RESOURCE is not in the capability bounding set",
                )
        return SANDBOX_OOM_SCORE_ADJ if self._oom_allowed else 0

    async def _spec(
        self, request: SandboxRequest, name: str, runtime: str, cgroup_driver: str
    ) -> ContainerSpec:
        user = ""
        if request.run_as_user is not None:
            user = str(request.run_as_user)
            if request.run_as_group is not None:
                user += f":{request.run_as_group}"
        docker_labels = labels.sandbox_labels(request.labels, request.annotations)
        if request.runtime_handler:
            docker_labels[RUNTIME_HANDLER_LABEL] = request.runtime_handler
        cgroup_parent = request.cgroup_parent
        if cgroup_driver == "systemd":
            cgroup_parent = systemd_cgroup_parent(cgroup_parent)
        host = request.host_network
        return ContainerSpec(
            name=name,
            image=self.pause_image,
            labels=docker_labels,
            user=user,
            # Docker refuses a hostname or DNS settings with the host's network;
            # DNS is then written into the sandbox's resolv.conf after start.
            hostname="" if host else request.hostname,
            dns_servers=() if host else request.dns_servers,
            dns_search=() if host else request.dns_searches,
            dns_options=() if host else request.dns_options,
            network_mode=self.networks.docker_network_mode(host),
            pid_mode="host" if request.host_pid else "",
            ipc_mode="host" if request.host_ipc else "shareable",
            port_bindings=()
            if not self.networks.uses_docker_ports(host)
            else tuple(
                PortBinding(p.container_port, p.protocol, p.host_port, p.host_ip)
                for p in request.port_mappings
                if p.host_port
            ),
            cgroup_parent=cgroup_parent,
            sysctls=request.sysctls,
            privileged=request.privileged,
            readonly_rootfs=request.readonly_rootfs,
            group_add=tuple(str(g) for g in request.supplemental_groups),
            security_opt=await docker_security_opts(
                request.seccomp, request.apparmor, request.selinux
            ),
            oom_score_adj=await self.oom_score_adj(),
            runtime=runtime,
        )

    async def _write_resolv_conf(
        self, sandbox_id: str, record: Record | None, request: SandboxRequest
    ) -> None:
        path = record.info.resolv_conf_path if record is not None else ""
        if not path or not self.docker.endpoint.startswith("unix://"):
            log.warning("resolv_conf_not_written", pod_sandbox_id=sandbox_id)
            return
        content = resolv_conf(request.dns_servers, request.dns_searches, request.dns_options)
        await asyncio.to_thread(Path(path).write_text, content)

    # -- stop, remove ---------------------------------------------------------

    def _containers_of(self, sandbox_id: str) -> list[Record]:
        return [
            r for r in self.store.records(labels.TYPE_CONTAINER) if r.cri.sandbox_id == sandbox_id
        ]

    def _sandbox_record(self, sandbox_id: str) -> Record | None:
        record = self.store.get(sandbox_id)
        return record if record is not None and record.cri.kind == labels.TYPE_SANDBOX else None

    async def stop(self, sandbox_id: str) -> None:
        """Stop the pod's containers, then tear its network down while the pause stops.

        The containers stop first: a graceful stop may still use the network. The
        pause needs none, and CNI DEL runs in the namespace crishim pinned at setup,
        which outlives the pause: the two overlap (DEL is ~30 ms of plugins here).
        A pod whose teardown reads the running pause (one adopted from cri-dockerd)
        is torn down before its pause stops.

        Unknown: already stopped (CRI). A failed network teardown fails the call
        once the pause has stopped, and the checkpoint stays, so the kubelet's
        retry runs DEL again rather than leaking the pod's address. Concurrent
        calls share one run.
        """
        record = self._sandbox_record(sandbox_id)
        if record is None:
            return
        await self.ops.run(("stop-pod", record.id), lambda: self._stop(record))

    async def _stop(self, record: Record) -> None:
        members = self._containers_of(record.id)
        await asyncio.gather(*(self.stop_container(r.id, SANDBOX_STOP_GRACE) for r in members))
        info = record.info
        teardown = self.networks.teardown(info.id, info.state.pid, info.network_mode)
        if self.networks.teardown_needs_pause(info.id, info.network_mode):
            await teardown
            await self.stop_container(record.id, SANDBOX_STOP_GRACE)
        else:
            # Both run to their end; the teardown's failure is the call's.
            done = await asyncio.gather(
                teardown,
                self.stop_container(record.id, SANDBOX_STOP_GRACE),
                return_exceptions=True,
            )
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
        log.info("sandbox_stopped", pod_sandbox_id=record.id, containers=len(members))

    async def stop_container(self, container_id: str, timeout_s: int) -> None:
        """Docker stop, shared with concurrent stops of the same container."""

        async def stop() -> None:
            # Docker logs die (if it was running) and stop before it answers: the
            # refresh after the answer tells what they say.
            async with self.store.writing(container_id, ("die", "stop")) as refresh:
                with contextlib.suppress(errors.NotFound):
                    await self.docker.stop_container(container_id, timeout_s)
                await refresh()

        # Keyed with the timeout: a kill (0) must not wait out a concurrent graceful stop.
        await self.ops.run(("stop", container_id, timeout_s), stop)

    async def remove_container(self, container_id: str) -> None:
        """Docker force-remove, shared with concurrent removals of the same container.

        Docker's 409 "removal already in progress" (another client removes it)
        means it is going: wait until it is gone instead of failing.
        """

        async def remove() -> None:
            try:
                await self.docker.remove_container(container_id)
            except errors.NotFound:
                pass
            except errors.FailedPrecondition as exc:
                if "already in progress" not in str(exc) or not await self.store.wait_gone(
                    container_id
                ):
                    raise
                return
            # Docker answers a forced removal once the container is gone: no inspect.
            self.store.removed(container_id)

        await self.ops.run(("remove", container_id), remove)

    async def remove(self, sandbox_id: str) -> None:
        """Force-remove the pod's containers and the pause. Unknown: already removed (CRI).
        Concurrent calls share one run."""
        record = self._sandbox_record(sandbox_id)
        if record is None:
            if self.networks.checkpoint(sandbox_id) is not None:  # Docker lost it; we did not
                await self.networks.remove(sandbox_id, 0, "")
            return
        await self.ops.run(("remove-pod", record.id), lambda: self._remove(record))

    async def _remove(self, record: Record) -> None:
        members = self._containers_of(record.id)
        await asyncio.gather(*(self.remove_container(r.id) for r in members))
        info = record.info
        # The network goes before the pause: a failed DEL keeps the pod listed for a retry.
        await self.networks.remove(info.id, info.state.pid, info.network_mode)
        await self.remove_container(record.id)
        if self.pod_resources.recorded(record.id):  # a thread trip only when there is a file
            await asyncio.to_thread(self.pod_resources.forget, record.id)
        log.info("sandbox_removed", pod_sandbox_id=record.id)

    async def update_resources(
        self, sandbox_id: str, overhead: Resources, resources: Resources
    ) -> None:
        """Record a pod's new resources (see crishim.pods.podresources for why not more)."""
        view = self.get(sandbox_id)  # NotFound for unknown sandboxes
        validate("overhead", overhead)
        validate("resources", resources)
        await asyncio.to_thread(self.pod_resources.record, view.id, overhead, resources)
        log.info("pod_resources_updated", pod_sandbox_id=view.id)

    async def load_state(self) -> None:
        """What earlier runs recorded: pod resources (the networks load their own)."""
        await asyncio.to_thread(self.pod_resources.load)

    async def reconcile_networks(self) -> None:
        """At start, with a synced store: pin the netns of running pods cri-dockerd set up,
        and tear down checkpoints whose sandbox Docker no longer has."""
        records = self.store.records(labels.TYPE_SANDBOX)
        await self.networks.adopt_running(
            (r.id, r.info.state.pid)
            for r in records
            if r.info.network_mode == "none" and r.info.state.running
        )
        await self.networks.gc({r.id for r in records})

    # -- read ----------------------------------------------------------------

    def view(self, record: Record) -> SandboxView | None:
        meta = labels.parse_sandbox_name(record.info.name)
        if meta is None:
            return None
        info = record.info
        handler = record.info.labels.get(RUNTIME_HANDLER_LABEL, "")
        if not handler and info.runtime not in ("", "runc"):
            handler = info.runtime
        cri_labels = record.cri.labels  # crishim's own labels are not among them
        host_network = info.network_mode == "host"
        ips = self.networks.ips(info.id)
        if ips is None:  # docker mode: Docker's bridge address
            ips = () if host_network or not info.ip_address else (info.ip_address,)
        return SandboxView(
            id=info.id,
            meta=meta,
            ready=info.state.running,
            created_at_ns=info.created_at_ns,
            labels=cri_labels,
            annotations=record.cri.annotations,
            runtime_handler=handler,
            ip=ips[0] if ips and not host_network else "",
            additional_ips=ips[1:] if not host_network else (),
            host_network=host_network,
            host_pid=info.pid_mode == "host",
            host_ipc=info.ipc_mode == "host",
            pid=info.state.pid,
            docker_runtime="" if info.runtime == "runc" else info.runtime,
            netns_path=self.networks.netns_path(info.id),
            cgroup_parent=info.cgroup_parent,
            info={
                "pid": info.state.pid,
                "image": info.image,
                "name": info.name,
                "networkMode": info.network_mode,
                "status": info.state.status,
            },
            record=record,
        )

    def get(self, sandbox_id: str) -> SandboxView:
        record = self._sandbox_record(sandbox_id)
        view = self.view(record) if record is not None else None
        if view is None:
            raise errors.NotFound(f"pod sandbox {sandbox_id!r} not found")
        return view

    def list(self) -> tuple[SandboxView, ...]:
        """Every pod: the same tuple while no record or network checkpoint changed, and a
        view made once per version of its record and checkpoint (both immutable, replaced
        on change; List* and the stats calls are polled)."""
        records = self.store.records(labels.TYPE_SANDBOX)
        listed = self._listed
        if listed[0] is records and listed[1] == self.networks.version:
            return listed[2]
        memo, self._views = self._views, {}
        out = []
        for record in records:
            cp = self.networks.checkpoint(record.id)
            hit = memo.get(record.id)
            if hit is not None and hit[0] is record and hit[1] is cp:
                view = hit[2]
            else:
                view = self.view(record)
            self._views[record.id] = (record, cp, view)
            if view is not None:
                out.append(view)
        self._listed = (records, self.networks.version, tuple(out))
        return self._listed[2]
