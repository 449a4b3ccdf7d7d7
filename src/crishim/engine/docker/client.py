"""DockerClient: typed calls to the Docker Engine API over aiodocker.

One client per crishim process. It owns its connection pool (unbounded: long
streams such as log follows, attach and events must never starve short calls)
and pins the API version it negotiated at connect time. Calls that aiodocker
does not cover (container update, /system/df, one-shot stats, multiplexed logs,
hijacked exec/attach, checkpoints, registry tokens) are raw API calls here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiodocker
import aiohttp
import structlog

from crishim.common import calltime, errors, metrics
from crishim.common.rfc3339 import to_ns
from crishim.engine.docker import http, versions
from crishim.engine.docker.errors import (
    CONNECT_FAILED,
    DockerServerError,
    DockerUnavailable,
    from_status,
)
from crishim.engine.docker.streams import Demuxer, Hijacked, hijack, open_raw, upgrade
from crishim.engine.docker.types import (
    BindMount,
    ContainerInfo,
    ContainerRef,
    ContainerSpec,
    ContainerState,
    DiskUsage,
    EngineInfo,
    EngineVersion,
    ImageConfig,
    ImageDetails,
    ImageListEntry,
    LogChunk,
    MountInfo,
    NetworkState,
    PullProgress,
    RegistryAuth,
    Resources,
    StatsSample,
)

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
# Image references go into URL paths as Docker's own client sends them: with
# their slashes, colons and @ (Docker's router matches names that contain them).
REF_SAFE = "/:@"


def normalize_endpoint(endpoint: str) -> str:
    """Accept what DOCKER_HOST accepts: unix:///path, tcp://host:port, or a bare path."""
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    if endpoint.startswith(("unix://", "tcp://", "http://")):
        return endpoint.replace("http://", "tcp://", 1)
    raise errors.InvalidArgument(
        f"unsupported Docker endpoint {endpoint!r}: use unix:///path or tcp://host:port"
    )


def _binds(wanted: tuple[BindMount, ...], api: tuple[int, int]) -> tuple[list[str], list[JSON]]:
    """Docker's Binds strings and bind Mounts for the container's host paths.

    Since API 1.44 (Docker 25) Docker makes a read-only bind recursively read-only
    where the kernel can (5.12+), whatever the request; the CRI's `readonly` without
    `recursive_read_only` means the bind alone (what 20.10 does with `ro`). Only the
    Mounts form can say which (BindOptions.ReadOnlyNonRecursive / ForceRecursive), so
    read-only binds go there on such daemons. Writable ones, and those to relabel for
    SELinux (`Z`, which Mounts cannot say; asked only where SELinux is on), stay Binds:
    they mean the same on both.
    """
    binds: list[str] = []
    mounts: list[JSON] = []
    for m in wanted:
        if m.read_only and api >= versions.READ_ONLY_NON_RECURSIVE and not m.selinux_relabel:
            options: JSON = {"Propagation": m.propagation}
            options[
                "ReadOnlyForceRecursive" if m.recursive_read_only else "ReadOnlyNonRecursive"
            ] = True
            mounts.append(
                {
                    "Type": "bind",
                    "Source": m.source,
                    "Target": m.target,
                    "ReadOnly": True,
                    "BindOptions": options,
                }
            )
            continue
        flags = ["ro" if m.read_only else "rw", m.propagation]
        if m.selinux_relabel:
            flags.append("Z")
        binds.append(f"{m.source}:{m.target}:{','.join(flags)}")
    return binds, mounts


