"""Hugepage limits and cgroup v2 `unified` settings: resources Docker has no API for.

The CRI carries them in LinuxContainerResources (hugepage_limits; unified, a
map of cgroup v2 file -> value); Docker's create and update take neither. So
crishim writes them into the container's own cgroup itself, right after the
container starts and on every UpdateContainerResources, and keeps what was
asked in two labels of the container (for ContainerStatus and restarts).

What this host can enforce decides what is accepted, before Docker is asked
to create anything:
  - a hugepage limit needs the hugetlb controller on the container's
    hierarchy (v1: mounted; v2: enabled for the container's parent). Limits of
    0 (the kubelet sends one for every page size the node has) are accepted
    where nothing can enforce them; a non-zero limit there is FAILED_PRECONDITION.
  - unified settings need cgroup v2; on a v1 host they are FAILED_PRECONDITION.
Files: v1 hugetlb.<size>.limit_in_bytes, v2 hugetlb.<size>.max, v2 <key>.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from crishim.common import cgroups, errors

HUGEPAGES_LABEL = "io.crishim.hugepages"
UNIFIED_LABEL = "io.crishim.unified"
_PAGE_SIZE = re.compile(r"[1-9][0-9]*(KB|MB|GB)")
_UNIFIED_KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")


@dataclass(frozen=True, slots=True)
class CgroupResources:
    hugepages: tuple[tuple[str, int], ...] = ()  # (page size, limit in bytes)
    unified: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        out = {}
        if self.hugepages:
            out[HUGEPAGES_LABEL] = json.dumps([list(h) for h in self.hugepages])
        if self.unified:
            out[UNIFIED_LABEL] = json.dumps(self.unified, sort_keys=True)
        return out

    @classmethod
    def from_labels(cls, docker_labels: dict[str, str]) -> CgroupResources:
        try:
            pages = tuple(
                (str(s), int(n)) for s, n in json.loads(docker_labels.get(HUGEPAGES_LABEL, "[]"))
            )
            unified = dict(json.loads(docker_labels.get(UNIFIED_LABEL, "{}")))
        except (ValueError, TypeError):
            return cls()
        return cls(pages, {str(k): str(v) for k, v in unified.items()})


def validate(res: CgroupResources) -> None:
    for size, limit in res.hugepages:
        if not _PAGE_SIZE.fullmatch(size):
            raise errors.InvalidArgument(f"hugepage_limits: page size {size!r} (like 2MB, 1GB)")
        if limit < 0:
            raise errors.InvalidArgument(f"hugepage_limits: negative limit for {size}")
    for key, value in res.unified.items():
        if not _UNIFIED_KEY.fullmatch(key) or ".." in key:
            raise errors.InvalidArgument(f"unified: {key!r} is not a cgroup v2 file name")
        if "\n" in value or len(value) > 4096:
            raise errors.InvalidArgument(f"unified: the value of {key} is not one line")


def _hugetlb_available(mounts: cgroups.Mounts) -> bool:
    if mounts.is_v2:
        assert mounts.unified is not None
        try:
            with open(os.path.join(mounts.unified, "cgroup.controllers")) as f:
                return "hugetlb" in f.read().split()
        except OSError:
            return False
    return "hugetlb" in mounts.v1


def check_host(res: CgroupResources, mounts: cgroups.Mounts) -> None:
    """FAILED_PRECONDITION for what this host cannot enforce (blocking: reads /sys)."""
    if any(limit for _, limit in res.hugepages) and not _hugetlb_available(mounts):
        raise errors.FailedPrecondition(
            "hugepage limits need the hugetlb cgroup controller, which this host does not "
            "have on the hierarchy its containers use"
        )
    if res.unified and not mounts.is_v2:
        raise errors.FailedPrecondition("unified resources need cgroup v2; this host runs v1")


def apply(res: CgroupResources, pid: int, mounts: cgroups.Mounts) -> None:
    """Write the settings into the cgroup of process `pid` (blocking)."""
    if not res.hugepages and not res.unified:
        return
    paths = cgroups.locate(pid, mounts)
    if paths is None:
        raise errors.FailedPrecondition(f"the cgroup of process {pid} was not found")
    writes: list[tuple[str, str]] = []
    if _hugetlb_available(mounts):
        directory = paths.v2 if paths.v2 is not None else paths.dir_for("hugetlb")
        suffix = "max" if paths.v2 is not None else "limit_in_bytes"
        for size, limit in res.hugepages:
            if directory is not None:
                writes.append((os.path.join(directory, f"hugetlb.{size}.{suffix}"), str(limit)))
    if res.unified and paths.v2 is not None:
        for key, value in res.unified.items():
            writes.append((os.path.join(paths.v2, key), value))
    for path, value in writes:
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise errors.FailedPrecondition(
                f"cannot set {os.path.basename(path)} to {value!r}: {exc.strerror}"
            ) from None
