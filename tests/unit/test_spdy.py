"""SPDY/3.1 framing, checked against frames written out by hand from the draft-3.1 text.

Control frame: C=1 | version(15) | type(16) | flags(8) | length(24) | data.
Data frame:    C=0 | stream id(31) | flags(8) | length(24) | data.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from crishim.streaming import spdy


def control(kind: int, flags: int, payload: bytes) -> bytes:
    return bytes([0x80, 0x03, 0x00, kind, flags]) + len(payload).to_bytes(3, "big") + payload


def header_block(pairs: list[tuple[str, str]], z=None) -> bytes:
    """Compress a name/value block as a peer would: its own zlib stream, SPDY/3 dictionary."""
    raw = struct.pack(">I", len(pairs))
    for name, value in pairs:
        raw += (
            struct.pack(">I", len(name))
            + name.encode()
            + struct.pack(">I", len(value))
            + value.encode()
        )
    z = z or zlib.compressobj(zdict=spdy.DICTIONARY)
    return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)


def test_the_dictionary_is_the_one_the_draft_defines() -> None:
    d = spdy.DICTIONARY
    assert len(d) == 1423
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert b"\x00\x00\x00\x06200 OK\x00\x00\x00\x07version" in d
    assert d.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def test_syn_stream_from_a_peer_opens_a_stream_with_its_headers() -> None:
    conn = spdy.Connection(server=True)
    block = header_block([("streamtype", "stdout"), ("port", "80")])
    frame = control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + block)
    (event,) = conn.receive(frame)
    assert event == spdy.StreamOpened(1, {"streamtype": "stdout", "port": "80"}, False)


def test_header_compression_context_spans_frames() -> None:
    # One zlib stream per direction: the second block refers back into the first.
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    conn = spdy.Connection(server=True)
    first = control(
        1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + header_block([("streamtype", "error")], z)
    )
    second = control(
        1, 0, struct.pack(">IIBB", 3, 0, 0, 0) + header_block([("streamtype", "error")], z)
    )
    events = conn.receive(first + second)
    assert [e.headers for e in events] == [{"streamtype": "error"}] * 2
    assert len(second) < len(first)  # the repeat compressed against the shared history


def test_frames_split_at_every_byte_boundary_still_parse() -> None:
    conn = spdy.Connection(server=True)
    wire = control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + header_block([("a", "b")]))
    wire += struct.pack(">II", 1, 0x01 << 24 | 5) + b"hello"
    events = []
    for i in range(len(wire)):
        events += conn.receive(wire[i : i + 1])
    assert events[-1] == spdy.DataReceived(1, b"hello", True)


def test_our_reply_decodes_with_a_plain_zlib_and_the_dictionary() -> None:
    conn = spdy.Connection(server=True)
    conn.receive(control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + header_block([])))
    conn.reply(1, {":status": "200"})
    wire = conn.outbound()
    assert wire[:4] == b"\x80\x03\x00\x02"  # SYN_REPLY
    length = int.from_bytes(wire[5:8], "big")
    assert len(wire) == 8 + length
    assert struct.unpack(">I", wire[8:12]) == (1,)
    raw = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(wire[12:])
    assert (
        raw
        == struct.pack(">I", 1) + struct.pack(">I", 7) + b":status" + struct.pack(">I", 3) + b"200"
    )


def test_ping_from_the_peer_is_echoed() -> None:
    conn = spdy.Connection(server=True)
    assert conn.receive(control(6, 0, struct.pack(">I", 7))) == []
    assert conn.outbound() == control(6, 0, struct.pack(">I", 7))


def test_goaway_ends_acceptance_and_new_streams_are_refused() -> None:
    conn = spdy.Connection(server=True)
    (event,) = conn.receive(control(7, 0, struct.pack(">II", 0, 0)))
    assert event == spdy.GoneAway(0, 0)
    assert conn.receive(control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + header_block([]))) == []
    assert conn.outbound() == control(3, 0, struct.pack(">II", 1, spdy.RstStatus.REFUSED_STREAM))


def test_our_goaway_names_the_last_stream_we_accepted() -> None:
    conn = spdy.Connection(server=True)
    conn.receive(control(1, 0, struct.pack(">IIBB", 5, 0, 0, 0) + header_block([])))
    conn.outbound()
    conn.go_away()
    assert conn.outbound() == control(7, 0, struct.pack(">II", 5, 0))


def test_rst_from_the_peer_resets_the_stream_and_later_data_is_refused() -> None:
    conn = spdy.Connection(server=True)
    conn.receive(control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + header_block([])))
    (event,) = conn.receive(control(3, 0, struct.pack(">II", 1, spdy.RstStatus.CANCEL)))
    assert event == spdy.StreamReset(1, spdy.RstStatus.CANCEL)
    assert conn.receive(struct.pack(">II", 1, 3) + b"abc") == []
    assert conn.outbound() == control(3, 0, struct.pack(">II", 1, spdy.RstStatus.INVALID_STREAM))


def _open(conn: spdy.Connection, sid: int = 1, z=None) -> None:
    block = header_block([], z)
    conn.receive(control(1, 0, struct.pack(">IIBB", sid, 0, 0, 0) + block))
    conn.outbound()


def test_a_peer_that_never_flow_controls_is_not_held_to_64k() -> None:
    # moby/spdystream: no SETTINGS, no WINDOW_UPDATE, ever.
    conn = spdy.Connection(server=True)
    _open(conn)
    conn.send_data(1, b"x" * 200_000)
    wire = conn.outbound()
    assert len(wire) == 200_000 + 8 * 13  # 16 KiB frames, nothing held back


def test_a_peer_that_flow_controls_gets_no_more_than_its_window() -> None:
    conn = spdy.Connection(server=True)
    conn.receive(control(4, 0, struct.pack(">I", 1) + struct.pack(">II", 7, 1000)))
    _open(conn)
    assert conn.sendable(1) == 1000
    conn.send_data(1, b"y" * 1000)
    assert conn.sendable(1) == 0
    with pytest.raises(ValueError, match="window"):
        conn.send_data(1, b"z")
    (event,) = conn.receive(control(9, 0, struct.pack(">II", 1, 500)))
    assert event == spdy.WindowOpened(1)
    assert conn.sendable(1) == 500


def test_the_session_window_bounds_all_streams_together() -> None:
    conn = spdy.Connection(server=True)
    conn.receive(control(9, 0, struct.pack(">II", 0, 10)))  # session +10: it flow-controls
    z = zlib.compressobj(zdict=spdy.DICTIONARY)  # one context for the peer's whole session
    _open(conn, 1, z)
    _open(conn, 3, z)
    conn.send_data(1, b"a" * spdy.DEFAULT_WINDOW)  # stream 1's whole window
    assert conn.sendable(1) == 0
    assert conn.sendable(3) == 10  # stream 3 has 64 KiB of its own, the session only 10 bytes


def test_consumed_data_is_given_back_with_window_update() -> None:
    conn = spdy.Connection(server=True)
    _open(conn)
    conn.receive(struct.pack(">II", 1, 40_000) + b"d" * 40_000)
    conn.consumed(1, 40_000)
    wire = conn.outbound()
    assert control(9, 0, struct.pack(">II", 0, 40_000)) in wire
    assert control(9, 0, struct.pack(">II", 1, 40_000)) in wire


def test_fin_on_both_sides_forgets_the_stream() -> None:
    conn = spdy.Connection(server=True)
    _open(conn)
    conn.receive(struct.pack(">II", 1, 0x01 << 24))
    conn.send_data(1, b"", fin=True)
    assert conn.outbound() == struct.pack(">II", 1, 0x01 << 24)
    assert 1 not in conn.streams


def test_broken_input_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError, match="version"):
        spdy.Connection().receive(bytes([0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0]))
    with pytest.raises(spdy.ProtocolError, match="header block"):
        spdy.Connection().receive(control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + b"not zlib"))
    conn = spdy.Connection(server=True)
    even = control(1, 0, struct.pack(">IIBB", 2, 0, 0, 0) + header_block([]))
    with pytest.raises(spdy.ProtocolError, match="out of order"):
        conn.receive(even)


def test_unknown_control_frames_are_ignored() -> None:
    assert spdy.Connection().receive(control(0x42, 0, b"whatever")) == []
