"""Network counters of a pod, from inside its network namespace, without spawning anything.

`/proc/<pid>/net/dev` shows the interfaces of the network namespace that
process `pid` lives in, so reading it for the pause process reads the pod's
counters. The loopback is left out, as the kubelet and cAdvisor leave it out.
Blocking: call from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass


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
