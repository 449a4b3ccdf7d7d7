"""ExecSync: run a command in a container, collect its output, bounded in size and time.

stdout and stderr are each capped at 16 MiB (the rest is read and dropped,
so the process never blocks on a full pipe). When the timeout passes, or the
caller goes away, the process and everything it started are killed: Docker's
API has no way to kill an exec, so crishim signals the exec's host PID and its
descendants (found through /proc), leaving no orphan in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog

from crishim.common import errors
from crishim.engine.docker import DockerClient
from crishim.engine.docker.streams import Demuxer

log = structlog.get_logger(__name__)

OUTPUT_CAP = 16 * 1024 * 1024
READ_SIZE = 64 * 1024
PID_WAIT = 10.0  # for Docker to record a started exec's pid
PID_POLL = 0.05
EXIT_WAIT = 30.0  # for Docker to record the end of an exec whose output has closed
EXIT_POLL = 0.01  # first wait for Docker to record an exec's end; doubled up to EXIT_POLL_MAX
EXIT_POLL_MAX = 0.5


@dataclass(frozen=True, slots=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


def descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """`pid` and every process below it, parents first (blocking: /proc reads)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def kill_tree(pid: int) -> int:
    killed = 0
    for target in descendants(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
            killed += 1
    return killed


async def exec_sync(
    docker: DockerClient, container_id: str, cmd: list[str], timeout_s: float
) -> ExecResult:
    if not cmd:
        raise errors.InvalidArgument("cmd is required")
    exec_id, stream = await docker.exec_run(container_id, cmd, stdin=False, tty=False)
    out = {"stdout": bytearray(), "stderr": bytearray()}
    finished = False
    try:
        async with asyncio.timeout(timeout_s if timeout_s > 0 else None):
            demux = Demuxer()
            while data := await stream.reader.read(READ_SIZE):
                for chunk in demux.feed(data):
                    buf = out.get(chunk.stream)
                    if buf is not None and len(buf) < OUTPUT_CAP:
                        buf += chunk.data[: OUTPUT_CAP - len(buf)]
            exit_code = await exit_code_of(docker, exec_id)
        finished = True
    except TimeoutError:
        raise errors.DeadlineExceeded(
            f"command {cmd[0]!r} timed out after {timeout_s:g}s and was killed"
        ) from None
    finally:
        await stream.close()
        if not finished:
            await asyncio.shield(kill_exec(docker, exec_id))
    return ExecResult(bytes(out["stdout"]), bytes(out["stderr"]), exit_code)


async def exit_code_of(docker: DockerClient, exec_id: str) -> int:
    """The exec's exit code, once Docker has recorded its end: just after the output
    closed, or later on a busy node. Never a guess (a failed probe read as passed):
    if the end is not recorded within EXIT_WAIT, the call fails."""
    loop = asyncio.get_running_loop()
    end = loop.time() + EXIT_WAIT
    delay = EXIT_POLL
    while True:
        _, exit_code, _ = await docker.exec_inspect(exec_id)
        if exit_code is not None:
            return int(exit_code)
        if loop.time() >= end:
            raise errors.Unavailable(
                f"the command's output ended, but Docker recorded no exit within {EXIT_WAIT:g}s"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, EXIT_POLL_MAX)


async def kill_exec(docker: DockerClient, exec_id: str) -> None:
    """Kill an exec's process and everything below it, if it still runs.

    Docker marks an exec running before it starts the process, and records the
    pid only when containerd has answered the start: on a busy node the process
    can have run (and a client have seen its output and left) before that. So
    until the pid is known or the exec has ended, look again.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + PID_WAIT
    while True:
        try:
            running, exit_code, pid = await docker.exec_inspect(exec_id)
        except errors.CrishimError as exc:
            log.warning("exec_kill_failed", exec_id=exec_id, error=str(exc))
            return
        if exit_code is not None:
            log.info("exec_already_ended", exec_id=exec_id, exit_code=exit_code)
            return
        if running and pid:
            break
        if loop.time() >= end:
            log.warning("exec_kill_failed", exec_id=exec_id, error="Docker recorded no pid")
            return
        await asyncio.sleep(PID_POLL)
    killed = await asyncio.to_thread(kill_tree, pid)
    log.info("exec_killed", exec_id=exec_id, pid=pid, processes=killed)
