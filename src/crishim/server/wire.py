"""Strict protobuf wire-format check of a request, and its decoding.

betterproto2 decodes leniently: a truncated buffer yields a message with a
cut-short string ('nginx' arrives as 'ngin'), and invalid wire types are
skipped silently. A CRI request damaged in transit must not become a pod with
a wrong name, so every request is walked here first, recursively through the
sub-messages and maps the schema declares. Unknown fields are allowed (newer
kubelets send fields this schema may not have yet); groups (wire types 3/4)
are checked for structure and dropped, which is what protobuf's own parser
keeps of them. The check and the decoding are one walk (`decode`), which
builds betterproto2's message objects as its own parser would.
"""

from __future__ import annotations

import struct
from typing import Any

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_DEPTH = 100  # protobuf's own default recursion limit
MAX_FIELD = (1 << 29) - 1  # the largest field number protobuf allows

_VARINT_TYPES = {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"}
_I64_TYPES = {"fixed64", "sfixed64", "double"}
_I32_TYPES = {"fixed32", "sfixed32", "float"}


class WireError(ValueError):
    """The buffer is not a valid encoding of the expected message."""


def _varint(data: bytes, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i + 1
        shift += 7
    raise WireError(f"{where}: truncated or overlong varint at byte {pos}")


def _allowed(proto_type: str, repeated: bool) -> frozenset[int]:
    if proto_type in _VARINT_TYPES:
        base = VARINT
    elif proto_type in _I64_TYPES:
        base = I64
    elif proto_type in _I32_TYPES:
        base = I32
    else:  # string, bytes, message, map
        return frozenset({LEN})
    return frozenset({base, LEN} if repeated else {base})  # repeated scalars may be packed


def _skip(data: bytes, pos: int, number: int, wire: int, where: str, depth: int) -> int:
    """Position after one field's value (groups included), checking its structure."""
    end = len(data)
    if wire == VARINT:
        return _varint(data, pos, where)[1]
    if wire in (I64, I32):
        pos += 8 if wire == I64 else 4
        if pos > end:
            raise WireError(f"{where}: truncated fixed-width field {number}")
        return pos
    if wire == LEN:
        length, pos = _varint(data, pos, where)
        if pos + length > end:
            raise WireError(f"{where}: field {number} runs past the end of the message")
        return pos + length
    if wire == SGROUP:  # legal as an unknown field: skip to the matching end-group
        if depth > MAX_DEPTH:
            raise WireError(f"{where}: nested deeper than {MAX_DEPTH}")
        while True:
            if pos >= end:
                raise WireError(f"{where}: group {number} is not closed")
            key, pos = _varint(data, pos, where)
            inner, inner_wire = key >> 3, key & 7
            if inner_wire == EGROUP:
                if inner != number:
                    raise WireError(f"{where}: group {number} closed as {inner}")
                return pos
            if inner == 0 or inner > MAX_FIELD:
                raise WireError(f"{where}: field number {inner} is out of range")
            pos = _skip(data, pos, inner, inner_wire, where, depth + 1)
    raise WireError(f"{where}: unexpected wire type {wire} (field {number})")


# What a known field's payload becomes. Scalars carry the converter of their value.
_SCALAR, _STRING, _BYTES, _MESSAGE, _MAP = 0, 1, 2, 3, 4
_FIXED = {
    "double": ("<d", 8),
    "float": ("<f", 4),
    "fixed32": ("<I", 4),
    "fixed64": ("<Q", 8),
    "sfixed32": ("<i", 4),
    "sfixed64": ("<q", 8),
}


class _Field:
    """One known field of a message class, as the decoder needs it."""

    __slots__ = ("allowed", "convert", "kind", "name", "repeated", "sub", "width")

    def __init__(self, cls: Any, name: str) -> None:
        meta = cls._betterproto
        field = meta.meta_by_field_name[name]
        proto_type = field.proto_type
        self.name = name
        self.allowed = _allowed(proto_type, bool(field.repeated))
        self.repeated = bool(field.repeated)
        self.sub: Any = None
        self.convert: Any = None
        self.width = _FIXED[proto_type][1] if proto_type in _FIXED else 0
        if proto_type == "string":
            self.kind = _STRING
        elif proto_type == "bytes":
            self.kind = _BYTES
        elif proto_type == "map":
            self.kind, self.sub = _MAP, meta.cls_by_field[name]
        elif proto_type == "message":
            self.kind = _MESSAGE
            self.sub = field.unwrap() if field.unwrap else meta.cls_by_field[name]
            if field.unwrap:
                self.convert = lambda message: message.to_wrapped()
        else:
            self.kind = _SCALAR
            self.convert = _converter(proto_type, meta.cls_by_field.get(name))


def _converter(proto_type: str, enum_cls: Any) -> Any:
    """A wire value (varint int, or fixed-width bytes) to its Python value, as
    betterproto2's own parser makes it (Message._postprocess_single)."""
    if proto_type in ("int32", "int64", "enum"):
        bits = 32 if proto_type == "int32" else 64
        mask, sign = (1 << bits) - 1, 1 << (bits - 1)
        if proto_type == "enum":
            return lambda v: enum_cls(((v & mask) ^ sign) - sign)
        return lambda v: ((v & mask) ^ sign) - sign
    if proto_type in ("uint32", "uint64"):
        mask = (1 << (32 if proto_type == "uint32" else 64)) - 1
        return lambda v: v & mask
    if proto_type in ("sint32", "sint64"):
        mask = (1 << (32 if proto_type == "sint32" else 64)) - 1
        return lambda v: ((v & mask) >> 1) ^ -((v & mask) & 1)
    if proto_type == "bool":
        return lambda v: v > 0
    unpack = struct.Struct(_FIXED[proto_type][0]).unpack
    return lambda raw: unpack(raw)[0]


# cls -> {field number: _Field}: the schema walk made once per message class, not
# once per field of every request.
_TABLES: dict[Any, dict[int, _Field]] = {}


def _table(cls: Any) -> dict[int, _Field]:
    table = _TABLES.get(cls)
    if table is None:
        names = cls._betterproto.field_name_by_number
        table = {number: _Field(cls, name) for number, name in names.items()}
        _TABLES[cls] = table
    return table


def decode(data: bytes, cls: Any, where: str | None = None, depth: int = 0) -> Any:
    """Message `cls` from `data`, or WireError unless it is a well-formed encoding.

    One walk checks and decodes (a check and then betterproto2's own parser took
    ~10 times as long). Values come out as betterproto2 makes them; what the
    official parsers keep aside as unknown is dropped: known fields that
    arrived with the wrong wire type, and groups, whatever their number. Fields
    this schema does not know are kept as betterproto2 keeps them.
    """
    where = where or cls.__name__
    if depth > MAX_DEPTH:
        raise WireError(f"{where}: nested deeper than {MAX_DEPTH}")
    table = _table(cls)
    message = cls()
    unknown = b""
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key = data[pos]  # one-byte keys and lengths are the rule: read them inline
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(data, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"{where}: field number 0")
        if number > MAX_FIELD:
            raise WireError(f"{where}: field number {number} is out of range")
        if wire == EGROUP:
            raise WireError(f"{where}: end of group {number} without its start")
        field = table.get(number)
        if wire == LEN:
            if pos >= end:
                raise WireError(f"{where}: truncated or overlong varint at byte {pos}")
            length = data[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(data, pos, where)
            payload_at, pos = pos, pos + length
            if pos > end:
                raise WireError(f"{where}: field {number} runs past the end of the message")
            if field is None:
                unknown += data[start:pos]
                continue
            if LEN not in field.allowed:
                continue  # treated as unknown, like the official runtime
            kind = field.kind
            if kind == _STRING:
                try:
                    value = str(data[payload_at:pos], "utf-8")
                except UnicodeDecodeError:
                    raise WireError(f"{where}.{field.name}: not valid UTF-8") from None
            elif kind in (_MESSAGE, _MAP):
                value = decode(data[payload_at:pos], field.sub, f"{where}.{field.name}", depth + 1)
                if kind == _MAP:
                    getattr(message, field.name)[value.key] = value.value
                    continue
                if field.convert is not None:
                    value = field.convert(value)
            elif kind == _BYTES:
                value = data[payload_at:pos]
            else:  # packed repeated scalars
                getattr(message, field.name).extend(_packed(data, payload_at, pos, field, where))
                continue
        elif wire == VARINT:  # read once: the value is the varint itself
            raw, pos = _varint(data, pos, where)
            if field is None:
                unknown += data[start:pos]
                continue
            if VARINT not in field.allowed:
                continue  # treated as unknown, like the official runtime
            value = field.convert(raw)
        else:
            value_at = pos
            pos = _skip(data, pos, number, wire, where, depth)
            if wire == SGROUP:
                # Legal, and an unknown field whatever its number (proto3 has no
                # groups): dropped, which is what protobuf's parser leaves of it.
                continue
            if field is None:
                unknown += data[start:pos]
                continue
            if wire not in field.allowed:
                continue  # treated as unknown, like the official runtime
            value = field.convert(data[value_at:pos])
        if field.repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    if unknown:
        message._unknown_fields = unknown
    return message


def _packed(data: bytes, pos: int, end: int, field: _Field, where: str) -> list[Any]:
    values = []
    width, convert = field.width, field.convert
    while pos < end:
        if width:
            if pos + width > end:
                raise WireError(f"{where}.{field.name}: truncated packed field")
            values.append(convert(data[pos : pos + width]))
            pos += width
        else:
            raw, pos = _varint(data, pos, where)
            if pos > end:
                raise WireError(f"{where}.{field.name}: truncated packed field")
            values.append(convert(raw))
    return values
