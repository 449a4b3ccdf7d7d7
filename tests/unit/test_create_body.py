"""Docker's create JSON for parts this daemon cannot run (newer API versions)."""

from __future__ import annotations

from crishim.docker.client import _create_body
from crishim.docker.types import ContainerSpec, ImageMount


def test_image_volumes_become_image_mounts() -> None:
    spec = ContainerSpec(
        name="c",
        image="app",
        binds=("/host:/data:ro,rprivate",),
        image_mounts=(ImageMount("models:1", "/models"), ImageMount("tools:2", "/t", "bin")),
    )
    host = _create_body(spec)["HostConfig"]
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
