"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

from crishim.api.runtime import v1 as api
from crishim.common import errors
from crishim.engine import labels
from crishim.network.pods import PortMapping
from crishim.pods.sandboxes import Profile, Sandboxes, SandboxRequest, SandboxView
from crishim.server.listing import chunks
from crishim.server.protowire import Encoded
from crishim.server.resources import declared, or_empty, resources

_PROTOCOLS = {api.Protocol.TCP: "tcp", api.Protocol.UDP: "udp", api.Protocol.SCTP: "sctp"}
_PROFILE_KINDS = {
    api.SecurityProfileProfileType.RuntimeDefault: "runtime/default",
    api.SecurityProfileProfileType.Unconfined: "unconfined",
    api.SecurityProfileProfileType.Localhost: "localhost",
}


RUNTIME_DEFAULT = Profile()
UNCONFINED = Profile("unconfined")


def _profile(
    profile: api.SecurityProfile | None, legacy: str, unset: Profile = RUNTIME_DEFAULT
) -> Profile:
    """The typed profile, or the deprecated string form ("localhost/<ref>", "unconfined", ...).

    `unset` is what neither form set means: for seccomp the CRI says unconfined
    (the kubelet sends RuntimeDefault when a pod asks for it).
    """
    if profile is not None:
        kind = declared(profile.profile_type, "security profile profile_type")
        return Profile(_PROFILE_KINDS[kind], profile.localhost_ref)
    if legacy.startswith("localhost/"):
        return Profile("localhost", legacy.removeprefix("localhost/"))
    if legacy == "unconfined":
        return Profile("unconfined")
    if legacy in ("runtime/default", "docker/default"):
        return Profile()
    return unset


def sandbox_request(message: api.RunPodSandboxRequest) -> SandboxRequest:
    config = message.config
    if config is None or config.metadata is None:
        raise errors.InvalidArgument("config.metadata is required")
    m = config.metadata
    linux = or_empty(config.linux, api.LinuxPodSandboxConfig)
    sc = or_empty(linux.security_context, api.LinuxSandboxSecurityContext)
    ns = or_empty(sc.namespace_options, api.NamespaceOption)
    dns = or_empty(config.dns_config, api.DnsConfig)
    if sc.supplemental_groups_policy == api.SupplementalGroupsPolicy.Strict:
        raise errors.FailedPrecondition(
            "supplemental_groups_policy Strict is not supported: Docker always adds the "
            "groups of the image's /etc/group (Status reports supplemental_groups_policy=false)"
        )
    userns = ns.userns_options
    if userns is not None and userns.mode == api.NamespaceMode.POD:
        raise errors.FailedPrecondition(
            "pod user namespaces are not supported by Docker (Status reports user_namespaces=false)"
        )
    # The kubelet sets POD or NODE for a sandbox's network and IPC, CONTAINER or NODE
    # for its PID namespace (CRI); anything else is a request we would misread.
    for name, mode, allowed in (
        ("network", ns.network, (api.NamespaceMode.POD, api.NamespaceMode.NODE)),
        ("ipc", ns.ipc, (api.NamespaceMode.POD, api.NamespaceMode.NODE)),
        (
            "pid",
            ns.pid,
            (api.NamespaceMode.POD, api.NamespaceMode.CONTAINER, api.NamespaceMode.NODE),
        ),
    ):
        if mode not in allowed:
            raise errors.InvalidArgument(
                f"linux.security_context.namespace_options.{name}: {int(mode)} is not allowed"
            )
    for p in config.port_mappings:
        if not 0 < p.container_port < 65536 or not 0 <= p.host_port < 65536:
            raise errors.InvalidArgument(f"config.port_mappings: invalid port in {p}")
    return SandboxRequest(
        meta=labels.SandboxMeta(m.name, m.namespace, m.uid, m.attempt),
        hostname=config.hostname,
        log_directory=config.log_directory,
        dns_servers=tuple(dns.servers),
        dns_searches=tuple(dns.searches),
        dns_options=tuple(dns.options),
        port_mappings=tuple(
            PortMapping(
                _PROTOCOLS[declared(p.protocol, "config.port_mappings.protocol")],
                p.container_port,
                p.host_port,
                p.host_ip,
            )
            for p in config.port_mappings
        ),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        cgroup_parent=linux.cgroup_parent,
        sysctls=dict(linux.sysctls),
        host_network=ns.network == api.NamespaceMode.NODE,
        host_pid=ns.pid == api.NamespaceMode.NODE,
        host_ipc=ns.ipc == api.NamespaceMode.NODE,
        privileged=sc.privileged,
        readonly_rootfs=sc.readonly_rootfs,
        run_as_user=sc.run_as_user.value if sc.run_as_user is not None else None,
        run_as_group=sc.run_as_group.value if sc.run_as_group is not None else None,
        supplemental_groups=tuple(sc.supplemental_groups),
        seccomp=_profile(sc.seccomp, sc.seccomp_profile_path, UNCONFINED),
        apparmor=_profile(sc.apparmor, ""),
        selinux=tuple(
            (k, getattr(sc.selinux_options, k)) for k in ("user", "role", "type", "level")
        )
        if sc.selinux_options is not None
        else (),
        runtime_handler=message.runtime_handler,
    )


