"""Fuzzing every RPC with structure-aware and mutated requests (hypothesis, bounded).

Requests are drawn from the schema itself (each message's fields, nested
messages, repeated fields and maps, with edge values: undeclared enum numbers,
extreme integers, odd strings), serialized by the official protobuf runtime,
and sometimes damaged afterwards (bytes flipped, cut, inserted). Each one goes
to a private crishim on a daemon of its own. Whatever comes back:

  - never INTERNAL or UNKNOWN (a crash of a handler), and no rpc_internal_error log;
  - parity with the official decoder: a buffer it refuses is INVALID_ARGUMENT
    "malformed ...", a buffer it accepts is never refused as malformed;
  - the server keeps serving, and its RSS stays bounded.

PullImage is left out: a random but valid reference would send the daemon to a
registry on the network. Examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

import base64
import os

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.clients import official_accepts

SKIPPED = {"PullImage"}
EXAMPLES = 30  # requests per RPC: about a minute in all
# Damage after serializing: (0 flip | 1 insert | 2 cut, where, byte); none half the time.
EDITS = st.one_of(
    st.just([]),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4096), st.integers(0, 255)), max_size=3),
)

INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
ODD_STRINGS = [
    "", ".", "..", "/", "../../x", "-lead", "a" * 300, "UPPER/x", "busybox",
    "crishim-test/busybox:latest", "sha256:" + "0" * 64, "not-an-ip", "10.0.0.1",
    "kernel.hostname", "has space", "\u00e9\u00e8", "\x00", "a:b", "/dev/zero",
]  # fmt: skip


def _integers(kind: int) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[kind]
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, -1 if low else 1]))


def _value(field, depth: int) -> st.SearchStrategy:
    t = field.type
    if t == F.TYPE_MESSAGE:
        return _message(field.message_type, depth + 1)
    if t == F.TYPE_STRING:
        return st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=24))
    if t == F.TYPE_BYTES:
        return st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_ENUM:
        return st.integers(-3, 40)  # proto3 enums are open: undeclared numbers included
    if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    return _integers(t).map(lambda n: str(n) if abs(n) >= 2**53 else n)


def _message(descriptor, depth: int = 0) -> st.SearchStrategy[dict]:
    if depth > 4:
        return st.just({})
    optional = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            optional[field.json_name] = st.dictionaries(
                _value(key_field, depth).map(str), _value(value_field, depth), max_size=3
            )
        elif field.is_repeated:
            optional[field.json_name] = st.lists(_value(field, depth), max_size=3)
        else:
            optional[field.json_name] = _value(field, depth)
    return st.fixed_dictionaries({}, optional=optional)


def _damage(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, byte in edits:
        if kind == 0 and out:
            out[where % len(out)] = byte
        elif kind == 1:
            out.insert(where % (len(out) + 1), byte)
        elif kind == 2 and out:
            del out[where % len(out) :]
    return bytes(out)


def _methods(pb):
    out = []
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            if method.name in SKIPPED:
                continue
            path = f"/{service.full_name}/{method.name}"
            out.append((path, method, getattr(pb, method.input_type.name)))
    return out


@pytest.fixture
def fuzz_target(private_node):
    _, proc, client = private_node
    return proc, client


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_fuzzed_requests_to_every_rpc(fuzz_target) -> None:
    proc, client = fuzz_target
    pb = client.pb
    methods = _methods(pb)
    assert len(methods) >= 40  # every RPC of both services but PullImage
    pid = proc.proc.pid
    rss_before = _rss_kb(pid)
    seen: dict[str, set[grpc.StatusCode]] = {}

    def call(path: str, method, data: bytes) -> tuple[grpc.StatusCode, str]:
        try:
            if method.server_streaming:
                # GetContainerEvents never ends by itself: a short deadline ends it.
                stream = client.channel.unary_stream(path)(data, timeout=2)
                for _ in stream:
                    pass
            else:
                client.channel.unary_unary(path)(data, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    def fuzz(path: str, method, cls) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(fields=_message(cls.DESCRIPTOR), edits=EDITS)
        def one(fields, edits) -> None:
            try:
                message = json_format.ParseDict(fields, cls())
            except json_format.ParseError:  # a drawn value the schema cannot hold
                message = cls()
            payload = _damage(message.SerializeToString(), edits)
            code, details = call(path, method, payload)
            seen.setdefault(method.name, set()).add(code)
            if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return  # a stream that was still open
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                method.name,
                payload.hex(),
                details,
            )
            malformed = code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("malformed")
            assert malformed == (not official_accepts(cls, payload)), (
                method.name,
                payload.hex(),
                code,
                details,
            )

        one()

    try:
        for path, method, cls in methods:
            fuzz(path, method, cls)
    finally:
        # Whatever the fuzz created (a valid RunPodSandbox by chance) goes away.
        for pod in client.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
            client.runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60
            )
    assert client.runtime.Version(pb.VersionRequest(), timeout=10).runtime_name == "docker"
    assert not [e for e in proc.events() if e.get("event") == "rpc_internal_error"]
    assert len(seen) >= 38, f"only {len(seen)} RPCs were reached: {sorted(seen)}"
    assert _rss_kb(pid) - rss_before < 100 * 1024, "RSS grew by more than 100 MB"
    assert os.path.exists(proc.socket)
