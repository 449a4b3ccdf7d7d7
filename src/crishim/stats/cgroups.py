"""Resource usage from the cgroup filesystem, v1 and v2: the one place that knows the files.

A container's cgroup is found from its init process once (`/proc/<pid>/cgroup`
names the path per hierarchy; `/proc/self/mountinfo` says where each hierarchy
is mounted), whatever Docker's cgroup driver (cgroupfs or systemd), and kept.

Every number crishim reports comes from these files (cAdvisor's definitions):

  value               cgroup v1                                   cgroup v2
  ------------------  ------------------------------------------  -------------------------------
  cpu total (ns)      cpuacct/cpuacct.usage                       cpu.stat usage_usec * 1000
  cpu user, system    cpuacct/cpuacct.stat user, system (ticks)   cpu.stat user_usec, system_usec
  cfs periods         cpu/cpu.stat nr_periods, nr_throttled,      cpu.stat nr_periods, nr_throttled,
                      throttled_time (ns)                         throttled_usec
  memory usage        memory/memory.usage_in_bytes                memory.current
  working set         usage - memory.stat total_inactive_file     usage - memory.stat inactive_file
  rss                 memory.stat total_rss                       memory.stat anon
  cache               memory.stat total_cache                     memory.stat file
  mapped file         memory.stat total_mapped_file               memory.stat file_mapped
  page faults         memory.stat total_pgfault, total_pgmajfault memory.stat pgfault, pgmajfault
  memory limit        memory/memory.limit_in_bytes                memory.max ("max" = none)
  max usage, failcnt  memory.max_usage_in_bytes, memory.failcnt   (none), memory.events max
  swap usage          memory.memsw.usage_in_bytes - usage         memory.swap.current
  swap limit          memory.memsw.limit_in_bytes - mem limit     memory.swap.max
  oom kills           memory.oom_control oom_kill                 memory.events oom_kill
  processes           pids/pids.current                           pids.current

A limit at or above UNLIMITED (the kernel's "no limit", a page-rounded 2^63-1
on v1) is reported as no limit. Missing files (a controller not enabled, a
container that just ended) leave the value unset rather than zero.
All functions here are blocking: call them from a worker thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UNLIMITED = 1 << 62
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
V1_CONTROLLERS = ("cpuacct", "cpu", "memory", "pids")


@dataclass(frozen=True, slots=True)
class Mounts:
    """Where the hierarchies are: v2's unified mount, and v1's mount per controller."""

    unified: str | None
    v1: dict[str, str]  # controller -> mount point

    @property
    def is_v2(self) -> bool:
        """Pure v2 (no v1 controller mounted); a hybrid host counts as v1, as Docker does."""
        return self.unified is not None and not self.v1


def read_mounts(mountinfo: str | None = None) -> Mounts:
    """Parse /proc/self/mountinfo for cgroup and cgroup2 mounts."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        point, fstype, options = fields[4], rfields[0], rfields[2]
        if fstype == "cgroup2":
            unified = unified or point
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, point)
    return Mounts(unified, v1)


@dataclass(frozen=True, slots=True)
class CgroupPaths:
    """The directories of one cgroup: one per v1 controller, or the unified one."""

    v2: str | None = None
    v1: tuple[tuple[str, str], ...] = ()  # (controller, directory)
    name: str = ""  # the cgroup's path inside its hierarchy (cAdvisor's container name)

    def dir_for(self, controller: str) -> str | None:
        if self.v2 is not None:
            return self.v2
        return dict(self.v1).get(controller)

    def parent(self) -> CgroupPaths:
        name = os.path.dirname(self.name)
        if self.v2 is not None:
            return CgroupPaths(v2=os.path.dirname(self.v2), name=name)
        return CgroupPaths(v1=tuple((c, os.path.dirname(d)) for c, d in self.v1), name=name)


def paths_from_proc(cgroup_text: str, mounts: Mounts) -> CgroupPaths | None:
    """A process's cgroup directories from its /proc/<pid>/cgroup text."""
    v1: list[tuple[str, str]] = []
    v2_path: str | None = None
    memory_path = ""
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2_path = path
            continue
        for controller in controllers.split(","):
            point = mounts.v1.get(controller)
            if point is not None:
                v1.append((controller, point + path))
                if controller == "memory":
                    memory_path = path
    if mounts.is_v2:
        if v2_path is None or mounts.unified is None:
            return None
        return CgroupPaths(v2=mounts.unified + v2_path.rstrip("/"), name=v2_path)
    return CgroupPaths(v1=tuple(v1), name=memory_path) if v1 else None


