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

The image cache. ListImages and ImageStatus are polled (the kubelet's image
manager, every crictl images/inspecti) and answer from memory: the node's
images as of the last `GET /images/json`, with each image's inspected details
(an ID's config never changes, so each ID is inspected once). The list is read
again when Docker reports an image event (pull, tag, untag, delete, load,
import: any change of names or images), coalesced so that a burst of events
(a removal's untags and deletes) costs one list, and at every (re)subscription
of the event stream. PullImage and RemoveImage write their own result into the
cache before they return (the pulled image as its inspect shows it, its tag
taken from any other image; the removed image gone), so a caller never sees a
state older than its own write, without a list of every image in the call, and
Docker's events for that pull or removal cost none after it either; a
list that was under way when such a write landed may predate it, so it is read
again rather than kept. While the event stream is down the cache is not trusted
and every call asks Docker, as it would without a cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

import structlog

from crishim.common import errors, tasks
from crishim.engine.docker import DockerClient
from crishim.engine.docker.types import ImageConfig, ImageDetails, RegistryAuth
from crishim.engine.state import Engine
from crishim.images import ref as imageref
from crishim.images import registry
from crishim.images.fs import ImageFsMeter

log = structlog.get_logger(__name__)

# An image event is followed by the rest of its burst within a few ms (a removal
# logs an untag per name and a delete per image): the list waits that long, so
# that the burst costs one list of every image, not two or three.
EVENT_SETTLE = 0.02
# A pull of ours passes over its own `pull` event (the pull's result is in the cache
# already, see _pulled) if it comes by this long after the pull answered; a removal of
# ours, the `untag` and `delete` events of the image it removed (see _removed).
OWN_EVENT_GRACE = 2.0
_REMOVAL_EVENTS = frozenset({"untag", "delete"})
# The image events that change names or the set of images (not push, save, prune's
# summary): the ones followed.
IMAGE_ACTIONS = frozenset({"pull", "import", "load", "tag", *_REMOVAL_EVENTS})


class _InUse(errors.FailedPrecondition):
    """RemoveImage of an image a container uses: Docker refused it and changed nothing."""


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
    """What a running pull has reported: for the periodic progress log, and whether
    the name already named the image pulled (its manifest's digest)."""

    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (current, total)
    done: set[str] = field(default_factory=set)
    last_status: str = ""
    digest: str = ""
    up_to_date: bool = False


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


def _pull_event_name(ref: imageref.Reference) -> str:
    """The name Docker's `pull` event gives a pull of `ref`: the short form of what was
    asked for (by digest when there is one, as crishim asks)."""
    return imageref.familiar(replace(ref, tag="") if ref.digest else ref)


class _OwnEvents:
    """Names (or IDs) whose Docker events our own call caused: held from the call's
    start (its events may come before its answer) to OWN_EVENT_GRACE after it."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._until

    def start(self, key: str) -> None:
        now = time.monotonic()  # holds whose event never came under their key are let go
        self._until = {k: t for k, t in self._until.items() if t >= now}
        self._until[key] = math.inf

    def linger(self, key: str) -> None:
        """The call answered: its events may still follow for a while."""
        self._until[key] = time.monotonic() + OWN_EVENT_GRACE

    def drop(self, key: str) -> None:
        self._until.pop(key, None)

    def covers(self, key: str, *, once: bool = False) -> bool:
        """Whether an event about `key` is ours; with `once`, no later one is."""
        until = self._until.pop(key, 0) if once else self._until.get(key, 0)
        return until >= time.monotonic()


def _fingerprint(auth: RegistryAuth) -> str:
    return hashlib.sha256(json.dumps(asdict(auth), sort_keys=True).encode()).hexdigest()


class Images:
    def __init__(
        self,
        docker: DockerClient,
        *,
        engine: Engine,
        pause_image: str,
        pull_progress_timeout: float = 60.0,
        pull_log_interval: float = 10.0,
    ) -> None:
        self.docker = docker
        self.engine = engine
        self.disk = ImageFsMeter()
        self.pause_image = imageref.normalize(pause_image)
        self.pull_progress_timeout = pull_progress_timeout
        self.pull_log_interval = pull_log_interval
        self._pulls: dict[tuple[str, str], asyncio.Task[str]] = {}
        self._details: dict[str, ImageDetails] = {}
        self._removing: dict[str, asyncio.Future[None]] = {}
        # id -> Image, as of the last list; trusted only while `_synced` (events flow).
        self._cache: dict[str, Image] = {}
        self._synced = False
        self._stale = False
        self._writes = 0  # our own writes into the cache: a list read across one is stale
        self._own_pulls = _OwnEvents()  # Docker's names of our pulls: their `pull` event
        self._own_removals = _OwnEvents()  # IDs we removed: their untag and delete events
        self._relisting: asyncio.Task[None] | None = None

    # -- pull ---------------------------------------------------------------

    async def pull(self, reference: str, auth: RegistryAuth) -> str:
        """Pull `reference` and return its image ID."""
        ref = imageref.parse(reference)
        auth = decode_auth(auth)
        if isinstance(ref, imageref.ImageID):
            # An ID names no repository to pull from: present, or an error.
            if self._synced and str(ref) in self._cache:
                return str(ref)
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
        """A Docker pull, its result written into the cache (_pulled); Docker's `pull`
        event for it, which would make the cache list every image again, is passed over."""
        event_name = _pull_event_name(ref)
        self._own_pulls.start(event_name)
        try:
            image_id = await self._pull_and_write(ref, auth)
        except BaseException:
            self._own_pulls.drop(event_name)  # an event that comes is not ours to skip
            raise
        if event_name in self._own_pulls:  # not come yet: it may follow the answer
            self._own_pulls.linger(event_name)
        return image_id

    async def _pull_and_write(self, ref: imageref.Reference, auth: RegistryAuth) -> str:
        started = time.monotonic()
        log.info("image_pull_started", image=str(ref))
        state = _PullState()
        reporter = asyncio.create_task(self._report(ref, state, started))
        try:
            await self._stream_pull(ref, auth, state)
        except errors.NotFound:
            raise errors.NotFound(f"image {ref} not found") from None
        except errors.CrishimError as exc:
            # A reference Docker itself refuses never reached a registry: nothing to ask it.
            if isinstance(exc, (errors.DeadlineExceeded, errors.InvalidArgument)):
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
        known = self._up_to_date(ref, state)
        if known is not None:
            image_id, size = known.id, known.size
        else:
            details = await self._inspect(self._local_name(ref))
            self._pulled(details)
            image_id, size = details.id, details.size
        log.info(
            "image_pulled",
            image=str(ref),
            image_id=image_id,
            seconds=round(time.monotonic() - started, 2),
            size=size,
            up_to_date=known is not None,
        )
        return image_id

    def _up_to_date(self, ref: imageref.Reference, state: _PullState) -> Image | None:
        """The image a pull found already there, from the cache: no inspect for it.

        Docker says "up to date" when the name named the pulled image before the pull,
        so nothing changed. The cache answers when it is current (events flow, no
        list pending) and its image of that name holds the manifest's digest the pull
        reported: a digest names one image. Otherwise (an image loaded, then pulled:
        the pull gave it its digest) the caller inspects."""
        if not (state.up_to_date and state.digest and self._synced and not self._stale):
            return None
        image = self._lookup(ref, str(ref))
        if image is None or f"{ref.repository}@{state.digest}" not in image.repo_digests:
            return None
        return image

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
                state.digest = event.digest or state.digest
                state.up_to_date = event.up_to_date
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
        if self._synced:
            return self._lookup(ref, reference)
        try:
            # Docker resolves an ID, a tag and a digest (tag and digest together: by the digest).
            details = await self._inspect(str(ref))
        except errors.NotFound:
            return None
        return self._to_image(details, details.repo_tags, details.repo_digests, details.size)

    def _lookup(self, ref: imageref.Reference | imageref.ImageID, text: str) -> Image | None:
        """Resolve a reference in the cache as Docker resolves it: ID, digest, tag, ID prefix."""
        if isinstance(ref, imageref.ImageID):
            return self._cache.get(str(ref))
        if ref.digest:
            name = f"{ref.repository}@{ref.digest}"
            found = [i for i in self._cache.values() if name in i.repo_digests]
        else:
            found = [i for i in self._cache.values() if str(ref) in i.repo_tags]
        if found:
            return found[0]
        # Docker also takes a unique prefix of an ID (`crictl inspecti 1a2b3c`).
        prefix = text.removeprefix("sha256:").lower()
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            by_prefix = [i for i in self._cache.values() if i.id[7:].startswith(prefix)]
            if len(by_prefix) == 1:
                return by_prefix[0]
        return None

    def current(self) -> Mapping[str, Image] | None:
        """Every image by ID while the cache is trusted (events flow), else None. The
        very same mapping until something changes (it is replaced, never altered), so
        an answer made from it can be kept while it is."""
        return self._cache if self._synced else None

    async def list(self, reference: str = "") -> list[Image]:
        # A repository without a tag lists every tag of it (`crictl images busybox`).
        wanted = imageref.parse(reference, default_tag=False) if reference else None
        images = self._cache.values() if self._synced else (await self._read_all()).values()
        return [i for i in images if wanted is None or self._matches(i, wanted)]

    async def _read_all(self) -> dict[str, Image]:
        """Every image now: one list call, and an inspect for each ID not seen before."""
        entries = await self.docker.list_images()
        if {e.id for e in entries} != set(self._cache):
            self.disk.changed()  # layers came or went: ImageFsInfo measures again
        alive = {e.id for e in entries}
        for gone in set(self._details) - alive:
            del self._details[gone]
        images = {}
        for entry in entries:
            details = self._details.get(entry.id)
            if details is None:
                try:
                    details = await self._inspect(entry.id)
                except errors.NotFound:  # removed between list and inspect
                    continue
            image = self._to_image(details, entry.repo_tags, entry.repo_digests, entry.size)
            known = self._cache.get(entry.id)
            # An unchanged image stays the same object: ListImages keeps its encoding.
            images[entry.id] = known if known == image else image
        return images

    # -- the cache ------------------------------------------------------------------

    async def resubscribed(self) -> None:
        """The event stream (re)connected: read everything, then trust the cache."""
        try:
            self._cache = await self._read_all()
        except errors.CrishimError as exc:
            log.warning("image_cache_refresh_failed", error=str(exc))
            return
        self._synced = True

    def lost(self, _error: str) -> None:
        """No events: changes would go unseen, so answer from Docker until resubscribed."""
        self._synced = False

    def image_event(self, action: str, actor: str) -> None:
        """Any image event may change names or the set of images: read the list again.
        But for our own pull's and removal's: PullImage and RemoveImage write their
        result into the cache themselves. (Docker names a pull's event by the name
        pulled, a removal's by the image ID; a removal makes one untag per name.)"""
        if action == "pull" and self._own_pulls.covers(actor, once=True):
            return
        if action in _REMOVAL_EVENTS:
            if self._own_removals.covers(actor):
                return
        else:  # the ID is back (a load, a tag): its events are not ours now
            self._own_removals.drop(actor)
        self._stale = True
        if self._relisting is None or self._relisting.done():
            self._relisting = asyncio.create_task(self._relist(), name="image-relist")

    async def _relist(self) -> None:
        await asyncio.sleep(EVENT_SETTLE)
        while self._stale:  # events that come meanwhile cost one more list, not one each
            self._stale = False
            writes = self._writes
            try:
                images = await self._read_all()
            except errors.CrishimError as exc:
                log.warning("image_cache_refresh_failed", error=str(exc))
                return
            if writes != self._writes:  # may predate a pull or removal the cache shows now
                self._stale = True
                continue
            self._cache = images

    def _pulled(self, details: ImageDetails) -> None:
        """Our pull's result, in the cache before PullImage returns: the image as its
        inspect shows it; a tag names one image, so any other image loses it."""
        image = self._to_image(details, details.repo_tags, details.repo_digests, details.size)
        cache = dict(self._cache)
        if details.id not in cache:
            self.disk.changed()  # layers came: ImageFsInfo measures again
        for other in cache.values():
            if other.id != image.id and set(other.repo_tags) & set(image.repo_tags):
                kept = tuple(t for t in other.repo_tags if t not in image.repo_tags)
                cache[other.id] = replace(other, repo_tags=kept)
        cache[image.id] = image
        self._cache = cache
        self._writes += 1

    def _removed(self, image_id: str) -> None:
        """Our removal, in the cache before RemoveImage returns."""
        self._details.pop(image_id, None)
        if image_id in self._cache:
            self.disk.changed()  # layers went
            self._cache = {k: v for k, v in self._cache.items() if k != image_id}
        self._writes += 1

    async def close(self) -> None:
        await tasks.stop(self._relisting)
        await self.disk.close()

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
        known = self._lookup(ref, reference) if self._synced else None
        try:
            # The cache names the image without a Docker call; one it does not know
            # may have come this instant (its event still on the way): ask Docker.
            details = known.details if known is not None else await self._inspect(str(ref))
        except errors.NotFound:
            return
        removal = self._removing.get(details.id)
        if removal is None:
            removal = asyncio.ensure_future(self._remove(details, reference))
            self._removing[details.id] = removal
            removal.add_done_callback(lambda _: self._removing.pop(details.id, None))
        await asyncio.shield(removal)

    async def _remove(self, details: ImageDetails, reference: str) -> None:
        self._own_removals.start(details.id)
        try:
            with contextlib.suppress(errors.NotFound):
                await self._delete(details, reference)
        except _InUse:
            self._own_removals.drop(details.id)  # refused before any untag: nothing to read
            raise
        except BaseException:
            # Docker may have untagged some names before it failed, and those events
            # were passed over: the cache reads the list again.
            self._own_removals.drop(details.id)
            self.image_event("untag", details.id)
            raise
        self._own_removals.linger(details.id)
        self._removed(details.id)
        log.info("image_removed", image=reference, image_id=details.id)

    async def _delete(self, details: ImageDetails, reference: str) -> None:
        """One unforced DELETE, which Docker takes when no container uses the image and
        one repository names it (the kubelet's image GC: a tag and its digest). Refused,
        crishim looks at why: a container using the image (running or not, crishim's or
        not) fails the call, named; names of several repositories take a forced DELETE.
        Docker checks before it untags anything, so a refusal changed nothing."""
        try:
            await self.docker.remove_image(details.id, force=False)
            return
        except errors.FailedPrecondition:  # Docker's 409
            pass
        users = await self.docker.containers_using(details.id)
        if users:
            names = ", ".join(f"{c.name} ({c.id[:12]})" for c in users)
            raise _InUse(f"image {reference} ({details.id[:19]}) is in use by container(s) {names}")
        await self.docker.remove_image(details.id, force=True)

    # -- filesystem ---------------------------------------------------------------

    async def fs_usage(self) -> tuple[FsUsage, FsUsage]:
        """(images, containers): Docker keeps both on its data root's filesystem.

        Measured on disk by crishim.images.fs, off the hot path. That needs the data
        root to be local (a unix endpoint); over tcp:// the bytes are Docker's own
        accounting (/system/df, a daemon round trip) and inodes are unknown.
        """
        info = await self.engine.current_info()
        if not self.docker.endpoint.startswith("unix://"):
            df = await self.docker.disk_usage()
            now = time.time_ns()
            root = info.docker_root_dir
            return (
                FsUsage(now, root, df.images_bytes, None),
                FsUsage(now, root, df.containers_bytes, None),
            )
        self.disk.configure(info.docker_root_dir, info.storage_driver)
        u = await self.disk.current()
        return (
            FsUsage(u.measured_at_ns, u.mountpoint, u.image_bytes, u.image_inodes),
            FsUsage(u.measured_at_ns, u.mountpoint, u.container_bytes, u.container_inodes),
        )
