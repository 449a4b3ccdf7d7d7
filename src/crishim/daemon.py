"""Wires crishim together and runs it until SIGTERM or SIGINT.

Start: connect to Docker (a daemon that is down is reported by Status, not a
reason to refuse to start), bind the CRI socket, serve, tell systemd READY.

Stop: remove the socket path (no new clients), answer new calls with
UNAVAILABLE, let calls in flight finish within the grace period, close, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import structlog
from aiohttp import web
from grpclib.server import Server

from crishim.common import errors, looplag, metrics, sdnotify, tasks
from crishim.common.fsusage import LayerMeter
from crishim.config import Config, split_host_port
from crishim.engine.docker import DockerClient
from crishim.engine.state import DAEMON_ACTIONS, Engine
from crishim.engine.status import RuntimeStatus
from crishim.engine.store import Store
from crishim.images.service import IMAGE_ACTIONS, Images
from crishim.logs.copier import LogManager
from crishim.network.pods import PodNetworks
from crishim.pods.checkpoints import Checkpointer
from crishim.pods.containers import Containers
from crishim.pods.creating import Creator
from crishim.pods.events import EventHub
from crishim.pods.sandboxes import Sandboxes
from crishim.server import instrument
from crishim.server.codec import CriCodec
from crishim.server.image import ImageService
from crishim.server.listen import open_listener
from crishim.server.runtime import RuntimeService
from crishim.stats.collector import StatsCollector
from crishim.streaming.server import StreamingServer

log = structlog.get_logger("crishim")


async def _start_metrics(address: str) -> web.AppRunner | None:
    """/metrics on its own address: a fixed port for Prometheus, apart from streaming URLs."""
    if not address:
        return None
    app = web.Application()
    metrics.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_host_port(address, "metrics_address")
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = [s.getsockname()[:2] for s in (site._server.sockets if site._server else [])]
    log.info("metrics_listening", addresses=[f"{h}:{p}" for h, p in bound])
    return runner


@contextlib.contextmanager
def _startup(what: str) -> Iterator[None]:
    """An OS error while starting `what` becomes one readable line (crishim exits 1)."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise errors.FailedPrecondition(f"{what}: {reason}") from None


def _probe_writable(directory: Path) -> None:
    """Refuse a state dir crishim cannot write (read-only, full) at start, in one line."""
    probe = directory / f".probe-{os.getpid()}"
    probe.write_bytes(b"x")
    probe.unlink()


async def serve(config: Config) -> int:
    async with contextlib.AsyncExitStack() as stack:
        return await _serve(config, stack)


