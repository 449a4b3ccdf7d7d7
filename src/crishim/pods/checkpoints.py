"""CheckpointContainer (forensic container checkpointing, KEP-2008) through Docker.

Docker checkpoints a running container with CRIU when the daemon runs with
`--experimental` and CRIU is installed (`POST /containers/{id}/checkpoints`,
leaving it running). crishim then lays the result out as the archive the
kubelet's checkpoint API hands over, the way CRI-O and containerd write it:

    checkpoint/       CRIU's image files
    config.dump       who and what was checkpointed (id, name, image, times, runtime)
    spec.dump         the container's configuration as crishim knows it
    rootfs-diff.tar   the writable layer's files (overlay2 UpperDir)

an uncompressed tar written to a temporary name beside `location` and renamed
into place. Where the daemon cannot checkpoint (not experimental, no CRIU,
CRIU refusing this kernel), the call fails with FAILED_PRECONDITION saying
why, in Docker's and CRIU's own words.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import structlog

from crishim.common import errors
from crishim.engine.docker import DockerClient
from crishim.engine.docker.errors import DockerServerError
from crishim.pods.containers import Containers, ContainerView

log = structlog.get_logger(__name__)

CHECKPOINT_ID = "crishim"
DEFAULT_TIMEOUT = 300.0


def _dump(view: ContainerView) -> tuple[bytes, bytes]:
    info = view.record.info
    config = {
        "id": view.id,
        "name": view.meta.name,
        "rootfsImageName": view.image,
        "rootfsImageRef": view.image_id,
        "runtime": "docker",
        "createdTime": view.created_at_ns,
        "checkpointedTime": time.time_ns(),
    }
    spec = asdict(info)
    return json.dumps(config, indent=2).encode(), json.dumps(spec, indent=2, default=str).encode()


def _write_archive(view: ContainerView, images: Path, location: Path) -> None:
    """The archive at `location`, atomically (blocking)."""
    config, spec = _dump(view)
    fd, tmp = tempfile.mkstemp(dir=location.parent, prefix=f".{location.name}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            tar.add(images, arcname="checkpoint")
            for name, data in (("config.dump", config), ("spec.dump", spec)):
                entry = tarfile.TarInfo(name)
                entry.size, entry.mtime = len(data), int(time.time())
                tar.addfile(entry, io.BytesIO(data))
            upper = view.record.info.upper_dir
            if upper and os.path.isdir(upper):
                diff = io.BytesIO()
                with tarfile.open(fileobj=diff, mode="w") as layer:
                    layer.add(upper, arcname=".")
                entry = tarfile.TarInfo("rootfs-diff.tar")
                entry.size, entry.mtime = diff.tell(), int(time.time())
                diff.seek(0)
                tar.addfile(entry, diff)
        os.chmod(tmp, 0o600)  # memory pages of the container: root only
        os.replace(tmp, location)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Checkpointer:
    def __init__(self, docker: DockerClient, containers: Containers, work_dir: Path) -> None:
        self.docker = docker
        self.containers = containers
        self.work_dir = work_dir

    async def checkpoint(self, container_id: str, location: str, timeout_s: float) -> None:
        view = self.containers.get(container_id)  # NotFound
        if not location or not os.path.isabs(location):
            raise errors.InvalidArgument("location: an absolute path for the archive is required")
        target = Path(location)
        if not await asyncio.to_thread(target.parent.is_dir):
            raise errors.InvalidArgument(f"location: {target.parent} is not a directory")
        if view.state != "running":
            raise errors.FailedPrecondition(f"container {view.id[:12]} is not running")
        info = await self.containers.sandboxes.engine.current_info()
        if not info.experimental:
            raise errors.FailedPrecondition(
                "checkpointing needs a Docker daemon started with --experimental, "
                "and CRIU (Debian's criu)"
            )
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=self.work_dir))
        try:
            try:
                async with asyncio.timeout(timeout_s or DEFAULT_TIMEOUT):
                    await self.docker.checkpoint_create(view.id, CHECKPOINT_ID, str(work))
            except DockerServerError as exc:
                raise errors.FailedPrecondition(
                    f"docker could not checkpoint {view.id[:12]}: {exc}"
                ) from None
            except TimeoutError:
                raise errors.DeadlineExceeded(
                    f"checkpoint of {view.id[:12]} took longer than {timeout_s}s"
                ) from None
            await asyncio.to_thread(_write_archive, view, work / CHECKPOINT_ID, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        log.info("container_checkpointed", container_id=view.id, location=location)
