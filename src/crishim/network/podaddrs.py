"""A pod's own addresses, read from its network namespace's /proc files.

For a pod set up by someone else (cri-dockerd) whose CNI state cannot be found,
the addresses are the one thing its namespace still tells: /proc/<pid>/net shows
the namespace of process <pid> (its pause) without entering it or spawning `ip`.

    IPv4  fib_trie: each "|-- <address>" followed by "/32 host LOCAL" is one of
          the namespace's own; the prefix is that of the on-link route through
          the same interface in `route` (masks in hex, host byte order).
    IPv6  if_inet6: address, interface index, prefix length, scope, flags, name;
          global scope (00) only.
Loopback and link-local addresses are not the pod's.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path


def _ipv4(net: Path, ifname: str) -> list[str]:
    local = []
    last = ""
    for line in (net / "fib_trie").read_text().splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            last = text[4:]
        elif text.startswith("/32 host LOCAL") and last and not last.startswith("127."):
            local.append(last)
    prefixes = []
    for row in (net / "route").read_text().splitlines()[1:]:
        cols = row.split()
        if len(cols) < 8 or cols[0] != ifname or int(cols[2], 16) != 0:
            continue  # not an on-link route of this interface
        dest = socket.inet_ntoa(struct.pack("<I", int(cols[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(cols[7], 16)))
        prefixes.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    out = []
    for addr in dict.fromkeys(local):  # each once, in order (the trie lists some twice)
        ip = ipaddress.ip_address(addr)
        owning = [n for n in prefixes if ip in n and n.prefixlen > 0]
        if owning:
            out.append(f"{addr}/{max(n.prefixlen for n in owning)}")
    return out


def _ipv6(net: Path, ifname: str) -> list[str]:
    out = []
    for row in (net / "if_inet6").read_text().splitlines():
        cols = row.split()
        if len(cols) < 6 or cols[5] != ifname or cols[3] != "00":
            continue
        ip = ipaddress.IPv6Address(bytes.fromhex(cols[0]))
        out.append(f"{ip}/{int(cols[2], 16)}")
    return out


def read(pid: int, ifname: str = "eth0") -> list[str]:
    """CIDRs ('10.88.0.5/16', 'fd00::5/64') of `ifname` in the namespace of `pid`, IPv4
    first (blocking: call from a thread). Empty when the process is gone."""
    net = Path(f"/proc/{pid}/net")
    try:
        return _ipv4(net, ifname) + _ipv6(net, ifname)
    except OSError:
        return []
