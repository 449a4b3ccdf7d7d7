"""The image cache: a list read across our own write is not kept over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from crishim.common.errors import FailedPrecondition
from crishim.engine.docker.types import (
    ContainerRef,
    ImageConfig,
    ImageDetails,
    ImageListEntry,
    PullProgress,
    RegistryAuth,
)
from crishim.images.service import Images

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
TAG = "docker.io/library/app:1"


def details(image_id: str, tags: tuple[str, ...]) -> ImageDetails:
    return ImageDetails(image_id, tags, (), 10, "", "amd64", "linux", ImageConfig())


class _Docker:
    """Answers image lists in turn; the first waits until the test lets it go."""

    def __init__(self, *answers: list[ImageListEntry]) -> None:
        self.answers = list(answers)
        self.lists = 0
        self.go = asyncio.Event()
        self.asked = asyncio.Event()

    async def list_images(self) -> list[ImageListEntry]:
        self.lists += 1
        self.asked.set()
        answer = self.answers.pop(0)
        if self.lists == 1:
            await self.go.wait()
        return answer

    async def inspect_image(self, name: str) -> ImageDetails:
        return details(name, ())


async def test_a_list_read_across_a_pull_is_read_again_not_kept(monkeypatch) -> None:
    monkeypatch.setattr("crishim.images.service.EVENT_SETTLE", 0)  # the list is under way at once
    before = [ImageListEntry(A, (TAG,), (), 10)]  # Docker's list just before the pull
    after = [ImageListEntry(A, (), (), 10), ImageListEntry(B, (TAG,), (), 10)]
    docker = _Docker(before, after)
    images = Images(docker, engine=None, pause_image="pause:1")  # type: ignore[arg-type]
    images._details = {A: details(A, (TAG,)), B: details(B, (TAG,))}
    images._synced = True

    images.image_event("pull", B)  # the pull's event: a list starts, and is slow
    await docker.asked.wait()
    images._pulled(details(B, (TAG,)))  # PullImage writes its result meanwhile
    assert (await images.status(TAG)).id == B
    docker.go.set()  # the list that was under way answers with the older state
    await images._relisting

    assert docker.lists == 2
    assert (await images.status(TAG)).id == B
    assert [i.id for i in await images.list("app")] == [B]


async def test_a_burst_of_image_events_costs_one_list() -> None:
    docker = _Docker([], [])
    docker.go.set()
    images = Images(docker, engine=None, pause_image="pause:1")  # type: ignore[arg-type]
    for action in ("untag", "untag", "delete", "delete"):  # one removal's events
        images.image_event(action, A)
        await asyncio.sleep(0.001)
    await images._relisting
    assert docker.lists == 1


def test_a_pull_s_event_is_named_as_docker_names_it() -> None:
    from crishim.images import ref as imageref
    from crishim.images.service import _pull_event_name

    digest = "sha256:" + "c" * 64
    assert _pull_event_name(imageref.parse("busybox")) == "busybox:latest"
    assert _pull_event_name(imageref.parse("quay.io/x/y:2")) == "quay.io/x/y:2"
    assert _pull_event_name(imageref.parse("127.0.0.1:5000/a/b:1.0")) == "127.0.0.1:5000/a/b:1.0"
    # Asked by digest (crishim asks so when there is one): Docker names it by the digest.
    assert _pull_event_name(imageref.parse(f"busybox:1@{digest}")) == f"busybox@{digest}"


async def test_only_one_event_per_pull_of_ours_is_passed_over() -> None:
    docker = _Docker([], [])
    docker.go.set()
    images = Images(docker, engine=None, pause_image="pause:1")  # type: ignore[arg-type]
    images._own_pulls.start("app:1")  # a pull of ours under way
    images.image_event("pull", "app:1")  # its event
    assert images._relisting is None
    images.image_event("pull", "app:1")  # another's pull of the same name: listed
    await images._relisting
    assert docker.lists == 1


class _Remover(_Docker):
    """Removes images: after the untag and delete events Docker sends while it removes,
    or failing with `error` after the first untag."""

    def __init__(
        self,
        images: Images | None = None,
        error: Exception | None = None,
        users: tuple[ContainerRef, ...] = (),
        repositories: int = 1,
    ) -> None:
        super().__init__([], [])
        self.go.set()
        self.images = images
        self.error = error
        self.users = users  # containers created from the image
        self.repositories = repositories  # how many repositories name it
        self.calls: list[str] = []

    async def containers_using(self, image_id: str) -> list[ContainerRef]:
        self.calls.append("containers_using")
        return list(self.users)

    async def remove_image(self, image_id: str, *, force: bool) -> None:
        self.calls.append("remove forced" if force else "remove")
        if self.users or (self.repositories > 1 and not force):  # as Docker, before untagging
            raise FailedPrecondition("docker: conflict: unable to delete")
        self.images.image_event("untag", image_id)
        if self.error is not None:
            raise self.error
        self.images.image_event("untag", image_id)
        self.images.image_event("delete", image_id)


def _removable(error: Exception | None = None, **kw) -> tuple[_Remover, Images]:
    """A synced image cache that knows image A, named TAG, over a _Remover."""
    docker = _Remover(error=error, **kw)
    images = Images(docker, engine=None, pause_image="pause:1")  # type: ignore[arg-type]
    docker.images = images
    images._cache = {A: images._to_image(details(A, (TAG,)), (TAG,), (), 10)}
    images._synced = True
    return docker, images


async def test_a_removal_of_ours_lists_no_image_for_its_events() -> None:
    docker, images = _removable()
    await images.remove(TAG)
    images.image_event("delete", A)  # one that comes after the answer: still ours
    assert images._relisting is None
    assert await images.list() == []
    images.image_event("untag", B)  # another image's: listed
    await images._relisting
    assert docker.lists == 1


async def test_a_removal_docker_takes_unforced_asks_nothing_else() -> None:
    docker, images = _removable()
    await images.remove(TAG)
    assert docker.calls == ["remove"]
    assert await images.list() == []


async def test_a_refused_removal_names_the_containers_using_the_image() -> None:
    user = ContainerRef(id="c" * 64, name="someone-elses")
    docker, images = _removable(users=(user,))
    with pytest.raises(FailedPrecondition, match=r"in use by container\(s\) someone-elses"):
        await images.remove(TAG)
    assert docker.calls == ["remove", "containers_using"]
    assert [i.id for i in await images.list()] == [A]
    assert images._relisting is None, "refused before any untag: no list to read again"


async def test_an_image_several_repositories_name_is_removed_forced() -> None:
    docker, images = _removable(repositories=2)
    await images.remove(TAG)
    assert docker.calls == ["remove", "containers_using", "remove forced"]
    assert await images.list() == []


async def test_an_image_id_that_comes_back_is_not_covered_by_an_earlier_removal() -> None:
    docker, images = _removable()
    await images.remove(TAG)
    images.image_event("load", A)  # loaded again by someone else: listed ...
    await images._relisting
    images.image_event("untag", A)  # ... and so is its untag, though soon after ours
    await images._relisting
    assert docker.lists == 2


async def test_a_failed_removal_lists_every_image_again() -> None:
    docker, images = _removable(error=RuntimeError("daemon went away"))
    with pytest.raises(RuntimeError):
        await images.remove(TAG)
    await images._relisting  # the untag Docker made before it failed is read
    assert docker.lists == 1


DIGEST = "sha256:" + "d" * 64


class _Puller(_Docker):
    """Pulls TAG: Docker's last reports name the manifest's digest and, when
    `up_to_date`, say the name already named the image. Inspects show image A."""

    def __init__(self, *, up_to_date: bool) -> None:
        super().__init__([], [])
        self.go.set()
        self.up_to_date = up_to_date
        self.inspected: list[str] = []

    async def pull(self, repository: str, tag: str, auth) -> AsyncIterator[PullProgress]:
        yield PullProgress(status="Pulling from library/app", layer=tag)
        yield PullProgress(status=f"Digest: {DIGEST}", digest=DIGEST)
        verdict = "Image is up to date" if self.up_to_date else "Downloaded newer image"
        yield PullProgress(status=f"Status: {verdict} for app:1", up_to_date=self.up_to_date)

    async def inspect_image(self, name: str) -> ImageDetails:
        self.inspected.append(name)
        return ImageDetails(A, (TAG,), (f"app@{DIGEST}",), 10, "", "amd64", "linux", ImageConfig())


def _pulling(*, up_to_date: bool, digests: tuple[str, ...]) -> tuple[_Puller, Images]:
    """A synced image cache that knows image A, named TAG, with `digests`."""
    docker = _Puller(up_to_date=up_to_date)
    images = Images(docker, engine=None, pause_image="pause:1")  # type: ignore[arg-type]
    images._cache = {A: images._to_image(details(A, (TAG,)), (TAG,), digests, 10)}
    images._synced = True
    return docker, images


async def test_a_pull_docker_finds_up_to_date_is_answered_from_the_cache() -> None:
    docker, images = _pulling(up_to_date=True, digests=(f"app@{DIGEST}",))
    assert await images.pull(TAG, RegistryAuth()) == A
    assert docker.inspected == []


async def test_an_up_to_date_pull_the_cache_cannot_vouch_for_inspects() -> None:
    # Loaded, then pulled: the pull gave the image its digest, which the cache lacks yet.
    docker, images = _pulling(up_to_date=True, digests=())
    assert await images.pull(TAG, RegistryAuth()) == A
    assert docker.inspected == ["docker.io/library/app:1"]
    assert (await images.status(TAG)).repo_digests == (f"docker.io/library/app@{DIGEST}",)
    # A cache with a list pending may be behind Docker: it does not answer either.
    docker, images = _pulling(up_to_date=True, digests=(f"app@{DIGEST}",))
    images._stale = True
    await images.pull(TAG, RegistryAuth())
    assert len(docker.inspected) == 1


async def test_a_pull_that_brought_an_image_inspects_it() -> None:
    docker, images = _pulling(up_to_date=False, digests=(f"app@{DIGEST}",))
    assert await images.pull(TAG, RegistryAuth()) == A
    assert docker.inspected == ["docker.io/library/app:1"]


async def test_a_pull_by_image_id_is_answered_by_the_cache_or_an_inspect() -> None:
    docker, images = _pulling(up_to_date=True, digests=())
    assert await images.pull(A, RegistryAuth()) == A  # no repository to pull from
    assert docker.inspected == []
    images._cache = {}  # an ID the cache does not know: Docker is asked
    assert await images.pull(A, RegistryAuth()) == A
    assert docker.inspected == [A]


async def test_a_list_again_keeps_the_unchanged_images_as_they_were() -> None:
    """A relist makes a new mapping, but an image whose names did not change stays the
    same object (ListImages keeps its encoding); a retagged one is new."""
    docker = _Docker(
        [ImageListEntry(A, (TAG,), (), 10), ImageListEntry(B, (), (), 10)],
        [ImageListEntry(A, (TAG,), (), 10), ImageListEntry(B, ("docker.io/library/b:2",), (), 10)],
    )
    docker.go.set()
    images = Images(docker, engine=None, pause_image="pause:1")  # type: ignore[arg-type]
    await images.resubscribed()
    first = images.current()
    assert first is not None
    images.image_event("tag", B)
    await images._relisting
    second = images.current()
    assert second is not first
    assert second[A] is first[A]
    assert second[B] is not first[B]
    assert second[B].repo_tags == ("docker.io/library/b:2",)