def locate(pid: int, mounts: Mounts) -> CgroupPaths | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return paths_from_proc(f.read(), mounts)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Usage:
    """One reading of a cgroup. None: the kernel did not say."""

    cpu_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_ns: int | None = None
    memory_usage: int | None = None
    memory_working_set: int | None = None
    memory_rss: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None  # None: unlimited
    memory_max_usage: int | None = None
    memory_failcnt: int | None = None
    swap_usage: int | None = None
    swap_limit: int | None = None
    oom_kills: int | None = None
    processes: int | None = None


def _read(directory: str | None, name: str) -> str | None:
    if directory is None:
        return None
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def _limit(value: int | None) -> int | None:
    return value if value is not None and value < UNLIMITED else None


def read_v1(paths: CgroupPaths) -> Usage:
    cpuacct, cpu = paths.dir_for("cpuacct"), paths.dir_for("cpu")
    memory, pids = paths.dir_for("memory"), paths.dir_for("pids")
    ticks = _keyed(_read(cpuacct, "cpuacct.stat"))
    throttle = _keyed(_read(cpu, "cpu.stat"))
    stat = _keyed(_read(memory, "memory.stat"))
    usage = _int(_read(memory, "memory.usage_in_bytes"))
    limit = _limit(_int(_read(memory, "memory.limit_in_bytes")))
    memsw = _int(_read(memory, "memory.memsw.usage_in_bytes"))
    memsw_limit = _limit(_int(_read(memory, "memory.memsw.limit_in_bytes")))
    ns_per_tick = 1_000_000_000 // USER_HZ
    return Usage(
        cpu_ns=_int(_read(cpuacct, "cpuacct.usage")),
        cpu_user_ns=ticks["user"] * ns_per_tick if "user" in ticks else None,
        cpu_system_ns=ticks["system"] * ns_per_tick if "system" in ticks else None,
        cfs_periods=throttle.get("nr_periods"),
        cfs_throttled_periods=throttle.get("nr_throttled"),
        cfs_throttled_ns=throttle.get("throttled_time"),
        memory_usage=usage,
        memory_working_set=_working_set(usage, stat.get("total_inactive_file")),
        memory_rss=stat.get("total_rss"),
        memory_cache=stat.get("total_cache"),
        memory_mapped_file=stat.get("total_mapped_file"),
        page_faults=stat.get("total_pgfault"),
        major_page_faults=stat.get("total_pgmajfault"),
        memory_limit=limit,
        memory_max_usage=_int(_read(memory, "memory.max_usage_in_bytes")),
        memory_failcnt=_int(_read(memory, "memory.failcnt")),
        swap_usage=max(0, memsw - usage) if memsw is not None and usage is not None else None,
        swap_limit=memsw_limit - limit if memsw_limit is not None and limit is not None else None,
        oom_kills=_keyed(_read(memory, "memory.oom_control")).get("oom_kill"),
        processes=_int(_read(pids, "pids.current")),
    )


def read_v2(paths: CgroupPaths) -> Usage:
    d = paths.v2
    cpu = _keyed(_read(d, "cpu.stat"))
    stat = _keyed(_read(d, "memory.stat"))
    events = _keyed(_read(d, "memory.events"))
    usage = _int(_read(d, "memory.current"))

    def usec(key: str) -> int | None:
        return cpu[key] * 1000 if key in cpu else None

    return Usage(
        cpu_ns=usec("usage_usec"),
        cpu_user_ns=usec("user_usec"),
        cpu_system_ns=usec("system_usec"),
        cfs_periods=cpu.get("nr_periods"),
        cfs_throttled_periods=cpu.get("nr_throttled"),
        cfs_throttled_ns=usec("throttled_usec"),
        memory_usage=usage,
        memory_working_set=_working_set(usage, stat.get("inactive_file")),
        memory_rss=stat.get("anon"),
        memory_cache=stat.get("file"),
        memory_mapped_file=stat.get("file_mapped"),
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        memory_limit=_limit(_int(_read(d, "memory.max"))),
        memory_failcnt=events.get("max"),
        swap_usage=_int(_read(d, "memory.swap.current")),
        swap_limit=_limit(_int(_read(d, "memory.swap.max"))),
        oom_kills=events.get("oom_kill"),
        processes=_int(_read(d, "pids.current")),
    )


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(0, usage - (inactive_file or 0))


def read(paths: CgroupPaths) -> Usage:
    return read_v2(paths) if paths.v2 is not None else read_v1(paths)


def exists(paths: CgroupPaths) -> bool:
    directory = paths.v2 or (paths.v1[0][1] if paths.v1 else None)
    return directory is not None and Path(directory).is_dir()
