"""The gRPC codec of the CRI server: size limit, then a strict decode.

grpclib applies no message size limit and betterproto2 decodes leniently; a
request over the limit gets RESOURCE_EXHAUSTED and a malformed one
INVALID_ARGUMENT (crishim.server.wire decodes and checks in one walk), before
any handler sees it. The codec is the one seam
between wire bytes and message objects: a response a handler built in wire
form already (protowire.Encoded: the stats and metrics lists) goes out as it is.
"""

from __future__ import annotations

from typing import Any

from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from crishim.server import instrument, wire
from crishim.server.protowire import Encoded


class CriCodec(ProtoCodec):
    def __init__(self, max_request_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):  # built in wire form already (server/protowire.py)
            return message.data
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        name = message_type.__name__
        if len(data) > self.max_request_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"{name} of {len(data)} bytes is over the limit of {self.max_request_bytes}",
            )
        try:
            message = wire.decode(data, message_type)
        except (wire.WireError, ValueError, EOFError, KeyError, TypeError) as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {name}: {exc}") from None
        instrument.bind_request_ids(message)
        return message
