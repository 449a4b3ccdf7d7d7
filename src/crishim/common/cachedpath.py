"""A path's real location, on the event loop, when the kernel can give it without blocking.

openat2(2) with RESOLVE_CACHED (Linux 5.12) resolves a path from the kernel's
lookup cache alone, and fails with EAGAIN where a lookup would have to wait (a
component not cached, a network filesystem revalidating). A kubelet's mount
sources are looked up at every container create and are almost always cached:
resolved here, a create needs no worker-thread trip for them (each trip cost a
call 0.3-0.5 ms on this VM, most of it waking the thread). Anything else, an
error included, is left to the caller's blocking resolution in a thread, which
gives the authoritative answer.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_SYS_OPENAT2 = 437  # the same number on every 64-bit architecture Linux numbers anew
_ARCHES = {"x86_64", "aarch64", "ppc64le", "s390x", "riscv64"}
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_syscall = None
if platform.system() == "Linux" and platform.machine() in _ARCHES:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
_usable = _syscall is not None  # False once the kernel says it has no such call


def real_path(path: str) -> str | None:
    """`path` with every symlink followed, from the kernel's cache; None when that
    would block, fails, or this kernel cannot say (then ask in a thread)."""
    global _usable
    if not _usable or "\0" in path:
        return None
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
    fd = _syscall(  # a variadic call: every argument at its full width
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_long(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL):  # before 5.12
            _usable = False
        return None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")  # procfs: in memory, never waits
    except OSError:
        return None
    finally:
        os.close(fd)
