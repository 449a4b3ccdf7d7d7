"""A unary response sent from its parts (crishim.server.sending) reads, through the
official gRPC client, as the message their join makes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpclib.const
import grpclib.server
from grpclib.encoding.base import CodecBase

from crishim.server import sending

METHOD = "/test.Parts/Get"


class _Raw(CodecBase):
    """Messages as bytes, both ways: what was sent is what the client reads."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class _Service:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def get(self, stream: grpclib.server.Stream) -> None:
        assert await stream.recv_message() == b"ask"
        await sending.send_unary_parts(stream, self.parts)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {METHOD: grpclib.const.Handler(self.get, unary, bytes, bytes)}


def _ask(socket: Path, times: int) -> list[bytes]:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        get = channel.unary_unary(METHOD)  # no (de)serializers: bytes as they are
        return [get(b"ask", timeout=30) for _ in range(times)]


async def test_parts_arrive_as_their_join_over_many_pieces_and_windows(tmp_path) -> None:
    # Parts smaller and larger than a piece and than a frame, past HTTP/2's first
    # 64 KB flow-control window: ~1.4 MB in all, as a scrape of ~100 pods.
    sizes = [10, 70_000, 5, 20_000, 65_531, 1, 300_000, 16_384, 0, 15_000] * 3
    parts = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    server = grpclib.server.Server([_Service(parts)], codec=_Raw())
    socket = tmp_path / "parts.sock"
    await server.start(path=str(socket))
    try:
        answers = await asyncio.to_thread(_ask, socket, 3)
    finally:
        server.close()
        await server.wait_closed()
    assert answers == [b"".join(parts)] * 3


def test_pieces_stay_under_the_limit_and_a_larger_part_goes_as_it_is() -> None:
    large = b"c" * 200_000
    parts = [b"a" * 40_000, b"b" * 40_000, large, b"d" * 10]
    got = list(sending.pieces(parts))
    assert b"".join(got)[5:] == b"".join(parts)
    assert [len(p) for p in got] == [5 + 40_000, 40_000, 200_000, 10]
    assert got[2] is large, "not copied"
    # No empty piece; a large first part goes after the header alone.
    assert [len(p) for p in list(sending.pieces([b"x" * 70_000, b"", b"y"]))] == [5, 70_000, 1]
