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

Outside the cgroup: a pod's network counters are /proc/<pause pid>/net/dev
(rx/tx bytes, packets, errs, drop; crishim.stats.netdev), and a writable layer's usage is
the allocated blocks (st_blocks * 512) and inode count of Docker's overlay2
UpperDir, walked in the background (crishim.common.fsusage).

A limit at or above UNLIMITED (the kernel's "no limit", a page-rounded 2^63-1
on v1) is reported as no limit. Missing files (a controller not enabled, a
container that just ended) leave the value unset rather than zero.

A Handle keeps each file of one cgroup open and re-reads it with pread at
offset 0 (the kernel regenerates the content): 1.5 us a file instead of 13.5
for open+read+close on the machines measured, which is most of the cost of
ListContainerStats. All functions here are blocking: call them from a worker
thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

UNLIMITED = 1 << 62
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
V1_CONTROLLERS = ("cpuacct", "cpu", "memory", "pids", "hugetlb")


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


@functools.cache
def host_mounts() -> Mounts:
    """This host's cgroup mounts, read once (blocking the first time: call from a thread)."""
    return read_mounts()


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


class Handle:
    """The open files of one cgroup, re-read in place. Close it when the cgroup goes."""

    def __init__(self, paths: CgroupPaths) -> None:
        self.paths = paths
        self._fds: dict[str, int] = {}
        self._missing: set[str] = set()

    def get(self, controller: str, name: str) -> bytes | None:
        fd = self._fds.get(name)
        if fd is None:
            directory = self.paths.dir_for(controller)
            if directory is None or name in self._missing:
                return None
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._missing.add(name)  # not a file this kernel or controller has
                return None
            self._fds[name] = fd
        try:
            return os.pread(fd, 65536, 0)
        except OSError:
            return None  # the cgroup is gone

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _int(data: bytes | None) -> int | None:
    if data is None:
        return None
    data = data.strip()
    if data == b"max":
        return None
    try:
        return int(data)
    except ValueError:
        return None


def _keyed(data: bytes | None) -> dict[bytes, int]:
    """A flat keyed file (`key value` lines, as memory.stat and cpu.stat are)."""
    words = (data or b"").split()
    try:
        return dict(zip(words[::2], map(int, words[1::2]), strict=True))
    except ValueError:  # not flat after all: go line by line, skipping what does not parse
        out: dict[bytes, int] = {}
        for line in (data or b"").splitlines():
            key, _, value = line.partition(b" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
        return out


def _limit(value: int | None) -> int | None:
    return value if value is not None and value < UNLIMITED else None


def read_v1(h: Handle, full: bool = True) -> Usage:
    ticks = _keyed(h.get("cpuacct", "cpuacct.stat")) if full else {}
    throttle = _keyed(h.get("cpu", "cpu.stat")) if full else {}
    stat = _keyed(h.get("memory", "memory.stat"))
    usage = _int(h.get("memory", "memory.usage_in_bytes"))
    limit = _limit(_int(h.get("memory", "memory.limit_in_bytes")))
    memsw = _int(h.get("memory", "memory.memsw.usage_in_bytes"))
    memsw_limit = _limit(_int(h.get("memory", "memory.memsw.limit_in_bytes")))
    ns_per_tick = 1_000_000_000 // USER_HZ
    return Usage(
        cpu_ns=_int(h.get("cpuacct", "cpuacct.usage")),
        cpu_user_ns=ticks[b"user"] * ns_per_tick if b"user" in ticks else None,
        cpu_system_ns=ticks[b"system"] * ns_per_tick if b"system" in ticks else None,
        cfs_periods=throttle.get(b"nr_periods"),
        cfs_throttled_periods=throttle.get(b"nr_throttled"),
        cfs_throttled_ns=throttle.get(b"throttled_time"),
        memory_usage=usage,
        memory_working_set=_working_set(usage, stat.get(b"total_inactive_file")),
        memory_rss=stat.get(b"total_rss"),
        memory_cache=stat.get(b"total_cache"),
        memory_mapped_file=stat.get(b"total_mapped_file"),
        page_faults=stat.get(b"total_pgfault"),
        major_page_faults=stat.get(b"total_pgmajfault"),
        memory_limit=limit,
        memory_max_usage=_int(h.get("memory", "memory.max_usage_in_bytes")) if full else None,
        memory_failcnt=_int(h.get("memory", "memory.failcnt")) if full else None,
        swap_usage=max(0, memsw - usage) if memsw is not None and usage is not None else None,
        swap_limit=memsw_limit - limit if memsw_limit is not None and limit is not None else None,
        oom_kills=_keyed(h.get("memory", "memory.oom_control")).get(b"oom_kill") if full else None,
        processes=_int(h.get("pids", "pids.current")),
    )


def read_v2(h: Handle, full: bool = True) -> Usage:
    cpu = _keyed(h.get("", "cpu.stat"))
    stat = _keyed(h.get("", "memory.stat"))
    events = _keyed(h.get("", "memory.events")) if full else {}
    usage = _int(h.get("", "memory.current"))

    def usec(key: bytes) -> int | None:
        return cpu[key] * 1000 if key in cpu else None

    return Usage(
        cpu_ns=usec(b"usage_usec"),
        cpu_user_ns=usec(b"user_usec"),
        cpu_system_ns=usec(b"system_usec"),
        cfs_periods=cpu.get(b"nr_periods"),
        cfs_throttled_periods=cpu.get(b"nr_throttled"),
        cfs_throttled_ns=usec(b"throttled_usec"),
        memory_usage=usage,
        memory_working_set=_working_set(usage, stat.get(b"inactive_file")),
        memory_rss=stat.get(b"anon"),
        memory_cache=stat.get(b"file"),
        memory_mapped_file=stat.get(b"file_mapped"),
        page_faults=stat.get(b"pgfault"),
        major_page_faults=stat.get(b"pgmajfault"),
        memory_limit=_limit(_int(h.get("", "memory.max"))),
        memory_failcnt=events.get(b"max"),
        swap_usage=_int(h.get("", "memory.swap.current")),
        swap_limit=_limit(_int(h.get("", "memory.swap.max"))),
        oom_kills=events.get(b"oom_kill"),
        processes=_int(h.get("", "pids.current")),
    )


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(0, usage - (inactive_file or 0))


def read(h: Handle, full: bool = True) -> Usage:
    """Every value (for metrics), or with full=False only what the CRI's stats carry."""
    return read_v2(h, full) if h.paths.v2 is not None else read_v1(h, full)


def read_once(paths: CgroupPaths) -> Usage:
    """One reading without keeping the files open (a pod cgroup read now and then)."""
    handle = Handle(paths)
    try:
        return read(handle)
    finally:
        handle.close()
