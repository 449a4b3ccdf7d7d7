"""Our generated messages against the official protobuf runtime, both directions.

betterproto 2.0.0b7 dropped a sub-message set to an empty instance and map
entries with empty key and value; the kubelet tells an unset Int64Value (no
run_as_user) from Int64Value(0) (run as root), and an unset UInt64Value (no
stat) from a zero stat. These tests keep betterproto2 honest about that.
"""

from __future__ import annotations

import random

import betterproto2
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crishim.api.runtime import v1 as api
from crishim.server import wire
from tests.harness.clients import official_accepts
from tests.integration import test_fuzz as fuzz


def test_an_empty_int64_wrapper_survives_encoding(pb) -> None:
    ours = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value())
    theirs = pb.LinuxContainerSecurityContext.FromString(bytes(ours))
    assert theirs.HasField("run_as_user")
    assert theirs.run_as_user.value == 0
    unset = pb.LinuxContainerSecurityContext.FromString(bytes(api.LinuxContainerSecurityContext()))
    assert not unset.HasField("run_as_user")


def test_an_empty_uint64_wrapper_survives_encoding(pb) -> None:
    ours = api.CpuUsage(timestamp=1, usage_core_nano_seconds=api.UInt64Value())
    theirs = pb.CpuUsage.FromString(bytes(ours))
    assert theirs.HasField("usage_core_nano_seconds")
    assert not theirs.HasField("usage_nano_cores")


def test_empty_wrappers_from_the_official_runtime_are_kept(pb) -> None:
    data = pb.LinuxSandboxSecurityContext(run_as_user=pb.Int64Value(value=0)).SerializeToString()
    assert api.LinuxSandboxSecurityContext.parse(data).run_as_user == api.Int64Value(value=0)
    assert api.LinuxSandboxSecurityContext.parse(b"").run_as_user is None


def test_a_map_entry_with_empty_key_and_value_survives(pb) -> None:
    ours = api.PodSandboxConfig(labels={"": "", "app": "web"})
    assert dict(pb.PodSandboxConfig.FromString(bytes(ours)).labels) == {"": "", "app": "web"}
    theirs = pb.PodSandboxConfig(annotations={"": ""}).SerializeToString()
    assert api.PodSandboxConfig.parse(theirs).annotations == {"": ""}


def test_enums_and_nested_messages_round_trip(pb) -> None:
    ours = api.ContainerStatus(
        id="c1",
        state=api.ContainerState.CONTAINER_EXITED,
        exit_code=137,
        reason="OOMKilled",
        mounts=[
            api.Mount(
                container_path="/data", propagation=api.MountPropagation.PROPAGATION_BIDIRECTIONAL
            )
        ],
        stop_signal=api.Signal.SIGTERM,
    )
    theirs = pb.ContainerStatus.FromString(bytes(ours))
    assert theirs.state == pb.CONTAINER_EXITED
    assert theirs.mounts[0].propagation == pb.PROPAGATION_BIDIRECTIONAL
    assert theirs.stop_signal == pb.SIGTERM
    assert api.ContainerStatus.parse(theirs.SerializeToString()) == ours


def ours_accepts(cls, data: bytes) -> bool:
    try:
        wire.decode(data, cls)
    except (wire.WireError, ValueError, EOFError):
        return False
    return True


@pytest.mark.parametrize(
    "name", ["RunPodSandboxRequest", "CreateContainerRequest", "PullImageRequest"]
)
def test_the_wire_check_agrees_with_the_official_parser_on_random_damage(pb, name) -> None:
    ours_cls, theirs_cls = getattr(api, name), getattr(pb, name)
    sample = theirs_cls()
    if name == "RunPodSandboxRequest":
        sample.config.metadata.name = "web"
        sample.config.labels["tier"] = "front"
        sample.config.linux.security_context.run_as_user.value = 1000
    elif name == "CreateContainerRequest":
        sample.pod_sandbox_id = "abc"
        sample.config.command.extend(["/bin/sh", "-c", "echo hi"])
        sample.config.linux.resources.cpu_shares = 512
        sample.config.envs.add(key="A", value="1")
    else:
        sample.image.image = "busybox:latest"
        sample.auth.username = "me"
    data = sample.SerializeToString()
    rng = random.Random(name)
    for i in range(400):
        damaged = bytearray(data[: rng.randint(0, len(data))] if i % 2 else data)
        for _ in range(rng.randint(0, 3)):
            if damaged:
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        damaged = bytes(damaged)
        assert ours_accepts(ours_cls, damaged) == official_accepts(theirs_cls, damaged), (
            damaged.hex()
        )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\x0a\x05nginx"[:-1], "runs past the end", id="truncated-length"),
        pytest.param(b"\x0f", "unexpected wire type 7", id="bad-wire-type"),
        pytest.param(b"\x0c", "without its start", id="stray-end-group"),
        pytest.param(b"\x0b\x10\x01", "not closed", id="open-group"),
        pytest.param(b"\x00\x01", "field number 0", id="field-zero"),
        # One past protobuf's largest field number (2**29 - 1), length-delimited and empty.
        pytest.param(b"\x82\x80\x80\x80\x10\x00", "out of range", id="field-too-large"),
        pytest.param(
            b"\x0a\x02\x0a\xff", "RunPodSandboxRequest.config: truncated", id="truncated-nested"
        ),
        pytest.param(b"\x12\x02\xc3\x28", "not valid UTF-8", id="bad-utf8"),
    ],
)
def test_the_wire_check_names_what_is_wrong(data, reason) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(data, api.RunPodSandboxRequest)


