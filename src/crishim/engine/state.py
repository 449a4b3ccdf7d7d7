"""The Docker daemon as crishim last saw it, kept in memory for the polled calls.

Version, Status and RuntimeConfig are polled by the kubelet and by every crictl
command; RunPodSandbox and CreateContainer need the daemon's cgroup driver and
runtimes. None of them asks Docker: they read what is kept here, current by

  - a heartbeat in the background: `/_ping` every `heartbeat` seconds, bounded
    by `ping_timeout`, so a dead or hung daemon shows in Status within one beat
    and a timeout, whether or not anyone is calling;
  - `refresh()`: version (renegotiated when the engine changed), `/info` and, in
    docker network mode, the default bridge. Run at start, whenever the store's
    event stream (re)subscribes (a restarted daemon may be another version with
    other settings), when the heartbeat sees the daemon come back, and on
    Docker's `daemon reload` event (SIGHUP: runtimes may change). Nothing else
    changes them (the default bridge cannot be removed), so there is no timer;
  - `lost()`: the store's event stream broke, which is how a daemon that exits
    is noticed at once.

The cost moves off the call path: one ping per beat, whatever the call rate.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from crishim.common import deadlines, errors, tasks
from crishim.engine.docker import DockerClient
from crishim.engine.docker.types import EngineInfo, NetworkState

log = structlog.get_logger(__name__)

HEARTBEAT = 2.0  # seconds between pings
DAEMON_ACTIONS = frozenset({"reload"})  # the daemon events followed (daemon_event)


@dataclass(frozen=True, slots=True)
class Bridge:
    """Docker's default bridge network (docker network mode), or why it is unusable."""

    state: NetworkState | None
    error: str = ""


class Engine:
    def __init__(
        self,
        docker: DockerClient,
        *,
        ping_timeout: float,
        watch_bridge: bool,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.docker = docker
        self.ping_timeout = ping_timeout
        self.watch_bridge = watch_bridge
        self.heartbeat = heartbeat
        self.info: EngineInfo | None = None
        self.bridge = Bridge(None, "not checked yet")
        self.reachable = False
        self.error = "docker has not been checked yet"
        self._reload = False
        self._refreshing: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None

    # -- what the calls read ------------------------------------------------------

    async def current_info(self) -> EngineInfo:
        """The daemon's settings; asks Docker only while they were never known."""
        if self.info is None:
            await self.refresh()
        assert self.info is not None
        return self.info

    # -- keeping it current -------------------------------------------------------

    async def start(self) -> None:
        """First check now (bounded, so a hung daemon cannot hold the start), then beat."""
        try:
            async with asyncio.timeout(self.ping_timeout):
                await self._check()
        except TimeoutError:
            self._unreachable(f"docker ping did not finish within {self.ping_timeout:.1f}s")
        self._beat = asyncio.create_task(self._beating(), name="docker-heartbeat")

    async def close(self) -> None:
        await tasks.stop(self._beat)
        with contextlib.suppress(Exception):  # its failure was reported to its callers
            await tasks.stop(self._refreshing)

    async def refresh(self) -> None:
        """Version, /info and the bridge, read again; concurrent callers share one read."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(), name="docker-refresh")
        await asyncio.shield(self._refreshing)

    async def resubscribed(self) -> None:
        """The store's event stream (re)connected: the daemon may have been replaced."""
        try:
            await self.refresh()
        except errors.CrishimError as exc:
            log.warning("docker_refresh_failed", error=str(exc))

    def daemon_event(self, action: str, _actor: str) -> None:
        """`daemon reload` (SIGHUP): runtimes and other settings may have changed."""
        if action == "reload":
            self._reload = True  # the next beat reads them again

    def lost(self, error: str) -> None:
        """The daemon is gone (its event stream broke): not ready until it answers again."""
        self._unreachable(error)

    async def _refresh(self) -> None:
        async with deadlines.limit(self.ping_timeout, "docker version"):
            await self.docker.engine_version()
        async with deadlines.limit(self.ping_timeout, "docker info"):
            self.info = await self.docker.info()
        if self.watch_bridge:
            self.bridge = await self._read_bridge()

    async def _read_bridge(self) -> Bridge:
        try:
            async with deadlines.limit(self.ping_timeout, "docker network inspect"):
                return Bridge(await self.docker.network("bridge"))
        except errors.NotFound:
            return Bridge(None, "docker's default bridge network does not exist")
        except errors.CrishimError as exc:
            return Bridge(None, str(exc))

    async def _check(self) -> None:
        try:
            async with deadlines.limit(self.ping_timeout, "docker ping"):
                await self.docker.ping()
            if not self.reachable or self.info is None or self._reload:
                self._reload = False
                await self.refresh()
        except errors.CrishimError as exc:
            self._unreachable(str(exc))
            return
        if not self.reachable:
            log.info("docker_reachable", endpoint=self.docker.endpoint)
        self.reachable, self.error = True, ""

    def _unreachable(self, error: str) -> None:
        if self.reachable or error != self.error:
            log.warning("docker_not_ready", error=error)
        self.reachable, self.error = False, error

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._check()
            except Exception:
                log.exception("docker_heartbeat_failed")
