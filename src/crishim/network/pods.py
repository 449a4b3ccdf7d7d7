"""Pod networks: the network mode, CNI setup and teardown of each pod, readiness.

Two modes (setting `network_plugin`):
  cni     the default, as on every cluster node. The pause container runs with
          Docker's network `none`; once it runs, its namespace is pinned
          (netns.py), a checkpoint is written, and CNI ADD attaches it to the
          network found in `cni_conf_dir`. StopPodSandbox runs DEL (from the
          checkpoint, so a restart or a dead pause changes nothing), then
          releases the handle. With no usable config, NetworkReady is false
          and RunPodSandbox of a pod that is not hostNetwork is refused.
  docker  Docker's default bridge, with Docker port bindings for hostPorts
          (local development). Nothing to set up or tear down here.
hostNetwork pods use the host's network in both modes.

Whatever the mode, a sandbox that has a checkpoint is torn down by CNI: a
node switched from cni to docker mode still releases its CNI pods' addresses.

The config directory is looked at every WATCH_INTERVAL seconds (a stat of a
few files, in a thread) and reloaded when a file or a plugin directory
changed, so a config written by a network DaemonSet is picked up without a
restart. Readiness, pod IPs and checkpoints are answered from memory.

Setup, teardown and removal of one sandbox are serialised by a per-sandbox
lock: concurrent StopPodSandbox calls run DEL once, and a RemovePodSandbox
waits for a StopPodSandbox in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from crishim.common import deadlines, errors, tasks
from crishim.network import conf, forward, netns, podaddrs
from crishim.network.checkpoint import (
    ADOPTED_WITHOUT_STATE,
    Checkpoint,
    CheckpointDir,
    from_libcni_cache,
)
from crishim.network.cni import Attachment, Cni
from crishim.network.rechecked import Rechecked

log = structlog.get_logger(__name__)

MODES = ("cni", "docker")
WATCH_INTERVAL = 1.0
STATUS_INTERVAL = 10.0  # CNI STATUS (1.1.0 configs) at most this often
CHECK_MAX_AGE = 30.0  # a kept CNI CHECK older than this is run again, in the background
FIREWALL_INTERVAL = 60.0  # the FORWARD policy (Docker may restart and set it) looked at
IFNAME = "eth0"
UNDO_TIMEOUT = 60.0
INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
MAX_BURST = 2**32 - 1  # "no burst limit", as containerd passes it to the bandwidth plugin


@dataclass(frozen=True, slots=True)
class PortMapping:
    protocol: str  # tcp | udp | sctp
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class PodNetworkConfig:
    """What a pod's network setup needs from its RunPodSandbox request."""

    namespace: str
    name: str
    uid: str
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    message: str = ""


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
# The kubelet's own bounds for these annotations (bits per second).
MIN_BANDWIDTH, MAX_BANDWIDTH = 1000, 10**15


