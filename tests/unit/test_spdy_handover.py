"""aiohttp hands its connection over to SPDY after a 101 (the path aiohttp is pinned for).

An in-process aiohttp server upgrades with `accept_spdy`; crishim's own client
opens streams on it. This exercises set_parser before the 101, writes on the
transport, write flow control and the end of the response, all without Docker.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from crishim.streaming.spdyio import accept_spdy, connect_spdy


async def _echo_server() -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        session, response = await accept_spdy(request, {"X-Stream-Protocol-Version": "echo"})
        while (stream := await session.accept()) is not None:
            while data := await stream.read():
                await stream.write(data.upper())
            await stream.close()
        session.abort()
        return response

    return await _serve("/echo", handler)


async def _serve(path: str, handler) -> tuple[web.AppRunner, str]:
    """An aiohttp app on a free loopback port with one POST route; (runner, its URL)."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}{path}"


async def test_a_stream_round_trips_more_than_a_window_of_data() -> None:
    runner, url = await _echo_server()
    try:
        session, protocol, pump = await connect_spdy(url, ["echo"])
        assert protocol == "echo"
        stream = await session.open_stream({"streamtype": "data"})
        payload = b"abc" * 300_000  # 900 kB: well past SPDY's 64 KiB default window
        await stream.write(payload)
        await stream.close()
        got = bytearray()
        while chunk := await stream.read():
            got += chunk
        assert bytes(got) == payload.upper()
        session.abort()
        pump.cancel()
    finally:
        await runner.cleanup()


async def test_a_refused_upgrade_is_an_http_answer() -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(status=400, text="no")

    runner, url = await _serve("/x", plain)
    try:
        with pytest.raises(ConnectionError, match="400"):
            await connect_spdy(url, ["v4.channel.k8s.io"])
    finally:
        await runner.cleanup()
