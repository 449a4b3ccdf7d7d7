"""Docker's create JSON for parts this daemon cannot run (newer API versions)."""

from __future__ import annotations

import pytest

from crishim.engine.docker import versions
from crishim.engine.docker.client import _create_body
from crishim.engine.docker.types import BindMount, ContainerSpec, ImageMount


def test_image_volumes_become_image_mounts() -> None:
    spec = ContainerSpec(
        name="c",
        image="app",
        bind_mounts=(BindMount("/host", "/data", read_only=True),),
        image_mounts=(ImageMount("models:1", "/models"), ImageMount("tools:2", "/t", "bin")),
    )
    host = _create_body(spec, (1, 41))["HostConfig"]
    assert host["Binds"] == ["/host:/data:ro,rprivate"]
    assert host["Mounts"] == [
        {"Type": "image", "Source": "models:1", "Target": "/models", "ReadOnly": True},
        {
            "Type": "image",
            "Source": "tools:2",
            "Target": "/t",
            "ReadOnly": True,
            "ImageOptions": {"Subpath": "bin"},
        },
    ]


def test_no_image_volume_no_mounts_key() -> None:
    assert "Mounts" not in _create_body(ContainerSpec(name="c", image="app"))["HostConfig"]


BINDS = (
    BindMount("/rw", "/a"),
    BindMount("/ro", "/b", read_only=True, propagation="rslave"),
    BindMount("/rro", "/c", read_only=True, recursive_read_only=True),
    BindMount("/z", "/d", read_only=True, selinux_relabel=True),
)


def test_binds_on_api_1_41_are_binds_strings() -> None:
    host = _create_body(ContainerSpec(name="c", image="app", bind_mounts=BINDS[:2]), (1, 41))
    assert host["HostConfig"]["Binds"] == ["/rw:/a:rw,rprivate", "/ro:/b:ro,rslave"]
    assert "Mounts" not in host["HostConfig"]


def test_read_only_binds_on_api_1_44_say_whether_they_are_recursive() -> None:
    """Docker 25+ makes a read-only bind recursive unless the request says otherwise."""
    host = _create_body(ContainerSpec(name="c", image="app", bind_mounts=BINDS), (1, 51))
    assert host["HostConfig"]["Binds"] == ["/rw:/a:rw,rprivate", "/z:/d:ro,rprivate,Z"]
    assert host["HostConfig"]["Mounts"] == [
        {
            "Type": "bind",
            "Source": "/ro",
            "Target": "/b",
            "ReadOnly": True,
            "BindOptions": {"Propagation": "rslave", "ReadOnlyNonRecursive": True},
        },
        {
            "Type": "bind",
            "Source": "/rro",
            "Target": "/c",
            "ReadOnly": True,
            "BindOptions": {"Propagation": "rprivate", "ReadOnlyForceRecursive": True},
        },
    ]


@pytest.mark.parametrize(
    ("api", "release", "able"),
    [
        ("1.41", "6.1.0-13-amd64", False),
        ("1.44", "5.11.0", False),
        ("1.44", "5.12.0", True),
        ("1.51", "6.18.44-fc-v1300", True),
        ("", "6.1.0", False),
    ],
)
def test_recursive_read_only_needs_api_1_44_and_linux_5_12(api, release, able) -> None:
    assert versions.recursive_read_only(api, release) is able