def _metadata(view: SandboxView) -> api.PodSandboxMetadata:
    m = view.meta
    return api.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def _state(view: SandboxView) -> api.PodSandboxState:
    return api.PodSandboxState.SANDBOX_READY if view.ready else api.PodSandboxState.SANDBOX_NOTREADY


def to_sandbox_status(view: SandboxView) -> api.PodSandboxStatus:
    node, pod, container = (
        api.NamespaceMode.NODE,
        api.NamespaceMode.POD,
        api.NamespaceMode.CONTAINER,
    )
    return api.PodSandboxStatus(
        id=view.id,
        metadata=_metadata(view),
        state=_state(view),
        created_at=view.created_at_ns,
        network=None
        if view.host_network
        else api.PodSandboxNetworkStatus(
            ip=view.ip, additional_ips=[api.PodIp(ip=ip) for ip in view.additional_ips]
        ),
        linux=api.LinuxPodSandboxStatus(
            namespaces=api.Namespace(
                options=api.NamespaceOption(
                    network=node if view.host_network else pod,
                    pid=node if view.host_pid else container,
                    ipc=node if view.host_ipc else pod,
                )
            )
        ),
        labels=view.labels,
        annotations=view.annotations,
        runtime_handler=view.runtime_handler,
    )


def _pod_sandbox(v: SandboxView) -> api.PodSandbox:
    return api.PodSandbox(
        id=v.id,
        metadata=_metadata(v),
        state=_state(v),
        created_at=v.created_at_ns,
        labels=v.labels,
        annotations=v.annotations,
        runtime_handler=v.runtime_handler,
    )


def _matches(view: SandboxView, f: api.PodSandboxFilter | None) -> bool:
    if f is None:
        return True
    if f.id and not view.id.startswith(f.id):
        return False
    if f.state is not None and _state(view) != f.state.state:
        return False
    return all(view.labels.get(k) == v for k, v in f.label_selector.items())


class SandboxRPCs:
    """The sandbox part of RuntimeService (mixed into it)."""

    _sandboxes: Sandboxes
    # ContainerRPCs': containers_statuses, in wire form
    _statuses_in: Callable[[str], Awaitable[bytes]]

    async def run_pod_sandbox(self, message: api.RunPodSandboxRequest) -> api.RunPodSandboxResponse:
        return api.RunPodSandboxResponse(
            pod_sandbox_id=await self._sandboxes.run(sandbox_request(message))
        )

    async def stop_pod_sandbox(
        self, message: api.StopPodSandboxRequest
    ) -> api.StopPodSandboxResponse:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        await self._sandboxes.stop(message.pod_sandbox_id)
        return api.StopPodSandboxResponse()

    async def remove_pod_sandbox(
        self, message: api.RemovePodSandboxRequest
    ) -> api.RemovePodSandboxResponse:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        await self._sandboxes.remove(message.pod_sandbox_id)
        return api.RemovePodSandboxResponse()

    async def pod_sandbox_status(self, message: api.PodSandboxStatusRequest) -> Encoded:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        view = self._sandboxes.get(message.pod_sandbox_id)
        status = to_sandbox_status(view)
        info: dict[str, str] = {}
        if message.verbose:
            details = dict(view.info)
            if not view.host_network:
                details["networkCheck"] = await self._sandboxes.networks.last_check(view.id)
            recorded = self._sandboxes.pod_resources.get(view.id)
            if recorded is not None:
                details["podResources"] = recorded
            info = {"info": json.dumps(details)}
        # With a timestamp the kubelet's evented PLEG takes containers_statuses as the pod's
        # every container (without one, it lists them itself): both, as containerd.
        response = api.PodSandboxStatusResponse(status=status, info=info, timestamp=time.time_ns())
        return Encoded(bytes(response) + await self._statuses_in(view.id))  # + field 3

    async def update_pod_sandbox_resources(
        self, message: api.UpdatePodSandboxResourcesRequest
    ) -> api.UpdatePodSandboxResourcesResponse:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        await self._sandboxes.update_resources(
            message.pod_sandbox_id, resources(message.overhead), resources(message.resources)
        )
        return api.UpdatePodSandboxResourcesResponse()

    def _selected_sandboxes(
        self, views: Sequence[SandboxView], f: api.PodSandboxFilter | None
    ) -> Iterator[bytes]:
        """The entries (field 1 of ListPodSandboxResponse and StreamPodSandboxesResponse)
        of the views `f` selects; a view's entry is made once per record."""
        return self._sandbox_entries.selected(
            views, _matches, f, _pod_sandbox, version=lambda v: v.record
        )

    async def list_pod_sandbox(self, message: api.ListPodSandboxRequest) -> Encoded:
        views = self._sandboxes.list()
        entries = self._sandbox_entries
        f = message.filter
        unfiltered = f is None or not (f.id or f.state is not None or f.label_selector)
        data = entries.join(
            views if unfiltered else None,  # kept: no filter
            lambda: self._selected_sandboxes(views, f),
        )
        entries.prune(lambda: [v.id for v in views], len(views))
        return Encoded(data)  # ListPodSandboxResponse: field 1 repeated

    async def stream_pod_sandboxes(
        self, message: api.StreamPodSandboxesRequest
    ) -> AsyncIterator[api.StreamPodSandboxesResponse]:
        views = self._sandboxes.list()
        for chunk in chunks(list(self._selected_sandboxes(views, message.filter))):
            yield Encoded(b"".join(chunk))  # type: ignore[misc]
