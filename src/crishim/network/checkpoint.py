"""Per-sandbox network checkpoints: what DEL needs, kept on disk.

A checkpoint is written before CNI ADD runs (so a crash during ADD can still
be undone) and completed with the ADD result afterwards. It holds the network
list as it was used (a config edited later must not change what DEL runs),
the netns handle, the CNI_ARGS and capability arguments (port mappings, ...),
the ADD result (DEL's prevResult) and the pod IPs, so a crishim restarted
between RunPodSandbox and StopPodSandbox tears down exactly what was set up.

Files are `<state dir>/sandboxes/<sandbox id>.json`, written atomically
(temp file, fsync, rename, fsync of the directory). All of it is loaded into
memory at start; reads (pod IPs for PodSandboxStatus) come from memory.

Pods made by cri-dockerd (adopted, not restarted) have no checkpoint of ours.
For those, `from_cri_dockerd` rebuilds one from what cri-dockerd left: its
sandbox checkpoint (`<root>/sandbox/<id>`: port mappings, host network) and
libcni's result cache (`/var/lib/cni/results/<network>-<id>-<ifname>`: the
config, CNI_ARGS and the ADD result that cri-dockerd's libcni wrote).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from crishim.network.cni import result_ips

log = structlog.get_logger(__name__)

VERSION = 1
MAX_BYTES = 4 * 1024 * 1024


# A pod of cri-dockerd's whose libcni cache was not found: its addresses were read from
# its namespace, and its DEL uses the network configured when it was adopted.
ADOPTED_WITHOUT_STATE = "cri-dockerd, without its CNI state"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sandbox_id: str
    network: dict[str, Any]  # the conflist document used for ADD
    netns: str  # the handle's path ("" when only a live /proc path was known)
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    ips: tuple[str, ...] = ()
    torn_down: bool = False
    adopted_from: str = ""  # "cri-dockerd" for pods crishim did not set up (see below)
    version: int = VERSION

    def with_result(self, result: dict[str, Any]) -> Checkpoint:
        return replace(self, result=result, ips=result_ips(result))

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["args"] = [list(a) for a in self.args]
        doc["ips"] = list(self.ips)
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError("not a crishim network checkpoint of a known version")
        return cls(
            sandbox_id=str(doc["sandbox_id"]),
            network=dict(doc["network"]),
            netns=str(doc.get("netns") or ""),
            ifname=str(doc.get("ifname") or "eth0"),
            args=tuple((str(k), str(v)) for k, v in doc.get("args") or ()),
            capability_args=dict(doc.get("capability_args") or {}),
            result=doc.get("result"),
            ips=tuple(str(ip) for ip in doc.get("ips") or ()),
            torn_down=bool(doc.get("torn_down")),
            adopted_from=str(doc.get("adopted_from") or ""),
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointDir:
    """The checkpoint files of one state dir (blocking methods: call from a thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sandbox_id: str) -> Path:
        if not sandbox_id or "/" in sandbox_id or sandbox_id.startswith("."):
            raise ValueError(f"not a sandbox id: {sandbox_id!r}")
        return self.directory / f"{sandbox_id}.json"

    def write(self, cp: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path(cp.sandbox_id), cp.to_json())

    def remove(self, sandbox_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sandbox_id).unlink()

    def load_all(self) -> dict[str, Checkpoint]:
        out: dict[str, Checkpoint] = {}
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.json")):
            try:
                with path.open("rb") as f:
                    raw = f.read(MAX_BYTES + 1)
                if len(raw) > MAX_BYTES:
                    raise ValueError("too large")
                cp = Checkpoint.from_json(raw)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Kept in place for an operator to look at; never deleted silently.
                log.error("checkpoint_unreadable", path=str(path), error=str(exc))
                continue
            out[cp.sandbox_id] = cp
        return out


# -- what cri-dockerd leaves behind -------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= MAX_BYTES else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def cri_dockerd_port_mappings(root: Path, sandbox_id: str) -> list[dict[str, Any]] | None:
    """Port mappings from cri-dockerd's sandbox checkpoint, in CNI's portMappings form."""
    doc = _read_json(root / "sandbox" / sandbox_id)
    if doc is None:
        return None
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    out = []
    for pm in data.get("port_mappings") or ():
        if not isinstance(pm, dict) or not pm.get("host_port"):
            continue
        out.append(
            {
                "hostPort": int(pm["host_port"]),
                "containerPort": int(pm.get("container_port") or 0),
                "protocol": str(pm.get("protocol") or "tcp").lower(),
                "hostIP": str(pm.get("host_ip") or ""),
            }
        )
    return out


def from_libcni_cache(
    cache_dir: Path, sandbox_id: str, netns: str, cri_dockerd_root: Path
) -> Checkpoint | None:
    """A checkpoint for a pod that cri-dockerd's libcni set up (its result cache)."""
    results = cache_dir / "results"
    try:
        names = sorted(p for p in results.iterdir() if f"-{sandbox_id}-" in p.name)
    except OSError:
        return None
    for path in names:
        doc = _read_json(path)
        if not doc or doc.get("kind") != "cniCacheV1" or doc.get("containerId") != sandbox_id:
            continue
        try:
            network = json.loads(base64.b64decode(doc.get("config") or ""))
        except (ValueError, TypeError):
            continue
        if not isinstance(network, dict):
            continue
        caps = dict(doc.get("capabilityArgs") or {})
        mappings = cri_dockerd_port_mappings(cri_dockerd_root, sandbox_id)
        if mappings and "portMappings" not in caps:
            caps["portMappings"] = mappings
        result = doc.get("result") if isinstance(doc.get("result"), dict) else None
        return Checkpoint(
            sandbox_id=sandbox_id,
            network=network,
            netns=netns,
            ifname=str(doc.get("ifName") or "eth0"),
            args=tuple((str(k), str(v)) for k, v in doc.get("cniArgs") or ()),
            capability_args=caps,
            result=result,
            ips=result_ips(result),
            adopted_from="cri-dockerd",
        )
    return None
