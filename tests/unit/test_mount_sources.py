"""A mount's host path as Docker gets it: symlinks followed, a missing one refused."""

from __future__ import annotations

import os

import pytest

from crishim.common import errors
from crishim.pods.containers import MountRequest, _resolve_sources


def _mount(host_path: str, image: str = "") -> MountRequest:
    return MountRequest(host_path, "/in", False, "private", False, image=image)


def test_symlinks_are_followed_to_the_real_path(tmp_path) -> None:
    real = tmp_path / "real" / "dir"
    real.mkdir(parents=True)
    (tmp_path / "hop").symlink_to(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "hop" / "dir")
    (real / "file").write_text("x")
    sources = _resolve_sources((_mount(str(tmp_path / "link")), _mount(f"{tmp_path}/hop/dir/file")))
    assert sources == [str(real), str(real / "file")]
    assert sources == [os.path.realpath(tmp_path / "link"), str((real / "file").resolve())]


def test_a_fifo_is_resolved_without_being_opened(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    assert _resolve_sources((_mount(str(fifo)),)) == [str(fifo)]


def test_image_mounts_have_no_host_path(tmp_path) -> None:
    assert _resolve_sources((_mount("", image="busybox"), _mount(str(tmp_path)))) == [
        "",
        str(tmp_path),
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "does not exist"),
        ("dangling", "does not exist"),
        ("nul\0byte", "cannot be used"),
    ],
)
def test_an_unusable_host_path_is_invalid(tmp_path, name: str, reason: str) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(errors.InvalidArgument, match=reason):
        _resolve_sources((_mount(str(tmp_path / name)),))
