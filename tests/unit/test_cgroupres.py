"""Hugepage and unified settings: validation, what a host can enforce, the files written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crishim.common import cgroups, errors
from crishim.pods.cgroupres import CgroupResources, apply, check_host, validate


@pytest.mark.parametrize(
    "res",
    [
        CgroupResources(hugepages=(("2M", 0),)),
        CgroupResources(hugepages=(("2MB", -1),)),
        CgroupResources(unified={"../../etc/passwd": "x"}),
        CgroupResources(unified={"memory.high": "1\n2"}),
    ],
    ids=["page-size", "negative", "path", "two-lines"],
)
def test_invalid_settings_are_invalid_argument(res) -> None:
    with pytest.raises(errors.InvalidArgument):
        validate(res)


def test_labels_round_trip() -> None:
    res = CgroupResources((("2MB", 4 << 20), ("1GB", 0)), {"memory.high": "max"})
    assert CgroupResources.from_labels(res.labels()) == res
    assert CgroupResources.from_labels({}) == CgroupResources()


def test_a_v1_host_without_hugetlb_takes_zero_limits_only() -> None:
    v1 = cgroups.Mounts(unified=None, v1={"memory": "/m"})
    check_host(CgroupResources(hugepages=(("2MB", 0),)), v1)
    with pytest.raises(errors.FailedPrecondition, match="hugetlb"):
        check_host(CgroupResources(hugepages=(("2MB", 1 << 21),)), v1)
    with pytest.raises(errors.FailedPrecondition, match="cgroup v2"):
        check_host(CgroupResources(unified={"memory.high": "1G"}), v1)


def test_a_v2_host_gets_the_files_written(tmp_path) -> None:
    """The cgroup of this very process, under a v2 tree made in tmp_path."""
    own = Path("/proc/self/cgroup").read_text()
    v2_path = next(line.split(":", 2)[2] for line in own.splitlines() if line.startswith("0::"))
    directory = Path(str(tmp_path) + v2_path.rstrip("/"))
    directory.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory hugetlb\n")
    mounts = cgroups.Mounts(unified=str(tmp_path), v1={})
    res = CgroupResources((("2MB", 6 << 20),), {"memory.high": "268435456"})
    check_host(res, mounts)
    apply(res, os.getpid(), mounts)
    assert (directory / "hugetlb.2MB.max").read_text() == str(6 << 20)
    assert (directory / "memory.high").read_text() == "268435456"
