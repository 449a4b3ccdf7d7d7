"""Docker's multiplexed stream framing, fed the way bytes really arrive: in pieces."""

from __future__ import annotations

import struct

import pytest

from crishim.common import errors
from crishim.engine.docker.streams import Demuxer


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    data = frame(1, b"out one\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"out two\n")
    for size in range(1, len(data) + 1):
        demux = Demuxer()
        chunks = []
        for i in range(0, len(data), size):
            chunks += list(demux.feed(data[i : i + size]))
        assert [(c.stream, c.data) for c in chunks] == [
            ("stdout", b"out one\n"),
            ("stderr", b"err\n"),
            ("stdout", b""),
            ("stdout", b"out two\n"),
        ], f"pieces of {size}"
        assert demux.pending == 0


def test_an_incomplete_frame_is_held_until_the_rest_arrives() -> None:
    demux = Demuxer()
    data = frame(2, b"x" * 100)
    assert list(demux.feed(data[:50])) == []
    assert demux.pending == 50
    assert [c.data for c in demux.feed(data[50:])] == [b"x" * 100]


@pytest.mark.parametrize(
    "header", [b"\x07\x00\x00\x00\x00\x00\x00\x01", b"\x01\x00\x00\x00\x7f\xff\xff\xff"]
)
def test_unframed_or_corrupt_input_is_an_error_not_a_hang(header) -> None:
    with pytest.raises(errors.CrishimError, match="corrupt Docker stream frame"):
        list(Demuxer().feed(header + b"rest"))
