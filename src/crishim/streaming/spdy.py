"""SPDY/3.1 as the kubelet and crictl speak it: a sans-I/O protocol core.

`Connection` turns received bytes into events and method calls into bytes to
send; it never touches a socket (streaming/spdyio.py is the asyncio glue).

Frames (SPDY/3.1 draft, section 2): a control frame starts with the C bit,
version 3 and a type; a data frame with a 31-bit stream id. Header blocks are
zlib streams primed with the SPDY/3 dictionary, one compression context per
direction, each block ended with a sync flush.

Flow control: SPDY/3.1 gives each stream and the session a 64 KiB send window
that the peer refills with WINDOW_UPDATE. moby/spdystream (kubelet, crictl,
kubectl) never sends WINDOW_UPDATE or SETTINGS and ignores ours, so enforcing
windows against it would stall every stream after 64 KiB. The rule here: the
send windows are enforced only once the peer has shown it keeps them (it sent
SETTINGS with an initial window, or any WINDOW_UPDATE); otherwise memory is
bounded by transport backpressure in the glue. Our receive side always sends
WINDOW_UPDATE as the application consumes data, which peers that flow-control
need and spdystream ignores.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3
DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 0x7FFFFFFF
MAX_FRAME_PAYLOAD = 0xFFFFFF  # 24-bit length
MAX_HEADER_BLOCK = 256 * 1024  # decompressed; kubelet's headers are a few hundred bytes
DATA_CHUNK = 16 * 1024  # data frames we send are at most this large

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
SETTINGS_INITIAL_WINDOW_SIZE = 7

# The SPDY/3 header compression dictionary (draft 3.1, section 2.6.10.1):
# length-prefixed header names and values, then common value fragments.
_DICT_WORDS = (
    *[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
    ],
    "200 OK",
    *["version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"],
)
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    words = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICT_WORDS)
    return words + _DICT_TAIL.encode()


DICTIONARY = _dictionary()


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must end with GOAWAY."""


Headers = dict[str, str]  # lower-case names; several values joined by NUL, as on the wire


# -- frames -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True, slots=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Settings:
    values: dict[int, int]
    clear: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


Frame = (
    SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data
)


# -- header blocks -----------------------------------------------------------


