"""Small process and network helpers shared by the harness fixtures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll `predicate` until true; fail the test setup naming `what` otherwise."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def unix_http_ok(path: Path, request_path: str = "/_ping") -> bool:
    """True when an HTTP server on the unix socket answers 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(f"GET {request_path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            return b" 200 " in s.recv(64)
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM exactly this process, SIGKILL it if it lingers; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def umount_below(root: Path) -> None:
    """Lazily unmount whatever a stopped daemon left mounted under `root`."""
    prefix = str(root.resolve())
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", point], check=True, capture_output=True)


def run(*cmd: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, env={**os.environ, **(env or {})}, input=input, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc.stdout.decode()
