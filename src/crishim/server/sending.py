"""Sending a large unary response from its parts, never joined whole.

grpclib sends a response by encoding it to one bytes object, then copying it
once more to put the 5-byte gRPC message header in front. For the largest
answer crishim gives, ListPodSandboxMetrics (~15 KB per pod: 3 MB at 200
pods), that is two fresh allocations of the whole size per scrape: the join of
the pods' entries and grpclib's copy. Each is a run of page faults (~2 ms
apiece here), and once freed it raises glibc's mmap threshold, so that later
large buffers come from the heap and stay in the RSS.

`send_unary_parts` does what grpclib's `Stream.send_message` does for a unary
response (grpclib 0.4.9, pinned in pyproject.toml; the metrics integration
tests read every answer through the official client), but hands the HTTP/2
stream pieces of at most PIECE bytes, each joined from a few parts. The
HTTP/2 framing is unchanged: grpclib's stream still cuts DATA frames to the
peer's window and frame size.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any

from grpclib.exceptions import ProtocolError

PIECE = 64 * 1024  # under glibc's default mmap threshold (128 KB)


def pieces(parts: Sequence[bytes]) -> list[list[bytes]]:
    """The gRPC message (header, then the parts), in groups of at most PIECE bytes;
    a part larger than PIECE is a group of its own (with the header, when first)."""
    size = sum(map(len, parts))
    header = struct.pack(">?I", False, size)
    groups: list[list[bytes]] = []
    group, held = [header], len(header)
    for part in parts:
        if held + len(part) > PIECE and held > len(header):
            groups.append(group)
            group, held = [], 0
        group.append(part)
        held += len(part)
    groups.append(group)
    return groups


async def send_unary_parts(stream: Any, parts: Sequence[bytes]) -> None:
    """Send the unary response whose encoding is the concatenation of `parts` on
    `stream` (a grpclib.server.Stream), as its send_message would send it joined."""
    if not stream._send_initial_metadata_done:
        await stream.send_initial_metadata()
    if stream._send_message_done:
        raise ProtocolError("Message was already sent")
    h2_stream = stream._stream
    for group in pieces(parts):
        await h2_stream.send_data(b"".join(group))
    stream._send_message_done = True
    stream._messages_sent += 1
    h2_stream.connection.messages_sent += 1
    h2_stream.connection.last_message_sent = time.monotonic()
