"""CNI network configuration, found and read the way libcni and containerd do.

The configuration directory holds files ending in `.conflist`, `.conf` or
`.json`; the first in lexical order is *the* network (containerd loads one
network by default, and so do we). A `.conflist` is a list of plugins; a
`.conf`/`.json` holds a single plugin and is wrapped into a list of one,
taking its name and version. As in containerd, a broken first file is an
error to report (NetworkReady=false naming the file), not a reason to fall
through to the next one: an operator sees what is wrong instead of pods
silently landing on another network.

Plugins are looked up on a search path of directories (`cni_bin_dir`, colon
separated); a plugin that is missing is reported here too, so readiness
says which binary is absent before a pod fails on it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from crishim.common import errors

EXTENSIONS = (".conflist", ".conf", ".json")
MAX_CONF_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PluginConf:
    """One plugin of a network list: its `type` (the binary) and its JSON as written."""

    type: str
    conf: dict[str, object]

    @property
    def capabilities(self) -> frozenset[str]:
        caps = self.conf.get("capabilities")
        if not isinstance(caps, dict):
            return frozenset()
        return frozenset(k for k, on in caps.items() if on is True)


@dataclass(frozen=True, slots=True)
class NetworkList:
    """A network configuration list: what CNI ADD/DEL/CHECK run, in order."""

    name: str
    cni_version: str
    plugins: tuple[PluginConf, ...]
    disable_check: bool = False
    disable_gc: bool = False
    source: str = ""  # the file it came from
    raw: dict[str, object] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, object]:
        """The list as a conflist document (what a checkpoint keeps for DEL)."""
        return {
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "disableGC": self.disable_gc,
            "plugins": [p.conf for p in self.plugins],
        }


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.3.1' -> (0, 3, 1); unparsable parts count as 0 (an old version)."""
    parts = []
    for piece in (version or "0.1.0").split("."):
        try:
            parts.append(int(piece))
        except ValueError:
            parts.append(0)
    return tuple(parts)


def supports_check(version: str) -> bool:
    return version_tuple(version) >= (0, 4, 0)


def supports_gc_and_status(version: str) -> bool:
    return version_tuple(version) >= (1, 1, 0)


def parse_list(data: dict[str, object], source: str = "") -> NetworkList:
    """A `.conflist` document as a NetworkList; InvalidArgument names what is wrong."""
    where = source or "network config"
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgument(f"{where}: no network name")
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise errors.InvalidArgument(f"{where}: no plugins")
    parsed = []
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise errors.InvalidArgument(f"{where}: plugin {i} is not an object")
        kind = plugin.get("type")
        if not isinstance(kind, str) or not kind or "/" in kind:
            raise errors.InvalidArgument(f"{where}: plugin {i} has no valid type")
        parsed.append(PluginConf(kind, plugin))
    version = data.get("cniVersion")
    return NetworkList(
        name=name,
        cni_version=version if isinstance(version, str) and version else "0.1.0",
        plugins=tuple(parsed),
        disable_check=data.get("disableCheck") is True,
        disable_gc=data.get("disableGC") is True,
        source=source,
        raw=data,
    )


def parse_file(path: Path) -> NetworkList:
    """One config file (blocking). A single-plugin `.conf` becomes a list of one."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONF_BYTES + 1)
    except OSError as exc:
        raise errors.InvalidArgument(f"{path}: {exc.strerror}") from None
    if len(raw) > MAX_CONF_BYTES:
        raise errors.InvalidArgument(f"{path}: larger than {MAX_CONF_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise errors.InvalidArgument(f"{path}: not a JSON object")
    if path.suffix == ".conflist":
        return parse_list(data, str(path))
    if not isinstance(data.get("type"), str) or not data.get("type"):
        raise errors.InvalidArgument(f"{path}: network type not found")
    wrapped = {"cniVersion": data.get("cniVersion", ""), "name": data.get("name")}
    wrapped["plugins"] = [data]
    return parse_list(wrapped, str(path))


def config_files(conf_dir: Path) -> list[Path]:
    """The candidate files, in the order libcni considers them (blocking)."""
    try:
        entries = list(os.scandir(conf_dir))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if e.name.endswith(EXTENSIONS) and e.is_file())


def find_plugin(kind: str, bin_dirs: tuple[str, ...]) -> str | None:
    """The executable for plugin `kind` on the search path, or None (blocking)."""
    for directory in bin_dirs:
        candidate = os.path.join(directory, kind)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def split_path(value: str) -> tuple[str, ...]:
    return tuple(p for p in value.split(":") if p)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The outcome of one look at the directory: a usable network, or why there is none."""

    network: NetworkList | None
    problem: str = ""
    signature: tuple[object, ...] = ()


def signature(conf_dir: Path, bin_dirs: tuple[str, ...]) -> tuple[object, ...]:
    """What changes when a config or the plugin directories change (blocking, cheap)."""
    parts: list[object] = []
    for path in config_files(conf_dir):
        try:
            st = path.stat()
        except OSError:
            continue
        parts.append((path.name, st.st_mtime_ns, st.st_size))
    for directory in bin_dirs:
        try:
            parts.append((directory, os.stat(directory).st_mtime_ns))
        except OSError:
            parts.append((directory, None))
    return tuple(parts)


def load(conf_dir: Path, bin_dirs: tuple[str, ...]) -> Loaded:
    """The network to use now, or a one-line reason for NetworkReady=false (blocking)."""
    sig = signature(conf_dir, bin_dirs)
    files = config_files(conf_dir)
    if not files:
        return Loaded(None, f"no network config found in {conf_dir}", sig)
    try:
        network = parse_file(files[0])
    except errors.CrishimError as exc:
        return Loaded(None, f"cni config load failed: {exc}", sig)
    missing = [p.type for p in network.plugins if find_plugin(p.type, bin_dirs) is None]
    if missing:
        return Loaded(
            None,
            f"network {network.name!r} ({files[0]}) needs plugin(s) "
            f"{', '.join(sorted(set(missing)))}, not found in {':'.join(bin_dirs)}",
            sig,
        )
    return Loaded(network, "", sig)
