"""Images as the kubelet sees them: pull, status, list, remove, filesystem usage.

image_ref, Image.id and (later) ContainerStatus.image_id are all the Docker
image ID (`sha256:...`): it is stable on the node and names exactly one image,
as CRI 1.36 requires of all four.

Pulls. Concurrent pulls of one reference with the same credentials share one
Docker pull (a caller with other credentials gets its own, so nobody rides on
somebody else's access). A pull is never cut short by time alone: it is
aborted when Docker reports no progress for `pull_progress_timeout` seconds,
and its progress is logged every `pull_log_interval` seconds. A caller that
goes away does not cancel a pull others are waiting on.

Details. An image ID's config never changes, so the inspected details are
cached by ID; only names (tags, digests) are read fresh, with one list call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from crishim import errors, imageref, registry, tasks
from crishim.docker import DockerClient
from crishim.docker.types import ImageConfig, ImageDetails, RegistryAuth

log = structlog.get_logger(__name__)

INODE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Image:
    """An image in CRI terms: normalised names and the image's default user."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    uid: int | None
    username: str
    pinned: bool
    details: ImageDetails


@dataclass(frozen=True, slots=True)
class FsUsage:
    timestamp_ns: int
    mountpoint: str
    used_bytes: int
    inodes_used: int | None


@dataclass(slots=True)
class _PullState:
    """What a running pull has reported, for the periodic progress log."""

    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (current, total)
    done: set[str] = field(default_factory=set)
    last_status: str = ""


