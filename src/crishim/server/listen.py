"""The CRI socket: created safely, or inherited from systemd.

unix:///path  crishim binds the path itself, mode 0660 from the first instant
              (bound under a restrictive umask, not chmod-ed afterwards). A
              leftover socket file nobody serves is replaced; one that a live
              process answers on is refused, so two crishims never fight over
              one node.
fd://         systemd socket activation (crishim.socket): the listening socket
              is fd 3, passed with LISTEN_FDS/LISTEN_PID; systemd owns the path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from crishim.common import errors

SD_LISTEN_FDS_START = 3
SOCKET_MODE = 0o660


class AddressInUse(errors.CrishimError):
    """Another live process serves the socket path."""


@dataclass(slots=True)
class Listener:
    sock: socket.socket
    path: Path | None  # None when systemd owns the socket

    def unlink(self) -> None:
        """Remove the path so that no new client can connect (existing ones keep working)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def open_listener(listen: str) -> Listener:
    if listen.startswith("fd://"):
        return _from_systemd(listen)
    if listen.startswith("unix://"):
        return _bind_unix(Path(listen.removeprefix("unix://")))
    raise errors.InvalidArgument(f"listen: use unix:///path or fd://, not {listen!r}")


def _from_systemd(listen: str) -> Listener:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        raise errors.InvalidArgument(
            "listen=fd:// but no socket was passed by systemd (LISTEN_PID)"
        )
    count = int(os.environ.get("LISTEN_FDS", "0"))
    wanted = listen.removeprefix("fd://")
    index = int(wanted) - SD_LISTEN_FDS_START if wanted else 0
    if not 0 <= index < count:
        raise errors.InvalidArgument(f"listen={listen}: systemd passed {count} socket(s)")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START + index)
    sock.setblocking(False)
    return Listener(sock, None)


def probe(path: Path) -> str:
    """'absent', 'stale', 'live', or 'not-a-socket' for a socket path."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISSOCK(mode):
        return "not-a-socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return "stale"
        except OSError:
            return "live"  # e.g. a full backlog: somebody is there
    return "live"


def _bind_unix(path: Path) -> Listener:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    state = probe(path)
    if state == "live":
        raise AddressInUse(
            f"{path} is served by another live process; stop it or use another --listen"
        )
    if state == "not-a-socket":
        raise AddressInUse(f"{path} exists and is not a socket; refusing to replace it")
    if state == "stale":
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~SOCKET_MODE)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    sock.listen(128)
    sock.setblocking(False)
    return Listener(sock, path)
