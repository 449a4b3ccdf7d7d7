"""LinuxContainerResources in crishim's terms (CreateContainer, UpdateContainerResources,
UpdatePodSandboxResources)."""

from __future__ import annotations

from crishim.api.runtime import v1 as api
from crishim.docker.types import Resources


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