async def _serve(config: Config, stack: contextlib.AsyncExitStack) -> int:
    """Start everything, serve until a signal, stop in order. Whatever started is
    stopped again on the way out, also when a later step of the start fails."""
    with _startup(f"state_dir {config.state_dir}"):
        await asyncio.to_thread(
            Path(config.state_dir).mkdir, parents=True, exist_ok=True, mode=0o700
        )
        await asyncio.to_thread(_probe_writable, Path(config.state_dir))
    docker = DockerClient(config.docker_endpoint)
    stack.push_async_callback(docker.close)
    try:
        # Bounded: a hung daemon must not keep crishim from serving (Status reports it).
        async with asyncio.timeout(10):
            await docker.connect()
    except TimeoutError:
        log.warning("docker_unavailable_at_start", endpoint=docker.endpoint, error="timed out")
    except errors.CrishimError as exc:
        log.warning("docker_unavailable_at_start", endpoint=docker.endpoint, error=str(exc))

    networks = PodNetworks(
        config.network_plugin,
        Path(config.state_dir),
        config.cni_conf_dir,
        config.cni_bin_dir,
        cri_dockerd_root=config.cri_dockerd_root,
        cni_cache_dir=config.cni_cache_dir,
    )
    with _startup(f"pod network state under {config.state_dir}"):
        await networks.start()
    stack.push_async_callback(networks.close)
    engine = Engine(
        docker,
        ping_timeout=config.docker_ping_timeout,
        watch_bridge=config.network_plugin == "docker",
    )
    await engine.start()
    stack.push_async_callback(engine.close)
    status = RuntimeStatus(config, engine, networks)
    inflight = instrument.Inflight()
    images = Images(
        docker,
        engine=engine,
        pause_image=config.pause_image,
        pull_progress_timeout=config.pull_progress_timeout,
        pull_log_interval=config.pull_log_interval,
    )
    store = Store(docker)
    events = EventHub(store)  # before the first sync: it must know what already exists

    async def resubscribed() -> None:
        await engine.resubscribed()
        await images.resubscribed()

    def lost(error: str) -> None:
        engine.lost(error)
        images.lost(error)

    store.on_connect = resubscribed
    store.on_lost = lost
    store.watch("daemon", DAEMON_ACTIONS, engine.daemon_event)
    store.watch("image", IMAGE_ACTIONS, images.image_event)
    stack.push_async_callback(images.close)
    await store.start()
    stack.push_async_callback(store.close)
    if docker.version is not None:
        try:
            # Serve from a complete view when Docker is there; without it, serve anyway.
            async with asyncio.timeout(10):
                await store.synced.wait()
        except TimeoutError:
            log.warning("store_not_synced_at_start")
    creator = Creator(docker, store, Path(config.state_dir), config.leftover_sweep_seconds)
    sandboxes = Sandboxes(
        docker,
        store,
        images,
        networks,
        pause_image=config.pause_image,
        state_dir=Path(config.state_dir),
        engine=engine,
        creator=creator,
    )
    await sandboxes.load_state()
    if store.synced.is_set():
        await sandboxes.reconcile_networks()
    with _startup(f"create marks under {config.state_dir}"):
        await creator.start()  # removes what a killed crishim left mid-create
    stack.push_async_callback(creator.close)
    containers = Containers(docker, store, sandboxes)
    logs = LogManager(docker, store, Path(config.state_dir), config.lock_dir, engine=engine)
    with _startup(f"log state under {config.state_dir}"):
        await logs.start()
    stack.push_async_callback(logs.close)
    streaming = StreamingServer(config, docker, sandboxes)
    with _startup(f"streaming_address {config.streaming_address}"):
        await streaming.start()
    stack.push_async_callback(streaming.stop)
    lag = asyncio.create_task(looplag.watch(metrics.LOOP_LAG_SECONDS.observe), name="loop-lag")
    stack.push_async_callback(tasks.stop, lag)
    stats = StatsCollector(containers, sandboxes, LayerMeter())
    stats.start()
    stack.push_async_callback(stats.close)
    checkpointer = Checkpointer(docker, containers, Path(config.state_dir) / "checkpoints")
    runtime = RuntimeService(
        status, sandboxes, containers, logs, streaming, stats, events, checkpointer
    )
    server = Server(
        [runtime, ImageService(images)],
        codec=CriCodec(config.max_request_bytes),
    )
    instrument.attach(server, inflight)
    with _startup(f"listen {config.listen}"):
        listener = open_listener(config.listen)
    stack.callback(listener.unlink)
    await server.start(sock=listener.sock)
    stack.push_async_callback(_close_server, server)
    with _startup(f"metrics_address {config.metrics_address}"):
        metrics_runner = await _start_metrics(config.metrics_address)
    if metrics_runner is not None:
        stack.push_async_callback(metrics_runner.cleanup)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # What startup made (modules, classes, the first sync's records: ~60 000 objects)
    # lives as long as crishim: a full collection walking it all held the loop ~45 ms
    # at 200 pods, against ~2 ms for what came after. Left out of collections from
    # here; a frozen object is still freed when its last reference goes.
    gc.freeze()
    sdnotify.notify("READY=1")
    log.info(
        "crishim_serving",
        listen=config.listen,
        docker=docker.endpoint,
        pid=os.getpid(),
        gc_frozen=gc.get_freeze_count(),
    )
    await stop.wait()

    log.info("crishim_stopping", inflight=inflight.count, grace_s=config.shutdown_grace_seconds)
    sdnotify.notify("STOPPING=1")
    listener.unlink()
    finished = await inflight.drain(config.shutdown_grace_seconds)
    if not finished:
        log.warning("shutdown_grace_expired", cancelled=inflight.count)
    await stack.aclose()  # server, metrics, stats, streaming, logs, store, network, docker
    log.info("crishim_stopped")
    return 0


async def _close_server(server: Server) -> None:
    server.close()
    with contextlib.suppress(asyncio.CancelledError):
        await server.wait_closed()
