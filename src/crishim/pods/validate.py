"""What a pod or container request must satisfy before Docker sees it.

Docker answers many invalid inputs with a 500 (which would be INTERNAL here) or,
worse, accepts them. A rule here refuses only what Docker, runc, the kernel or
crishim's own formats (the Docker names of crishim.engine.labels) cannot carry: it is
never stricter than what the CRI conformance suite, cri-dockerd and containerd
accept for the same field. Kubernetes' own rules (DNS names and the like) are
the API server's to enforce: critest and crictl users name pods with capitals.
Each rule says next to it why it exists. A failure is INVALID_ARGUMENT naming
the field and the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from crishim.common import errors

# A part of a Docker name (crishim.engine.labels: k8s_<container>_<pod>_<namespace>_<uid>_<n>):
# Docker allows letters, digits, '_', '.' and '-' in names, and '_' is the format's
# delimiter. A part starts and ends alphanumeric, so that no part is dots only and
# none reads as a path ('..'). 253 bytes bounds it (a DNS subdomain's length, more
# than the API server lets any of these names have).
_NAME_PART = re.compile(r"[A-Za-z0-9](?:[-.A-Za-z0-9]*[A-Za-z0-9])?")
NAME_PART_MAX = 253
# Hostnames: a DNS-1123 subdomain (the kubelet lowercases; a node's name may keep
# capitals in host-network pods), at most 64 bytes: the kernel's HOST_NAME_MAX.
_HOST_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
HOST_NAME_MAX = 64
# A sysctl name, dotted or slashed: runc writes it under /proc/sys, so no empty
# component and nothing but a name's characters (interface names may have capitals).
_SYSCTL_PART = r"[A-Za-z0-9](?:[-_A-Za-z0-9]*[A-Za-z0-9])?"
_SYSCTL = re.compile(rf"(?:{_SYSCTL_PART}[./])*{_SYSCTL_PART}")
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
# The kernel's uid_t and gid_t are 32 bits and 2^32-1 is (uid_t)-1, "no id": runc
# refuses anything else (Kubernetes' own 2^31-1 bound is the API server's).
MAX_ID = 2**32 - 2
DEVICE_PERMISSIONS = frozenset("rwm")


def _fail(field: str, value: object, rule: str) -> None:
    shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
    raise errors.InvalidArgument(f"{field} {shown!r}: {rule}")


def name_part(value: str, field: str) -> None:
    """A pod's name, namespace or uid, or a container's name: one part of its Docker name."""
    if not value:
        _fail(field, value, "is required")
    if len(value) > NAME_PART_MAX or not _NAME_PART.fullmatch(value):
        _fail(
            field,
            value,
            f"must be letters, digits, '-' and '.' (no '_': it separates the parts of the"
            f" Docker name), start and end with a letter or digit, at most {NAME_PART_MAX}",
        )


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
        if not docker_bridge:
            continue  # CNI's portmap takes whatever it is given, as containerd passes it
        # Docker's port publishing fails the start on a host port bound twice in one
        # container (protocol, port, IP), and has no SCTP proxy.
        key = (protocol, host_port, host_ip)
        if key in seen:
            _fail(f"{field}.host_port", host_port, f"is mapped twice for {protocol}")
        seen.add(key)
        if protocol == "sctp":
            _fail(f"{field}.protocol", "SCTP", "host ports need a CNI network for SCTP")
