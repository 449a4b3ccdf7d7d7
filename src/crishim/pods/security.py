"""Seccomp, AppArmor, SELinux and no_new_privs as Docker security options."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import threading
from dataclasses import dataclass

from crishim.common import errors

# A Localhost seccomp profile is read by crishim (Docker takes the JSON, not the path).
# The path is the caller's choice, so the read is bounded in every way: a regular file
# only (/dev/zero or a FIFO would read forever or block), at most MAX_PROFILE_BYTES,
# within PROFILE_READ_TIMEOUT, on daemon threads of its own, at most MAX_READERS at a
# time: a read stuck on a dead network filesystem holds one of those, never the shared
# pool that log copying and other calls use, and it cannot keep crishim from exiting.
MAX_PROFILE_BYTES = 1 << 20
PROFILE_READ_TIMEOUT = 5.0
MAX_READERS = 4
_readers = threading.BoundedSemaphore(MAX_READERS)


@dataclass(frozen=True, slots=True)
class Profile:
    """A seccomp or AppArmor choice: runtime/default, unconfined, or localhost + ref."""

    kind: str = "runtime/default"  # runtime/default | unconfined | localhost
    ref: str = ""


def read_profile(path: str) -> str:
    """A seccomp profile's JSON (blocking); InvalidArgument naming what is wrong."""
    where = f"seccomp profile {path[:200]}"
    if not os.path.isabs(path):
        raise errors.InvalidArgument(f"{where}: the path must be absolute")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise errors.InvalidArgument(f"{where}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise errors.InvalidArgument(f"{where}: not a regular file")
        if st.st_size > MAX_PROFILE_BYTES:
            raise errors.InvalidArgument(f"{where}: larger than {MAX_PROFILE_BYTES} bytes")
        chunks, size = [], 0
        while data := os.read(fd, 65536):
            chunks.append(data)
            size += len(data)
            if size > MAX_PROFILE_BYTES:  # grew while read
                raise errors.InvalidArgument(f"{where}: larger than {MAX_PROFILE_BYTES} bytes")
    except OSError as exc:
        raise errors.InvalidArgument(f"{where}: {exc.strerror}") from None
    finally:
        os.close(fd)
    text = b"".join(chunks)
    try:
        profile = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise errors.InvalidArgument(f"{where}: not JSON") from None
    # Docker refuses a profile without a default action (a 500 at create).
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        raise errors.InvalidArgument(f"{where}: not a seccomp profile (no defaultAction)")
    return text.decode()


async def load_profile(path: str) -> str:
    too_slow = errors.InvalidArgument(
        f"seccomp profile {path[:200]}: not read within {PROFILE_READ_TIMEOUT:.0f}s"
    )
    if not _readers.acquire(blocking=False):  # every reader is stuck: do not add one
        raise too_slow
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def settle(result: str | None, exc: BaseException | None) -> None:
        if future.done():  # the caller gave up meanwhile
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result or "")

    def read() -> None:
        try:
            result, exc = read_profile(path), None
        except BaseException as error:
            result, exc = None, error
        finally:
            _readers.release()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=read, name="seccomp-profile", daemon=True).start()
    try:
        return await asyncio.wait_for(future, PROFILE_READ_TIMEOUT)
    except TimeoutError:
        raise too_slow from None


async def docker_security_opts(
    seccomp: Profile,
    apparmor: Profile,
    selinux: tuple[tuple[str, str], ...] = (),
    no_new_privs: bool = False,
) -> tuple[str, ...]:
    """Docker's SecurityOpt entries (a Localhost seccomp profile is read: see above)."""
    opts = []
    if seccomp.kind == "unconfined":
        opts.append("seccomp=unconfined")
    elif seccomp.kind == "localhost":
        opts.append("seccomp=" + await load_profile(seccomp.ref))
    if apparmor.kind == "unconfined":
        opts.append("apparmor=unconfined")
    elif apparmor.kind == "localhost":
        opts.append(f"apparmor={apparmor.ref}")
    if no_new_privs:
        opts.append("no-new-privileges")
    opts += [f"label={key}:{value}" for key, value in selinux if value]
    return tuple(opts)
