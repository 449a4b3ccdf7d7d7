"""Mount sources resolved from the kernel's lookup cache, on the event loop; whatever it
cannot say without blocking is left to the thread (None)."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from crishim.common import cachedpath
from crishim.pods import containers
from crishim.pods.containers import MountRequest


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


class _Kernel:
    """The openat2 syscall as a kernel answers it: each call fails with `err`."""

    def __init__(self, err: int) -> None:
        self.err = err
        self.calls = 0

    def __call__(self, *args) -> int:
        self.calls += 1
        ctypes.set_errno(self.err)
        return -1


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EINVAL], ids=["ENOSYS", "EINVAL"])
def test_a_kernel_without_openat2_leaves_every_path_to_the_thread(
    monkeypatch, tmp_path, err
) -> None:
    """Before Linux 5.12 (no openat2, or no RESOLVE_CACHED) the kernel is asked once:
    every later path goes to the thread's lookup, which still finds it."""
    kernel = _Kernel(err)
    monkeypatch.setattr(cachedpath, "_syscall", kernel)
    monkeypatch.setattr(cachedpath, "_usable", True)
    (tmp_path / "etc-hosts").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "etc-hosts")
    mount = MountRequest(container_path="/etc/hosts", host_path=str(tmp_path / "link"))
    for _ in range(3):
        assert containers._resolve_sources((mount,), cachedpath.real_path) is None
        assert containers._resolve_sources((mount,)) == [str(tmp_path / "etc-hosts")]
    assert kernel.calls == 1


def test_a_lookup_that_would_block_asks_the_kernel_again_next_time(monkeypatch) -> None:
    kernel = _Kernel(errno.EAGAIN)  # not in the cache this time: no verdict on the kernel
    monkeypatch.setattr(cachedpath, "_syscall", kernel)
    monkeypatch.setattr(cachedpath, "_usable", True)
    assert cachedpath.real_path("/etc/hosts") is None
    assert cachedpath.real_path("/etc/hosts") is None
    assert kernel.calls == 2
