"""A small HTTP/1.1 client for the Docker API's short JSON calls.

The lifecycle RPCs are Docker round trips plus crishim's own work, and
aiohttp's client (under aiodocker) was a large part of that work: an inspect
of a container took 0.70 ms and 0.45 ms of CPU through it, 0.43 ms and
0.21 ms through a plain keep-alive connection (this machine, private dockerd,
500 calls each). So the calls every pod makes (inspect, create, start, stop,
remove, ping), those of every exec probe (exec create and inspect), updates
and image inspect/remove go through here; streams, pulls, lists and hijacked
connections stay on aiohttp.

A pool of keep-alive connections, one request at a time on each, opened on
demand without a bound (as the aiohttp pool: a slow call must never queue
the others). A connection goes back to the pool only after its response was
read to the end; a call that fails, times out or is cancelled midway closes
it. A pooled connection the daemon has closed is noticed before use; if it
closes as a GET is sent, the GET is retried once on a new connection (other
methods are not: they may have been carried out).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

MAX_IDLE = 16  # pooled connections kept open; more are closed when returned
HEADER_LIMIT = 64 * 1024


class ConnectionFailed(OSError):
    """The daemon could not be reached, or the connection broke before an answer."""


class ProtocolError(Exception):
    """The daemon's answer is not HTTP/1.1 as expected."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Pool:
    def __init__(self, endpoint: str, timeout: float) -> None:
        """`endpoint`: unix:///path or tcp://host:port (crishim.engine.docker.client normalizes)."""
        self.endpoint = endpoint
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._closed = False

    async def _open(self) -> _Conn:
        try:
            if self.endpoint.startswith("unix://"):
                reader, writer = await asyncio.open_unix_connection(
                    self.endpoint.removeprefix("unix://"), limit=HEADER_LIMIT
                )
            else:
                host, _, port = self.endpoint.removeprefix("tcp://").rpartition(":")
                reader, writer = await asyncio.open_connection(
                    host.strip("[]"), int(port), limit=HEADER_LIMIT
                )
        except OSError as exc:
            raise ConnectionFailed(exc.errno, exc.strerror or str(exc)) from exc
        return _Conn(reader, writer)

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def _give_back(self, conn: _Conn) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE or not conn.usable():
            conn.close()
        else:
            self._idle.append(conn)

    async def request(self, method: str, target: str, body: bytes | None = None) -> Response:
        """One request; `target` is the path with its query, already quoted.

        Bounded by the pool's timeout; callers bound it further with asyncio.timeout.
        """
        head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: crishim\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        wire = (head + "\r\n").encode() + (body or b"")
        async with asyncio.timeout(self.timeout):
            for attempt in (1, 2):
                reused = self._take()
                conn = reused or await self._open()
                try:
                    response, keep = await _exchange(conn, wire)
                except _Closed:
                    conn.close()
                    if reused is not None and attempt == 1 and method == "GET":
                        continue  # the daemon closed the idle connection as we sent
                    raise ConnectionFailed(0, "the daemon closed the connection") from None
                except BaseException:
                    conn.close()
                    raise
                if keep:
                    self._give_back(conn)
                else:
                    conn.close()
                return response
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Closed(Exception):
    """The connection ended before any byte of the answer."""


async def _exchange(conn: _Conn, wire: bytes) -> tuple[Response, bool]:
    """Send one request and read its whole answer; (response, connection reusable)."""
    reader = conn.reader
    try:
        conn.writer.write(wire)
        status_line = await reader.readline()
    except (ConnectionError, BrokenPipeError) as exc:
        raise _Closed() from exc
    if not status_line:
        raise _Closed()
    try:
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP status line: {status_line[:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        close = parts[0] == b"HTTP/1.0"
        content_type = ""
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ConnectionFailed(0, "the daemon closed the connection mid-answer")
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"content-type":
                content_type = value.strip().decode("latin-1")
        if chunked:
            body = await _read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no length: the body runs to the end of the connection
            body = await reader.read()
            close = True
    except asyncio.IncompleteReadError as exc:
        raise ConnectionFailed(0, "the daemon closed the connection mid-answer") from exc
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise ProtocolError(f"unreadable answer from the daemon: {exc}") from exc
    return Response(status, content_type, body), not close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the chunk's CRLF
