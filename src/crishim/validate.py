"""What a pod or container request must satisfy before Docker sees it.

Docker answers many invalid inputs with a 500 (which would be INTERNAL here) or,
worse, accepts them. Each rule below is what Kubernetes itself validates for
the field the kubelet fills in (so a kubelet request always passes), or what
runc refuses at start; the rule is written next to its check. A failure is
INVALID_ARGUMENT naming the field and the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from crishim import errors

# Kubernetes apimachinery: IsDNS1123Label / IsDNS1123Subdomain.
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_LABEL)
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# Pod UIDs are UUIDs from the API server, or hashes for static pods; what the
# Docker name needs is a word of letters, digits, '-' and '.' that is not dots only.
_UID = re.compile(r"[A-Za-z0-9](?:[-.A-Za-z0-9]*[A-Za-z0-9])?")
# Hostnames: a DNS-1123 subdomain (the kubelet lowercases; a node's name may keep
# capitals in host-network pods), at most 64 bytes: the kernel's HOST_NAME_MAX.
_HOST_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
HOST_NAME_MAX = 64
# Kubernetes' sysctl name syntax (validation.IsValidSysctlName), dots or slashes.
_SYSCTL = re.compile(r"(?:[a-z0-9](?:[-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9](?:[-_a-z0-9]*[a-z0-9])?")
# runc sets only namespaced sysctls (libcontainer/configs/validate): the IPC ones,
# fs.mqueue.*, and net.* outside the host's network namespace. kernel.hostname
# and kernel.domainname belong to the UTS namespace but conflict with the
# hostname the pod sets, and runc refuses them.
_IPC_SYSCTLS = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)
# Kubernetes: runAsUser, runAsGroup and supplementalGroups are 0..2^31-1.
MAX_ID = 2**31 - 1
DEVICE_PERMISSIONS = frozenset("rwm")


def _fail(field: str, value: object, rule: str) -> None:
    shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
    raise errors.InvalidArgument(f"{field} {shown!r}: {rule}")


def dns_label(value: str, field: str) -> None:
    if len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        _fail(field, value, "must be a DNS-1123 label (a-z, 0-9, '-', at most 63)")


def dns_subdomain(value: str, field: str) -> None:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.fullmatch(value):
        _fail(field, value, "must be a DNS-1123 subdomain (a-z, 0-9, '-', '.', at most 253)")


def pod_uid(value: str, field: str) -> None:
    if len(value) > 253 or not _UID.fullmatch(value):
        _fail(field, value, "must be letters, digits, '-' and '.', and start and end alphanumeric")


def hostname(value: str, field: str) -> None:
    if value and (len(value) > HOST_NAME_MAX or not _HOSTNAME.fullmatch(value)):
        _fail(field, value, f"must be a DNS name of at most {HOST_NAME_MAX} characters")


def ip(value: str, field: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _fail(field, value, "is not an IP address")


def label_keys(items: Mapping[str, str], field: str) -> None:
    # Kubernetes label and annotation keys are qualified names: never empty.
    if "" in items:
        _fail(field, "", "keys must not be empty")


def sysctls(items: Mapping[str, str], host_network: bool, field: str) -> None:
    for name in items:
        where = f"{field}[{name[:80]!r}]"
        if len(name) > 253 or not _SYSCTL.fullmatch(name):
            _fail(where, name, "is not a sysctl name")
        dotted = name.replace("/", ".")
        if dotted in ("kernel.hostname", "kernel.domainname"):
            _fail(where, name, "is set by the pod's hostname, not as a sysctl")
        if dotted.startswith("net."):
            if host_network:
                _fail(where, name, "cannot be set in the host's network namespace")
        elif dotted not in _IPC_SYSCTLS and not dotted.startswith("fs.mqueue."):
            _fail(where, name, "is not namespaced: the kernel would apply it to the whole node")


def user_id(value: int | None, field: str) -> None:
    if value is not None and not 0 <= value <= MAX_ID:
        _fail(field, value, f"must be between 0 and {MAX_ID}")


def group_ids(values: Iterable[int], field: str) -> None:
    for value in values:
        user_id(value, field)


def container_path(value: str, field: str) -> None:
    # Docker needs an absolute path; ':' separates the parts of its mount syntax.
    if not value.startswith("/"):
        _fail(field, value, "must be an absolute path")
    if ":" in value or "\0" in value:
        _fail(field, value, "must not contain ':' or NUL")


def device_permissions(value: str, field: str) -> None:
    if not set(value) <= DEVICE_PERMISSIONS:
        _fail(field, value, "must be letters of 'rwm'")


def non_negative(value: int, field: str) -> None:
    if value < 0:
        _fail(field, value, "must not be negative")


def cpu_quota(value: int, field: str) -> None:
    # 0 is unset and -1 the kernel's "no limit"; anything lower means nothing.
    if value < -1:
        _fail(field, value, "must be -1 (no limit), 0 (unset) or positive")


def oom_score_adj(value: int, field: str) -> None:
    if not -1000 <= value <= 1000:
        _fail(field, value, "must be between -1000 and 1000")


def port_mappings(
    mappings: Iterable[tuple[str, int, int, str]], docker_bridge: bool, field: str
) -> None:
    """(protocol, container port, host port, host IP) of each of a pod's port mappings."""
    seen: set[tuple[str, int, str]] = set()
    for protocol, _container_port, host_port, host_ip in mappings:
        if host_ip:
            ip(host_ip, f"{field}.host_ip")
        if not host_port:
            continue
        # Kubernetes refuses two host ports alike (protocol, port, IP) in one pod.
        key = (protocol, host_port, host_ip)
        if key in seen:
            _fail(f"{field}.host_port", host_port, f"is mapped twice for {protocol}")
        seen.add(key)
        # Docker's own port publishing (docker network mode) has no SCTP proxy.
        if docker_bridge and protocol == "sctp":
            _fail(f"{field}.protocol", "SCTP", "host ports need a CNI network for SCTP")
