"""Exec and attach: copy between a client's streams and Docker's hijacked stdio.

Protocol-neutral: SPDY streams and WebSocket channels both fit `Source` and
`Sink`. Output ends when Docker closes the hijacked connection (the process
exited, or the container stopped); stdin ending half-closes the connection so
the process sees EOF; a client that vanishes ends the copy, frees the Docker
connection and kills what the exec started (Docker has no API to end an exec).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from crishim.common import errors
from crishim.engine.docker import DockerClient
from crishim.engine.docker.streams import Demuxer, Hijacked
from crishim.pods.execsync import exit_code_of, kill_exec

log = structlog.get_logger(__name__)

READ_SIZE = 32 * 1024
MAX_RESIZE_MESSAGE = 4096


class Source(Protocol):
    async def read(self, limit: int = ...) -> bytes: ...


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


@dataclass
class Stdio:
    stdin: Source | None
    stdout: Sink | None
    stderr: Sink | None
    resize: AsyncIterator[tuple[int, int]] | None
    tty: bool
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when the client vanished


async def resize_events(source: Source) -> AsyncIterator[tuple[int, int]]:
    """(width, height) from a stream of JSON objects `{"Width": w, "Height": h}`."""
    decoder = json.JSONDecoder()
    buf = ""
    while data := await source.read(READ_SIZE):
        buf += data.decode(errors="replace")
        while buf := buf.lstrip():
            try:
                size, end = decoder.raw_decode(buf)
            except ValueError:
                if len(buf) > MAX_RESIZE_MESSAGE:
                    return  # not the resize protocol: stop listening rather than buffer forever
                break
            buf = buf[end:]
            if isinstance(size, dict):
                width, height = int(size.get("Width") or 0), int(size.get("Height") or 0)
                if width > 0 and height > 0:
                    yield width, height


async def _copy_output(hijacked: Hijacked, io: Stdio) -> None:
    demux = None if io.tty else Demuxer()
    while data := await hijacked.reader.read(READ_SIZE):
        if demux is None:
            if io.stdout is not None:
                await io.stdout.write(data)
            continue
        for chunk in demux.feed(data):
            sink = io.stdout if chunk.stream == "stdout" else io.stderr
            if sink is not None:
                await sink.write(chunk.data)


async def _copy_input(hijacked: Hijacked, source: Source) -> None:
    while data := await source.read(READ_SIZE):
        await hijacked.send(data)
    hijacked.close_stdin()


async def _apply_resizes(
    events: AsyncIterator[tuple[int, int]], resize: Callable[[int, int], Awaitable[None]]
) -> None:
    async for width, height in events:
        try:
            await resize(width, height)
        except errors.CrishimError as exc:
            log.debug("resize_failed", error=str(exc))


async def _pump(
    hijacked: Hijacked, io: Stdio, resize: Callable[[int, int], Awaitable[None]]
) -> bool:
    """Copy until the output ends (True) or the client is gone (False)."""
    helpers = []
    if io.stdin is not None:
        helpers.append(asyncio.create_task(_copy_input(hijacked, io.stdin)))
    if io.resize is not None:
        helpers.append(asyncio.create_task(_apply_resizes(io.resize, resize)))
    output = asyncio.create_task(_copy_output(hijacked, io))
    gone = asyncio.create_task(io.gone.wait())
    try:
        await asyncio.wait({output, gone}, return_when=asyncio.FIRST_COMPLETED)
        return output.done() and output.exception() is None
    finally:
        for task in (*helpers, output, gone):
            task.cancel()
        for task in (*helpers, output, gone):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await hijacked.close()


async def run_exec(docker: DockerClient, container_id: str, cmd: list[str], io: Stdio) -> int:
    """Run `cmd` in the container wired to `io`; its exit code."""
    stdin = io.stdin is not None
    exec_id, hijacked = await docker.exec_run(container_id, cmd, stdin=stdin, tty=io.tty)
    finished = False
    try:
        finished = await _pump(hijacked, io, lambda w, h: docker.exec_resize(exec_id, w, h))
    finally:
        if not finished:  # the client left (or the handler was cancelled with it)
            log.info("exec_client_gone", exec_id=exec_id)
            await asyncio.shield(kill_exec(docker, exec_id))
    if not finished:
        return -1
    return await exit_code_of(docker, exec_id)


async def run_attach(docker: DockerClient, container_id: str, io: Stdio) -> None:
    """Wire `io` to the running container's stdio until it stops or the client leaves."""
    hijacked = await docker.attach(
        container_id,
        stdin=io.stdin is not None,
        stdout=io.stdout is not None,
        stderr=io.stderr is not None,
    )
    await _pump(hijacked, io, lambda w, h: docker.container_resize(container_id, w, h))
