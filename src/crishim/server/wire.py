"""Strict protobuf wire-format check of a request before it is decoded.

betterproto2 decodes leniently: a truncated buffer yields a message with a
cut-short string ('nginx' arrives as 'ngin'), and invalid wire types are
skipped silently. A CRI request damaged in transit must not become a pod with
a wrong name, so every request is walked here first, recursively through the
sub-messages and maps the schema declares. Unknown fields are allowed (newer
kubelets send fields this schema may not have yet); groups (wire types 3/4)
are checked for structure and then removed before decoding, so betterproto2
sees what protobuf's own parser would keep of the message.
"""

from __future__ import annotations

from typing import Any

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_DEPTH = 100  # protobuf's own default recursion limit

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


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


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
            if inner == 0:
                raise WireError(f"{where}: field number 0")
            pos = _skip(data, pos, inner, inner_wire, where, depth + 1)
    raise WireError(f"{where}: unexpected wire type {wire} (field {number})")


_STRING, _MESSAGE = 1, 2
# cls -> {field number: (name, allowed wire types, kind, message class)}: the schema
# walk made once per message class, not once per field of every request.
_TABLES: dict[Any, dict[int, tuple[str, frozenset[int], int, Any]]] = {}


def _table(cls: Any) -> dict[int, tuple[str, frozenset[int], int, Any]]:
    table = _TABLES.get(cls)
    if table is None:
        meta = cls._betterproto
        table = {}
        for number, name in meta.field_name_by_number.items():
            field = meta.meta_by_field_name[name]
            kind = 0
            if field.proto_type == "string":
                kind = _STRING
            elif field.proto_type in ("message", "map"):
                kind = _MESSAGE
            sub = meta.cls_by_field[name] if kind == _MESSAGE else None
            table[number] = (name, _allowed(field.proto_type, field.repeated), kind, sub)
        _TABLES[cls] = table
    return table


def check(data: bytes, cls: Any, where: str | None = None, depth: int = 0) -> bytes:
    """Raise WireError unless `data` is a well-formed encoding of message `cls`.

    Returns the bytes to decode: `data` itself, or (rarely) a copy without the
    known fields that arrived with the wrong wire type. Official protobuf
    parsers keep those aside as unknown fields, so they are dropped here
    rather than handed to betterproto2 to misread.
    """
    where = where or cls.__name__
    if depth > MAX_DEPTH:
        raise WireError(f"{where}: nested deeper than {MAX_DEPTH}")
    table = _table(cls)
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement): rare
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
        if wire == EGROUP:
            raise WireError(f"{where}: end of group {number} without its start")
        field = table.get(number)
        if wire == LEN:
            if pos >= end:
                raise WireError(f"{where}: truncated or overlong varint at byte {pos}")
            value_at = pos
            length = data[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(data, pos, where)
            payload_at, pos = pos, pos + length
            if pos > end:
                raise WireError(f"{where}: field {number} runs past the end of the message")
            if field is None:
                continue
            if LEN not in field[1]:
                edits.append((start, pos, b""))  # treated as unknown, like the official runtime
                continue
            kind = field[2]
            if kind == _STRING:
                try:
                    data[payload_at:pos].decode("utf-8")
                except UnicodeDecodeError:
                    raise WireError(f"{where}.{field[0]}: not valid UTF-8") from None
            elif kind == _MESSAGE:
                payload = data[payload_at:pos]
                cleaned = check(payload, field[3], f"{where}.{field[0]}", depth + 1)
                if cleaned is not payload:
                    head = data[start:value_at]
                    edits.append((start, pos, head + _encode_varint(len(cleaned)) + cleaned))
            continue
        pos = _skip(data, pos, number, wire, where, depth)
        if wire == SGROUP:
            # Legal, and an unknown field whatever its number (proto3 has no groups), but
            # betterproto2 would read the group's inner fields as this message's own:
            # dropped, which is what protobuf's parser leaves of it.
            edits.append((start, pos, b""))
        elif field is not None and wire not in field[1]:
            edits.append((start, pos, b""))  # treated as unknown, like the official runtime
    if not edits:
        return data
    parts, at = [], 0
    for edit_start, edit_end, replacement in edits:
        parts += (data[at:edit_start], replacement)
        at = edit_end
    parts.append(data[at:])
    return b"".join(parts)