def parse_bandwidth(key: str, value: str) -> int:
    """A Kubernetes quantity (`10M`, `1Gi`, `500k`) as bits per second, within kubelet's bounds."""
    match = _QUANTITY.match(value.strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise errors.InvalidArgument(f"annotation {key}: {value!r} is not a quantity")
    bits = int(float(match.group(1)) * _SUFFIXES[match.group(2)])
    if not MIN_BANDWIDTH <= bits <= MAX_BANDWIDTH:
        raise errors.InvalidArgument(
            f"annotation {key}: {value!r} is outside {MIN_BANDWIDTH}..{MAX_BANDWIDTH} bit/s"
        )
    return bits


def capability_args(config: PodNetworkConfig, pod_cidrs: tuple[str, ...]) -> dict[str, Any]:
    """The runtimeConfig arguments a plugin may declare (libcni filters per plugin)."""
    args: dict[str, Any] = {
        "portMappings": [
            {
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol,
                "hostIP": p.host_ip,
            }
            for p in config.port_mappings
            if p.host_port > 0
        ],
        "dns": {
            "servers": list(config.dns_servers),
            "searches": list(config.dns_searches),
            "options": list(config.dns_options),
        },
    }
    bandwidth: dict[str, int] = {}
    if INGRESS_ANNOTATION in config.annotations:
        bandwidth["ingressRate"] = parse_bandwidth(
            INGRESS_ANNOTATION, config.annotations[INGRESS_ANNOTATION]
        )
        bandwidth["ingressBurst"] = MAX_BURST
    if EGRESS_ANNOTATION in config.annotations:
        bandwidth["egressRate"] = parse_bandwidth(
            EGRESS_ANNOTATION, config.annotations[EGRESS_ANNOTATION]
        )
        bandwidth["egressBurst"] = MAX_BURST
    if bandwidth:
        args["bandwidth"] = bandwidth
    if pod_cidrs:
        args["ipRanges"] = [[{"subnet": cidr}] for cidr in pod_cidrs]
    return args


def cni_args(config: PodNetworkConfig, sandbox_id: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS as the kubelet's runtimes pass them."""
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", config.namespace),
        ("K8S_POD_NAME", config.name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", config.uid),
    )


class PodNetworks:
    def __init__(
        self,
        mode: str,
        state_dir: Path,
        conf_dir: str,
        bin_dir: str,
        *,
        cri_dockerd_root: str = "/var/lib/cri-dockerd",
        cni_cache_dir: str = "/var/lib/cni",
    ) -> None:
        if mode not in MODES:
            raise errors.InvalidArgument(f"network_plugin: one of {', '.join(MODES)}")
        self.mode = mode
        self.conf_dir = Path(conf_dir)
        self.bin_dirs = conf.split_path(bin_dir)
        self.cni = Cni(self.bin_dirs)
        self.pod_cidrs: tuple[str, ...] = ()
        self._netns_dir = state_dir / "netns"
        self._checkpoints = CheckpointDir(state_dir / "sandboxes")
        self._cri_dockerd_root = Path(cri_dockerd_root)
        self._cni_cache_dir = Path(cni_cache_dir)
        self._warned_stateless = False  # one warning names the flags (pods: crishim check)
        self._cache: dict[str, Checkpoint] = {}
        self.version = 0  # bumped on every change of _cache (the pod list memo keys on it)
        self._loaded = conf.Loaded(None, "network config not loaded yet")
        self._status_problem = ""
        self._locks: dict[str, asyncio.Lock] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._firewall_note = ""  # why FORWARD may drop the pods of a network not crishim's
        self._checks = Rechecked(self.check, CHECK_MAX_AGE)

    # -- life ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load checkpoints, prepare the netns directory, and (cni mode) watch the config."""
        self._cache = await asyncio.to_thread(self._checkpoints.load_all)
        self.version += 1
        if self.mode == "cni" or self._cache:
            await asyncio.to_thread(netns.prepare_dir, self._netns_dir)
        if self.mode == "cni":
            await self._reload()
            self._watcher = asyncio.create_task(self._watch(), name="cni-config-watch")
        log.info(
            "network_started",
            mode=self.mode,
            checkpoints=len(self._cache),
            network=self._loaded.network.name if self._loaded.network else None,
            problem=self._loaded.problem or None,
        )

    async def close(self) -> None:
        await tasks.stop(self._watcher)
        self._watcher = None
        await self._checks.close()

    async def _watch(self) -> None:
        last_status = last_firewall = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                sig = await asyncio.to_thread(conf.signature, self.conf_dir, self.bin_dirs)
                if sig != self._loaded.signature:
                    await self._reload()
                    last_status = last_firewall = 0.0
                network = self._loaded.network
                if network is not None and loop.time() - last_status >= STATUS_INTERVAL:
                    last_status = loop.time()
                    await self._run_status(network)
                if network is not None and loop.time() - last_firewall >= FIREWALL_INTERVAL:
                    last_firewall = loop.time()
                    await self._check_firewall(network)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad look
                log.exception("cni_watch_failed")

    async def _reload(self) -> None:
        loaded = await asyncio.to_thread(conf.load, self.conf_dir, self.bin_dirs)
        before = self._loaded
        self._loaded = loaded
        self._status_problem = ""
        if (before.network, before.problem) != (loaded.network, loaded.problem):
            if loaded.network is not None:
                log.info(
                    "cni_config_loaded",
                    network=loaded.network.name,
                    cni_version=loaded.network.cni_version,
                    source=loaded.network.source,
                    plugins=[p.type for p in loaded.network.plugins],
                )
            else:
                log.warning("cni_config_unusable", problem=loaded.problem)
        self._changed.set()

    async def _check_firewall(self, network: conf.NetworkList) -> None:
        """Whether the node's FORWARD chain would drop this network's pods (forward.py):
        said on NetworkReady (still true: the network may accept them itself) and logged
        once per change."""
        found = await forward.diagnose(network.name, tuple(p.type for p in network.plugins))
        note = "" if found.ok else found.message
        if note and note != self._firewall_note:
            log.warning("pod_forward_may_drop", network=network.name, problem=note)
        self._firewall_note = note

    async def _run_status(self, network: conf.NetworkList) -> None:
        try:
            await self.cni.status(network)
        except errors.CrishimError as exc:
            if self._status_problem != str(exc):
                log.warning("cni_status_not_ready", error=str(exc))
            self._status_problem = str(exc)
        else:
            self._status_problem = ""

    # -- readiness ----------------------------------------------------------------

    def readiness(self) -> Readiness:
        """NetworkReady in cni mode (docker mode asks Docker's bridge, elsewhere)."""
        if self._loaded.network is None:
            return Readiness(False, self._loaded.problem)
        if self._status_problem:
            return Readiness(False, self._status_problem)
        return Readiness(True, self._firewall_note)

    def describe(self) -> dict[str, Any]:
        """For Status(verbose) and `crishim check`."""
        network = self._loaded.network
        return {
            "mode": self.mode,
            "confDir": str(self.conf_dir),
            "binDirs": list(self.bin_dirs),
            "network": network.name if network else None,
            "source": network.source if network else None,
            "cniVersion": network.cni_version if network else None,
            "plugins": [p.type for p in network.plugins] if network else [],
            "problem": self.readiness().message or None,
            "podCIDRs": list(self.pod_cidrs),
        }

    # -- what the pause container is created with -----------------------------------

    def docker_network_mode(self, host_network: bool) -> str:
        if host_network:
            return "host"
        return "none" if self.mode == "cni" else "bridge"

    def uses_docker_ports(self, host_network: bool) -> bool:
        return self.mode == "docker" and not host_network

    def require_ready(self, host_network: bool) -> None:
        """RunPodSandbox of a pod-network pod needs a usable network (cni mode)."""
        if self.mode != "cni" or host_network:
            return
        ready = self.readiness()
        if not ready.ready:
            raise errors.FailedPrecondition(f"the pod network is not ready: {ready.message}")

    # -- per sandbox -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, sandbox_id: str) -> Any:
        lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(sandbox_id) is lock:
                del self._locks[sandbox_id]

    def checkpoint(self, sandbox_id: str) -> Checkpoint | None:
        return self._cache.get(sandbox_id)

    def ips(self, sandbox_id: str) -> tuple[str, ...] | None:
        """The pod's IPs from its checkpoint (IPv4 first); None when it has none."""
        cp = self._cache.get(sandbox_id)
        return cp.ips if cp is not None else None

    def netns_path(self, sandbox_id: str) -> str:
        """The pinned namespace of a CNI pod, or "" (use the pause process's)."""
        cp = self._cache.get(sandbox_id)
        return cp.netns if cp is not None and not cp.torn_down and cp.netns else ""

    def teardown_needs_pause(self, sandbox_id: str, docker_network_mode: str) -> bool:
        """Whether tearing the pod's network down reads the running pause: a pod set up
        by cri-dockerd is adopted from its pause's namespace, and a checkpoint without
        a pinned namespace has no other. A pod of ours is torn down in its pinned one."""
        cp = self._cache.get(sandbox_id)
        if cp is None:
            return self._from_cri_dockerd(docker_network_mode)
        return not cp.torn_down and not cp.netns

    def _from_cri_dockerd(self, docker_network_mode: str) -> bool:
        """Whether a sandbox without a checkpoint of ours was set up by cri-dockerd's
        CNI (to be adopted from what it left)."""
        return docker_network_mode == "none" and self.mode == "cni"

    async def setup(self, sandbox_id: str, pid: int, config: PodNetworkConfig) -> tuple[str, ...]:
        """Pin the namespace of `pid`, checkpoint, CNI ADD; undo all of it on failure."""
        network = self._loaded.network
        if network is None:
            raise errors.FailedPrecondition(f"the pod network is not ready: {self._loaded.problem}")
        handle = self._netns_dir / sandbox_id
        cp = Checkpoint(
            sandbox_id=sandbox_id,
            network=network.to_json(),
            netns=str(handle),
            ifname=IFNAME,
            args=cni_args(config, sandbox_id),
            capability_args=capability_args(config, self.pod_cidrs),
        )
        async with self._locked(sandbox_id):
            await asyncio.to_thread(netns.pin, pid, handle)
            try:
                await self._save(cp)
                result = await self.cni.add(network, self._attachment(cp))
                cp = cp.with_result(result)
                await self._save(cp)
                if network.name == forward.OWN_NETWORK:
                    await forward.open_pod(sandbox_id, cp.ips)
            except BaseException as exc:
                log.warning("cni_add_failed", pod_sandbox_id=sandbox_id, error=str(exc))
                # Not under the caller's deadline, which may be what cut the ADD short.
                await asyncio.shield(deadlines.detached(self._undo_setup(network, cp)))
                raise
        log.info("pod_network_ready", pod_sandbox_id=sandbox_id, network=network.name, ips=cp.ips)
        return cp.ips

    async def _undo_setup(self, network: conf.NetworkList, cp: Checkpoint) -> None:
        """DEL what a failed or cancelled ADD may have half done, then drop it all."""
        try:
            async with asyncio.timeout(UNDO_TIMEOUT):
                await self.cni.delete(network, self._attachment(cp), cp.result)
                if network.name == forward.OWN_NETWORK:
                    await forward.close_pod(cp.sandbox_id, cp.ips)
        except (errors.CrishimError, TimeoutError) as exc:
            # Keep the checkpoint and handle: StopPodSandbox retries the DEL.
            log.error("cni_undo_failed", pod_sandbox_id=cp.sandbox_id, error=str(exc))
            return
        await self._forget(cp.sandbox_id)

    async def teardown(self, sandbox_id: str, pid: int, docker_network_mode: str) -> None:
        """CNI DEL for a sandbox set up by CNI (idempotent); keeps the IPs for status.

        A sandbox with Docker network `none` and no checkpoint of ours was set
        up by cri-dockerd's CNI: adopted from what it left, then torn down.
        """
        async with self._locked(sandbox_id):
            cp = self._cache.get(sandbox_id)
            if cp is None and self._from_cri_dockerd(docker_network_mode):
                cp = await self._adopt(sandbox_id, pid)
            if cp is None or cp.torn_down:
                return
            network = conf.parse_list(cp.network, f"checkpoint of {sandbox_id}")
            await self.cni.delete(network, self._attachment(cp), cp.result)
            if network.name == forward.OWN_NETWORK:
                await forward.close_pod(sandbox_id, cp.ips)
            if cp.netns:
                await asyncio.to_thread(netns.release, Path(cp.netns))
            await self._save(replace(cp, torn_down=True))
        log.info("pod_network_removed", pod_sandbox_id=sandbox_id, network=network.name)

    async def remove(self, sandbox_id: str, pid: int, docker_network_mode: str) -> None:
        """Tear down if still needed, then drop the checkpoint."""
        await self.teardown(sandbox_id, pid, docker_network_mode)
        async with self._locked(sandbox_id):
            await self._forget(sandbox_id)

    async def last_check(self, sandbox_id: str) -> dict[str, str]:
        """The pod's last CNI CHECK and when it ran (network/rechecked.py: run on the
        first ask, then again in the background once CHECK_MAX_AGE old)."""
        cp = self._cache.get(sandbox_id)
        if cp is None or cp.torn_down or cp.result is None:
            return {"result": "no network attachment"}
        return (await self._checks.get(sandbox_id)).report()

    async def check(self, sandbox_id: str) -> str:
        """CNI CHECK of a set-up pod: "ok", "not supported", or the plugin's complaint.
        Never beside the pod's ADD or DEL (the CNI spec forbids it): under its lock."""
        async with self._locked(sandbox_id):
            cp = self._cache.get(sandbox_id)
            if cp is None or cp.torn_down or cp.result is None:
                return "no network attachment"
            network = conf.parse_list(cp.network, f"checkpoint of {sandbox_id}")
            try:
                ran = await self.cni.check(network, self._attachment(cp), cp.result)
            except errors.CrishimError as exc:
                return str(exc)
        return "ok" if ran else f"CHECK is not supported by cniVersion {network.cni_version}"

    async def gc(self, live_sandboxes: set[str]) -> None:
        """Checkpoints of sandboxes Docker no longer has: DEL them; then CNI GC (1.1.0)."""
        for sandbox_id in [s for s in self._cache if s not in live_sandboxes]:
            try:
                await self.remove(sandbox_id, 0, "")
                log.info("pod_network_collected", pod_sandbox_id=sandbox_id)
            except errors.CrishimError as exc:
                log.warning("pod_network_gc_failed", pod_sandbox_id=sandbox_id, error=str(exc))
        network = self._loaded.network
        if network is not None:
            valid = [(s, cp.ifname) for s, cp in self._cache.items() if not cp.torn_down]
            try:
                await self.cni.gc(network, valid)
            except errors.CrishimError as exc:
                log.warning("cni_gc_failed", error=str(exc))

    # -- helpers ------------------------------------------------------------------------

    def _attachment(self, cp: Checkpoint) -> Attachment:
        return Attachment(
            container_id=cp.sandbox_id,
            netns=cp.netns,
            ifname=cp.ifname,
            args=cp.args,
            capability_args=cp.capability_args,
        )

    async def _save(self, cp: Checkpoint) -> None:
        await asyncio.to_thread(self._checkpoints.write, cp)
        self._cache[cp.sandbox_id] = cp
        self.version += 1

    async def _forget(self, sandbox_id: str) -> None:
        if sandbox_id not in self._cache and self.mode != "cni":
            return  # Docker's network: no checkpoint, no pinned namespace, no thread trip

        def forget() -> None:  # one worker-thread trip for both
            netns.release(self._netns_dir / sandbox_id)
            self._checkpoints.remove(sandbox_id)

        await asyncio.to_thread(forget)
        self._checks.forget(sandbox_id)
        if self._cache.pop(sandbox_id, None) is not None:
            self.version += 1

    async def _adopt(self, sandbox_id: str, pid: int) -> Checkpoint | None:
        """A checkpoint for a CNI pod that cri-dockerd set up, from what it left on disk, or,
        where that cannot be found, from what its running namespace shows."""
        path = f"/proc/{pid}/ns/net" if pid > 0 else ""
        cp = await asyncio.to_thread(
            from_libcni_cache, self._cni_cache_dir, sandbox_id, path, self._cri_dockerd_root
        )
        if cp is None:
            cp = await self._adopt_without_state(sandbox_id, pid, path)
        if cp is None:
            return None
        if pid > 0:
            handle = self._netns_dir / sandbox_id
            try:
                await asyncio.to_thread(netns.pin, pid, handle)
                cp = replace(cp, netns=str(handle))
            except OSError as exc:
                log.warning("netns_pin_failed", pod_sandbox_id=sandbox_id, error=str(exc))
        await self._save(cp)
        log.info("pod_network_adopted", pod_sandbox_id=sandbox_id, source="cri-dockerd")
        return cp

    async def _adopt_without_state(self, sandbox_id: str, pid: int, path: str) -> Checkpoint | None:
        """cri-dockerd's CNI cache was not found (crishim's --cni-cache-dir and
        --cri-dockerd-root point elsewhere than cri-dockerd's did): the pod's addresses are
        read from its namespace, and a DEL with the network configured now, the pod's
        namespace, interface and addresses releases them (host-local frees by container id,
        bridge removes the veth, portmap its chains)."""
        network = self._loaded.network
        if pid <= 0 or network is None:
            return None
        cidrs = await asyncio.to_thread(podaddrs.read, pid, IFNAME)
        if not cidrs:
            return None
        result = {
            "cniVersion": network.cni_version,
            "interfaces": [{"name": IFNAME, "sandbox": path}],
            "ips": [{"address": c, "interface": 0} for c in cidrs],
        }
        if not self._warned_stateless:
            self._warned_stateless = True
            log.warning(
                "pod_network_adopted_without_state",
                pod_sandbox_id=sandbox_id,
                ips=[c.split("/")[0] for c in cidrs],
                cni_cache_dir=str(self._cni_cache_dir),
                cri_dockerd_root=str(self._cri_dockerd_root),
                hint="cri-dockerd's CNI state is not there: set --cni-cache-dir (and "
                "--cri-dockerd-root, for hostPorts) to where cri-dockerd kept it; until then "
                "its pods are torn down from their namespaces' addresses and today's network "
                "config (crishim check lists them)",
            )
        return Checkpoint(
            sandbox_id=sandbox_id,
            network=network.to_json(),
            netns=path,
            ifname=IFNAME,
            adopted_from=ADOPTED_WITHOUT_STATE,
        ).with_result(result)

    async def adopt_running(self, sandboxes: Iterator[tuple[str, int]]) -> None:
        """At start (cni mode): checkpoint running cri-dockerd CNI pods while their pause lives."""
        if self.mode != "cni":
            return
        for sandbox_id, pid in sandboxes:
            if sandbox_id in self._cache or pid <= 0:
                continue
            async with self._locked(sandbox_id):
                if sandbox_id not in self._cache:
                    await self._adopt(sandbox_id, pid)
