"""The streaming server beyond SPDY's peer test: WebSocket, tokens, vanishing clients.

WebSocket clients are the `websockets` package (not our code); crishim's own
SPDY client (streaming/spdyio.connect_spdy) drives the aiohttp handover.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import urllib.error
import urllib.request

import pytest
import websockets

from crishim.streaming.spdyio import connect_spdy
from tests.harness.clients import Official
from tests.harness.procs import wait_for
from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)
from tests.integration.test_streaming_spdy import HTTPD, exec_url


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1)


async def ws_exec(url: str, protocol: str, stdin: bytes | None) -> tuple[bytes, bytes, dict | str]:
    """Run an exec over WebSocket; (stdout, stderr, status)."""
    out = {1: b"", 2: b"", 3: b""}
    text = "base64" in protocol
    async with websockets.connect(ws_url(url), subprotocols=[protocol]) as ws:
        assert ws.subprotocol == protocol
        if stdin is not None:
            payload = b"\x00" + stdin
            await ws.send(("0" + base64.b64encode(stdin).decode()) if text else payload)
            if protocol.startswith("v5."):
                await ws.send(b"\xff\x00")  # CLOSE stdin
        async for message in ws:
            if text:
                channel, data = int(message[0]), base64.b64decode(message[1:])
            else:
                channel, data = message[0], message[1:]
            out[channel] += data
    status = out[3].decode()
    return out[1], out[2], json.loads(status) if status.startswith("{") else status


def test_websocket_v5_exec_with_stdin_close_and_exit_code(official: Official, pod) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(
        official, cid, ["sh", "-c", "cat; echo e >&2; exit 3"], stdin=True, stdout=True, stderr=True
    )
    stdout, stderr, status = asyncio.run(ws_exec(url, "v5.channel.k8s.io", b"over websocket\n"))
    assert stdout == b"over websocket\n"
    assert stderr == b"e\n"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0]["message"] == "3"


@pytest.mark.parametrize("protocol", ["v4.base64.channel.k8s.io", "channel.k8s.io"])
def test_websocket_older_protocols(official: Official, pod, protocol) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(official, cid, ["sh", "-c", "echo fine"], stdout=True)
    stdout, _, status = asyncio.run(ws_exec(url, protocol, None))
    assert stdout == b"fine\n"
    if protocol.startswith("v4."):
        assert status == {"metadata": {}, "status": "Success"}
    else:
        assert status == ""  # before v4, success writes nothing on the error channel


async def ws_forward(url: str, ports: list[int], request: bytes) -> dict[int, tuple[bytes, bytes]]:
    got = {i: b"" for i in range(2 * len(ports))}
    async with websockets.connect(ws_url(url), subprotocols=["v4.channel.k8s.io"]) as ws:
        for i in range(len(ports)):
            await ws.send(bytes([2 * i]) + request)
        async for message in ws:
            got[message[0]] += message[1:]
    return {p: (got[2 * i], got[2 * i + 1]) for i, p in enumerate(ports)}


def test_websocket_port_forward(official: Official, pod) -> None:  # noqa: F811
    create(official, pod, "web", HTTPD, envs=[official.pb.KeyValue(key="PORT", value="8080")])
    pb = official.pb

    def forwarded():
        url = official.runtime.PortForward(
            pb.PortForwardRequest(pod_sandbox_id=pod[0], port=[8080, 9]), timeout=30
        ).url
        return asyncio.run(ws_forward(url, [8080, 9], b"GET / HTTP/1.0\r\n\r\n"))

    results: dict = {}
    wait_for(lambda: results.update(forwarded()) or b"page-8080" in results[8080][0], 30, "httpd")
    data, error = results[8080]
    assert data[:2] == struct.pack("<H", 8080)  # each channel opens with its port number
    assert error == struct.pack("<H", 8080)
    data, error = results[9]
    assert data == struct.pack("<H", 9)
    assert b"refused" in error.lower()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def crishim_with(crishim_factory, dockerd, official_stubs):
    """Another crishim on the suite's daemon, started with extra flags; its official client."""
    clients: list[Official] = []

    def start(*flags: str) -> Official:
        clients.append(Official(crishim_factory(dockerd.endpoint, *flags).socket, *official_stubs))
        return clients[-1]

    yield start
    for client in clients:
        client.close()


