"""The Kubernetes remote command protocols (exec, attach), over SPDY/3.1 and WebSocket.

SPDY: the client names the protocol versions it speaks in
`X-Stream-Protocol-Version`; the server picks the first it also speaks and
echoes it. The client then opens one stream per stdio channel, named by the
`streamType` header (error, stdin, stdout, stderr, and resize for a TTY from
v3 on). The command's end is written to the error stream: plain text for a
failure in v1-v3, a JSON `Status` (carrying the exit code) from v4 on; v5
over SPDY is v4 (its CLOSE signal exists only on WebSocket).

WebSocket: one connection, messages prefixed with a channel byte (0 stdin,
1 stdout, 2 stderr, 3 error, 4 resize); the base64 protocols send text
messages with an ASCII channel digit and base64 payload; v5 adds the CLOSE
signal (channel 255, then the channel being closed: stdin EOF).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import WSMsgType, web

from crishim.common import errors
from crishim.streaming import spdy
from crishim.streaming.spdyio import Session, SpdyStream, accept_spdy
from crishim.streaming.stdio import Stdio, resize_events

log = structlog.get_logger(__name__)

V5, V4, V3, V2, V1 = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
SPDY_PROTOCOLS = (V5, V4, V3, V2, V1)
_SPDY_VERSION = {V5: 4, V4: 4, V3: 3, V2: 2, V1: 1, "": 1}
WS_PROTOCOLS = (
    V5,
    V4,
    "v4.base64.channel.k8s.io",
    V1,
    "base64.channel.k8s.io",
)
STREAM_TYPES = ("error", "stdin", "stdout", "stderr", "resize")
CREATION_TIMEOUT = 30.0  # for the client to open its streams (the kubelet's default)
CLOSE_GRACE = 2.0  # after GOAWAY, for the client to hang up first


@dataclass(frozen=True, slots=True)
class Options:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


# What runs the command: an exit code for exec, None for attach.
Runner = Callable[[Stdio], Awaitable[int | None]]


def status_json(exit_code: int | None, failure: str = "") -> bytes:
    """The v4 error-stream message: the metav1.Status the client turns into an exit code."""
    if failure:
        status = {
            "metadata": {},
            "status": "Failure",
            "message": failure,
            "reason": "InternalError",
            "details": {"causes": [{"message": failure}]},
            "code": 500,
        }
    elif exit_code:
        status = {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }
    else:
        status = {"metadata": {}, "status": "Success"}
    return json.dumps(status, separators=(",", ":")).encode()


def status_text(exit_code: int | None, failure: str = "") -> bytes:
    """The v1-v3 error-stream message: nothing on success, else a sentence."""
    if failure:
        return failure.encode()
    if exit_code:
        return f"command terminated with non-zero exit code: exit status {exit_code}".encode()
    return b""


def client_protocols(request: web.BaseRequest) -> list[str]:
    offered = request.headers.getall("X-Stream-Protocol-Version", [])
    return [p.strip() for header in offered for p in header.split(",") if p.strip()]


def negotiate(request: web.BaseRequest, supported: tuple[str, ...]) -> str | None:
    """The first protocol the client offers that we speak; "" if it offered none; None: refuse."""
    offered = client_protocols(request)
    if not offered:
        return ""
    return next((p for p in offered if p in supported), None)


def is_spdy_upgrade(request: web.BaseRequest) -> bool:
    connection = request.headers.get("Connection", "").lower()
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "spdy/3.1"


def refuse(request: web.BaseRequest, supported: tuple[str, ...]) -> web.Response | None:
    """The HTTP answer when this request cannot be upgraded; None when it can."""
    if not is_spdy_upgrade(request):
        return web.Response(status=400, text="unable to upgrade: missing upgrade headers\n")
    if negotiate(request, supported) is None:
        return web.Response(
            status=403,
            text=f"unable to upgrade: none of {client_protocols(request)} is supported\n",
            headers={"X-Accepted-Stream-Protocol-Versions": ", ".join(supported)},
        )
    return None


async def watch_idle(session: Session, idle_timeout: float) -> None:
    """Close the session once nothing moved for `idle_timeout` seconds."""
    loop = asyncio.get_running_loop()
    while not session.closed.is_set():
        left = session.last_activity + idle_timeout - loop.time()
        if left <= 0:
            log.info("stream_idle_closed", idle_s=idle_timeout)
            session.abort()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(left, 60)):
                await session.closed.wait()


async def serve_spdy(
    request: web.Request, opts: Options, run: Runner, *, idle_timeout: float
) -> web.StreamResponse:
    refusal = refuse(request, SPDY_PROTOCOLS)
    if refusal is not None:
        return refusal
    protocol = negotiate(request, SPDY_PROTOCOLS) or ""
    session, response = await accept_spdy(
        request, {"X-Stream-Protocol-Version": protocol} if protocol else {}
    )
    version = _SPDY_VERSION[protocol]
    idle = asyncio.create_task(watch_idle(session, idle_timeout))
    try:
        streams = await _collect_streams(session, opts, version)
        if streams is None:
            return response
        await _run_over_spdy(session, streams, opts, version, run)
    finally:
        idle.cancel()
        await session.close_gracefully(CLOSE_GRACE)
    return response


async def _collect_streams(
    session: Session, opts: Options, version: int
) -> dict[str, SpdyStream] | None:
    expected = 1 + opts.stdin + opts.stdout + opts.stderr + (opts.tty and version >= 3)
    streams: dict[str, SpdyStream] = {}
    try:
        async with asyncio.timeout(CREATION_TIMEOUT):
            while len(streams) < expected:
                stream = await session.accept()
                if stream is None:
                    return None
                kind = stream.headers.get("streamtype", "")
                if kind not in STREAM_TYPES or kind in streams:
                    log.info("stream_rejected", stream_type=kind)
                    stream.reset(spdy.RstStatus.REFUSED_STREAM)
                    continue
                streams[kind] = stream
    except TimeoutError:
        log.info("stream_creation_timeout", received=sorted(streams), expected=expected)
        return None
    return streams


async def _run_over_spdy(
    session: Session, streams: dict[str, SpdyStream], opts: Options, version: int, run: Runner
) -> None:
    error = streams["error"]
    stdin = streams.get("stdin") if opts.stdin else None
    if version == 1 and stdin is not None:
        await stdin.close()  # v1 clients expect the server's side of stdin closed at once
    io = Stdio(
        stdin=stdin,
        stdout=streams.get("stdout") if opts.stdout else None,
        stderr=streams.get("stderr") if opts.stderr else None,
        resize=resize_events(streams["resize"]) if "resize" in streams else None,
        tty=opts.tty,
        gone=session.closed,
    )
    exit_code, failure = await _outcome(run, io)
    if session.closed.is_set():
        return
    for kind in ("stdout", "stderr"):
        if kind in streams:
            with contextlib.suppress(ConnectionError):
                await streams[kind].close()
    message = status_json(exit_code, failure) if version >= 4 else status_text(exit_code, failure)
    with contextlib.suppress(ConnectionError):
        if message:
            await error.write(message)
        await error.close()


async def _outcome(run: Runner, io: Stdio) -> tuple[int | None, str]:
    try:
        return await run(io), ""
    except errors.CrishimError as exc:
        log.warning("remote_command_failed", error=str(exc))
        return None, f"error executing command in container: {exc}"


# -- WebSocket -------------------------------------------------------------------


class WsChannels:
    """Channel-multiplexed messages on one WebSocket, in binary or base64 form."""

    def __init__(self, ws: web.WebSocketResponse, *, text: bool) -> None:
        self.ws = ws
        self.text = text
        self.inbound: dict[int, asyncio.Queue[bytes]] = {}
        self.gone = asyncio.Event()

    async def send(self, channel: int, data: bytes) -> None:
        if self.ws.closed:
            raise ConnectionError("websocket closed")
        if self.text:
            await self.ws.send_str(str(channel) + base64.b64encode(data).decode())
        else:
            await self.ws.send_bytes(bytes([channel]) + data)

    def decode(self, msg_type: WSMsgType, payload: bytes | str) -> tuple[int, bytes] | None:
        if msg_type == WSMsgType.BINARY and isinstance(payload, bytes) and payload:
            return payload[0], payload[1:]
        if msg_type == WSMsgType.TEXT and isinstance(payload, str) and payload:
            try:
                return int(payload[0]), base64.b64decode(payload[1:])
            except ValueError:
                return None
        return None

    def queue(self, channel: int) -> asyncio.Queue[bytes]:
        return self.inbound.setdefault(channel, asyncio.Queue(maxsize=64))

    async def read_loop(self, *, v5: bool) -> None:
        """Route each message to its channel; b"" marks a channel's end."""
        try:
            async for msg in self.ws:
                decoded = self.decode(msg.type, msg.data)
                if decoded is None:
                    continue
                channel, data = decoded
                if v5 and channel == 255 and data:
                    await self.queue(data[0]).put(b"")  # CLOSE: the client ended that channel
                elif data:
                    await self.queue(channel).put(data)
        finally:
            self.gone.set()
            for q in self.inbound.values():
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(b"")


