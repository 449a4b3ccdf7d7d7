"""Mount sources resolved from the kernel's lookup cache, on the event loop; whatever it
cannot say without blocking is left to the thread (None)."""

from __future__ import annotations

import os

from crishim import cachedpath


def test_a_cached_path_resolves_as_the_kernel_follows_it(tmp_path) -> None:
    real = tmp_path / "pods" / "uid" / "etc-hosts"
    real.parent.mkdir(parents=True)
    real.write_text("127.0.0.1 localhost\n")
    (tmp_path / "link").symlink_to(tmp_path / "pods")
    linked = str(tmp_path / "link" / "uid" / "etc-hosts")
    os.stat(linked)  # looked up once: its components are in the cache now
    assert cachedpath.real_path(linked) == str(real) == os.path.realpath(linked)
    assert cachedpath.real_path(str(tmp_path / "link")) == str(tmp_path / "pods")


def test_what_it_cannot_say_without_blocking_is_none(tmp_path) -> None:
    assert cachedpath.real_path(str(tmp_path / "missing")) is None  # the thread says why
    assert cachedpath.real_path("a\0b") is None
