"""Port-forward as kubectl 1.31+ does it: SPDY/3.1 tunneled inside a WebSocket.

The WebSocket side is aiohttp's client (the `websockets` package refuses the
subprotocol: `/` is not an HTTP token character, which Kubernetes ignores);
inside it, crishim's own SPDY client session (its framing is checked against
Node's spdy-transport in test_streaming_spdy.py) opens a port-forward
request's error and data streams.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from crishim.streaming.spdyio import Session
from tests.harness.clients import Official
from tests.harness.procs import wait_for
from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)
from tests.integration.test_streaming_spdy import HTTPD

TUNNEL = "SPDY/3.1+portforward.k8s.io"


class WebSocketClientLink:
    """SPDY bytes out as binary messages, one per write, in order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while True:
            data = await self.queue.get()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(data)
            self.queue.task_done()

    def write(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    async def drain(self) -> None:
        await self.queue.join()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.sender.cancel()


async def fetch_through_tunnel(url: str, port: int) -> tuple[str, bytes, bytes]:
    """(negotiated subprotocol, data stream bytes, error stream bytes) for GET / on port."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=[TUNNEL]) as ws:
        link = WebSocketClientLink(ws)
        session = Session(link, server=False)

        async def pump() -> None:
            try:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.BINARY:
                        session.feed(message.data)
            finally:
                session.feed_eof()

        reader = asyncio.create_task(pump())
        headers = {"port": str(port), "requestid": "0"}
        error = await session.open_stream({**headers, "streamtype": "error"})
        data = await session.open_stream({**headers, "streamtype": "data"})
        await data.write(b"GET / HTTP/1.0\r\n\r\n")
        await data.close()
        body = b""
        while chunk := await data.read():
            body += chunk
        failure = await error.read()
        session.abort()
        reader.cancel()
        link.close()
        return ws.protocol, body, failure


def test_port_forward_tunneled_in_a_websocket_serves_a_page(official: Official, pod) -> None:  # noqa: F811
    create(official, pod, "web", HTTPD, envs=[official.pb.KeyValue(key="PORT", value="8080")])
    pb = official.pb
    result: list = []

    def fetched() -> bool:
        url = official.runtime.PortForward(
            pb.PortForwardRequest(pod_sandbox_id=pod[0]), timeout=30
        ).url
        result[:] = asyncio.run(fetch_through_tunnel(url, 8080))
        return b"page-8080" in result[1]

    wait_for(fetched, 30, "the page through the tunnel", interval=0.3)
    protocol, body, failure = result
    assert protocol == TUNNEL
    assert body.startswith(b"HTTP/1.")
    assert failure == b""
    # An unused port: the error stream says why, the tunnel stays well-formed.
    url = official.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod[0]), timeout=30).url
    _, body, failure = asyncio.run(fetch_through_tunnel(url, 9))
    assert body == b""
    assert b"refused" in failure.lower()
