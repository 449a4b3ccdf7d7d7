"""Connect to a port inside a pod's network namespace, without nsenter or socat.

A socket belongs to the network namespace of the thread that created it. So a
short-lived thread enters the pod's namespace (setns on the namespace file:
the CNI pod's pinned handle, or the pause process's /proc/<pid>/ns/net),
creates the socket and exits; the event loop then connects and uses that
socket as any other. The thread ends right after, so no thread of crishim is
ever left in a pod's namespace (Python 3.11 has no os.setns: libc's is used).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _socket_in_netns(path: str, family: int) -> socket.socket:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the network namespace {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def _in_fresh_thread(path: str, family: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[socket.socket] = loop.create_future()

    def run() -> None:
        try:
            result = _socket_in_netns(path, family)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=run, name="netns-connect", daemon=True).start()
    return await future


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.cancelled():
        if result is not None:
            result.close()
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def connect(path: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to localhost:`port` as seen from inside the namespace file `path`.

    IPv4 first, then IPv6 (a server may listen on ::1 only); the IPv4 error is
    reported when both fail, as that is what an operator expects to read.
    """
    loop = asyncio.get_running_loop()
    first_error: OSError | None = None
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = await _in_fresh_thread(path, family)
        try:
            await loop.sock_connect(sock, (host, port))
        except OSError as exc:
            sock.close()
            if first_error is None:
                first_error = exc
            if exc.errno not in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH):
                break
            continue
        return await asyncio.open_connection(sock=sock)
    assert first_error is not None
    raise first_error
