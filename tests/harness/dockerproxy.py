"""A recording proxy on a Docker socket: every request crishim makes, counted.

crishim talks to `proxy.socket`; each connection is relayed byte for byte to the
real daemon's socket, and the client side is parsed just far enough to record
each request line (method, path, when). Bodies are skipped by Content-Length or
chunked framing; after an Upgrade request (attach, exec start) the connection is
raw both ways and no longer parsed. Responses are parsed only for their end
(Docker's time on each request). `hold(pattern)` holds matching requests back
until `release()`: a way to stop crishim at a chosen point of a call.

Runs its own event loop in a daemon thread, so synchronous tests and the bench
can use it alike. `stop()` closes the listener and every relayed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(slots=True)
class Request:
    at: float  # time.monotonic() when the request line arrived
    method: str
    path: str  # without the /vX.YY prefix and the query
    sent: float = 0.0  # when its body was passed on to the daemon
    done: float | None = None  # when the daemon's response had ended (None: still open)
    status: int = 0
    # The body relayed so far of an event stream (GET /events): its JSON lines.
    events: bytearray = field(default_factory=bytearray)

    @property
    def seconds(self) -> float | None:
        """The daemon's time on it, as seen on its socket."""
        return None if self.done is None else self.done - self.sent

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _plain_path(target: str) -> str:
    path = target.split("?", 1)[0]
    parts = path.split("/", 2)
    if len(parts) > 2 and parts[1].startswith("v") and parts[1][1:2].isdigit():
        return "/" + parts[2]
    return path


class RecordingProxy:
    def __init__(self, root: Path, upstream: Path) -> None:
        self.socket = root / "docker-proxy.sock"
        self.endpoint = f"unix://{self.socket}"
        self.upstream = upstream
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task] = set()
        self._hold: re.Pattern[str] | None = None
        self._gate = asyncio.Event()
        self._waiting = 0
        self._forward_orphans = True

    def start(self) -> RecordingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._accept, path=str(self.socket)), self._loop
        ).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self.socket.unlink(missing_ok=True)

    # -- what was asked ---------------------------------------------------------

    def requests(self, since: float = 0.0) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if r.at >= since]

    def mark(self) -> float:
        return time.monotonic()

    # -- fault injection --------------------------------------------------------

    def hold(self, pattern: str, *, reached_docker: bool = True) -> None:
        """Hold back requests whose "METHOD /path" matches `pattern` until release().

        reached_docker: on release, a held request whose client has gone is still
        passed on (as if Docker had it before the client died: it acts on it, and
        nobody reads the answer); False drops it (the client died before sending it).
        """

        def set_hold() -> None:
            self._hold = re.compile(pattern)
            self._forward_orphans = reached_docker
            self._gate.clear()

        self._loop.call_soon_threadsafe(set_hold)

    def release(self) -> None:
        def open_gate() -> None:
            self._hold = None
            self._gate.set()

        self._loop.call_soon_threadsafe(open_gate)

    def waiting(self) -> int:
        """Requests held back right now."""
        return self._waiting

    # -- relaying ---------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
            pending: asyncio.Queue[Request] = asyncio.Queue()
            back = asyncio.create_task(self._responses(up_reader, writer, pending))
            try:
                await self._requests_from(reader, up_writer, pending)
            finally:
                with contextlib.suppress(Exception):
                    up_writer.write_eof()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await back
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            closing = [w for w in (writer, up_writer) if w is not None]
            for w in closing:
                w.close()
            # Closed for real (close() only schedules it) before stop() ends the loop:
            # a transport left open is garbage-collected later, and pytest turns its
            # ResourceWarning into a failure of whichever test is running then.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.gather(*(w.wait_closed() for w in closing))
            self._conns.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.write_eof()

    @staticmethod
    async def _head(reader: asyncio.StreamReader) -> tuple[bytes, str, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return head, lines[0], headers

    @staticmethod
    async def _body(
        reader: asyncio.StreamReader,
        out: asyncio.StreamWriter,
        headers: dict[str, str],
        response_of: Request | None = None,
    ) -> None:
        """Relay one message body framed by chunks or by Content-Length (an event
        stream's kept in `response_of`, the request whose response it is)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                out.write(size_line)
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                        out.write(line)  # trailers
                    out.write(line)
                    break
                data = await reader.readexactly(size + 2)
                out.write(data)
                if response_of is not None and response_of.path == "/events":
                    response_of.events += data[:-2]
                await out.drain()
        else:
            length = int(headers.get("content-length", "0"))
            while length:
                data = await reader.read(min(length, 65536))
                if not data:
                    raise asyncio.IncompleteReadError(b"", length)
                out.write(data)
                length -= len(data)
                await out.drain()
        await out.drain()

    async def _requests_from(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, pending: asyncio.Queue
    ) -> None:
        while True:
            try:
                head, line, headers = await self._head(reader)
            except asyncio.IncompleteReadError:
                return  # the client closed its side
            method, target, _ = line.split(" ", 2)
            request = Request(time.monotonic(), method, _plain_path(target))
            if self._hold is not None and self._hold.search(str(request)):
                self._waiting += 1
                try:
                    await self._gate.wait()
                finally:
                    self._waiting -= 1
                if reader.at_eof() and not self._forward_orphans:
                    return  # its client died before it would have been sent
            up.write(head)
            with self._lock:
                self._requests.append(request)
            await self._body(reader, up, headers)
            request.sent = time.monotonic()
            await pending.put(request)
            if "upgrade" in headers:
                await self._pipe(reader, up)  # hijacked: raw from here on
                return

    async def _responses(
        self, up: asyncio.StreamReader, client: asyncio.StreamWriter, pending: asyncio.Queue
    ) -> None:
        while True:
            try:
                head, line, headers = await self._head(up)
            except asyncio.IncompleteReadError:
                return
            request = await pending.get()
            client.write(head)
            status = int(line.split(" ", 2)[1])
            request.status = status
            framed = "transfer-encoding" in headers or "content-length" in headers
            if status == 101 or (not framed and status not in (204, 304)):
                await self._pipe(up, client)  # hijacked or read to the end: stays open
                request.done = time.monotonic()  # until the daemon ended it
                return
            if status not in (204, 304):
                await self._body(up, client, headers, request)
            request.done = time.monotonic()
