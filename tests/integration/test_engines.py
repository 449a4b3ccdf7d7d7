"""What differs between the Docker engines crishim runs on, as a user sees it.

The suite runs on Debian's Docker 20.10 (API 1.41) and on Docker 28.5 (API 1.51,
../shared/engines); each test says what its CRI call does on the engine the suite
runs against, so each difference is checked on the engine that has it.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)

READ_ONLY = "Read-only file system"


@pytest.fixture
def dir_with_submount(workdir: Path):
    """A host directory with a tmpfs mounted below it (the kubelet's volumes are such)."""
    top = workdir / f"binds-{uuid.uuid4().hex[:8]}"
    (top / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "sub")], check=True)
    yield top
    subprocess.run(["umount", "-l", str(top / "sub")], check=False)


def _where_the_engine_can(official, pod, dockerd, api, name: str, mount, says: str):  # noqa: F811
    """A running container with `mount` where the engine speaks `api`; elsewhere the
    create is refused with FAILED_PRECONDITION saying `says`, and None."""
    if dockerd.api >= api:
        return create(official, pod, name, ["sleep", "300"], mounts=[mount])
    with pytest.raises(grpc.RpcError) as refused:
        create(official, pod, name, ["sleep", "300"], mounts=[mount])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert says in refused.value.details()
    return None


def _touch(official, cid: str, path: str) -> tuple[int, str]:
    pb = official.pb
    out = official.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["touch", path], timeout=10), timeout=30
    )
    return out.exit_code, out.stderr.decode()


@pytest.mark.parametrize("relabel", [False, True], ids=["plain", "selinux-relabel"])
def test_a_read_only_bind_leaves_its_submounts_writable(
    official,
    pod,  # noqa: F811
    dir_with_submount,
    relabel,
) -> None:
    """The CRI's `readonly` without `recursive_read_only` is the bind alone. Docker 25+
    makes read-only binds recursive unless told otherwise (critest's non-recursive spec,
    which asks for an SELinux relabel as well: a no-op where SELinux is off)."""
    pb = official.pb
    cid = create(
        official,
        pod,
        f"ro-bind-{int(relabel)}",
        ["sleep", "300"],
        mounts=[
            pb.Mount(
                container_path="/mnt",
                host_path=str(dir_with_submount),
                readonly=True,
                selinux_relabel=relabel,
            )
        ],
    )
    code, said = _touch(official, cid, "/mnt/file")
    assert code != 0
    assert READ_ONLY in said
    assert _touch(official, cid, "/mnt/sub/file") == (0, "")
    assert (dir_with_submount / "sub" / "file").exists()


def test_a_recursive_read_only_bind_where_the_engine_can(
    official,
    pod,  # noqa: F811
    dockerd,
    dir_with_submount,
) -> None:
    """Docker 25+ (API 1.44) on Linux 5.12+: submounts read-only too; on 20.10 refused."""
    pb = official.pb
    mount = pb.Mount(
        container_path="/mnt",
        host_path=str(dir_with_submount),
        readonly=True,
        recursive_read_only=True,
    )
    cid = _where_the_engine_can(
        official, pod, dockerd, (1, 44), "rro-bind", mount, "need Docker Engine API 1.44"
    )
    if cid is None:
        return
    for path in ("/mnt/file", "/mnt/sub/file"):
        code, said = _touch(official, cid, path)
        assert code != 0, path
        assert READ_ONLY in said, path


def test_an_image_volume_where_the_engine_has_them(official, pod, dockerd, test_images) -> None:  # noqa: F811
    """Image volumes (KEP-4639): Docker 28 (API 1.48) mounts the image read-only."""
    pb = official.pb
    mount = pb.Mount(
        container_path="/img",
        image=pb.ImageSpec(image=test_images.user_named),
        image_sub_path="etc",
    )
    cid = _where_the_engine_can(
        official, pod, dockerd, (1, 48), "image-volume", mount,
        "image volumes need Docker Engine API 1.48",
    )  # fmt: skip
    if cid is None:
        return
    out = official.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["cat", "/img/passwd"], timeout=10), timeout=30
    )
    assert out.exit_code == 0, out.stderr
    assert b"app:x:1000:1000" in out.stdout
    code, said = _touch(official, cid, "/img/new")
    assert code != 0
    assert READ_ONLY in said
