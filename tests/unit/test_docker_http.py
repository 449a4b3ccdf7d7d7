"""crishim.engine.docker.http against a scripted HTTP server on a unix socket.

What a user of the lifecycle calls would notice if the pool were wrong: an
answer given to the wrong call, a call made twice, a call failing because the
daemon closed an idle connection, a body cut short.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from crishim.engine.docker import http


class Server:
    """Answers each request with the next of `script` (bytes, or a callable of the request)."""

    def __init__(self, path: str, script) -> None:
        self.path = path
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script.pop(0)
                if callable(answer):
                    answer = await answer(request)
                if answer is None:  # hang up without answering
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: dict, extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


@pytest.fixture
def sock(tmp_path) -> str:
    return str(tmp_path / "d.sock")


async def test_calls_share_one_kept_alive_connection(sock) -> None:
    async with Server(sock, [ok({"n": 1}), ok({"n": 2})]) as server:
        pool = http.Pool(f"unix://{sock}", 5)
        first = await pool.request("GET", "/v1.41/containers/a/json")
        second = await pool.request("POST", "/v1.41/containers/create?name=x", b'{"Image":"i"}')
        await pool.close()
    assert json.loads(first.body) == {"n": 1}
    assert json.loads(second.body) == {"n": 2}
    assert server.connections == 1
    assert server.requests[1].startswith(b"POST /v1.41/containers/create?name=x HTTP/1.1\r\n")
    assert server.requests[1].endswith(b'\r\n\r\n{"Image":"i"}')


async def test_a_chunked_answer_is_read_whole_and_204_has_no_body(sock) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with Server(sock, [chunked, no_content, ok({})]) as server:
        pool = http.Pool(f"unix://{sock}", 5)
        assert json.loads((await pool.request("GET", "/a")).body) == {"a": 1}
        answer = await pool.request("POST", "/b")
        assert (answer.status, answer.body) == (204, b"")
        await pool.request("GET", "/c")  # the connection is still in step
        await pool.close()
    assert server.connections == 1


async def test_an_idle_connection_the_daemon_closed_is_replaced(sock) -> None:
    closing = ok({"n": 1}, "Connection: close\r\n")
    async with Server(sock, [closing, ok({"n": 2})]) as server:
        pool = http.Pool(f"unix://{sock}", 5)
        await pool.request("GET", "/a")
        assert json.loads((await pool.request("DELETE", "/b")).body) == {"n": 2}
        await pool.close()
    assert server.connections == 2


async def test_a_write_whose_connection_breaks_is_not_sent_twice(sock) -> None:
    async with Server(sock, [ok({}), None]) as server:
        pool = http.Pool(f"unix://{sock}", 5)
        await pool.request("GET", "/warm")  # leaves a pooled connection
        with pytest.raises(http.ConnectionFailed):
            await pool.request("POST", "/v1.41/containers/create?name=x", b"{}")
        await pool.close()
    assert [r.split(b" ", 1)[0] for r in server.requests] == [b"GET", b"POST"]


async def test_a_cancelled_call_leaves_no_answer_for_the_next_one(sock) -> None:
    release = asyncio.Event()

    async def slow(request: bytes) -> bytes:
        await release.wait()
        return ok({"for": "the cancelled call"})

    async with Server(sock, [slow, ok({"for": "the next call"})]) as server:
        pool = http.Pool(f"unix://{sock}", 5)
        call = asyncio.ensure_future(pool.request("GET", "/slow"))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        answer = await pool.request("GET", "/next")
        await pool.close()
    assert json.loads(answer.body) == {"for": "the next call"}
    assert server.connections == 2


async def test_no_daemon_is_a_connection_failure_with_the_os_reason(sock) -> None:
    pool = http.Pool(f"unix://{sock}", 5)
    with pytest.raises(http.ConnectionFailed) as failed:
        await pool.request("GET", "/_ping")
    assert "No such file" in str(failed.value.__cause__)


async def test_a_garbled_answer_is_a_protocol_error(sock) -> None:
    async with Server(sock, [b"SSH-2.0-OpenSSH\r\n\r\n"]):
        pool = http.Pool(f"unix://{sock}", 5)
        with pytest.raises(http.ProtocolError):
            await pool.request("GET", "/a")
        await pool.close()


async def test_a_get_whose_pooled_connection_breaks_is_asked_again_once(sock) -> None:
    async with Server(sock, [ok({}), None, ok({"n": 3})]) as server:
        pool = http.Pool(f"unix://{sock}", 5)
        await pool.request("GET", "/warm")
        answer = await pool.request("GET", "/v1.41/containers/a/json")
        await pool.close()
    assert json.loads(answer.body) == {"n": 3}
    assert server.connections == 2
    assert len(server.requests) == 3
