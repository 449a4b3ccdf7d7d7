"""A handle on a pod's network namespace that outlives the pause process.

Docker creates the pod's network namespace when it starts the pause
container and drops it when that process ends. CNI DEL must run on the same
namespace to find the pod's veth and addresses, and it may run after the pause
process died or after crishim restarted. So, right after the pause starts,
its namespace (/proc/<pid>/ns/net) is bind-mounted onto a file under the
state dir: the namespace lives as long as that mount, whatever happens to the
process, and the file's path is what CNI is given as CNI_NETNS. After DEL the
mount is detached and the file removed, which frees the namespace.

The directory holding the handles is made a shared mount point of its own
(as `ip netns` does with /run/netns), so that when a handle is unmounted the
unmount also reaches mount namespaces that copied it (a container started in
between, a service with a private /tmp); otherwise a copy would keep the
namespace, and its veth, alive.

mount(2) and umount2(2) are called through libc (no `mount` binary); all of
this is blocking and runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags, None):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _is_mount_point(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def prepare_dir(directory: Path) -> None:
    """Create the handle directory and make it a shared mount point (once per boot)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _is_mount_point(directory):
        _mount(str(directory), str(directory), None, MS_BIND | MS_REC)
    _mount("none", str(directory), None, MS_SHARED | MS_REC)


def pin(pid: int, handle: Path) -> None:
    """Bind-mount the network namespace of `pid` onto `handle`."""
    source = f"/proc/{pid}/ns/net"
    fd = os.open(handle, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        _mount(source, str(handle), None, MS_BIND)
    except OSError:
        release(handle)
        raise


def release(handle: Path) -> None:
    """Detach the mount (if any) and remove the file; idempotent."""
    # A handle can be mounted more than once (a crash between two pins): detach all.
    for _ in range(8):
        if _libc.umount2(str(handle).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                break
            raise OSError(err, f"umount {handle}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        handle.unlink()
