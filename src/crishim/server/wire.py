"""Strict protobuf wire-format check of a request before it is decoded.

betterproto2 decodes leniently: a truncated buffer yields a message with a
cut-short string ('nginx' arrives as 'ngin'), and invalid wire types are
skipped silently. A CRI request damaged in transit must not become a pod with
a wrong name, so every request is walked here first, recursively through the
sub-messages and maps the schema declares. Unknown fields are allowed (newer
kubelets send fields this schema may not have yet).
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


def _allowed(proto_type: str, repeated: bool) -> set[int]:
    if proto_type in _VARINT_TYPES:
        base = VARINT
    elif proto_type in _I64_TYPES:
        base = I64
    elif proto_type in _I32_TYPES:
        base = I32
    else:  # string, bytes, message, map
        return {LEN}
    return {base, LEN} if repeated else {base}  # repeated scalars may be packed


def check(data: bytes, cls: Any, where: str | None = None, depth: int = 0) -> None:
    """Raise WireError unless `data` is a well-formed encoding of message `cls`."""
    where = where or cls.__name__
    if depth > MAX_DEPTH:
        raise WireError(f"{where}: nested deeper than {MAX_DEPTH}")
    meta = cls._betterproto
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"{where}: field number 0")
        name = meta.field_name_by_number.get(number)
        field = meta.meta_by_field_name[name] if name else None
        if field is not None and wire not in _allowed(field.proto_type, field.repeated):
            raise WireError(f"{where}.{name}: wrong wire type {wire}")
        if wire == VARINT:
            _, pos = _varint(data, pos, where)
        elif wire in (I64, I32):
            pos += 8 if wire == I64 else 4
            if pos > end:
                raise WireError(f"{where}: truncated fixed-width field {number}")
        elif wire == LEN:
            length, pos = _varint(data, pos, where)
            stop = pos + length
            if stop > end:
                raise WireError(f"{where}: field {number} runs past the end of the message")
            if field is not None:
                _check_payload(data[pos:stop], cls, name, field, f"{where}.{name}", depth)
            pos = stop
        else:
            raise WireError(f"{where}: unsupported wire type {wire} (field {number})")


def _check_payload(payload: bytes, cls: Any, name: str, field: Any, where: str, depth: int) -> None:
    if field.proto_type == "string":
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{where}: not valid UTF-8") from None
    elif field.proto_type in ("message", "map"):
        check(payload, cls._betterproto.cls_by_field[name], where, depth + 1)
