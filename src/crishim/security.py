"""Seccomp, AppArmor, SELinux and no_new_privs as Docker security options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crishim import errors


@dataclass(frozen=True, slots=True)
class Profile:
    """A seccomp or AppArmor choice: runtime/default, unconfined, or localhost + ref."""

    kind: str = "runtime/default"  # runtime/default | unconfined | localhost
    ref: str = ""


def docker_security_opts(
    seccomp: Profile,
    apparmor: Profile,
    selinux: tuple[tuple[str, str], ...] = (),
    no_new_privs: bool = False,
) -> tuple[str, ...]:
    """Docker's SecurityOpt entries. Blocking: reads a localhost seccomp profile (run in a thread).

    Docker takes a seccomp profile's JSON content, not its path.
    """
    opts = []
    if seccomp.kind == "unconfined":
        opts.append("seccomp=unconfined")
    elif seccomp.kind == "localhost":
        try:
            opts.append("seccomp=" + Path(seccomp.ref).read_text())
        except OSError as exc:
            raise errors.InvalidArgument(f"seccomp profile {seccomp.ref}: {exc.strerror}") from None
    if apparmor.kind == "unconfined":
        opts.append("apparmor=unconfined")
    elif apparmor.kind == "localhost":
        opts.append(f"apparmor={apparmor.ref}")
    if no_new_privs:
        opts.append("no-new-privileges")
    opts += [f"label={key}:{value}" for key, value in selinux if value]
    return tuple(opts)
