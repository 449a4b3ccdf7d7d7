"""Docker API version negotiation.

crishim speaks Docker Engine API 1.41 (Docker 20.10) up to 1.52 (Docker 29,
whose own minimum is 1.44). It asks the daemon for its range and pins the
highest version both sides support, instead of adopting whatever the daemon
reports (aiodocker's default), so that a newer daemon never hands crishim an
API whose JSON it was not written for.
"""

from __future__ import annotations

from crishim.common import errors

CLIENT_MIN = "1.41"
CLIENT_MAX = "1.52"
# Docker 25: BindOptions.ReadOnlyNonRecursive / ReadOnlyForceRecursive, and read-only
# binds recursively read-only by default (see docker.client._binds).
READ_ONLY_NON_RECURSIVE = (1, 44)
# Recursive read-only bind mounts need mount_setattr(2): Linux 5.12.
RECURSIVE_READ_ONLY_KERNEL = (5, 12)


def kernel_release(release: str) -> tuple[int, int]:
    """'6.1.0-13-amd64' -> (6, 1); (0, 0) when unreadable."""
    try:
        major, minor = release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def recursive_read_only(api: str, release: str) -> bool:
    """Whether a daemon on API `api` under kernel `release` can bind read-only recursively."""
    return (
        bool(api)
        and parse(api) >= READ_ONLY_NON_RECURSIVE
        and kernel_release(release) >= RECURSIVE_READ_ONLY_KERNEL
    )


def parse(version: str) -> tuple[int, int]:
    """'1.41' -> (1, 41); anything else is an error naming the value."""
    try:
        major, minor = version.removeprefix("v").split(".")
        return int(major), int(minor)
    except ValueError:
        raise errors.InvalidArgument(f"not a Docker API version: {version!r}") from None


def negotiate(daemon_max: str, daemon_min: str | None) -> str:
    """The highest API version both crishim and the daemon support.

    `daemon_min` is absent on very old daemons; then the daemon's own version
    is the only one known to work.
    """
    high = min(parse(daemon_max), parse(CLIENT_MAX))
    low = max(parse(daemon_min or daemon_max), parse(CLIENT_MIN))
    if high < low:
        raise errors.Unavailable(
            f"Docker Engine API {daemon_min or daemon_max}..{daemon_max} does not overlap "
            f"what crishim supports ({CLIENT_MIN}..{CLIENT_MAX}); "
            "use Docker 20.10 or newer"
        )
    return f"{high[0]}.{high[1]}"
