"""One log copier per Docker daemon, whatever the number of crishim processes on it.

Every crishim copies container output from Docker's json-file buffer into the
CRI log files. Two processes on one daemon (an upgrade that overlaps the old
and new process, a second instance started by mistake) would each write every
line. So copying is owned: the owner holds an exclusive flock on
`<lock_dir>/logs-<hash of the daemon's data root>.lock`, with its PID written
inside for whoever asks. The data root (`DockerRootDir` of `docker info`) is
where the json-file buffers live, the same for every process on that daemon
whatever their settings, and never shared by two daemons (Docker 20.10's `ID`
is not: it comes from /etc/docker/key.json, one per host). The kernel drops the lock when the owner
ends, even by SIGKILL; a passive process tries again every RETRY seconds and
takes over then, resuming from the log checkpoints in its state dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path

RETRY = 2.0


def lock_path(lock_dir: str, docker_root: str) -> Path:
    digest = hashlib.sha256(docker_root.encode()).hexdigest()[:16]
    return Path(lock_dir) / f"logs-{digest}.lock"


def owner_pid(path: Path) -> int | None:
    """The PID written by the current owner, if the lock is held (blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(ValueError, OSError):
                return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it
    finally:
        os.close(fd)


class Ownership:
    """This process's claim on the lock; `fd` stays open for as long as it owns."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: Path | None = None

    @property
    def owned(self) -> bool:
        return self.fd is not None

    def try_acquire(self, path: Path) -> bool:
        """Take the lock if free (blocking, cheap); True when this process owns it."""
        if self.fd is not None:
            return True
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.path = fd, path
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
