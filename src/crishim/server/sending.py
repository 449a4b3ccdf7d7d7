"""Sending a large unary response from its parts, never joined whole.

grpclib sends a response by encoding it to one bytes object, then copying it
once more to put the 5-byte gRPC message header in front, and h2 cuts it into
DATA frames of the peer's frame size (16 KB for gRPC clients), each made by
its state machine and copied twice more (into the frame, into h2's output
buffer). For the largest answer crishim gives, ListPodSandboxMetrics (~15 KB
per pod: 3 MB at 200 pods), that is ~185 frames of ~13 µs of h2 each, and two
fresh allocations of the whole size; once freed, those raise glibc's mmap
threshold, so that later large buffers come from the heap and stay in the RSS.

`send_unary_parts` does what grpclib's `Stream.send_message` does for a unary
response (grpclib 0.4.9 and h2 4.4.1, both pinned in pyproject.toml;
tests/unit/test_sending.py reads its answers through the official client,
under flow control), but writes the DATA frames itself, in batches of at most
BATCH bytes: a 9-byte header, then slices of the parts. h2 still
owns the connection: the stream's and the connection's send windows are
charged as its own `send_data` charges them, a batch never exceeds them or the
peer's frame size, anything h2 holds for the socket goes first, and a stream
h2 has closed gets h2's own error. In-process, a 3 MB answer to the grpcio
client took 1.3-1.6 ms of CPU this way, against 1.8-2.5 ms through h2's
`send_data`.

A batch is never joined whole while the transport has nothing queued: its
pieces go to the socket in one writev(2), where the transport's own write
would have sent their join, and only what the socket did not take is joined
and queued on the transport (Python 3.12's `writelines` does the same; 3.11's
joins). At 200 pods that took a scrape's server time from 2.76 to 2.52 ms
(bench/paired.py --shape metrics, 64 KB batches both).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from grpclib.exceptions import ProtocolError
from grpclib.metadata import encode_metadata
from h2.exceptions import StreamClosedError
from multidict import MultiDict

# Bytes per socket write. A scrape at 200 pods took 0.35 ms less with 128 KB than with
# 64 KB, and 0.1 ms less than with 256 KB (bench/paired.py --shape metrics). Below 128 KB
# with its frame headers, so that what the socket leaves of a batch, joined for the
# transport's queue, stays under glibc's mmap threshold (128 KB).
BATCH = 120 * 1024
_DATA_HEADER = struct.Struct(">HBBBI")  # length (24 bits), type DATA (0), no flags, stream id


class _Cursor:
    """Where the sending is in the parts: frames are cut from it in order."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self.parts = [memoryview(p) for p in parts if p]
        self.index = 0  # the part being sent
        self.offset = 0  # bytes of it already sent
        self.left = sum(map(len, self.parts))

    def frames(self, size: int, frame_size: int, stream_id: int) -> list[Any]:
        """The next `size` bytes, as DATA frames of at most `frame_size` bytes each:
        headers and slices of the parts (nothing copied yet)."""
        out: list[Any] = []
        self.left -= size
        while size:
            length = min(size, frame_size)
            size -= length
            out.append(_DATA_HEADER.pack(length >> 8, length & 0xFF, 0, 0, stream_id))
            while length:
                part = self.parts[self.index]
                take = min(length, len(part) - self.offset)
                out.append(part[self.offset : self.offset + take])
                length -= take
                self.offset += take
                if self.offset == len(part):
                    self.index, self.offset = self.index + 1, 0
        return out


async def send_unary_parts(stream: Any, parts: Sequence[bytes]) -> None:
    """Send the unary response whose encoding is the concatenation of `parts` on
    `stream` (a grpclib.server.Stream), as its send_message would send it joined."""
    if not stream._send_initial_metadata_done:
        await _initial_metadata(stream)
    if stream._send_message_done:
        raise ProtocolError("Message was already sent")
    header = struct.pack(">?I", False, sum(map(len, parts)))
    await _send_data(stream._stream, _Cursor([header, *parts]))
    stream._send_message_done = True
    stream._messages_sent += 1
    h2_stream = stream._stream
    h2_stream.connection.messages_sent += 1
    h2_stream.connection.last_message_sent = time.monotonic()


async def _initial_metadata(stream: Any) -> None:
    """grpclib's Stream.send_initial_metadata, but the HEADERS frame stays in h2's
    buffer, to go out in the first batch's write rather than in a write of its own
    (~0.15 ms of a scrape). h2's buffer keeps every stream's frames in the order
    they were made, as HPACK needs."""
    headers = [(":status", "200"), ("content-type", stream._content_type)]
    (metadata,) = await stream._dispatch.send_initial_metadata(MultiDict())
    headers.extend(encode_metadata(metadata))
    h2_stream = stream._stream
    await h2_stream.connection.write_ready.wait()
    if h2_stream.id not in h2_stream._h2_connection.streams:  # as grpclib's send_headers
        raise StreamClosedError(h2_stream.id)
    h2_stream._h2_connection.send_headers(h2_stream.id, headers)
    h2_stream.connection.headers_send_process()
    stream._send_initial_metadata_done = True


async def _send_data(h2_stream: Any, cursor: _Cursor) -> None:
    """grpclib.protocol.Stream.send_data (no end of stream), writing the frames itself."""
    connection = h2_stream.connection  # grpclib's: write_ready, counters
    h2 = h2_stream._h2_connection
    stream_id = h2_stream.id
    transport = h2_stream._transport
    fd = _socket_fd(transport)
    while cursor.left:
        if not connection.write_ready.is_set():  # the transport's buffer is full
            await connection.write_ready.wait()
        window = h2.local_flow_control_window(stream_id)  # h2's error for a stream it closed
        if window <= 0:  # (it can become negative)
            h2_stream.window_updated.clear()
            await h2_stream.window_updated.wait()
            continue  # other streams may have used the window meanwhile
        state = h2.streams[stream_id]
        if state.closed:  # reset by the peer, still known to h2: as its send_data says
            raise StreamClosedError(stream_id)
        size = min(window, BATCH, cursor.left)
        frames = cursor.frames(size, h2.max_outbound_frame_size, stream_id)
        h2.outbound_flow_control_window -= size  # what h2's send_data charges
        state.outbound_flow_control_window -= size
        pieces = [h2.data_to_send(), *frames]
        if fd is None or transport.get_write_buffer_size() or transport.is_closing():
            transport.write(b"".join(pieces))
        else:
            _write_through(transport, fd, pieces)
        h2_stream.data_sent += size
        connection.data_sent += size
        connection.data_send_process()


def _socket_fd(transport: Any) -> int | None:
    """The transport's socket, when crishim may write to it itself: a plain (not TLS)
    stream socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return None
    if sock.type != socket.SOCK_STREAM:
        return None
    return sock.fileno()


def _write_through(transport: Any, fd: int, pieces: list[Any]) -> None:
    """Write `pieces` as one write of their join would, the transport's queue being
    empty: straight to the socket, then what it did not take onto the queue."""
    try:
        sent = os.writev(fd, pieces)
    except OSError:  # full (EAGAIN), or failed: the transport meets an error again itself
        sent = 0
    rest = []
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
        else:
            rest.append(piece[sent:] if sent else piece)
            sent = 0
    if rest:
        transport.write(b"".join(rest))
