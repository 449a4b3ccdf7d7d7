"""Cgroup parents that a test or bench asks Docker for, removed afterwards.

With the cgroupfs driver, Docker (runc) makes a container's cgroup parent in
every mounted hierarchy (blkio, cpuset, devices, freezer, name=systemd, ...,
not only those crishim reads) and never removes it. Once the containers are
gone, the directories are empty cgroups: rmdir removes them, deepest first.
"""

from __future__ import annotations

import os
import time
import uuid


def unique_parent(prefix: str) -> str:
    return f"/{prefix}-{uuid.uuid4().hex[:8]}"


def mount_points() -> list[str]:
    """Every cgroup v1 hierarchy and the cgroup2 mount of this machine."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] in ("cgroup", "cgroup2"):
                points.append(left.split()[4])
    return points


def remove(parent: str, wait: float = 10.0) -> None:
    """Remove `parent` (an absolute cgroup path) and all below it, in every hierarchy.

    A cgroup whose last process is still exiting is busy for a moment: retried
    for up to `wait` seconds, then the error is raised (a leak must not pass quietly).
    """
    deadline = time.monotonic() + wait
    for point in mount_points():
        top = point + parent
        if not os.path.isdir(top):
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
