"""A unary response sent from its parts (crishim.server.sending) reads, through the
official gRPC client, as the message their join makes."""

from __future__ import annotations

import asyncio
import socket as socket_module
from pathlib import Path
from typing import Any

import grpc
import grpclib.const
import grpclib.server
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from grpclib.encoding.base import CodecBase

from crishim.server import sending

METHOD = "/test.Parts/Get"
REQUEST_HEADERS = [  # a gRPC call of METHOD, as a raw h2 client sends it
    (":method", "POST"),
    (":scheme", "http"),
    (":path", METHOD),
    (":authority", "test"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class _Raw(CodecBase):
    """Messages as bytes, both ways: what was sent is what the client reads."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class _Service:
    def __init__(self, parts: list[bytes], headers_first: bool = False) -> None:
        self.parts = parts
        self.headers_first = headers_first  # grpclib sends them, not send_unary_parts
        self.windows: list[int] = []  # the stream's send window as each answer began

    async def get(self, stream: grpclib.server.Stream) -> None:
        assert await stream.recv_message() == b"ask"
        h2_stream = stream._stream
        if self.headers_first:
            await stream.send_initial_metadata()
        self.windows.append(h2_stream._h2_connection.local_flow_control_window(h2_stream.id))
        await sending.send_unary_parts(stream, self.parts)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {METHOD: grpclib.const.Handler(self.get, unary, bytes, bytes)}


def _ask(socket: Path, times: int, options: list[tuple[str, int]]) -> list[bytes]:
    options = [("grpc.max_receive_message_length", 64 << 20), *options]
    with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
        get = channel.unary_unary(METHOD)  # no (de)serializers: bytes as they are
        return [get(b"ask", timeout=30) for _ in range(times)]


# Parts smaller and larger than a batch and than a frame, empty ones included: ~1.4 MB
# in all, as a scrape of ~100 pods.
SIZES = [10, 70_000, 5, 20_000, 65_531, 1, 300_000, 16_384, 0, 15_000] * 3
# (client options, whether its window is smaller than the answer: the sender must wait)
CLIENTS = {
    # grpcio as it comes: its window grows past the answer (BDP probing)
    "default": ([], False),
    # no window growth: HTTP/2's first 64 KB, then the client's updates
    "flow-controlled": (
        [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16_384)],
        True,
    ),
    # frames of up to 1 MB allowed: cut to that, not to 16 KB
    "large frames": ([("grpc.http2.max_frame_size", 1 << 20)], False),
}


@pytest.mark.parametrize("headers_first", [False, True], ids=["headers-with-data", "headers-first"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_parts_arrive_as_their_join_through_the_official_client(
    tmp_path, client, headers_first
) -> None:
    options, waits = CLIENTS[client]
    parts = [bytes([i % 251]) * n for i, n in enumerate(SIZES)]
    service = _Service(parts, headers_first)
    server = grpclib.server.Server([service], codec=_Raw())
    socket = tmp_path / "parts.sock"
    await server.start(path=str(socket))
    try:
        answers = await asyncio.to_thread(_ask, socket, 3, options)
    finally:
        server.close()
        await server.wait_closed()
    assert answers == [b"".join(parts)] * 3
    if waits:  # the answers went out window by window, as the client granted them
        assert max(service.windows) < sum(SIZES)


def test_frames_are_cut_from_the_parts_in_order_at_the_frame_size() -> None:
    cursor = sending._Cursor([b"ab", b"", b"cdefg", b"h"])
    assert cursor.left == 8
    first = cursor.frames(5, 3, 7)
    assert [bytes(f) for f in first] == [
        b"\x00\x00\x03\x00\x00\x00\x00\x00\x07",  # 3 bytes, DATA, no flags, stream 7
        b"ab",
        b"c",
        b"\x00\x00\x02\x00\x00\x00\x00\x00\x07",
        b"de",
    ]
    assert cursor.left == 3
    rest = cursor.frames(3, 16_384, 7)
    assert [bytes(f) for f in rest] == [b"\x00\x00\x03\x00\x00\x00\x00\x00\x07", b"fg", b"h"]
    assert cursor.left == 0


async def test_the_connection_window_holds_back_a_stream_with_room(tmp_path) -> None:
    """A client (h2, in this test) whose streams may take everything but whose connection
    takes 64 KB at a time: the answer waits for each connection-level update. A frame past
    the client's window is an h2 FlowControlError here, not a silent success."""
    parts = [bytes([i % 251]) * n for i, n in enumerate(SIZES)]
    service = _Service(parts)
    server = grpclib.server.Server([service], codec=_Raw())
    socket = tmp_path / "parts.sock"
    await server.start(path=str(socket))
    reader, writer = await asyncio.open_unix_connection(str(socket))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        client.initiate_connection()
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.send_headers(1, REQUEST_HEADERS)
        client.send_data(1, b"\x00\x00\x00\x00\x03ask", end_stream=True)
        writer.write(client.data_to_send())
        body, unacknowledged, ended = bytearray(), 0, False
        while not ended:
            data = await asyncio.wait_for(reader.read(1 << 20), 30)
            assert data, "the server closed the connection"
            for event in client.receive_data(data):  # raises on a frame past the window
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    unacknowledged += event.flow_controlled_length
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            if unacknowledged >= 65_535:  # the connection's window only, never the stream's
                client.increment_flow_control_window(unacknowledged)
                unacknowledged = 0
            writer.write(client.data_to_send())
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    assert bytes(body[5:]) == b"".join(parts)
    assert max(service.windows) == 65_535  # the connection's first window, not the stream's


class _Queue:
    """A transport's write queue, as _write_through hands it what the socket left."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.queued.append(data)


def _pieces() -> list[Any]:
    """Headers and slices, as a batch is made: ~1 MB, more than a socket's buffer."""
    blob = bytes(range(256)) * 4096
    return [b"head", memoryview(blob)[:300_000], b"", b"x" * 9, memoryview(blob)[300_000:]]


def _drain(sock: socket_module.socket) -> bytes:
    sock.setblocking(False)
    got = bytearray()
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not data:
            return bytes(got)
        got += data


def test_what_the_socket_does_not_take_is_queued_after_what_it_took() -> None:
    ours, peer = socket_module.socketpair(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    with ours, peer:
        ours.setblocking(False)
        queue = _Queue()
        pieces = _pieces()
        sending._write_through(queue, ours.fileno(), pieces)
        taken = _drain(peer)
        assert taken  # in part: the socket took some, not all
        assert len(queue.queued) == 1
        assert taken + queue.queued[0] == b"".join(pieces)


def test_a_batch_the_socket_takes_whole_queues_nothing() -> None:
    ours, peer = socket_module.socketpair(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    with ours, peer:
        ours.setblocking(False)
        queue = _Queue()
        pieces = [b"\x00\x00\x05\x00\x00\x00\x00\x00\x01", memoryview(b"hello world")[:5], b""]
        sending._write_through(queue, ours.fileno(), pieces)
        assert queue.queued == []
        assert _drain(peer) == b"".join(pieces)


def test_a_socket_that_fails_leaves_the_batch_to_the_transport() -> None:
    """The transport meets the error itself and reports it as it would any write's."""
    ours, peer = socket_module.socketpair(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    peer.close()
    with ours:
        ours.setblocking(False)
        queue = _Queue()
        pieces = _pieces()
        sending._write_through(queue, ours.fileno(), pieces)
        assert queue.queued == [b"".join(pieces)]


class _GrpclibSide:
    """What _send_data reads of grpclib's stream and connection, over a real h2 server
    connection."""

    def __init__(self, h2_conn: h2.connection.H2Connection, stream_id: int) -> None:
        self._h2_connection = h2_conn
        self.id = stream_id
        self._transport = _Queue()
        self._transport.get_extra_info = lambda name: None  # no socket of its own
        self.connection = self
        self.write_ready = asyncio.Event()
        self.write_ready.set()
        self.data_sent = 0

    def data_send_process(self) -> None:
        pass


async def test_a_stream_the_client_reset_gets_h2s_error_and_no_frame() -> None:
    """The client reset the stream while the answer waited; h2 still knows it (closed).
    Nothing more goes out on it, and the windows stay as they were."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server.initiate_connection()
    client.initiate_connection()
    client.send_headers(1, REQUEST_HEADERS)
    client.reset_stream(1)
    server.receive_data(client.data_to_send())
    assert server.streams[1].closed
    window = server.outbound_flow_control_window
    side = _GrpclibSide(server, 1)
    with pytest.raises(h2.exceptions.StreamClosedError):
        await sending._send_data(side, sending._Cursor([b"x" * 1000]))
    assert side._transport.queued == []
    assert side.data_sent == 0
    assert server.outbound_flow_control_window == window
