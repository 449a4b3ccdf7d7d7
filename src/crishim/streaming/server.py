"""The streaming server: where the URLs of Exec, Attach and PortForward lead.

An aiohttp app on its own address (127.0.0.1, a free port, by default), plain
or TLS. The RPCs store their request under a single-use token
(streaming/tokens.py) and return an absolute URL: `http://host:port/exec/<token>`
(scheme-less URLs break the kubelet's WebSocket translation). A request for a
URL whose token is unknown, used or expired is answered 404 and reaches no
container. A connection upgrading to WebSocket gets the channel protocols;
any other gets SPDY/3.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import structlog
from aiohttp import web

from crishim.common import errors
from crishim.config import Config, split_host_port
from crishim.engine.docker import DockerClient
from crishim.pods.sandboxes import Sandboxes
from crishim.streaming import portforward, remotecommand
from crishim.streaming.stdio import Stdio, run_attach, run_exec
from crishim.streaming.tokens import Tokens

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ExecTarget:
    container_id: str
    cmd: list[str]
    options: remotecommand.Options


@dataclass(frozen=True, slots=True)
class AttachTarget:
    container_id: str
    options: remotecommand.Options


@dataclass(frozen=True, slots=True)
class PortForwardTarget:
    sandbox_id: str
    ports: list[int]


def _is_websocket(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class StreamingServer:
    def __init__(self, config: Config, docker: DockerClient, sandboxes: Sandboxes) -> None:
        self._config = config
        self._docker = docker
        self._sandboxes = sandboxes
        self.tokens = Tokens(ttl=config.stream_token_ttl)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._handlers: set[asyncio.Task] = set()

    # -- lifecycle --

    def _app(self) -> web.Application:
        app = web.Application()
        for kind, handler in (
            ("exec", self._exec),
            ("attach", self._attach),
            ("portforward", self._portforward),
        ):
            app.router.add_route("GET", f"/{kind}/{{token}}", handler)
            app.router.add_route("POST", f"/{kind}/{{token}}", handler)
        return app

    def _ssl(self) -> ssl.SSLContext | None:
        if not self._config.streaming_tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._config.streaming_tls_cert, self._config.streaming_tls_key)
        return context

    async def start(self) -> str:
        host, port = split_host_port(self._config.streaming_address, "streaming_address")
        context = self._ssl()
        self._runner = web.AppRunner(self._app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=context)
        await site.start()
        sockets = site._server.sockets if site._server else []
        bound_host, bound_port = sockets[0].getsockname()[:2]
        if bound_host in ("0.0.0.0", "::"):
            bound_host = "127.0.0.1"  # the kubelet dials it from this node
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"{'https' if context else 'http'}://{shown}:{bound_port}"
        log.info("streaming_listening", url=self.base_url)
        return self.base_url

    async def stop(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()

    # -- for the RPCs --

    def url(self, kind: str, target: object) -> str:
        if not self.base_url:
            raise errors.Unavailable("the streaming server is not running")
        return f"{self.base_url}/{kind}/{self.tokens.issue(kind, target)}"

    # -- handlers --

    def _track(self) -> asyncio.Task | None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        return task

    async def _serve_command(
        self, request: web.Request, options: remotecommand.Options, run, kind: str, cid: str
    ) -> web.StreamResponse:
        self._track()
        idle = self._config.stream_idle_timeout
        log.info("stream_started", kind=kind, container_id=cid, websocket=_is_websocket(request))
        if _is_websocket(request):
            return await remotecommand.serve_websocket(request, options, run, idle_timeout=idle)
        return await remotecommand.serve_spdy(request, options, run, idle_timeout=idle)

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        target = self.tokens.take("exec", request.match_info["token"])
        if not isinstance(target, ExecTarget):
            raise web.HTTPNotFound()

        async def run(io: Stdio) -> int:
            return await run_exec(self._docker, target.container_id, target.cmd, io)

        return await self._serve_command(request, target.options, run, "exec", target.container_id)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        target = self.tokens.take("attach", request.match_info["token"])
        if not isinstance(target, AttachTarget):
            raise web.HTTPNotFound()

        async def run(io: Stdio) -> None:
            await run_attach(self._docker, target.container_id, io)

        return await self._serve_command(
            request, target.options, run, "attach", target.container_id
        )

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        target = self.tokens.take("portforward", request.match_info["token"])
        if not isinstance(target, PortForwardTarget):
            raise web.HTTPNotFound()
        self._track()
        sandbox_id = target.sandbox_id

        async def netns_of() -> str:
            view = self._sandboxes.get(sandbox_id)
            if not view.ready or view.pid <= 0:
                raise errors.FailedPrecondition(f"pod sandbox {sandbox_id} is not running")
            return view.netns_path or f"/proc/{view.pid}/ns/net"

        idle = self._config.stream_idle_timeout
        log.info("stream_started", kind="portforward", sandbox_id=sandbox_id)
        if _is_websocket(request):
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            if portforward.TUNNEL_PROTOCOL in (p.strip() for p in offered.split(",")):
                return await portforward.serve_tunneled_spdy(
                    request, sandbox_id, netns_of, idle_timeout=idle
                )
            return await portforward.serve_websocket(
                request, sandbox_id, target.ports, netns_of, idle_timeout=idle
            )
        return await portforward.serve_spdy(request, sandbox_id, netns_of, idle_timeout=idle)