def _create_body(spec: ContainerSpec, api: tuple[int, int] = (1, 41)) -> JSON:
    """Docker's create JSON for a ContainerSpec on API `api` (only here does that JSON exist)."""
    bindings: dict[str, list[JSON]] = {}
    for b in spec.port_bindings:
        bindings.setdefault(f"{b.container_port}/{b.protocol}", []).append(
            {"HostIp": b.host_ip, "HostPort": str(b.host_port)}
        )
    host: JSON = {
        "NetworkMode": spec.network_mode,
        "PidMode": spec.pid_mode,
        "IpcMode": spec.ipc_mode,
        "UTSMode": spec.uts_mode,
        "PortBindings": bindings,
        "CgroupParent": spec.cgroup_parent,
        "Sysctls": spec.sysctls,
        "Privileged": spec.privileged,
        "ReadonlyRootfs": spec.readonly_rootfs,
        "GroupAdd": list(spec.group_add),
        "SecurityOpt": list(spec.security_opt),
        "OomScoreAdj": spec.oom_score_adj,
        "Dns": list(spec.dns_servers),
        "DnsSearch": list(spec.dns_search),
        "DnsOptions": list(spec.dns_options),
        "LogConfig": {
            "Type": "json-file",
            "Config": {"max-size": spec.log_max_size} if spec.log_max_size else {},
        },
    }
    if spec.log_max_file:
        host["LogConfig"]["Config"]["max-file"] = str(spec.log_max_file)
    if spec.runtime:
        host["Runtime"] = spec.runtime
    if spec.shm_size:
        host["ShmSize"] = spec.shm_size
    host["Binds"], bind_mounts = _binds(spec.bind_mounts, api)
    if bind_mounts:
        host["Mounts"] = bind_mounts
    if spec.image_mounts:
        host.setdefault("Mounts", []).extend(
            {
                "Type": "image",
                "Source": m.image,
                "Target": m.target,
                "ReadOnly": True,
                **({"ImageOptions": {"Subpath": m.sub_path}} if m.sub_path else {}),
            }
            for m in spec.image_mounts
        )
    host["Devices"] = [
        {"PathOnHost": h, "PathInContainer": c, "CgroupPermissions": perms or "rwm"}
        for h, c, perms in spec.devices
    ]
    host["CapAdd"] = list(spec.cap_add)
    host["CapDrop"] = list(spec.cap_drop)
    if spec.masked_paths is not None:
        host["MaskedPaths"] = list(spec.masked_paths)
    if spec.readonly_paths is not None:
        host["ReadonlyPaths"] = list(spec.readonly_paths)
    host.update(_resources_body(spec.resources))
    body: JSON = {
        "Image": spec.image,
        "Labels": spec.labels,
        "Env": list(spec.env),
        "WorkingDir": spec.working_dir,
        "User": spec.user,
        "Hostname": spec.hostname,
        "ExposedPorts": {key: {} for key in bindings},
        "HostConfig": host,
    }
    if spec.tty or spec.open_stdin:
        body.update(
            Tty=spec.tty,
            OpenStdin=spec.open_stdin,
            StdinOnce=spec.stdin_once,
            AttachStdin=spec.open_stdin,
            AttachStdout=True,
            AttachStderr=True,
        )
    if spec.stop_signal:
        body["StopSignal"] = spec.stop_signal
    if spec.entrypoint is not None:
        body["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd is not None:
        body["Cmd"] = list(spec.cmd)
    return body


def _resources_body(res: Resources) -> JSON:
    """Docker's resource fields for the ones set (zero or empty = left as they are)."""
    body: JSON = {}
    for key, value in (
        ("CpuPeriod", res.cpu_period),
        ("CpuQuota", res.cpu_quota),
        ("CpuShares", res.cpu_shares),
        ("Memory", res.memory_limit_in_bytes),
        ("MemorySwap", res.memory_swap_limit_in_bytes),
        ("CpusetCpus", res.cpuset_cpus),
        ("CpusetMems", res.cpuset_mems),
    ):
        if value:
            body[key] = value
    return body


def _container_info(raw: JSON) -> ContainerInfo:
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    host = raw.get("HostConfig") or {}
    network = raw.get("NetworkSettings") or {}
    ip = network.get("IPAddress") or next(
        (
            n.get("IPAddress")
            for n in (network.get("Networks") or {}).values()
            if n.get("IPAddress")
        ),
        "",
    )
    return ContainerInfo(
        id=str(raw.get("Id", "")),
        name=str(raw.get("Name", "")).lstrip("/"),
        created_at_ns=to_ns(raw.get("Created")),
        image=str(config.get("Image", "")),
        image_id=str(raw.get("Image", "")),
        labels=dict(config.get("Labels") or {}),
        state=ContainerState(
            status=str(state.get("Status", "")),
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            pid=int(state.get("Pid") or 0),
            error=str(state.get("Error") or ""),
            started_at_ns=to_ns(state.get("StartedAt")),
            finished_at_ns=to_ns(state.get("FinishedAt")),
        ),
        hostname=str(config.get("Hostname", "")),
        network_mode=str(host.get("NetworkMode", "")),
        pid_mode=str(host.get("PidMode", "")),
        ipc_mode=str(host.get("IpcMode", "")),
        ip_address=str(ip or ""),
        runtime=str(host.get("Runtime", "")),
        resolv_conf_path=str(raw.get("ResolvConfPath", "")),
        user=str(config.get("User") or ""),
        tty=bool(config.get("Tty")),
        open_stdin=bool(config.get("OpenStdin")),
        stop_signal=str(config.get("StopSignal") or ""),
        mounts=tuple(
            MountInfo(
                source=str(m.get("Source", "")),
                destination=str(m.get("Destination", "")),
                read_only=not m.get("RW", True),
                propagation=str(m.get("Propagation", "")),
            )
            for m in raw.get("Mounts") or ()
        ),
        resources=Resources(
            cpu_period=int(host.get("CpuPeriod") or 0),
            cpu_quota=int(host.get("CpuQuota") or 0),
            cpu_shares=int(host.get("CpuShares") or 0),
            memory_limit_in_bytes=int(host.get("Memory") or 0),
            memory_swap_limit_in_bytes=int(host.get("MemorySwap") or 0),
            cpuset_cpus=str(host.get("CpusetCpus") or ""),
            cpuset_mems=str(host.get("CpusetMems") or ""),
        ),
        oom_score_adj=int(host.get("OomScoreAdj") or 0),
        cgroup_parent=str(host.get("CgroupParent") or ""),
        upper_dir=str(((raw.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir") or ""),
    )


MAX_EVENT_BYTES = 64 * 1024 * 1024


def _event(line: bytes) -> tuple[str, str, str] | None:
    """(type, action, actor id) of one event line; None for a blank or unreadable one."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    actor = event.get("Actor") or {}
    return (
        str(event.get("Type", "")),
        str(event.get("Action", "")),
        str(actor.get("ID") or event.get("id") or ""),
    )


def _names(value: Any) -> tuple[str, ...]:
    """Docker reports untagged images as `<none>:<none>`; those are no names."""
    return tuple(n for n in (value or ()) if n and not n.startswith("<none>"))


def registry_auth_header(auth: RegistryAuth) -> str:
    """The X-Registry-Auth value: base64url JSON, with tokens aiodocker cannot pass."""
    body = {
        "username": auth.username,
        "password": auth.password,
        "auth": auth.auth,
        "serveraddress": auth.server_address,
        "identitytoken": auth.identity_token,
        "registrytoken": auth.registry_token,
    }
    raw = json.dumps({k: v for k, v in body.items() if v}).encode()
    return base64.urlsafe_b64encode(raw).decode()


class DockerClient:
    """The Docker Engine, as crishim uses it."""

    def __init__(self, endpoint: str, *, call_timeout: float = 60.0) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        # A default for short calls; callers narrow it with the RPC's deadline.
        self._call_timeout = aiohttp.ClientTimeout(total=call_timeout, connect=5)
        self._docker: aiodocker.Docker | None = None
        self._http: http.Pool | None = None  # the short JSON calls of the lifecycle
        self.version: EngineVersion | None = None
        # Calls arriving together while disconnected must not race into several sessions.
        self._connecting = asyncio.Lock()

    # -- connection -------------------------------------------------------

    def _base_url(self) -> str:
        # With a caller-supplied connector aiodocker uses the URL as the request
        # base, so a unix endpoint becomes unix://localhost (as aiodocker does itself).
        if self.endpoint.startswith("unix://"):
            return "unix://localhost"
        return self.endpoint.replace("tcp://", "http://", 1)

    def _connector(self) -> aiohttp.BaseConnector:
        if self.endpoint.startswith("unix://"):
            return aiohttp.UnixConnector(self.endpoint.removeprefix("unix://"), limit=0)
        return aiohttp.TCPConnector(limit=0)

    async def connect(self) -> EngineVersion:
        """Negotiate the API version and pin it. Safe to call again after a failure."""
        async with self._connecting:
            return await self._connect()

    async def _connect(self) -> EngineVersion:
        probe = aiodocker.Docker(
            url=self._base_url(),
            connector=self._connector(),
            api_version="v1.41",
            timeout=self._call_timeout,
        )
        try:
            raw = await self._call(probe, "version", versioned=False)
        finally:
            await probe.close()
            await probe.connector.close()
        if not isinstance(raw, dict) or not raw.get("ApiVersion"):
            raise DockerServerError(f"docker: /version did not name an API version: {raw!r}")
        negotiated = versions.negotiate(raw["ApiVersion"], raw.get("MinAPIVersion"))
        self.version = EngineVersion(
            version=raw.get("Version", ""),
            api_version=raw["ApiVersion"],
            min_api_version=raw.get("MinAPIVersion", ""),
            os=raw.get("Os", ""),
            arch=raw.get("Arch", ""),
            kernel_version=raw.get("KernelVersion", ""),
            negotiated_api_version=negotiated,
        )
        await self.close()
        self._docker = aiodocker.Docker(
            url=self._base_url(),
            connector=self._connector(),
            api_version=f"v{negotiated}",
            timeout=self._call_timeout,
        )
        self._http = http.Pool(self.endpoint, self._call_timeout.total or 60.0)
        log.info(
            "docker_connected",
            endpoint=self.endpoint,
            engine=self.version.version,
            api_version=negotiated,
        )
        return self.version

    async def close(self) -> None:
        if self._http is not None:
            pool, self._http = self._http, None
            await pool.close()
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()
            await docker.connector.close()

    def _api(self) -> tuple[int, int]:
        assert self.version is not None
        return versions.parse(self.version.negotiated_api_version)

    @property
    def api_prefix(self) -> str:
        if self.version is None:
            raise DockerUnavailable("docker: not connected")
        return f"/v{self.version.negotiated_api_version}"

    async def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            async with self._connecting:
                if self._docker is None:  # another call may have connected meanwhile
                    await self._connect()
        assert self._docker is not None
        return self._docker

    async def _call(
        self,
        docker: aiodocker.Docker,
        path: str,
        method: str = "GET",
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        versioned: bool = True,
        op: str | None = None,
    ) -> Any:
        """One JSON request; Docker's errors become domain errors by status code.

        Bounded by the client's default timeout; callers bound it further with
        asyncio.timeout (see crishim.common.deadlines.limit).
        """
        started = time.perf_counter()
        try:
            return await docker._query_json(
                path,
                method,
                params=dict(params) if params else None,
                data=body,
                headers=headers,
                versioned_api=versioned,
            )
        except aiodocker.DockerError as exc:
            if exc.status == CONNECT_FAILED:  # aiodocker's wrapper of a connection error
                raise self._unreachable(exc.__context__ or exc) from exc
            raise from_status(exc.status, exc.message) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from exc
        except ValueError as exc:  # a reply that is not the JSON the API promises
            raise DockerServerError(f"docker: unreadable reply to {method} {path}") from exc
        except TimeoutError as exc:
            raise DockerUnavailable(f"docker: {method} {path} timed out") from exc
        finally:
            spent = time.perf_counter() - started
            metrics.DOCKER_SECONDS.labels(op or path.split("/")[0]).observe(spent)
            calltime.add("docker", spent)

    async def _json(
        self,
        path: str,
        method: str = "GET",
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        op: str,
    ) -> Any:
        """One JSON call through the small client (crishim.engine.docker.http), mapped as _call."""
        await self._client()  # connected: the negotiated version and the pool exist
        pool = self._http
        assert pool is not None
        # Quoted as aiohttp would: an id is a caller's string, never raw request-line bytes.
        target = f"{self.api_prefix}/{quote(path, safe=REF_SAFE)}"
        if params:
            target += f"?{urlencode(params)}"
        data = None if body is None else json.dumps(body).encode()
        started = time.perf_counter()
        try:
            response = await pool.request(method, target, data)
        except http.ConnectionFailed as exc:
            raise self._unreachable(exc) from exc
        except http.ProtocolError as exc:
            raise DockerServerError(f"docker: unreadable reply to {method} {path}") from exc
        except TimeoutError as exc:
            raise DockerUnavailable(f"docker: {method} {path} timed out") from exc
        finally:
            spent = time.perf_counter() - started
            metrics.DOCKER_SECONDS.labels(op).observe(spent)
            calltime.add("docker", spent)
        is_json = response.content_type.startswith("application/json")
        try:
            parsed = json.loads(response.body) if is_json and response.body else None
        except ValueError as exc:
            raise DockerServerError(f"docker: unreadable reply to {method} {path}") from exc
        if response.status >= 400:
            message = parsed.get("message") if isinstance(parsed, dict) else None
            raise from_status(
                response.status, str(message or response.body.decode(errors="replace"))
            )
        return parsed if is_json else response.body.decode(errors="replace")

    def _unreachable(self, exc: BaseException) -> errors.CrishimError:
        """A readable 'cannot connect' error: the OS reason, not aiohttp's repr."""
        cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        return from_status(CONNECT_FAILED, f"cannot connect to {self.endpoint}: {reason}")

    async def _open_stream(
        self,
        path: str,
        method: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """A streaming response (logs, pulls) without the short-call timeout; caller releases it."""
        docker = await self._client()
        try:
            return await docker._do_query(
                path, method, params=dict(params) if params else None, headers=headers, timeout=None
            )
        except aiodocker.DockerError as exc:
            if exc.status == CONNECT_FAILED:
                raise self._unreachable(exc.__context__ or exc) from exc
            raise from_status(exc.status, exc.message) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from exc

    async def request(self, path: str, method: str = "GET", **kw: Any) -> Any:
        """A JSON call on the negotiated API version."""
        return await self._call(await self._client(), path, method, **kw)

    # -- engine -------------------------------------------------------------

    async def engine_version(self) -> EngineVersion:
        """The daemon's version now; renegotiates when the engine was replaced meanwhile."""
        if self.version is None:
            return await self.connect()
        raw: JSON = await self._call(await self._client(), "version", versioned=False, op="version")
        if (raw.get("Version"), raw.get("ApiVersion")) != (
            self.version.version,
            self.version.api_version,
        ):
            log.info("docker_engine_changed", was=self.version.version, now=raw.get("Version"))
            return await self.connect()
        return self.version

    async def ping(self) -> None:
        """Raises DockerUnavailable unless the daemon answers /_ping."""
        docker = await self._client()
        await self._call(docker, "_ping", versioned=False, op="ping")

    async def info(self) -> EngineInfo:
        raw: JSON = await self.request("info", op="info")
        return EngineInfo(
            name=raw.get("Name", ""),
            storage_driver=raw.get("Driver", ""),
            cgroup_driver=raw.get("CgroupDriver", ""),
            cgroup_version=str(raw.get("CgroupVersion", "1")),
            docker_root_dir=raw.get("DockerRootDir", ""),
            default_runtime=raw.get("DefaultRuntime", "runc"),
            runtimes=tuple(sorted((raw.get("Runtimes") or {}).keys())),
            security_options=tuple(raw.get("SecurityOptions") or ()),
            warnings=tuple(raw.get("Warnings") or ()),
            experimental=bool(raw.get("ExperimentalBuild")),
        )

    async def network(self, name: str) -> NetworkState:
        raw: JSON = await self.request(f"networks/{name}", op="network_inspect")
        configs = (raw.get("IPAM") or {}).get("Config") or []
        return NetworkState(
            name=raw.get("Name", name),
            id=raw.get("Id", ""),
            driver=raw.get("Driver", ""),
            subnets=tuple(c["Subnet"] for c in configs if c.get("Subnet")),
            gateways=tuple(c["Gateway"] for c in configs if c.get("Gateway")),
        )

    async def disk_usage(self) -> DiskUsage:
        """`/system/df` (not in aiodocker)."""
        raw: JSON = await self.request("system/df", op="system_df")
        images = raw.get("Images") or []
        containers = raw.get("Containers") or []
        volumes = raw.get("Volumes") or []
        return DiskUsage(
            images_bytes=int(raw.get("LayersSize") or 0),
            images_count=len(images),
            containers_bytes=sum(int(c.get("SizeRw") or 0) for c in containers),
            containers_count=len(containers),
            volumes_bytes=sum(int((v.get("UsageData") or {}).get("Size") or 0) for v in volumes),
        )

    # -- containers: the calls aiodocker lacks ------------------------------

    async def update_container(self, container_id: str, res: Resources) -> None:
        """`POST /containers/{id}/update` (not in aiodocker). Zero fields are left unchanged."""
        await self._json(
            f"containers/{container_id}/update",
            "POST",
            body=_resources_body(res),
            op="container_update",
        )

    async def stats_once(self, container_id: str) -> StatsSample:
        """One stats reading without the two-sample wait (`one-shot`, not in aiodocker)."""
        raw: JSON = await self.request(
            f"containers/{container_id}/stats",
            params={"stream": "false", "one-shot": "true"},
            op="container_stats",
        )
        mem = raw.get("memory_stats") or {}
        nets = raw.get("networks") or {}
        return StatsSample(
            read_at=raw.get("read", ""),
            cpu_total_ns=int(
                ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0
            ),
            memory_usage_bytes=int(mem.get("usage") or 0),
            memory_limit_bytes=int(mem.get("limit") or 0),
            pids=int((raw.get("pids_stats") or {}).get("current") or 0),
            networks={
                k: (int(v.get("rx_bytes", 0)), int(v.get("tx_bytes", 0))) for k, v in nets.items()
            },
        )

    async def logs(
        self, container_id: str, *, since_ns: int = 0, follow: bool = False, tty: bool = False
    ) -> AsyncIterator[LogChunk]:
        """Output with Docker's timestamps, one chunk per log message (aiodocker merges streams).

        Each chunk's data starts with `<RFC3339Nano timestamp> `. Without a TTY the
        output is framed and every frame is one message; with a TTY it is one raw
        stream, split here at newlines (a last piece without one is a message too).
        """
        params = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "timestamps": "1",
            "since": f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}",
        }
        response = await self._open_stream(f"containers/{container_id}/logs", "GET", params=params)
        demux = Demuxer()
        pending = b""
        try:
            async for data in response.content.iter_any():
                if not tty:
                    for chunk in demux.feed(data):
                        yield chunk
                    continue
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield LogChunk(stream="stdout", data=line + b"\n")
            if pending:
                yield LogChunk(stream="stdout", data=pending)
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.close()  # unfinished: closing tells Docker to stop

    async def pull(self, image: str, tag: str, auth: RegistryAuth) -> AsyncIterator[PullProgress]:
        """Pull `image:tag` (or `image@digest` with tag ""), yielding Docker's progress.

        Docker reports failures that happen after the pull started as an
        `error` line inside a 200 response; those raise too.
        """
        params = {"fromImage": image, **({"tag": tag} if tag else {})}
        response = await self._open_stream(
            "images/create", "POST", params=params, headers=self.pull_headers(auth)
        )
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError as exc:
                    raise DockerServerError(f"docker: unreadable pull progress {line!r}") from exc
                if msg.get("error"):
                    raise DockerServerError(f"docker: pull of {image}: {msg['error']}")
                detail = msg.get("progressDetail") or {}
                status = str(msg.get("status", ""))
                yield PullProgress(
                    status=status,
                    layer=msg.get("id", ""),
                    current=int(detail.get("current") or 0),
                    total=int(detail.get("total") or 0),
                    digest=status.removeprefix("Digest: ") if status.startswith("Digest: ") else "",
                    up_to_date=status.startswith("Status: Image is up to date for "),
                )
        finally:
            response.close()  # unfinished: closing tells Docker to stop

    # -- images -------------------------------------------------------------

    async def list_images(self) -> list[ImageListEntry]:
        raw: list[JSON] = await self.request("images/json", op="image_list")
        return [
            ImageListEntry(
                id=str(img.get("Id", "")),
                repo_tags=_names(img.get("RepoTags")),
                repo_digests=_names(img.get("RepoDigests")),
                size=int(img.get("Size") or 0),
            )
            for img in raw
        ]

    async def inspect_image(self, ref: str) -> ImageDetails:
        """By ID, tag or digest reference; DockerNotFound when absent."""
        raw: JSON = await self._json(f"images/{ref}/json", op="image_inspect")
        cfg = raw.get("Config") or {}
        return ImageDetails(
            id=str(raw.get("Id", "")),
            repo_tags=_names(raw.get("RepoTags")),
            repo_digests=_names(raw.get("RepoDigests")),
            size=int(raw.get("Size") or 0),
            created=str(raw.get("Created", "")),
            architecture=str(raw.get("Architecture", "")),
            os=str(raw.get("Os", "")),
            config=ImageConfig(
                user=str(cfg.get("User") or ""),
                env=tuple(cfg.get("Env") or ()),
                entrypoint=tuple(cfg.get("Entrypoint") or ()),
                cmd=tuple(cfg.get("Cmd") or ()),
                working_dir=str(cfg.get("WorkingDir") or ""),
                labels=dict(cfg.get("Labels") or {}),
                exposed_ports=tuple(sorted(cfg.get("ExposedPorts") or {})),
                volumes=tuple(sorted(cfg.get("Volumes") or {})),
                stop_signal=str(cfg.get("StopSignal") or ""),
            ),
        )

    async def remove_image(self, image_id: str, *, force: bool) -> None:
        """Remove an image with all its names. Unforced, Docker refuses (409) an image a
        container uses or that names of several repositories share; forced, it removes
        one only stopped containers use too: callers check first that none does."""
        await self._json(
            f"images/{image_id}",
            "DELETE",
            params={"force": "true" if force else "false"},
            op="image_remove",
        )

    async def containers_using(self, image_id: str) -> list[ContainerRef]:
        """Containers, running or not, created from `image_id`."""
        raw: list[JSON] = await self.request(
            "containers/json",
            params={"all": "true", "filters": json.dumps({"ancestor": [image_id]})},
            op="container_list",
        )
        return [
            ContainerRef(
                id=str(c.get("Id", "")), name=str((c.get("Names") or ["/"])[0]).lstrip("/")
            )
            for c in raw
            if c.get("ImageID") == image_id
        ]

    # -- containers -------------------------------------------------------------

    async def list_container_ids(self, label: str) -> list[str]:
        """IDs of all containers (running or not) that carry `label`."""
        raw: list[JSON] = await self.request(
            "containers/json",
            params={"all": "true", "filters": json.dumps({"label": [label]})},
            op="container_list",
        )
        return [str(c["Id"]) for c in raw if c.get("Id")]

    async def inspect_container(self, container_id: str) -> ContainerInfo:
        raw: JSON = await self._json(f"containers/{container_id}/json", op="container_inspect")
        return _container_info(raw)

    async def create_container(self, spec: ContainerSpec) -> str:
        if self.version is None:
            await self._client()  # the body depends on the negotiated version
        raw: JSON = await self._json(
            "containers/create",
            "POST",
            params={"name": spec.name},
            body=_create_body(spec, self._api()),
            op="container_create",
        )
        return str(raw["Id"])

    async def start_container(self, container_id: str) -> None:
        await self._json(f"containers/{container_id}/start", "POST", op="container_start")

    async def stop_container(self, container_id: str, timeout_s: int) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after `timeout_s`."""
        await self._json(
            f"containers/{container_id}/stop",
            "POST",
            params={"t": str(timeout_s)},
            op="container_stop",
        )

    async def remove_container(self, container_id: str) -> None:
        await self._json(
            f"containers/{container_id}",
            "DELETE",
            params={"force": "true", "v": "true"},
            op="container_remove",
        )

    async def events(
        self, types: tuple[str, ...], actions: frozenset[str]
    ) -> AsyncIterator[tuple[str, str, str]]:
        """(type, action, actor id) for every event of `types` whose action is one of
        `actions` (exactly: "exec_start: sh" is not "start"), until the stream ends.

        The first item is ("", "subscribed", ""), yielded once Docker has accepted
        the subscription: a caller can then list without missing anything in
        between. Each call opens its own stream (aiodocker's single events
        object serves one filter set), on the unbounded pool.
        """
        response = await self._open_stream(
            "events",
            "GET",
            params={"filters": json.dumps({"type": list(types), "event": sorted(actions)})},
        )
        try:
            yield "", "subscribed", ""
            # Lines split here, not by aiohttp's readline: an event carries the container's
            # labels, and a pod with large annotations makes lines over aiohttp's limit.
            pending = b""
            async for data in response.content.iter_any():
                pending += data
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_EVENT_BYTES:
                    log.warning("docker_event_too_large", bytes=len(pending))
                    pending = b""  # dropped; the next resync covers it
                for line in lines:
                    parsed = _event(line)
                    if parsed is not None:
                        yield parsed
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.close()

    async def exec_create(
        self, container_id: str, cmd: list[str], *, stdin: bool, tty: bool, user: str = ""
    ) -> str:
        body = {
            "Cmd": cmd,
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
            "User": user,
        }
        raw: JSON = await self._json(
            f"containers/{container_id}/exec", "POST", body=body, op="exec_create"
        )
        return str(raw["Id"])

    async def exec_run(
        self, container_id: str, cmd: list[str], *, stdin: bool, tty: bool
    ) -> tuple[str, Hijacked]:
        """Create an exec and start it hijacked (stdin can be half-closed, which aiodocker
        cannot do): its id and stream. The start's own connection is opened while Docker
        creates the exec, not after it."""
        await self._client()
        connecting = asyncio.create_task(open_raw(self.endpoint))
        try:
            exec_id = await self.exec_create(container_id, cmd, stdin=stdin, tty=tty)
            connection = await connecting
        except BaseException:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await Hijacked(*await connecting).close()
            raise
        path = f"{self.api_prefix}/exec/{exec_id}/start"
        return exec_id, await upgrade(connection, path, {"Detach": False, "Tty": tty})

    async def exec_resize(self, exec_id: str, width: int, height: int) -> None:
        await self._json(
            f"exec/{exec_id}/resize",
            "POST",
            params={"h": str(height), "w": str(width)},
            op="exec_resize",
        )

    async def attach(
        self, container_id: str, *, stdin: bool, stdout: bool, stderr: bool
    ) -> Hijacked:
        """A hijacked attach to the container's stdio (new output only, no logs replay)."""
        await self._client()
        query = f"stream=1&stdin={int(stdin)}&stdout={int(stdout)}&stderr={int(stderr)}"
        return await hijack(
            self.endpoint, f"{self.api_prefix}/containers/{container_id}/attach?{query}", None
        )

    async def container_resize(self, container_id: str, width: int, height: int) -> None:
        await self.request(
            f"containers/{container_id}/resize",
            "POST",
            params={"h": str(height), "w": str(width)},
            op="container_resize",
        )

    async def exec_inspect(self, exec_id: str) -> tuple[bool, int | None, int]:
        """(running, exit code, pid) of an exec."""
        raw: JSON = await self._json(f"exec/{exec_id}/json", op="exec_inspect")
        return bool(raw.get("Running")), raw.get("ExitCode"), int(raw.get("Pid") or 0)

    async def checkpoint_create(
        self, container_id: str, checkpoint_id: str, directory: str, *, exit: bool = False
    ) -> None:
        """`POST /containers/{id}/checkpoints` (experimental daemons with CRIU only)."""
        body = {"CheckpointID": checkpoint_id, "CheckpointDir": directory, "Exit": exit}
        await self.request(
            f"containers/{container_id}/checkpoints", "POST", body=body, op="checkpoint"
        )

    def pull_headers(self, auth: RegistryAuth) -> dict[str, str]:
        """Headers for an image pull with `auth`; empty without credentials."""
        return {} if auth.is_empty() else {"X-Registry-Auth": registry_auth_header(auth)}