def user_of(config: ImageConfig) -> tuple[int | None, str]:
    """(uid, username) from an image's USER: `1000`, `1000:1000`, `app`, `app:grp` or empty."""
    user = config.user.split(":", 1)[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


def decode_auth(auth: RegistryAuth) -> RegistryAuth:
    """Fold the base64 `auth` form into username/password, which is what Docker reads."""
    if not auth.auth or auth.username or auth.password:
        return auth
    try:
        user, sep, password = base64.b64decode(auth.auth, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise errors.InvalidArgument("auth.auth: not base64 of user:password") from None
    if not sep:
        raise errors.InvalidArgument("auth.auth: not base64 of user:password")
    return RegistryAuth(
        username=user,
        password=password,
        server_address=auth.server_address,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
    )


def _fingerprint(auth: RegistryAuth) -> str:
    return hashlib.sha256(json.dumps(asdict(auth), sort_keys=True).encode()).hexdigest()


def _mountpoint(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _image_layer_dirs(layer_store: Path) -> list[Path]:
    """The layer store's entries that are image layers (blocking).

    Every container's writable layer `X` has an `X-init` sibling; those two are
    the container's, everything else (and the `l` link directory) is images'.
    """
    try:
        names = {p.name for p in layer_store.iterdir()}
    except OSError:
        return []
    containers = {n for n in names if n.endswith("-init")}
    containers |= {n.removesuffix("-init") for n in containers}
    return [layer_store / n for n in sorted(names - containers)]


def _count_inodes(roots: Iterable[Path]) -> int:
    count = 0
    for root in roots:
        count += 1
        for _, dirs, files in os.walk(root):
            count += len(dirs) + len(files)
    return count


class Images:
    def __init__(
        self,
        docker: DockerClient,
        *,
        pause_image: str,
        pull_progress_timeout: float = 60.0,
        pull_log_interval: float = 10.0,
    ) -> None:
        self.docker = docker
        self.pause_image = imageref.normalize(pause_image)
        self.pull_progress_timeout = pull_progress_timeout
        self.pull_log_interval = pull_log_interval
        self._pulls: dict[tuple[str, str], asyncio.Task[str]] = {}
        self._details: dict[str, ImageDetails] = {}
        # kind -> (the roots counted, when, count): a new layer set is counted at once.
        self._inodes: dict[str, tuple[tuple[str, ...], float, int]] = {}
        self._removing: dict[str, asyncio.Future[None]] = {}

    # -- pull ---------------------------------------------------------------

    async def pull(self, reference: str, auth: RegistryAuth) -> str:
        """Pull `reference` and return its image ID."""
        ref = imageref.parse(reference)
        auth = decode_auth(auth)
        if isinstance(ref, imageref.ImageID):
            # An ID names no repository to pull from: present, or an error.
            return (await self._inspect(str(ref))).id
        key = (str(ref), _fingerprint(auth))
        task = self._pulls.get(key)
        if task is None:
            task = asyncio.create_task(self._pull(ref, auth), name=f"pull {ref}")
            self._pulls[key] = task
            task.add_done_callback(lambda _t: self._pulls.pop(key, None))
        else:
            log.info("image_pull_joined", image=str(ref))
        # shield: one caller's cancellation must not abort the pull for the others.
        return await asyncio.shield(task)

    async def _pull(self, ref: imageref.Reference, auth: RegistryAuth) -> str:
        started = time.monotonic()
        log.info("image_pull_started", image=str(ref))
        state = _PullState()
        reporter = asyncio.create_task(self._report(ref, state, started))
        try:
            await self._stream_pull(ref, auth, state)
        except errors.NotFound:
            raise errors.NotFound(f"image {ref} not found") from None
        except errors.CrishimError as exc:
            if isinstance(exc, errors.DeadlineExceeded):
                raise
            explained = await registry.diagnose(ref, auth)
            log.warning(
                "image_pull_failed",
                image=str(ref),
                error=str(exc),
                explained=str(explained) if explained else None,
            )
            raise (explained or exc) from exc
        finally:
            await tasks.stop(reporter)
        image = await self._inspect(self._local_name(ref))
        log.info(
            "image_pulled",
            image=str(ref),
            image_id=image.id,
            seconds=round(time.monotonic() - started, 2),
            size=image.size,
        )
        return image.id

    async def _stream_pull(
        self, ref: imageref.Reference, auth: RegistryAuth, state: _PullState
    ) -> None:
        progress = self.docker.pull(ref.repository, ref.digest or ref.tag, auth)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.pull_progress_timeout):
                        event = await anext(progress)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise errors.DeadlineExceeded(
                        f"pull of {ref} made no progress for {self.pull_progress_timeout:.0f}s"
                    ) from None
                state.last_status = event.status
                if event.layer and event.total:
                    state.layers[event.layer] = (event.current, event.total)
                if event.layer and event.status in ("Pull complete", "Already exists"):
                    state.done.add(event.layer)
        finally:
            await progress.aclose()  # closes Docker's response, which stops its pull

    async def _report(self, ref: imageref.Reference, state: _PullState, started: float) -> None:
        while True:
            await asyncio.sleep(self.pull_log_interval)
            current = sum(c for c, _ in state.layers.values())
            total = sum(t for _, t in state.layers.values())
            log.info(
                "image_pull_progress",
                image=str(ref),
                layers=len(state.layers),
                layers_done=len(state.done),
                bytes=current,
                bytes_total=total,
                seconds=round(time.monotonic() - started, 1),
                status=state.last_status,
            )

    @staticmethod
    def _local_name(ref: imageref.Reference) -> str:
        """How to look the pulled image up: by digest when pulled by digest."""
        return f"{ref.repository}@{ref.digest}" if ref.digest else f"{ref.repository}:{ref.tag}"

    # -- status, list -----------------------------------------------------------

    async def _inspect(self, name: str) -> ImageDetails:
        details = await self.docker.inspect_image(name)
        self._details[details.id] = details
        return details

    async def status(self, reference: str) -> Image | None:
        """The image `reference` names, or None when absent."""
        ref = imageref.parse(reference)
        try:
            # Docker resolves an ID, a tag and a digest (tag and digest together: by the digest).
            details = await self._inspect(str(ref))
        except errors.NotFound:
            return None
        return self._to_image(details, details.repo_tags, details.repo_digests, details.size)

    async def list(self, reference: str = "") -> list[Image]:
        entries = await self.docker.list_images()
        alive = {e.id for e in entries}
        for gone in set(self._details) - alive:
            del self._details[gone]
        # A repository without a tag lists every tag of it (`crictl images busybox`).
        wanted = imageref.parse(reference, default_tag=False) if reference else None
        images = []
        for entry in entries:
            details = self._details.get(entry.id)
            if details is None:
                try:
                    details = await self._inspect(entry.id)
                except errors.NotFound:  # removed between list and inspect
                    continue
            image = self._to_image(details, entry.repo_tags, entry.repo_digests, entry.size)
            if wanted is None or self._matches(image, wanted):
                images.append(image)
        return images

    @staticmethod
    def _matches(image: Image, wanted: imageref.Reference | imageref.ImageID) -> bool:
        if isinstance(wanted, imageref.ImageID):
            return image.id == str(wanted)
        if not wanted.tag and not wanted.digest:
            return any(
                name.rpartition(":")[0] == wanted.repository for name in image.repo_tags
            ) or any(name.partition("@")[0] == wanted.repository for name in image.repo_digests)
        return str(wanted) in image.repo_tags or str(wanted) in image.repo_digests

    def _to_image(
        self, details: ImageDetails, tags: Iterable[str], digests: Iterable[str], size: int
    ) -> Image:
        repo_tags = tuple(dict.fromkeys(imageref.normalize(t) for t in tags))
        repo_digests = tuple(dict.fromkeys(imageref.normalize(d) for d in digests))
        uid, username = user_of(details.config)
        return Image(
            id=details.id,
            repo_tags=repo_tags,
            repo_digests=repo_digests,
            size=size,
            uid=uid,
            username=username,
            pinned=self.pause_image in repo_tags or self.pause_image in repo_digests,
            details=details,
        )

    # -- remove -------------------------------------------------------------------

    async def remove(self, reference: str) -> None:
        """Remove the image `reference` names, with all its tags. Absent: nothing to do.

        Concurrent removals of one image (the kubelet's image GC and a user, retries)
        share one Docker removal, which a cancelled caller does not cut short: Docker
        answers a second, overlapping DELETE with a conflict.
        """
        ref = imageref.parse(reference)
        try:
            details = await self.docker.inspect_image(str(ref))
        except errors.NotFound:
            return
        removal = self._removing.get(details.id)
        if removal is None:
            removal = asyncio.ensure_future(self._remove(details, reference))
            self._removing[details.id] = removal
            removal.add_done_callback(lambda _: self._removing.pop(details.id, None))
        await asyncio.shield(removal)

    async def _remove(self, details: ImageDetails, reference: str) -> None:
        users = await self.docker.containers_using(details.id)
        if users:
            names = ", ".join(f"{c.name} ({c.id[:12]})" for c in users)
            raise errors.FailedPrecondition(
                f"image {reference} ({details.id[:19]}) is in use by container(s) {names}"
            )
        with contextlib.suppress(errors.NotFound):
            await self.docker.remove_image(details.id)
        self._details.pop(details.id, None)
        log.info("image_removed", image=reference, image_id=details.id)

    # -- filesystem ---------------------------------------------------------------

    async def fs_usage(self) -> tuple[FsUsage, FsUsage]:
        """(images, containers): Docker keeps both on its data root's filesystem.

        Bytes come from Docker's own accounting (/system/df). Inodes are counted
        on disk, off the event loop and at most once a minute: the image
        metadata and the image layers for images (containers' writable and init
        layers left out), the per-container directories for containers. Counting
        needs the data root to be local (a unix endpoint); over tcp:// inodes are
        reported as unknown.
        """
        info = await self.docker.info()
        df = await self.docker.disk_usage()
        now = time.time_ns()
        root = Path(info.docker_root_dir)
        local = self.docker.endpoint.startswith("unix://")
        mount = str(await asyncio.to_thread(_mountpoint, root)) if local else str(root)
        layers = await asyncio.to_thread(_image_layer_dirs, root / info.storage_driver)
        image_roots = (root / "image", *layers)
        image_inodes = await self._inode_count("images", image_roots) if local else None
        container_inodes = (
            await self._inode_count("containers", (root / "containers",)) if local else None
        )
        return (
            FsUsage(now, mount, df.images_bytes, image_inodes),
            FsUsage(now, mount, df.containers_bytes, container_inodes),
        )

    async def _inode_count(self, kind: str, roots: tuple[Path, ...]) -> int:
        key = tuple(str(r) for r in roots)
        cached = self._inodes.get(kind)
        if cached and cached[0] == key and time.monotonic() - cached[1] < INODE_TTL:
            return cached[2]
        count = await asyncio.to_thread(_count_inodes, roots)
        self._inodes[kind] = (key, time.monotonic(), count)
        return count
