"""systemd's readiness protocol (Type=notify), without a dependency.

One datagram to $NOTIFY_SOCKET; nothing happens when crishim is not run by
systemd.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send e.g. 'READY=1' or 'STOPPING=1'; False when there is no NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True
