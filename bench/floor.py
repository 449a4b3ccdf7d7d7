"""The floor under crishim's near-empty calls: grpclib answering them with nothing behind.

A grpclib Server with crishim's generated CRI services, whose Version, Status and
ImageFsInfo return an answer built once, on a unix socket, in a process of its own
(every other RPC answers UNIMPLEMENTED, the generated base's answer). What a call to it
costs is grpclib's, h2's and asyncio's per-call (and per-connection) time alone: the
time crishim cannot go under while it serves with grpclib. bench/side.py measures it
beside crishim and cri-dockerd.

    .venv/bin/python -m bench.floor SOCKET
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from grpclib.server import Server

from crishim.api.runtime import v1 as api

VERSION = api.VersionResponse(
    version="0.1.0",
    runtime_name="docker",
    runtime_version="20.10.24+dfsg1",
    runtime_api_version="1.41.0",
)
STATUS = api.StatusResponse(
    status=api.RuntimeStatus(
        conditions=[
            api.RuntimeCondition(type="RuntimeReady", status=True),
            api.RuntimeCondition(type="NetworkReady", status=True),
        ]
    ),
    runtime_handlers=[api.RuntimeHandler(name="", features=api.RuntimeHandlerFeatures())],
    features=api.RuntimeFeatures(),
)


def _fs(mountpoint: str) -> api.FilesystemUsage:
    return api.FilesystemUsage(
        timestamp=1,
        fs_id=api.FilesystemIdentifier(mountpoint=mountpoint),
        used_bytes=api.UInt64Value(value=1 << 30),
        inodes_used=api.UInt64Value(value=1 << 16),
    )


FS_INFO = api.ImageFsInfoResponse(
    image_filesystems=[_fs("/var/lib/docker")], container_filesystems=[_fs("/var/lib/docker")]
)


class Runtime(api.RuntimeServiceBase):
    async def version(self, message: api.VersionRequest) -> api.VersionResponse:
        return VERSION

    async def status(self, message: api.StatusRequest) -> api.StatusResponse:
        return STATUS


class Images(api.ImageServiceBase):
    async def image_fs_info(self, message: api.ImageFsInfoRequest) -> api.ImageFsInfoResponse:
        return FS_INFO


async def serve(socket: Path) -> None:
    server = Server([Runtime(), Images()])
    await server.start(path=str(socket))
    try:
        await asyncio.Event().wait()  # until the process is ended
    finally:
        server.close()


if __name__ == "__main__":
    Path(sys.argv[1]).unlink(missing_ok=True)
    asyncio.run(serve(Path(sys.argv[1])))
