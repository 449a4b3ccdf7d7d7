"""crishim's settings, and where each comes from.

Precedence, highest first:
  1. command-line flags (`--docker-endpoint ...`)
  2. environment variables `CRISHIM_<NAME>` (`CRISHIM_DOCKER_ENDPOINT=...`)
  3. the TOML file named by `--config` or `CRISHIM_CONFIG` (keys as below)
  4. for docker_endpoint only: `DOCKER_HOST`
  5. the defaults below
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from crishim.common import errors

ENV_PREFIX = "CRISHIM_"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
NETWORK_PLUGINS = ("cni", "docker")


@dataclass(frozen=True, slots=True)
class Config:
    # Where the CRI gRPC server listens: unix:///path or fd:// (systemd socket activation).
    listen: str = "unix:///run/crishim/crishim.sock"
    # The Docker Engine API endpoint: unix:///path or tcp://host:port.
    docker_endpoint: str = "unix:///var/run/docker.sock"
    # crishim's own small on-disk state (sandbox checkpoints).
    state_dir: str = "/var/lib/crishim"
    # Where the per-Docker-daemon lock lives that makes one crishim process the only
    # copier of container logs (shared by every crishim on the host).
    lock_dir: str = "/run/crishim"
    # The image every pod sandbox runs; pulled when absent, pinned in ImageStatus.
    pause_image: str = "registry.k8s.io/pause:3.10"
    # host:port of the exec/attach/port-forward server; port 0 picks a free one.
    streaming_address: str = "127.0.0.1:0"
    # PEM files to serve streaming over TLS (URLs become https://); both or neither.
    streaming_tls_cert: str = ""
    streaming_tls_key: str = ""
    # An exec/attach/port-forward connection with no traffic this long is closed.
    stream_idle_timeout: float = 4 * 3600.0
    # How long an Exec/Attach/PortForward URL stays usable (once) before it expires.
    stream_token_ttl: float = 60.0
    # host:port of the Prometheus /metrics endpoint; empty disables it.
    metrics_address: str = "127.0.0.1:9611"
    # How pods get their network: "cni" (the cluster's CNI plugins, as on every node)
    # or "docker" (Docker's default bridge, for local development).
    network_plugin: str = "cni"
    # CNI network configs and plugin binaries (a colon-separated search path).
    cni_conf_dir: str = "/etc/cni/net.d"
    cni_bin_dir: str = "/opt/cni/bin:/usr/lib/cni"
    # Where cri-dockerd and its libcni kept pod network state: read (never written)
    # to tear down the networks of pods adopted from cri-dockerd.
    cri_dockerd_root: str = "/var/lib/cri-dockerd"
    cni_cache_dir: str = "/var/lib/cni"
    log_format: str = "json"
    log_level: str = "info"
    # On SIGTERM: how long in-flight calls may take before crishim exits anyway.
    shutdown_grace_seconds: float = 30.0
    # Largest request message accepted (the kubelet's own limit is 16 MiB).
    max_request_bytes: int = 16 * 1024 * 1024
    # An image pull is aborted after this many seconds without progress (never
    # for taking long while it moves), and logs its progress at this interval.
    pull_progress_timeout: float = 60.0
    pull_log_interval: float = 10.0
    # Upper bound on a Docker liveness check in Status, seconds.
    docker_ping_timeout: float = 5.0
    # Every this many seconds, pause containers that never started and are older
    # than twice this are removed (leftovers of a RunPodSandbox that never finished).
    leftover_sweep_seconds: float = 60.0
    # The file the settings came from, if any (reported, not a setting itself).
    config_file: str = field(default="", compare=False)

    def validate(self) -> Config:
        if not self.listen.startswith(("unix://", "fd://")):
            raise errors.InvalidArgument(f"listen: use unix:///path or fd://, not {self.listen!r}")
        if not self.docker_endpoint.startswith(("unix://", "tcp://", "/")):
            raise errors.InvalidArgument(
                "docker_endpoint: use unix:///path or tcp://host:port, "
                f"not {self.docker_endpoint!r}"
            )
        if self.network_plugin not in NETWORK_PLUGINS:
            raise errors.InvalidArgument(f"network_plugin: one of {', '.join(NETWORK_PLUGINS)}")
        if self.log_format not in LOG_FORMATS:
            raise errors.InvalidArgument(f"log_format: one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            raise errors.InvalidArgument(f"log_level: one of {', '.join(LOG_LEVELS)}")
        for name in ("streaming_address", "metrics_address"):
            value = getattr(self, name)
            if value or name == "streaming_address":
                split_host_port(value, name)
        if (
            self.shutdown_grace_seconds < 0
            or self.docker_ping_timeout <= 0
            or self.pull_progress_timeout <= 0
            or self.pull_log_interval <= 0
            or self.stream_idle_timeout <= 0
            or self.stream_token_ttl <= 0
            or self.leftover_sweep_seconds <= 0
        ):
            raise errors.InvalidArgument("timeouts must be positive")
        if bool(self.streaming_tls_cert) != bool(self.streaming_tls_key):
            raise errors.InvalidArgument("streaming_tls_cert and streaming_tls_key go together")
        if self.max_request_bytes < 1024:
            raise errors.InvalidArgument("max_request_bytes: at least 1024")
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def split_host_port(value: str, name: str = "address") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise errors.InvalidArgument(f"{name}: expected host:port, got {value!r}")
    return host.strip("[]"), number


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
    except (TypeError, ValueError):
        raise errors.InvalidArgument(f"{name}: not a number: {value!r}") from None
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"{name}: expected a string, got {value!r}")
    return value


def _settable() -> list[str]:
    return [f.name for f in fields(Config) if f.name != "config_file"]


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults, DOCKER_HOST, the TOML file, CRISHIM_* and flags, in that order."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    if environ.get("DOCKER_HOST"):
        values["docker_endpoint"] = environ["DOCKER_HOST"]

    path = flags.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise errors.InvalidArgument(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise errors.InvalidArgument(f"config file {path}: {exc}") from None
        unknown = sorted(set(data) - set(_settable()))
        if unknown:
            raise errors.InvalidArgument(f"config file {path}: unknown keys {', '.join(unknown)}")
        values.update(data)
        values["config_file"] = str(path)

    for name in _settable():
        env = environ.get(ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = env
    for name in _settable():
        if name in flags:
            values[name] = flags[name]

    coerced = {k: (_coerce(k, v) if k != "config_file" else v) for k, v in values.items()}
    return Config(**coerced).validate()