def test_a_known_field_with_the_wrong_wire_type_is_dropped_like_protobuf_does(pb) -> None:
    # field 1 (config, a message) sent as a varint, then a valid runtime_handler
    data = b"\x08\x01" + b"\x12\x04runc"
    assert wire.decode(data, api.RunPodSandboxRequest) == api.RunPodSandboxRequest(
        runtime_handler="runc"
    )
    theirs = pb.RunPodSandboxRequest.FromString(data)
    assert not theirs.HasField("config")
    assert theirs.runtime_handler == "runc"


def test_unknown_fields_from_a_newer_kubelet_are_allowed() -> None:
    future_field = b"\xa2\x06\x03abc"  # field 100, length-delimited
    decoded = wire.decode(future_field + b"\x12\x04runc", api.RunPodSandboxRequest)
    assert decoded == api.RunPodSandboxRequest(runtime_handler="runc")
    assert decoded._unknown_fields == future_field  # kept, as betterproto2 keeps them


def _group(number: int, body: bytes) -> bytes:
    return bytes([number << 3 | 3]) + body + bytes([number << 3 | 4])


GROUP_CASES = {
    # VersionRequest: field 1 `version`; a group with that number, and an unknown one.
    "version-known-number": ("VersionRequest", _group(1, b"\x0a\x02v9") + b"\x0a\x021x"),
    "version-unknown-number": ("VersionRequest", _group(7, b"\x08\x05") + b"\x0a\x021x"),
    # ContainerStatusRequest: an id hidden in a group must not become the id.
    "id-in-a-group": ("ContainerStatusRequest", _group(5, b"\x0a\x03abc")),
    "nested-groups": (
        "ContainerStatusRequest",
        _group(5, _group(6, b"\x0a\x03abc") + b"\x10\x01") + b"\x10\x01",
    ),
    # A group inside a sub-message (config.metadata of RunPodSandboxRequest).
    "group-in-a-sub-message": (
        "RunPodSandboxRequest",
        b"\x0a\x0d" + b"\x0a\x0b" + _group(1, b"\x0a\x02xx") + b"\x0a\x03web",
    ),
    "group-of-a-map-field": ("RunPodSandboxRequest", b"\x0a\x06" + _group(6, b"\x0a\x02ab")),
}


@pytest.mark.parametrize("case", GROUP_CASES)
def test_groups_decode_as_the_official_parser_decodes_them(pb, case) -> None:
    name, data = GROUP_CASES[case]
    theirs = getattr(pb, name).FromString(data)
    theirs.DiscardUnknownFields()
    ours = wire.decode(data, getattr(api, name))
    assert getattr(pb, name).FromString(bytes(ours)) == theirs


# Every message class of the CRI schema, each with its own examples: the deepest ones
# (PsiData's doubles) are beyond the strategy's depth from a request.
MESSAGES = sorted(
    n for n, c in vars(api).items() if isinstance(c, type) and issubclass(c, betterproto2.Message)
)


def _theirs(pb, name: str):
    """The official class of a message (betterproto2 spells IDMapping as IdMapping)."""
    return (
        getattr(pb, name, None)
        or {n.lower(): getattr(pb, n) for n in pb.DESCRIPTOR.message_types_by_name}[name.lower()]
    )


@pytest.mark.parametrize("name", MESSAGES)
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_decode_builds_what_betterproto2_builds(pb, name, data) -> None:
    """The one-walk decoder against betterproto2's own parser on valid encodings of
    structure-aware random messages (every field type, maps, wrappers, enums
    declared or not, extreme integers): the same values of the same types; and
    against the official runtime on whether a damaged encoding is accepted at all."""
    official = _theirs(pb, name)
    theirs = json_format.ParseDict(data.draw(fuzz._message(official.DESCRIPTOR)), official())
    raw = theirs.SerializeToString()
    cls = getattr(api, name)
    ours = wire.decode(raw, cls)
    assert ours == cls.parse(raw)
    assert repr(ours) == repr(cls.parse(raw))  # True, not 1; an enum member, not an int
    if official.DESCRIPTOR.fields:  # upb takes b"\x00\x00" (field 0) for a field-less one
        damaged = fuzz._damage(raw, data.draw(fuzz.EDITS))
        assert ours_accepts(cls, damaged) == official_accepts(official, damaged)
