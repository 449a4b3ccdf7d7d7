"""Sending a large unary response from its parts, never joined whole.

grpclib sends a response by encoding it to one bytes object, then copying it
once more to put the 5-byte gRPC message header in front. For the largest
answer crishim gives, ListPodSandboxMetrics (~15 KB per pod: 3 MB at 200
pods), that is two fresh allocations of the whole size per scrape: the join of
the pods' entries and grpclib's copy. Each is a run of page faults (~2 ms
apiece here), and once freed it raises glibc's mmap threshold, so that later
large buffers come from the heap and stay in the RSS.

`send_unary_parts` does what grpclib's `Stream.send_message` does for a unary
response (grpclib 0.4.9, pinned in pyproject.toml; tests/unit/test_sending.py
reads its answers through the official client), but hands the HTTP/2 stream
pieces of at most PIECE bytes, each joined from a few parts, and a larger part
as it is. The HTTP/2 framing is unchanged: grpclib's stream still cuts DATA
frames to the peer's window and frame size.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

from grpclib.exceptions import ProtocolError

PIECE = 64 * 1024  # under glibc's default mmap threshold (128 KB)


def pieces(parts: Sequence[bytes]) -> Iterator[bytes]:
    """The gRPC message (its header, then the parts) in pieces of at most PIECE bytes,
    each joined from a few parts; a part larger than PIECE is a piece as it is (a copy
    would cost more than the frame or two it may save). Lazily: each piece is joined
    as the one before it has been sent, so one buffer's memory serves them all (made
    all at once, the pieces of a 3 MB answer took twice the CPU, in page faults)."""
    header = struct.pack(">?I", False, sum(map(len, parts)))
    group, held = [header], len(header)
    for part in parts:
        large = len(part) > PIECE
        if large or held + len(part) > PIECE:
            if held:
                yield b"".join(group)
            group, held = [], 0
        if large:
            yield part
        else:
            group.append(part)
            held += len(part)
    if held:
        yield b"".join(group)


async def send_unary_parts(stream: Any, parts: Sequence[bytes]) -> None:
    """Send the unary response whose encoding is the concatenation of `parts` on
    `stream` (a grpclib.server.Stream), as its send_message would send it joined."""
    if not stream._send_initial_metadata_done:
        await stream.send_initial_metadata()
    if stream._send_message_done:
        raise ProtocolError("Message was already sent")
    h2_stream = stream._stream
    for piece in pieces(parts):
        await h2_stream.send_data(piece)
    stream._send_message_done = True
    stream._messages_sent += 1
    h2_stream.connection.messages_sent += 1
    h2_stream.connection.last_message_sent = time.monotonic()
