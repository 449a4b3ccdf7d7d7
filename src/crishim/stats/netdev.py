"""Network counters of a pod, from inside its network namespace, without spawning anything.

`/proc/<pid>/net/dev` shows the interfaces of the network namespace that
process `pid` lives in, so reading it for the pause process reads the pod's
counters. The loopback is left out, as the kubelet and cAdvisor leave it out.
Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_BUFFER = 65536


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse(text: str) -> list[Interface]:
    """/proc/net/dev: two header lines, then `name: 8 receive and 8 transmit counters`."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, counters = line.partition(":")
        values = counters.split()
        if not sep or len(values) < 16:
            continue
        name = name.strip()
        if name == "lo":
            continue
        v = [int(x) for x in values[:16]]
        out.append(Interface(name, v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]))
    return out


def read(pid: int) -> list[Interface] | None:
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            return parse(f.read())
    except OSError:
        return None


class Reader:
    """One process's /proc/<pid>/net/dev, kept open and re-read in place (a read at
    offset 0 makes the kernel write the table anew), as cgroups.Handle keeps its
    files: one syscall per reading instead of three and a /proc lookup.

    The open file holds a reference to the network namespace: close it when the
    process is gone, so a stopped pod's namespace is not kept alive.
    """

    __slots__ = ("_fd", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = None

    def read(self) -> list[Interface] | None:
        if self._fd is None:
            try:
                self._fd = os.open(f"/proc/{self.pid}/net/dev", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        try:
            data = os.pread(self._fd, _BUFFER, 0)
        except OSError:
            return None
        if len(data) >= _BUFFER:  # more interfaces than one read holds: the whole file
            return read(self.pid)
        return parse(data.decode(errors="replace"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
