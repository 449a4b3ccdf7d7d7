"""Image references normalised as Docker and the kubelet do."""

from __future__ import annotations

import pytest

from crishim.common import errors
from crishim.images import ref as imageref

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        pytest.param("busybox", "docker.io/library/busybox:latest", id="official"),
        pytest.param("busybox:1.36", "docker.io/library/busybox:1.36", id="official-tag"),
        pytest.param("library/busybox", "docker.io/library/busybox:latest", id="library"),
        pytest.param("bitnami/nginx", "docker.io/bitnami/nginx:latest", id="user-repo"),
        pytest.param("docker.io/busybox", "docker.io/library/busybox:latest", id="hub-short"),
        pytest.param(
            "index.docker.io/library/busybox", "docker.io/library/busybox:latest", id="legacy"
        ),
        pytest.param("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10", id="k8s"),
        pytest.param("localhost/app", "localhost/app:latest", id="localhost"),
        pytest.param("REG.example:5000/a", "REG.example:5000/a:latest", id="uppercase-host"),
        pytest.param("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1", id="ip-port"),
        pytest.param(f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", id="digest-only"),
        pytest.param(
            f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", id="tag-digest"
        ),
        pytest.param("a.io:443/x/y/z:t-1.2_3", "a.io:443/x/y/z:t-1.2_3", id="deep-path"),
    ],
)
def test_normalises(text, normal) -> None:
    assert imageref.normalize(text) == normal


@pytest.mark.parametrize("text", [DIGEST, "a" * 64])
def test_image_ids_stay_ids(text) -> None:
    assert imageref.parse(text) == imageref.ImageID(DIGEST)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("BusyBox", "repository name", id="uppercase"),
        # Not a registry host: no dot, port or localhost (Docker 20.10 refuses it too).
        pytest.param("UPPER/x", "repository name", id="uppercase-first-component"),
        pytest.param("Registry/app:1", "repository name", id="capitalised-first-component"),
        pytest.param("busybox:", "tag", id="empty-tag"),
        pytest.param("busybox:-bad", "tag", id="bad-tag"),
        pytest.param("busybox@sha256:abc", "digest", id="short-digest"),
        pytest.param("bad host/x", "invalid image reference", id="space"),
        pytest.param("a//b", "repository name", id="empty-component"),
        pytest.param("-x.io/a", "registry", id="bad-domain"),
        pytest.param("x" * 300, "too long", id="too-long"),
    ],
)
def test_malformed_references_are_invalid(text, why) -> None:
    with pytest.raises(errors.InvalidArgument, match=why):
        imageref.parse(text)


def test_familiar_form_is_what_docker_stores() -> None:
    assert imageref.familiar(imageref.parse("busybox")) == "busybox:latest"
    assert imageref.familiar(imageref.parse("bitnami/nginx:1")) == "bitnami/nginx:1"
    assert imageref.familiar(imageref.parse("127.0.0.1:5000/a:v")) == "127.0.0.1:5000/a:v"