class HeaderEncoder:
    """One compression context for everything this side sends."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9, zdict=DICTIONARY
        )

    def encode(self, headers: Headers) -> bytes:
        raw = [struct.pack(">I", len(headers))]
        for name, value in headers.items():
            n, v = name.lower().encode(), value.encode()
            raw += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
        return self._z.compress(b"".join(raw)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecoder:
    """One decompression context for everything the peer sends."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, zdict=DICTIONARY)

    def decode(self, block: bytes) -> Headers:
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"bad header block: {exc}") from exc
        if self._z.unconsumed_tail:
            raise ProtocolError("header block too large")
        headers: Headers = {}
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            at = 4
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, at)
                name = raw[at + 4 : at + 4 + n].decode()
                at += 4 + n
                (v,) = struct.unpack_from(">I", raw, at)
                value = raw[at + 4 : at + 4 + v].decode()
                at += 4 + v
                if len(name) != n or len(value.encode()) != v:
                    raise ProtocolError("truncated header block")
                headers[name.lower()] = value
        except (struct.error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed header block: {exc}") from exc
        return headers


# -- encoding -------------------------------------------------------------------


def _control(kind: FrameType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError("frame too large")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def encode(frame: Frame, headers: HeaderEncoder) -> bytes:
    """The bytes of one frame; header blocks go through this side's compression context."""
    match frame:
        case Data(stream_id, data, fin):
            if len(data) > MAX_FRAME_PAYLOAD:
                raise ValueError("data frame too large")
            flags = FLAG_FIN if fin else 0
            return struct.pack(">II", stream_id & MAX_WINDOW, (flags << 24) | len(data)) + data
        case SynStream(sid, hdrs, assoc, prio, fin, uni):
            flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if uni else 0)
            head = struct.pack(">IIBB", sid, assoc, (prio & 7) << 5, 0)
            return _control(FrameType.SYN_STREAM, flags, head + headers.encode(hdrs))
        case SynReply(sid, hdrs, fin):
            block = headers.encode(hdrs)
            return _control(
                FrameType.SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", sid) + block
            )
        case HeadersFrame(sid, hdrs, fin):
            block = headers.encode(hdrs)
            return _control(
                FrameType.HEADERS, FLAG_FIN if fin else 0, struct.pack(">I", sid) + block
            )
        case RstStream(sid, status):
            return _control(FrameType.RST_STREAM, 0, struct.pack(">II", sid, status))
        case Settings(values, clear):
            body = struct.pack(">I", len(values)) + b"".join(
                struct.pack(">II", key & 0xFFFFFF, value) for key, value in values.items()
            )
            return _control(FrameType.SETTINGS, 1 if clear else 0, body)
        case Ping(ping_id):
            return _control(FrameType.PING, 0, struct.pack(">I", ping_id))
        case GoAway(last, status):
            return _control(FrameType.GOAWAY, 0, struct.pack(">II", last, status))
        case WindowUpdate(sid, delta):
            return _control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", sid, delta))
    raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameReader:
    """Bytes in, frames out; keeps an incomplete frame between feeds."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers = HeaderDecoder()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf)
            length = second & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            flags = second >> 24
            if first & 0x80000000:
                version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != VERSION:
                    raise ProtocolError(f"unsupported SPDY version {version}")
                frame = self._control(kind, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Data(first & MAX_WINDOW, payload, bool(flags & FLAG_FIN)))
        return frames

    def _control(self, kind: int, flags: int, p: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        try:
            if kind == FrameType.SYN_STREAM:
                sid, assoc, prio = struct.unpack_from(">IIB", p)
                return SynStream(
                    sid & MAX_WINDOW,
                    self._headers.decode(p[10:]),
                    assoc & MAX_WINDOW,
                    prio >> 5,
                    fin,
                    bool(flags & FLAG_UNIDIRECTIONAL),
                )
            if kind == FrameType.SYN_REPLY:
                (sid,) = struct.unpack_from(">I", p)
                return SynReply(sid & MAX_WINDOW, self._headers.decode(p[4:]), fin)
            if kind == FrameType.HEADERS:
                (sid,) = struct.unpack_from(">I", p)
                return HeadersFrame(sid & MAX_WINDOW, self._headers.decode(p[4:]), fin)
            if kind == FrameType.RST_STREAM:
                sid, status = struct.unpack_from(">II", p)
                return RstStream(sid & MAX_WINDOW, status)
            if kind == FrameType.SETTINGS:
                (count,) = struct.unpack_from(">I", p)
                values = {}
                for i in range(count):
                    key, value = struct.unpack_from(">II", p, 4 + 8 * i)
                    values[key & 0xFFFFFF] = value
                return Settings(values, bool(flags & 1))
            if kind == FrameType.PING:
                return Ping(struct.unpack_from(">I", p)[0])
            if kind == FrameType.GOAWAY:
                last, *rest = struct.unpack_from(">II" if len(p) >= 8 else ">I", p)
                return GoAway(last & MAX_WINDOW, rest[0] if rest else GoAwayStatus.OK)
            if kind == FrameType.WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p)
                return WindowUpdate(sid & MAX_WINDOW, delta & MAX_WINDOW)
        except struct.error as exc:
            raise ProtocolError(f"short {FrameType(kind).name} frame") from exc
        return None  # unknown control frames are ignored (draft 3.1, 2.2.1)


# -- the connection -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream_id: int
    headers: Headers
    fin: bool


@dataclass(frozen=True, slots=True)
class StreamReplied:
    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class DataReceived:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    stream_id: int  # 0: the session window


@dataclass(frozen=True, slots=True)
class GoneAway:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    ping_id: int


Event = (
    StreamOpened | StreamReplied | DataReceived | StreamReset | WindowOpened | GoneAway | PingAcked
)


@dataclass(slots=True)
class _Stream:
    send_window: int
    unacked: int = 0  # bytes received and consumed, not yet returned by WINDOW_UPDATE
    local_closed: bool = False
    remote_closed: bool = False


@dataclass(slots=True)
class Connection:
    """One SPDY/3.1 session, either side. Call `receive`, act on events, send `outbound()`."""

    server: bool = True
    streams: dict[int, _Stream] = field(default_factory=dict)
    peer_flow_control: bool = False  # see the module docstring
    session_send_window: int = DEFAULT_WINDOW
    initial_send_window: int = DEFAULT_WINDOW
    session_unacked: int = 0
    last_peer_stream: int = 0
    going_away: bool = False
    _next_id: int = 0
    _out: bytearray = field(default_factory=bytearray)
    _reader: FrameReader = field(default_factory=FrameReader)
    _headers: HeaderEncoder = field(default_factory=HeaderEncoder)

    def __post_init__(self) -> None:
        self._next_id = 2 if self.server else 1

    # -- output --

    def _send(self, frame: Frame) -> None:
        self._out += encode(frame, self._headers)

    def outbound(self) -> bytes:
        """Everything queued for the peer since the last call."""
        data, self._out = bytes(self._out), bytearray()
        return data

    # -- input --

    def receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for frame in self._reader.feed(data):
            events.extend(self._on_frame(frame))
        return events

    def _on_frame(self, frame: Frame) -> list[Event]:
        match frame:
            case Data(sid, data, fin):
                stream = self.streams.get(sid)
                if stream is None or stream.remote_closed:
                    self._send(RstStream(sid, RstStatus.INVALID_STREAM))
                    return []
                stream.remote_closed = stream.remote_closed or fin
                self._forget_if_done(sid)
                return [DataReceived(sid, data, fin)]
            case SynStream(sid, headers, _, _, fin, uni):
                if sid % 2 == self._next_id % 2 or sid <= self.last_peer_stream:
                    raise ProtocolError(f"stream id {sid} out of order")
                self.last_peer_stream = sid
                if self.going_away:
                    self._send(RstStream(sid, RstStatus.REFUSED_STREAM))
                    return []
                self.streams[sid] = _Stream(
                    self.initial_send_window, remote_closed=fin, local_closed=uni
                )
                return [StreamOpened(sid, headers, fin)]
            case SynReply(sid, headers, fin) | HeadersFrame(sid, headers, fin):
                stream = self.streams.get(sid)
                if stream is None:
                    return []
                if fin:
                    stream.remote_closed = True
                    self._forget_if_done(sid)
                events: list[Event] = []
                if isinstance(frame, SynReply):
                    events.append(StreamReplied(sid, headers))
                if fin:
                    events.append(DataReceived(sid, b"", True))
                return events
            case RstStream(sid, status):
                self.streams.pop(sid, None)
                return [StreamReset(sid, status)]
            case Settings(values, _):
                if SETTINGS_INITIAL_WINDOW_SIZE in values:
                    new = values[SETTINGS_INITIAL_WINDOW_SIZE]
                    delta, self.initial_send_window = new - self.initial_send_window, new
                    for stream in self.streams.values():
                        stream.send_window += delta
                    self.peer_flow_control = True
                    return [WindowOpened(0)]
                return []
            case Ping(ping_id):
                if ping_id % 2 == self._next_id % 2:
                    return [PingAcked(ping_id)]
                self._send(Ping(ping_id))  # the peer's ping: echo it
                return []
            case GoAway(last, status):
                self.going_away = True
                return [GoneAway(last, status)]
            case WindowUpdate(sid, delta):
                self.peer_flow_control = True
                if sid == 0:
                    self.session_send_window = min(self.session_send_window + delta, MAX_WINDOW)
                elif (stream := self.streams.get(sid)) is not None:
                    stream.send_window = min(stream.send_window + delta, MAX_WINDOW)
                return [WindowOpened(sid)]
        return []

    def _forget_if_done(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None and stream.local_closed and stream.remote_closed:
            del self.streams[sid]

    # -- actions --

    def open_stream(self, headers: Headers, *, fin: bool = False) -> int:
        sid, self._next_id = self._next_id, self._next_id + 2
        self.streams[sid] = _Stream(self.initial_send_window, local_closed=fin)
        self._send(SynStream(sid, headers, fin=fin))
        return sid

    def reply(self, stream_id: int, headers: Headers | None = None) -> None:
        self._send(SynReply(stream_id, headers or {}))

    def sendable(self, stream_id: int) -> int:
        """How many bytes `send_data` takes now on this stream (0: wait for WindowOpened)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        if not self.peer_flow_control:
            return MAX_WINDOW
        return max(0, min(stream.send_window, self.session_send_window))

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise ValueError(f"stream {stream_id} is closed for sending")
        if len(data) > self.sendable(stream_id):
            raise ValueError("data exceeds the peer's window")
        if self.peer_flow_control:
            stream.send_window -= len(data)
            self.session_send_window -= len(data)
        for start in range(0, len(data), DATA_CHUNK):
            chunk = data[start : start + DATA_CHUNK]
            self._send(Data(stream_id, chunk, fin and start + DATA_CHUNK >= len(data)))
        if fin:
            if not data:
                self._send(Data(stream_id, b"", True))
            stream.local_closed = True
            self._forget_if_done(stream_id)

    def consumed(self, stream_id: int, n: int) -> None:
        """The application took `n` received bytes: give the peer its window back."""
        self.session_unacked += n
        if self.session_unacked >= DEFAULT_WINDOW // 2:
            self._send(WindowUpdate(0, self.session_unacked))
            self.session_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return
        stream.unacked += n
        if stream.unacked >= DEFAULT_WINDOW // 2:
            self._send(WindowUpdate(stream_id, stream.unacked))
            stream.unacked = 0

    def reset(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        if self.streams.pop(stream_id, None) is not None:
            self._send(RstStream(stream_id, status))

    def ping(self, ping_id: int) -> None:
        self._send(Ping(ping_id))

    def go_away(self, status: int = GoAwayStatus.OK) -> None:
        if not self.going_away:
            self.going_away = True
            self._send(GoAway(self.last_peer_stream, status))
