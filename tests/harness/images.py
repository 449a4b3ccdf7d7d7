"""Test images, built by the suite from Debian's busybox (nothing is pulled).

The base is a `docker import` of a tiny root filesystem: the dynamic busybox
binary with the host's libc (preferred over busybox-static, whose `sh -c` runs
applets in-process and so hides masked files), one symlink per applet, and
/etc/passwd and /etc/group with a non-root user. Variants are `docker build`s
on top of it.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.dockerd import PrivateDockerd

BUSYBOX = Path("/bin/busybox")
REPO = "crishim-test"
PAUSE_IMAGE = f"{REPO}/pause:latest"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"

# A pause container: sleeps forever, exits at once on SIGTERM/SIGINT.
PAUSE_ENTRYPOINT = (
    '["/bin/sh", "-c", "trap \\"exit 0\\" TERM INT; while :; do sleep 3600 & wait $!; done"]'
)

VARIANTS = {
    "pause": f"ENTRYPOINT {PAUSE_ENTRYPOINT}\n",
    "user-numeric": "USER 1000\n",
    "user-named": "USER app\n",
}


@dataclass(frozen=True)
class TestImages:
    busybox: str
    pause: str
    user_numeric: str
    user_named: str


def _libraries() -> list[Path]:
    """The shared objects the host's busybox needs (from ldd), loader included."""
    out = subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                libs.append(Path(word))
    return libs


def rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "home", "home/app", "proc", "sys", "dev", "root", "var", "www"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
        )
        for applet in applets.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for lib in _libraries():
            parts = lib.parent.parts[1:]
            for i in range(1, len(parts) + 1):
                if f"{'/'.join(parts[:i])}" not in tar.getnames():
                    add_dir("/".join(parts[:i]))
            add_file(str(lib)[1:], lib.resolve().read_bytes(), 0o755)
        add_file("etc/passwd", PASSWD.encode())
        add_file("etc/group", GROUP.encode())
        add_file("www/index.html", b"hello from crishim-test httpd\n")
    return buf.getvalue()


def build(dockerd: PrivateDockerd, workdir: Path) -> TestImages:
    base = f"{REPO}/busybox:latest"
    dockerd.docker(
        "import",
        "--change",
        'CMD ["/bin/sh"]',
        "--change",
        "ENV PATH=/bin",
        "-",
        base,
        input=rootfs_tar(),
    )
    for name, body in VARIANTS.items():
        ctx = workdir / name
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "Dockerfile").write_text(f"FROM {base}\n{body}")
        dockerd.docker("build", "-q", "-t", f"{REPO}/{name}:latest", str(ctx))
    return TestImages(
        busybox=base,
        pause=PAUSE_IMAGE,
        user_numeric=f"{REPO}/user-numeric:latest",
        user_named=f"{REPO}/user-named:latest",
    )


def derive(dockerd: PrivateDockerd, base: str, tag: str, workdir: Path, purpose: str) -> str:
    """A new image (its own ID) on top of `base`, so that removing it touches nothing else."""
    ctx = workdir / tag.replace("/", "_").replace(":", "_")
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(f'FROM {base}\nLABEL crishim-test.purpose="{purpose}"\n')
    dockerd.docker("build", "-q", "-t", tag, str(ctx))
    return tag
