"""ListImages answers from the image cache's entries, each encoded once per Image object;
the kubelet's poll (no filter) gets the same answer while the cache is the same mapping."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crishim.api.runtime import v1 as api
from crishim.engine.docker.types import ImageConfig, ImageDetails
from crishim.images.service import Image
from crishim.server import image as image_server


def _image(n: int, tags: tuple[str, ...] = ()) -> Image:
    image_id = f"sha256:{n:064x}"
    details = ImageDetails(image_id, tags, (), 1000 + n, "", "amd64", "linux", ImageConfig())
    return Image(
        image_id, tags or (f"docker.io/library/i{n}:1",), (), 1000 + n, None, "", False, details
    )


class _Images:
    """The image cache as the server sees it: trusted (a mapping) or not (None)."""

    def __init__(self, images: list[Image]) -> None:
        self.images = images  # what Docker has
        self.mapping: dict[str, Image] | None = {i.id: i for i in images}
        self.asked: list[str] = []

    def current(self):
        return self.mapping

    async def list(self, reference: str = "") -> list[Image]:
        self.asked.append(reference)
        return [i for i in self.images if not reference or reference in i.repo_tags]


@pytest.fixture
def encoded(monkeypatch) -> list[str]:
    """The IDs of the images encoded, in order."""
    done: list[str] = []
    real = image_server.to_cri

    def counting(image: Image) -> api.Image:
        done.append(image.id)
        return real(image)

    monkeypatch.setattr(image_server, "to_cri", counting)
    return done


async def _listed(service, pb, request=None):
    answer = await service.list_images(request or api.ListImagesRequest())
    return pb.ListImagesResponse.FromString(answer.data).images


async def test_the_poll_is_answered_from_entries_encoded_once(pb, encoded) -> None:
    images = [_image(n) for n in range(3)]
    cache = _Images(images)
    service = image_server.ImageService(cache)
    first = await _listed(service, pb)
    assert [i.id for i in first] == [i.id for i in images]
    assert [list(i.repo_tags) for i in first] == [list(i.repo_tags) for i in images]
    assert [i.size for i in first] == [1000, 1001, 1002]
    assert await _listed(service, pb) == first
    assert encoded == [i.id for i in images]  # the second poll encoded nothing
    assert cache.asked == []


async def test_a_changed_image_alone_is_encoded_again(pb, encoded) -> None:
    images = [_image(n) for n in range(3)]
    cache = _Images(images)
    service = image_server.ImageService(cache)
    await _listed(service, pb)
    retagged = replace(images[1], repo_tags=("docker.io/library/new:2",))
    cache.mapping = {**cache.mapping, retagged.id: retagged}  # the cache replaces its mapping
    del cache.mapping[images[2].id]
    listed = await _listed(service, pb)
    assert [list(i.repo_tags) for i in listed] == [
        ["docker.io/library/i0:1"],
        ["docker.io/library/new:2"],
    ]
    assert encoded[3:] == [retagged.id]


async def test_filtered_or_untrusted_lists_ask_the_cache(pb, encoded) -> None:
    images = [_image(n) for n in range(2)]
    cache = _Images(images)
    service = image_server.ImageService(cache)
    wanted = api.ListImagesRequest(
        filter=api.ImageFilter(image=api.ImageSpec(image="docker.io/library/i1:1"))
    )
    assert [i.id for i in await _listed(service, pb, wanted)] == [images[1].id]
    cache.mapping = None  # events lost: the cache reads Docker
    assert cache.asked == ["docker.io/library/i1:1"]
    assert [i.id for i in await _listed(service, pb)] == [i.id for i in images]
    assert cache.asked[-1] == ""


async def test_image_status_is_the_listed_entry_and_decodes_as_the_official_message(
    pb, encoded
) -> None:
    images = [_image(n) for n in range(3)]
    cache = _Images(images)

    async def status(reference: str) -> Image | None:
        return next((i for i in images if reference in i.repo_tags), None)

    cache.status = status
    service = image_server.ImageService(cache)
    await service.list_images(api.ListImagesRequest())
    assert encoded == [i.id for i in images]
    wanted = images[1]
    request = api.ImageStatusRequest(image=api.ImageSpec(image=wanted.repo_tags[0]))
    plain = pb.ImageStatusResponse.FromString((await service.image_status(request)).data)
    assert (plain.image.id, list(plain.image.repo_tags), plain.image.size) == (
        wanted.id,
        list(wanted.repo_tags),
        wanted.size,
    )
    assert dict(plain.info) == {}
    assert encoded == [i.id for i in images]  # the entry ListImages made: none encoded again
    request.verbose = True
    verbose = pb.ImageStatusResponse.FromString((await service.image_status(request)).data)
    assert verbose.image == plain.image
    assert dict(verbose.info) == image_server.verbose_info(wanted)
    request.image = api.ImageSpec(image="docker.io/library/absent:1")
    absent = pb.ImageStatusResponse.FromString((await service.image_status(request)).data)
    assert not absent.HasField("image")
