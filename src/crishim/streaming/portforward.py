"""Port forwarding into a pod: the `portforward.k8s.io` SPDY protocol and its WebSocket form.

SPDY: each forwarded connection is a pair of client streams sharing a
`requestID` header: `streamType: data` carries the bytes, `streamType: error`
carries a failure message back; both name the `port`. Pairs come and go for
the life of the session, many at once.

WebSocket: the ports come from the PortForward request; channel 2i is port
i's data, 2i+1 its errors, and each channel first carries the port number
(uint16, little endian). One connection per port.

The connection is made from inside the pod's network namespace (netns.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import struct
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from crishim.streaming import netns, spdy
from crishim.streaming.remotecommand import (
    CLOSE_GRACE,
    CREATION_TIMEOUT,
    WsChannels,
    WsSink,
    WsSource,
    negotiate,
    refuse,
    watch_idle,
)
from crishim.streaming.spdyio import Session, SpdyStream, accept_spdy, accept_spdy_over_websocket

log = structlog.get_logger(__name__)

PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
WS_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io")
READ_SIZE = 64 * 1024

# Where the pod's network namespace is (a namespace file), looked up per connection.
NetnsOf = Callable[[], Awaitable[str]]


async def _dial(netns_of: NetnsOf, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await netns.connect(await netns_of(), port)


async def _copy_both_ways(source, sink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """Client → port until the client ends; port → client until the port ends."""

    async def up() -> None:
        while data := await source.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def down() -> None:
        while data := await reader.read(READ_SIZE):
            await sink.write(data)
        await sink.close()

    uploads, downloads = asyncio.create_task(up()), asyncio.create_task(down())
    try:
        await downloads
        # The port closed its side; what the client still sends has nowhere to go.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await asyncio.shield(uploads)
    finally:
        for task in (uploads, downloads):
            task.cancel()
        for task in (uploads, downloads):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        writer.close()


# -- SPDY ------------------------------------------------------------------------


async def serve_spdy(
    request: web.Request, sandbox_id: str, netns_of: NetnsOf, *, idle_timeout: float
) -> web.StreamResponse:
    refusal = refuse(request, (PROTOCOL,))
    if refusal is not None:
        return refusal
    protocol = negotiate(request, (PROTOCOL,)) or ""
    session, response = await accept_spdy(
        request, {"X-Stream-Protocol-Version": protocol} if protocol else {}
    )
    await _serve_session(session, sandbox_id, netns_of, idle_timeout)
    return response


async def serve_tunneled_spdy(
    request: web.Request, sandbox_id: str, netns_of: NetnsOf, *, idle_timeout: float
) -> web.StreamResponse:
    """kubectl 1.31+: the same SPDY port-forward, inside a WebSocket (TUNNEL_PROTOCOL)."""
    session, ws, pump = await accept_spdy_over_websocket(request, TUNNEL_PROTOCOL)
    try:
        await _serve_session(session, sandbox_id, netns_of, idle_timeout)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


async def _serve_session(
    session: Session, sandbox_id: str, netns_of: NetnsOf, idle_timeout: float
) -> None:
    """Pair each request's data and error streams and forward them, until the session ends."""
    idle = asyncio.create_task(watch_idle(session, idle_timeout))
    pairs: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task[None]] = set()
    try:
        while (stream := await session.accept()) is not None:
            kind = stream.headers.get("streamtype", "")
            port = _port(stream.headers.get("port", ""))
            if kind not in ("data", "error") or port is None:
                log.info(
                    "portforward_stream_rejected", stream_type=kind, port=stream.headers.get("port")
                )
                stream.reset(spdy.RstStatus.PROTOCOL_ERROR)
                continue
            request_id = stream.headers.get("requestid") or str(
                stream.id if kind == "error" else stream.id - 2  # clients before request ids
            )
            pair = pairs.setdefault(request_id, {})
            if kind in pair:
                stream.reset(spdy.RstStatus.PROTOCOL_ERROR)
                continue
            pair[kind] = stream
            if len(pair) == 1:
                _spawn(tasks, _expire_pair(pairs, request_id))
            else:
                del pairs[request_id]
                _spawn(tasks, _forward_pair(session, pair, sandbox_id, port, netns_of))
    finally:
        idle.cancel()
        for task in tasks:
            task.cancel()
        await session.close_gracefully(CLOSE_GRACE)


def _spawn(tasks: set[asyncio.Task[None]], coro) -> None:
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _reason(exc: Exception) -> str:
    """'Connection refused', not asyncio's 'Connect call failed (...)'."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


def _port(value: str) -> int | None:
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else None


async def _expire_pair(pairs: dict[str, dict[str, SpdyStream]], request_id: str) -> None:
    await asyncio.sleep(CREATION_TIMEOUT)
    pair = pairs.pop(request_id, None)
    if pair:
        for stream in pair.values():
            stream.reset()


async def _forward_pair(
    session: Session, pair: dict[str, SpdyStream], sandbox_id: str, port: int, netns_of: NetnsOf
) -> None:
    data, error = pair["data"], pair["error"]
    try:
        try:
            reader, writer = await _dial(netns_of, port)
        except Exception as exc:  # any failure goes back to this request's error stream
            reason = _reason(exc)
            message = f"error forwarding port {port} to pod {sandbox_id}: {reason}"
            log.info("portforward_failed", sandbox_id=sandbox_id, port=port, error=reason)
            # Like the kubelet: only a reset or broken pipe leaves the client's other ports up.
            reset = isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)
            body = {"closeConnection": not reset, "message": message}
            with contextlib.suppress(ConnectionError):
                await error.write(json.dumps(body).encode() + b"\n")
            return
        await _copy_both_ways(data, data, reader, writer)
    except ConnectionError:
        pass
    finally:
        for stream in (data, error):
            with contextlib.suppress(ConnectionError):
                await stream.close()
            session.forget(stream)


# -- WebSocket ---------------------------------------------------------------------


async def serve_websocket(
    request: web.Request,
    sandbox_id: str,
    ports: list[int],
    netns_of: NetnsOf,
    *,
    idle_timeout: float,
) -> web.StreamResponse:
    if not ports:
        return web.Response(status=400, text="port forwarding over WebSocket needs ports\n")
    ws = web.WebSocketResponse(protocols=WS_PROTOCOLS, receive_timeout=idle_timeout)
    await ws.prepare(request)
    channels = WsChannels(ws, text="base64" in (ws.ws_protocol or ""))
    reader = asyncio.create_task(channels.read_loop(v5=False))
    try:
        for i, port in enumerate(ports):
            for channel in (2 * i, 2 * i + 1):
                await channels.send(channel, struct.pack("<H", port))
        await asyncio.gather(
            *(_forward_ws(channels, i, port, sandbox_id, netns_of) for i, port in enumerate(ports))
        )
    except ConnectionError:
        pass
    finally:
        await ws.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def _forward_ws(
    channels: WsChannels, index: int, port: int, sandbox_id: str, netns_of: NetnsOf
) -> None:
    try:
        reader, writer = await _dial(netns_of, port)
    except Exception as exc:
        message = f"error forwarding port {port} to pod {sandbox_id}: {_reason(exc)}"
        with contextlib.suppress(ConnectionError):
            await channels.send(2 * index + 1, message.encode())
        return
    source, sink = WsSource(channels, 2 * index), WsSink(channels, 2 * index)
    await _copy_both_ways(source, sink, reader, writer)