class WsSource:
    def __init__(self, channels: WsChannels, channel: int) -> None:
        self._queue = channels.queue(channel)
        self._ended = False
        self._rest = b""

    async def read(self, limit: int = 64 * 1024) -> bytes:
        if not self._rest:
            if self._ended:
                return b""
            self._rest = await self._queue.get()
            if not self._rest:
                self._ended = True
                return b""
        chunk, self._rest = self._rest[:limit], self._rest[limit:]
        return chunk


class WsSink:
    def __init__(self, channels: WsChannels, channel: int) -> None:
        self._channels, self._channel = channels, channel

    async def write(self, data: bytes) -> None:
        await self._channels.send(self._channel, data)

    async def close(self) -> None:
        pass  # a channel has no end of its own; the connection's close ends it


async def serve_websocket(
    request: web.Request, opts: Options, run: Runner, *, idle_timeout: float
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=WS_PROTOCOLS, receive_timeout=idle_timeout)
    await ws.prepare(request)
    protocol = ws.ws_protocol or V1
    channels = WsChannels(ws, text="base64" in protocol)
    reader = asyncio.create_task(channels.read_loop(v5=protocol == V5))
    try:
        # An empty message on the first output channel tells the client the streams are ready.
        first = 1 if opts.stdout else 2 if opts.stderr else 3
        await channels.send(first, b"")
        io = Stdio(
            stdin=WsSource(channels, 0) if opts.stdin else None,
            stdout=WsSink(channels, 1) if opts.stdout else None,
            stderr=WsSink(channels, 2) if opts.stderr else None,
            resize=resize_events(WsSource(channels, 4)) if opts.tty else None,
            tty=opts.tty,
            gone=channels.gone,
        )
        exit_code, failure = await _outcome(run, io)
        if not ws.closed:
            v4 = protocol.startswith(("v4.", "v5."))
            message = status_json(exit_code, failure) if v4 else status_text(exit_code, failure)
            with contextlib.suppress(ConnectionError):
                await channels.send(3, message)
    finally:
        await ws.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws
