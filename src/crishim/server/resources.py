"""LinuxContainerResources in crishim's terms (CreateContainer, UpdateContainerResources,
UpdatePodSandboxResources)."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from crishim.api.runtime import v1 as api
from crishim.common import errors
from crishim.engine.docker.types import Resources
from crishim.pods.cgroupres import CgroupResources

E = enum.Enum
M = TypeVar("M")
_EMPTY: dict[type, Any] = {}


def or_empty(message: M | None, cls: type[M]) -> M:
    """`message`, or one shared empty `cls` when it is unset: to read, never to change.

    `message or cls()` cost a Message.__bool__ walk over every field and a new
    message per call (~30 us of a small CreateContainer's conversion, measured).
    """
    if message is not None:
        return message
    empty = _EMPTY.get(cls)
    if empty is None:
        empty = _EMPTY[cls] = cls()
    return empty


def declared(value: E, field: str) -> E:
    """`value` if the schema declares it; INVALID_ARGUMENT naming the field otherwise.

    betterproto2 keeps an undeclared enum number as a pseudo-member of the enum
    (protobuf's open enums); every conversion table below would fail on it.
    """
    if value not in type(value).__members__.values():
        raise errors.InvalidArgument(f"{field}: {int(value)} is not a known value")
    return value


def resources(r: api.LinuxContainerResources | None) -> Resources:
    if r is None:
        return Resources()
    return Resources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
    )


def cgroup_resources(r: api.LinuxContainerResources | None) -> CgroupResources:
    """The parts Docker has no API for (crishim.pods.cgroupres writes them)."""
    if r is None:
        return CgroupResources()
    return CgroupResources(
        tuple((h.page_size, h.limit) for h in r.hugepage_limits), dict(r.unified)
    )


def to_linux_resources(
    r: Resources, oom_score_adj: int, cgroup: CgroupResources
) -> api.LinuxContainerResources:
    """What a container has, as ContainerStatus reports it."""
    return api.LinuxContainerResources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        oom_score_adj=oom_score_adj,
        hugepage_limits=[
            api.HugepageLimit(page_size=size, limit=limit) for size, limit in cgroup.hugepages
        ],
        unified=cgroup.unified,
    )
