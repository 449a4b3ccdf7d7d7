"""cgroup v1 and v2 files, as the kernel writes them, read into the numbers crishim reports."""

from __future__ import annotations

import os
import subprocess

import pytest

from crishim.common import cgroups
from crishim.stats import netdev
from tests.harness.procs import wait_for

MOUNTINFO_HYBRID = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
"""
MOUNTINFO_V2 = "25 30 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_a_hybrid_host_is_read_as_v1_with_each_controllers_mount() -> None:
    mounts = cgroups.read_mounts(MOUNTINFO_HYBRID)
    assert not mounts.is_v2
    assert mounts.v1 == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids",
    }
    proc = (
        "12:pids:/kubepods/pod1/abc\n4:cpu,cpuacct:/kubepods/pod1/abc\n"
        "3:memory:/kubepods/pod1/abc\n1:name=systemd:/kubepods/pod1/abc\n0::/kubepods/pod1/abc\n"
    )
    paths = cgroups.paths_from_proc(proc, mounts)
    assert paths is not None
    assert paths.dir_for("memory") == "/sys/fs/cgroup/memory/kubepods/pod1/abc"
    assert paths.dir_for("cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/abc"
    assert paths.name == "/kubepods/pod1/abc"
    assert paths.parent().dir_for("memory") == "/sys/fs/cgroup/memory/kubepods/pod1"


def test_a_v2_host_uses_the_unified_path() -> None:
    mounts = cgroups.read_mounts(MOUNTINFO_V2)
    assert mounts.is_v2
    paths = cgroups.paths_from_proc(
        "0::/kubepods.slice/kubepods-pod1.slice/docker-abc.scope\n", mounts
    )
    assert paths is not None
    assert paths.v2 == "/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/docker-abc.scope"
    assert paths.parent().v2 == "/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice"


def write(directory, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_v1_files(tmp_path) -> None:
    mem, cpu, pids = tmp_path / "memory", tmp_path / "cpu", tmp_path / "pids"
    write(
        mem,
        {
            "memory.usage_in_bytes": "104857600\n",
            "memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
            "memory.memsw.usage_in_bytes": "105906176\n",
            "memory.memsw.limit_in_bytes": "9223372036854771712\n",
            "memory.max_usage_in_bytes": "209715200\n",
            "memory.failcnt": "3\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            "memory.stat": (
                "cache 1\nrss 2\ntotal_cache 41943040\ntotal_rss 52428800\n"
                "total_mapped_file 4096\ntotal_inactive_file 31457280\ntotal_active_file 10485760\n"
                "total_pgfault 1000\ntotal_pgmajfault 7\n"
            ),
        },
    )
    write(
        cpu,
        {
            "cpuacct.usage": "2500000000\n",
            "cpuacct.stat": f"user {cgroups.USER_HZ * 2}\nsystem {cgroups.USER_HZ}\n",
            "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 1500000000\n",
        },
    )
    write(pids, {"pids.current": "5\n"})
    paths = cgroups.CgroupPaths(
        v1=(("memory", str(mem)), ("cpuacct", str(cpu)), ("cpu", str(cpu)), ("pids", str(pids)))
    )
    u = cgroups.read_once(paths)
    assert (u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns) == (2_500_000_000, 2 * 10**9, 10**9)
    assert (u.cfs_periods, u.cfs_throttled_periods, u.cfs_throttled_ns) == (10, 4, 1_500_000_000)
    assert u.memory_usage == 104857600
    assert u.memory_working_set == 104857600 - 31457280
    assert (u.memory_rss, u.memory_cache, u.memory_mapped_file) == (52428800, 41943040, 4096)
    assert (u.page_faults, u.major_page_faults) == (1000, 7)
    assert u.memory_limit is None
    assert (u.memory_max_usage, u.memory_failcnt, u.oom_kills) == (209715200, 3, 2)
    assert u.swap_usage == 1048576
    assert u.swap_limit is None
    assert u.processes == 5


def test_v2_files(tmp_path) -> None:
    d = tmp_path / "pod" / "ctr"
    write(
        d,
        {
            "cpu.stat": (
                "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                "nr_periods 10\nnr_throttled 4\nthrottled_usec 1500000\n"
            ),
            "memory.current": "104857600\n",
            "memory.max": "268435456\n",
            "memory.swap.current": "0\n",
            "memory.swap.max": "max\n",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
            "memory.stat": (
                "anon 52428800\nfile 41943040\nfile_mapped 4096\ninactive_file 31457280\n"
                "active_file 10485760\npgfault 1000\npgmajfault 7\n"
            ),
            "pids.current": "5\n",
        },
    )
    u = cgroups.read_once(cgroups.CgroupPaths(v2=str(d)))
    assert (u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns) == (2_500_000_000, 2 * 10**9, 5 * 10**8)
    assert u.cfs_throttled_ns == 1_500_000_000
    assert u.memory_working_set == 104857600 - 31457280
    assert (u.memory_rss, u.memory_cache) == (52428800, 41943040)
    assert u.memory_limit == 268435456
    assert (u.swap_usage, u.swap_limit) == (0, None)
    assert (u.memory_failcnt, u.oom_kills, u.processes) == (3, 1, 5)


def test_missing_files_are_unset_not_zero(tmp_path) -> None:
    u = cgroups.read_once(cgroups.CgroupPaths(v2=str(tmp_path / "gone")))
    assert u == cgroups.Usage()


@pytest.mark.parametrize(("usage", "inactive", "ws"), [(100, 30, 70), (10, 30, 0), (5, None, 5)])
def test_the_working_set_never_goes_negative(usage, inactive, ws) -> None:
    assert cgroups._working_set(usage, inactive) == ws


def test_net_dev_without_the_loopback() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
        "drop fifo colls carrier compressed\n"
        "    lo:     100       1    0    0    0     0          0         0      100       1    0"
        "    0    0     0       0          0\n"
        "  eth0: 2001234    1500    2    3    0     0          0         0   987654     900    4"
        "    5    0     0       0          0\n"
    )
    (eth0,) = netdev.parse(text)
    assert eth0 == netdev.Interface("eth0", 2001234, 1500, 2, 3, 987654, 900, 4, 5)


def test_a_handle_rereads_the_same_open_file(tmp_path) -> None:
    """Kept open and read with pread at offset 0: a new value is seen without reopening."""
    d = tmp_path / "ctr"
    write(d, {"memory.current": "100\n"})
    handle = cgroups.Handle(cgroups.CgroupPaths(v2=str(d)))
    assert cgroups.read(handle).memory_usage == 100
    with open(d / "memory.current", "r+") as f:  # rewritten in place, as the kernel's is
        f.write("250\n")
    assert cgroups.read(handle).memory_usage == 250
    handle.close()


def test_a_kept_net_dev_reader_sees_interfaces_added_after_it_opened() -> None:
    # A process in a network namespace of its own: only its loopback, at first.
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    reader = netdev.Reader(holder.pid)
    try:
        wait_for(lambda: _netns(holder.pid) != _netns(os.getpid()), 10, "the new netns")
        assert reader.read() == []  # the loopback is left out
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(holder.pid),
                "-n",
                "ip",
                "link",
                "add",
                "d0",
                "type",
                "veth",
                "peer",
                "d1",
            ],
            check=True,
        )
        assert sorted(i.name for i in reader.read() or []) == [
            "d0",
            "d1",
        ]  # re-read in place: fresh
    finally:
        reader.close()
        holder.kill()
        holder.wait()
    reader.close()  # closing twice is harmless
    assert netdev.Reader(holder.pid).read() is None  # the process is gone: nothing to read


def _netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")