def test_used_expired_and_made_up_tokens_get_404(official: Official, pod, crishim_with) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(official, cid, ["true"], stdout=True)
    assert http_status(url) == 400  # a plain POST: consumed, but no upgrade to serve it on
    assert http_status(url) == 404  # used
    base = url.rsplit("/", 1)[0]
    assert http_status(f"{base}/made-up-token") == 404
    assert http_status(base.replace("/exec", "/attach") + "/x") == 404

    expiring = exec_url(crishim_with("--stream-token-ttl", "1"), cid, ["true"], stdout=True)
    wait_for(lambda: http_status(expiring) == 404, 10, "token expiry")


async def _own_exec_then_vanish(url: str) -> bytes:
    session, protocol, pump = await connect_spdy(url, ["v4.channel.k8s.io"])
    assert protocol == "v4.channel.k8s.io"
    error = await session.open_stream({"streamtype": "error"})
    stdin = await session.open_stream({"streamtype": "stdin"})
    stdout = await session.open_stream({"streamtype": "stdout"})
    await stdin.write(b"ready\n")
    first = await stdout.read()
    session.abort()  # the client vanishes without a goodbye
    pump.cancel()
    # Let the socket really close, as a dead process's would: returning from asyncio.run
    # at once can leave it open (the close is a scheduled callback) until garbage collection.
    await asyncio.sleep(0.2)
    del error
    return first


def test_a_vanished_client_frees_its_exec(official: Official, pod, dockerd) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(
        official, cid, ["sh", "-c", "read x; echo $x; exec sleep 1234"], stdin=True, stdout=True
    )
    assert asyncio.run(_own_exec_then_vanish(url)) == b"ready\n"

    def no_sleep_left() -> bool:
        return "sleep 1234" not in dockerd.docker("top", cid)

    wait_for(no_sleep_left, 30, "the exec's process to be killed")


async def _idle_exec(url: str) -> bool:
    """Open an exec and stay silent; True when the server closed the connection."""
    session, _, pump = await connect_spdy(url, ["v4.channel.k8s.io"])
    await session.open_stream({"streamtype": "error"})
    await session.open_stream({"streamtype": "stdin"})
    await session.open_stream({"streamtype": "stdout"})
    try:
        async with asyncio.timeout(30):
            await session.closed.wait()
        return True
    finally:
        session.abort()
        pump.cancel()


def test_an_idle_stream_is_closed_and_its_exec_ended(
    official: Official,
    pod,  # noqa: F811
    crishim_with,
    dockerd,
) -> None:
    cid = create(official, pod, "sh", ["sleep", "300"])
    other = crishim_with("--stream-idle-timeout", "2")
    url = exec_url(other, cid, ["sh", "-c", "exec sleep 4321"], stdin=True, stdout=True)
    assert asyncio.run(_idle_exec(url))
    wait_for(lambda: "sleep 4321" not in dockerd.docker("top", cid), 15, "the idle exec to end")


def test_stream_rpcs_validate_their_requests(official: Official, pod) -> None:  # noqa: F811
    import grpc

    pb = official.pb
    created = create(official, pod, "never-started", ["true"], start=False)
    cases = [
        (official.runtime.Exec, pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True)),
        (official.runtime.Exec, pb.ExecRequest(container_id=created, cmd=["true"], stdout=True)),
        (official.runtime.Exec, pb.ExecRequest(container_id=created, cmd=["true"])),
        (official.runtime.Exec, pb.ExecRequest(container_id=created, stdout=True)),
        (
            official.runtime.Attach,
            pb.AttachRequest(container_id=created, stdout=True, stderr=True, tty=True),
        ),
        (official.runtime.PortForward, pb.PortForwardRequest(pod_sandbox_id="nope")),
        (official.runtime.PortForward, pb.PortForwardRequest(pod_sandbox_id=pod[0], port=[70000])),
    ]
    codes = []
    for rpc, request in cases:
        with pytest.raises(grpc.RpcError) as info:
            rpc(request, timeout=30)
        codes.append(info.value.code())
    C = grpc.StatusCode
    assert codes == [
        C.NOT_FOUND,
        C.FAILED_PRECONDITION,  # created, not running
        C.INVALID_ARGUMENT,  # no stdio at all
        C.INVALID_ARGUMENT,  # no command
        C.INVALID_ARGUMENT,  # tty and stderr together
        C.NOT_FOUND,
        C.INVALID_ARGUMENT,  # not a TCP port
    ]
