"""Pod-level resources from UpdatePodSandboxResources (in-place pod resize, KEP-1287).

The kubelet resizes the pod's cgroup itself and tells the runtime the pod's new
resources and overhead afterwards. Docker has no pod object to apply them to
(the pod cgroup is the kubelet's; the pause container's own limits are not the
pod's), so crishim validates them and records them: `crictl inspectp` shows
them (verbose PodSandboxStatus), and they survive a restart, as one JSON file
per sandbox under the state dir, written atomically. RemovePodSandbox drops it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, fields
from pathlib import Path

from crishim.common import errors
from crishim.engine.docker.types import Resources
from crishim.network.checkpoint import write_atomic


def validate(what: str, r: Resources) -> None:
    for f in fields(Resources):
        value = getattr(r, f.name)
        if isinstance(value, int) and value < 0:
            raise errors.InvalidArgument(f"{what}.{f.name}: {value} is negative")
    if r.memory_swap_limit_in_bytes and r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes:
        raise errors.InvalidArgument(
            f"{what}: memory_swap_limit_in_bytes is below memory_limit_in_bytes"
        )


class PodResources:
    """The recorded resources of each sandbox, in memory and on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_id: dict[str, dict[str, dict[str, object]]] = {}
        self._files: set[str] = set()  # sandboxes with a file, readable or not

    def load(self) -> None:
        """Read what earlier runs recorded (blocking)."""
        if not self.directory.is_dir():
            return
        for path in self.directory.glob("*.json"):
            self._files.add(path.stem)
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(path.read_text())
                if isinstance(doc, dict):
                    self._by_id[path.stem] = doc

    def get(self, sandbox_id: str) -> dict[str, dict[str, object]] | None:
        return self._by_id.get(sandbox_id)

    def record(self, sandbox_id: str, overhead: Resources, resources: Resources) -> None:
        """Keep them (blocking: writes the file)."""
        doc = {"overhead": asdict(overhead), "resources": asdict(resources)}
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.directory / f"{sandbox_id}.json", json.dumps(doc).encode())
        self._by_id[sandbox_id] = doc
        self._files.add(sandbox_id)

    def recorded(self, sandbox_id: str) -> bool:
        """Whether forget() has anything to do (most pods never record resources)."""
        return sandbox_id in self._files

    def forget(self, sandbox_id: str) -> None:
        """Drop them (blocking)."""
        self._by_id.pop(sandbox_id, None)
        self._files.discard(sandbox_id)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{sandbox_id}.json").unlink()
