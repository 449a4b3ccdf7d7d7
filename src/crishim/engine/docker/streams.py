"""Docker's multiplexed stdout/stderr framing, and hijacked connections.

Non-TTY logs, attach and exec output arrive framed: an 8-byte header
(stream id, three zero bytes, big-endian payload length) before each payload.
`Demuxer` is a sans-I/O parser of that framing, fed whatever bytes arrive.

Exec and attach with stdin need a raw, bidirectional socket: Docker "hijacks"
the HTTP connection after an `Upgrade: tcp` request. aiohttp cannot hand that
socket over with a way to half-close it (the write side only), which is how
Docker learns that stdin ended; `hijack` opens its own connection instead,
outside the shared connection pool, so long streams never exhaust it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from crishim.common import errors
from crishim.engine.docker.errors import from_status
from crishim.engine.docker.types import LogChunk

_HEADER = struct.Struct(">BxxxL")
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
# An upper bound on one frame: Docker writes at most 32 KiB per frame; a much
# larger length means the stream is not framed (a TTY container) or corrupt.
MAX_FRAME = 16 << 20


class Demuxer:
    """Turns framed bytes into LogChunks; keeps a partial frame between feeds."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[LogChunk]:
        self._buf += data
        while len(self._buf) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buf)
            if kind not in _STREAMS or size > MAX_FRAME:
                raise errors.CrishimError(
                    f"corrupt Docker stream frame header: {bytes(self._buf[:8])!r}"
                )
            end = _HEADER.size + size
            if len(self._buf) < end:
                return
            payload = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]
            yield LogChunk(stream=_STREAMS[kind], data=payload)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still held."""
        return len(self._buf)


@dataclass(slots=True)
class Hijacked:
    """A raw two-way connection to a container's stdio."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close_stdin(self) -> None:
        """Half-close: Docker then closes the process's stdin; output keeps flowing."""
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def open_raw(endpoint: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A fresh connection to the daemon (unix:// or tcp://), not from any pool."""
    if endpoint.startswith("unix://"):
        return await asyncio.open_unix_connection(endpoint.removeprefix("unix://"))
    host, _, port = endpoint.split("://", 1)[1].rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def hijack(endpoint: str, path: str, body: dict[str, Any] | None) -> Hijacked:
    """POST `path` with `Upgrade: tcp` and return the raw stream behind it."""
    return await upgrade(await open_raw(endpoint), path, body)


async def upgrade(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    path: str,
    body: dict[str, Any] | None,
) -> Hijacked:
    """`hijack` on a fresh connection already open (open_raw)."""
    reader, writer = connection
    payload = json.dumps(body).encode() if body is not None else b""
    kind = "Content-Type: application/json\r\n" if body is not None else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: docker\r\n{kind}"
        f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    await writer.drain()
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        writer.close()
        raise errors.Unavailable(f"Docker closed the connection of {path}") from exc
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    if status in (101, 200):
        return Hijacked(reader, writer)
    headers = dict(h.split(": ", 1) for h in header_lines if ": " in h)
    length = int(headers.get("Content-Length", "0") or 0)
    detail = (await reader.readexactly(length)).decode(errors="replace") if length else ""
    writer.close()
    try:
        message = json.loads(detail)["message"]
    except (ValueError, KeyError, TypeError):
        message = detail.strip()
    raise from_status(status, message or status_line)
