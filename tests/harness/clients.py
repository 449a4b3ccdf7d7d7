"""Clients of crishim: the official grpcio client and crishim's own grpclib one.

The official stubs are generated from protos/ by grpcio-tools when the suite
starts, so they always match the schema under test; the official protobuf
runtime decodes what crishim encodes, which is the wire-compatibility check.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
from grpclib.client import Channel

from crishim.api.runtime import v1 as api

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def generate_official_stubs(out: Path) -> tuple[ModuleType, ModuleType]:
    """(api_pb2, api_pb2_grpc) for runtime.v1, generated into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "runtime/v1/api.proto",
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(out))
    return (
        importlib.import_module("runtime.v1.api_pb2"),
        importlib.import_module("runtime.v1.api_pb2_grpc"),
    )


def official_accepts(message_cls, data: bytes) -> bool:
    """The oracle for malformed input: does the official protobuf runtime parse `data`?"""
    try:
        message_cls.FromString(data)
    except Exception:
        return False
    return True


class Official:
    """grpcio channel and both service stubs on a unix socket."""

    def __init__(self, socket: Path, pb2: ModuleType, pb2_grpc: ModuleType) -> None:
        self.pb = pb2
        # ExecSync may return 16 MiB per stream: more than grpcio's 4 MiB default.
        self.channel = grpc.insecure_channel(
            f"unix://{socket}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.runtime = pb2_grpc.RuntimeServiceStub(self.channel)
        self.image = pb2_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


class Own:
    """crishim's generated grpclib stubs; use inside a running event loop."""

    def __init__(self, socket: Path) -> None:
        self.channel = Channel(path=str(socket))
        self.runtime = api.RuntimeServiceStub(self.channel)
        self.image = api.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
