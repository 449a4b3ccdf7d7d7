"""Typed values the Docker adapter returns to the rest of crishim."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EngineVersion:
    """What `GET /version` says, plus the API version crishim settled on."""

    version: str
    api_version: str
    min_api_version: str
    os: str
    arch: str
    kernel_version: str
    negotiated_api_version: str


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """The parts of `GET /info` crishim acts on or reports."""

    name: str
    storage_driver: str
    cgroup_driver: str  # "systemd" | "cgroupfs" | "none"
    cgroup_version: str  # "1" | "2"
    docker_root_dir: str
    default_runtime: str
    runtimes: tuple[str, ...]
    security_options: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    experimental: bool = False  # dockerd --experimental (checkpoints need it)


@dataclass(frozen=True, slots=True)
class NetworkState:
    """A Docker network's identity and address ranges."""

    name: str
    id: str
    driver: str
    subnets: tuple[str, ...]
    gateways: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resources:
    """Container resource settings, in CRI's units (zero or empty = leave as is)."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    memory_swap_limit_in_bytes: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """`GET /system/df`: bytes used by images, containers' writable layers and volumes."""

    images_bytes: int
    images_count: int
    containers_bytes: int
    containers_count: int
    volumes_bytes: int


@dataclass(frozen=True, slots=True)
class StatsSample:
    """One `stats?stream=false&one-shot=true` reading, in raw cgroup-derived numbers."""

    read_at: str
    cpu_total_ns: int
    memory_usage_bytes: int
    memory_limit_bytes: int
    pids: int
    networks: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (rx, tx)


@dataclass(frozen=True, slots=True)
class LogChunk:
    """A piece of container output with the stream it came from."""

    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One progress report of a pull: a status, and bytes of a layer when known.
    Two of Docker's reports say more: the manifest's digest (`digest`), and, last,
    that the name already named the image pulled (`up_to_date`)."""

    status: str
    layer: str = ""
    current: int = 0
    total: int = 0
    digest: str = ""
    up_to_date: bool = False


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for one pull, in any of the forms the kubelet passes."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 "user:password"
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def is_empty(self) -> bool:
        return not any(
            (self.username, self.password, self.auth, self.identity_token, self.registry_token)
        )


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The run defaults an image carries (its Docker `Config`)."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""


@dataclass(frozen=True, slots=True)
class ImageListEntry:
    """One row of `GET /images/json`: what can change for an image (its names)."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """`GET /images/{ref}/json`. Everything but the names is fixed for an image ID."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    created: str
    architecture: str
    os: str
    config: ImageConfig


@dataclass(frozen=True, slots=True)
class ContainerRef:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ContainerState:
    """Docker's `State`, times as Unix nanoseconds (0 = never)."""

    status: str  # created | running | paused | restarting | removing | exited | dead
    running: bool
    exit_code: int
    oom_killed: bool
    pid: int
    error: str
    started_at_ns: int
    finished_at_ns: int


@dataclass(frozen=True, slots=True)
class BindMount:
    """A host path bound into a container."""

    source: str
    target: str
    read_only: bool = False
    propagation: str = "rprivate"  # rprivate | rslave | rshared
    selinux_relabel: bool = False
    # Read-only all the way down (submounts too); only with read_only, on API 1.44+.
    recursive_read_only: bool = False


@dataclass(frozen=True, slots=True)
class MountInfo:
    source: str
    destination: str
    read_only: bool
    propagation: str  # rprivate | rslave | rshared | ...


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """`GET /containers/{id}/json`, the parts crishim keeps."""

    id: str
    name: str
    created_at_ns: int
    image: str  # as given at create time
    image_id: str
    labels: dict[str, str]
    state: ContainerState
    hostname: str
    network_mode: str
    pid_mode: str
    ipc_mode: str
    ip_address: str
    runtime: str
    resolv_conf_path: str
    user: str = ""
    tty: bool = False
    open_stdin: bool = False
    stop_signal: str = ""
    mounts: tuple[MountInfo, ...] = ()
    resources: Resources = Resources()
    oom_score_adj: int = 0
    cgroup_parent: str = ""
    upper_dir: str = ""  # the writable layer's directory (overlay2), "" when unknown


@dataclass(frozen=True, slots=True)
class PortBinding:
    container_port: int
    protocol: str  # tcp | udp | sctp
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class ImageMount:
    """An image mounted read-only into a container (Docker API 1.48+)."""

    image: str
    target: str
    sub_path: str = ""


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What to create, in crishim's terms; the adapter turns it into Docker's JSON."""

    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    dns_servers: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    network_mode: str = ""
    pid_mode: str = ""
    ipc_mode: str = ""
    uts_mode: str = ""
    port_bindings: tuple[PortBinding, ...] = ()
    cgroup_parent: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    privileged: bool = False
    readonly_rootfs: bool = False
    group_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    oom_score_adj: int = 0
    runtime: str = ""
    shm_size: int = 0
    log_max_size: str = ""
    log_max_file: int = 0
    bind_mounts: tuple[BindMount, ...] = ()
    image_mounts: tuple[ImageMount, ...] = ()
    devices: tuple[tuple[str, str, str], ...] = ()  # (host, container, permissions)
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    masked_paths: tuple[str, ...] | None = None  # None: Docker's defaults
    readonly_paths: tuple[str, ...] | None = None
    resources: Resources = Resources()
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    stop_signal: str = ""
