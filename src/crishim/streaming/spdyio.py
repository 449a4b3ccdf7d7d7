"""Thin asyncio glue around the SPDY core: sessions and streams with async read/write.

Memory is bounded by transport backpressure, not by SPDY windows (spdystream
ignores them): when the data buffered for the application passes
`PAUSE_AT`, the session stops reading the socket until readers catch up.

`accept_spdy` takes over an aiohttp request after the 101 response, the way
aiohttp's own WebSocketResponse does (a payload parser on the protocol, writes
on the transport); `connect_spdy` is the client side over asyncio streams,
used by crishim's own tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol

import aiohttp
from aiohttp import web

from crishim.streaming import spdy

PAUSE_AT = 4 * 1024 * 1024  # bytes received and not yet read, over all streams
RESUME_AT = 1024 * 1024


class Link(Protocol):
    """What a session needs from the connection below it."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class StreamClosed(ConnectionError):
    pass


class SpdyStream:
    def __init__(self, session: Session, stream_id: int, headers: spdy.Headers) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._reset = False
        self._readable = asyncio.Event()
        self.replied: asyncio.Future[spdy.Headers] = asyncio.get_running_loop().create_future()

    # -- fed by the session --

    def _data(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self.session._buffered += len(data)
        if fin:
            self._eof = True
        self._readable.set()

    def _on_reset(self) -> None:
        self._reset = self._eof = True
        self._readable.set()
        if not self.replied.done():
            self.replied.set_exception(StreamClosed(f"stream {self.id} was reset"))

    # -- for the application --

    @property
    def was_reset(self) -> bool:
        return self._reset

    async def read(self, limit: int = 64 * 1024) -> bytes:
        """Up to `limit` bytes; b"" once the peer finished the stream (or reset it)."""
        while not self._chunks:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        if len(chunk) > limit:
            self._chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self.session._taken(self.id, len(chunk))
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._reset or self.session.closed.is_set():
                raise StreamClosed(f"stream {self.id} is closed")
            room = self.session.conn.sendable(self.id)
            if room == 0:
                if self.id not in self.session.conn.streams:
                    raise StreamClosed(f"stream {self.id} is closed")
                await self.session._window_opened()
                continue
            piece, view = view[:room], view[room:]
            self.session.conn.send_data(self.id, bytes(piece))
            await self.session._flush_and_drain()

    async def close(self) -> None:
        """Half-close: the peer reads EOF; reading from it goes on."""
        state = self.session.conn.streams.get(self.id)
        if state is not None and not state.local_closed and not self.session.closed.is_set():
            self.session.conn.send_data(self.id, b"", fin=True)
            await self.session._flush_and_drain()

    def reset(self, status: int = spdy.RstStatus.CANCEL) -> None:
        self.session.conn.reset(self.id, status)
        self.session._flush()
        self._on_reset()


class Session:
    def __init__(self, link: Link, *, server: bool) -> None:
        self.link = link
        self.conn = spdy.Connection(server=server)
        self.streams: dict[int, SpdyStream] = {}
        self.incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._window = asyncio.Event()
        self._buffered = 0
        self._paused = False
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self._loop = loop

    # -- input, from the link --

    def feed(self, data: bytes) -> None:
        self.last_activity = self._loop.time()
        try:
            events = self.conn.receive(data)
        except spdy.ProtocolError:
            self.conn.go_away(spdy.GoAwayStatus.PROTOCOL_ERROR)
            self._flush()
            self.abort()
            return
        for event in events:
            self._dispatch(event)
        self._flush()
        if not self._paused and self._buffered > PAUSE_AT:
            self._paused = True
            self.link.pause_reading()

    def _dispatch(self, event: spdy.Event) -> None:
        match event:
            case spdy.StreamOpened(sid, headers, fin):
                stream = SpdyStream(self, sid, headers)
                self.streams[sid] = stream
                # A peer that layers HTTP on SPDY (":method" in the stream's headers)
                # expects an HTTP reply (draft 3.1, 3.2.2); spdystream sends and
                # expects bare streams, answered with an empty header block.
                http = ":method" in headers
                self.conn.reply(sid, {":status": "200", ":version": "HTTP/1.1"} if http else {})
                stream.replied.set_result({})
                if fin:
                    stream._data(b"", True)
                self.incoming.put_nowait(stream)
            case spdy.StreamReplied(sid, headers):
                stream = self.streams.get(sid)
                if stream is not None and not stream.replied.done():
                    stream.replied.set_result(headers)
            case spdy.DataReceived(sid, data, fin):
                if (stream := self.streams.get(sid)) is not None:
                    stream._data(data, fin)
            case spdy.StreamReset(sid, _):
                if (stream := self.streams.pop(sid, None)) is not None:
                    stream._on_reset()
                self._window.set()
            case spdy.WindowOpened():
                self._window.set()
            case spdy.GoneAway():
                self.incoming.put_nowait(None)

    def feed_eof(self) -> None:
        """The connection is gone: every stream ends, every waiter wakes."""
        if self.closed.is_set():
            return
        self.closed.set()
        for stream in self.streams.values():
            stream._on_reset()
        self.incoming.put_nowait(None)
        self._window.set()

    # -- output --

    def _flush(self) -> None:
        data = self.conn.outbound()
        if data and not self.closed.is_set():
            self.link.write(data)

    async def _flush_and_drain(self) -> None:
        self._flush()
        self.last_activity = self._loop.time()
        try:
            await self.link.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.feed_eof()
            raise StreamClosed("connection lost") from exc

    async def _window_opened(self) -> None:
        self._window.clear()
        await self._window.wait()

    def _taken(self, stream_id: int, n: int) -> None:
        self._buffered -= n
        self.conn.consumed(stream_id, n)
        self._flush()
        if self._paused and self._buffered < RESUME_AT:
            self._paused = False
            self.link.resume_reading()

    # -- for the application --

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None when the session ends."""
        if self.closed.is_set() and self.incoming.empty():
            return None
        return await self.incoming.get()

    async def open_stream(self, headers: spdy.Headers) -> SpdyStream:
        sid = self.conn.open_stream(headers)
        stream = SpdyStream(self, sid, headers)
        self.streams[sid] = stream
        self._flush()
        await stream.replied
        return stream

    def forget(self, stream: SpdyStream) -> None:
        self.streams.pop(stream.id, None)

    async def close_gracefully(self, grace: float) -> None:
        """GOAWAY, then wait up to `grace` for the peer to hang up before closing.

        Closing first could reset the connection while the peer still sends,
        and a reset may discard the last frames it has not read yet.
        """
        if not self.closed.is_set():
            self.conn.go_away()
            self._flush()
            if self._paused:
                self._paused = False
                self.link.resume_reading()
            with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                await self.link.drain()
                async with asyncio.timeout(grace):
                    await self.closed.wait()
        self.abort()

    def abort(self) -> None:
        self.feed_eof()
        self.link.close()


# -- server side: an aiohttp request taken over --------------------------------


class _AiohttpLink:
    def __init__(self, request: web.BaseRequest) -> None:
        self._protocol = request.protocol
        self._transport = request.transport

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        # The same wait aiohttp's WebSocketWriter uses: the protocol's write flow control.
        await self._protocol._drain_helper()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        self._protocol.force_close()
        if self._transport is not None:
            self._transport.close()


class _Feeder:
    """What aiohttp's protocol calls with every byte after the handover."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._session.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self._session.feed_eof()


class UpgradedResponse(web.StreamResponse):
    """A 101 whose body is another protocol: no length, no chunking, no end marker."""

    _length_check = False

    async def write_eof(self, data: bytes = b"") -> None:  # type: ignore[override]
        self._eof_sent = True


async def accept_spdy(
    request: web.Request, headers: dict[str, str]
) -> tuple[Session, UpgradedResponse]:
    """Answer 101 Switching Protocols and speak SPDY/3.1 on the connection from then on."""
    session = Session(_AiohttpLink(request), server=True)
    # The parser goes in before the 101 leaves: the client's first frame may follow at once.
    request.protocol.set_parser(_Feeder(session))  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    response = UpgradedResponse(
        status=101, headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", **headers}
    )
    await response.prepare(request)
    return session, response


# -- server side: SPDY tunneled in a WebSocket ----------------------------------


class _WebSocketLink:
    """SPDY's bytes in WebSocket binary messages, one message per write, in order.

    Since Kubernetes 1.31, kubectl tunnels port-forward's SPDY inside a WebSocket
    (subprotocol `SPDY/3.1+portforward.k8s.io`): each binary message carries the
    next piece of the SPDY byte stream, nothing else. Reading is paced by the
    pump below (one message at a time, each bounded by aiohttp's max_msg_size).
    """

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send(), name="spdy-over-websocket")

    def write(self, data: bytes) -> None:
        if data:
            self._queue.put_nowait(data)

    async def drain(self) -> None:
        await self._queue.join()

    async def _send(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                if data is None:
                    await self._ws.close()
                    return
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._ws.send_bytes(data)
            finally:
                self._queue.task_done()

    def pause_reading(self) -> None:
        pass  # the pump reads one message at a time, after the session took the last

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self._queue.put_nowait(None)


async def _pump_websocket(ws: web.WebSocketResponse, session: Session) -> None:
    try:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                session.feed(message.data)
    finally:
        session.feed_eof()


async def accept_spdy_over_websocket(
    request: web.Request, protocol: str
) -> tuple[Session, web.WebSocketResponse, asyncio.Task[None]]:
    """Answer the WebSocket handshake with `protocol` and speak SPDY/3.1 inside it."""
    ws = web.WebSocketResponse(protocols=(protocol,))
    await ws.prepare(request)
    session = Session(_WebSocketLink(ws), server=True)
    pump = asyncio.create_task(_pump_websocket(ws, session), name="spdy-websocket-pump")
    return session, ws, pump


# -- client side: over asyncio streams ------------------------------------------


class _StreamLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._can_read = asyncio.Event()
        self._can_read.set()

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def pause_reading(self) -> None:
        self._can_read.clear()

    def resume_reading(self) -> None:
        self._can_read.set()

    def close(self) -> None:
        self.writer.close()

    async def pump(self, session: Session) -> None:
        try:
            while data := await self.reader.read(256 * 1024):
                session.feed(data)
                await self._can_read.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            session.feed_eof()


async def connect_spdy(
    url: str, protocols: list[str], *, method: str = "POST"
) -> tuple[Session, str, asyncio.Task[None]]:
    """Upgrade `http://host:port/path` to SPDY/3.1; returns the session and the chosen protocol."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    lines = [
        f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
        "Content-Length: 0",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    if status != 101:
        writer.close()
        raise StreamClosed(f"upgrade refused: {head.splitlines()[0]}")
    chosen = ""
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-stream-protocol-version":
            chosen = value.strip()
    link = _StreamLink(reader, writer)
    session = Session(link, server=False)
    pump = asyncio.create_task(link.pump(session))
    return session, chosen, pump
