"""Exec, Attach and PortForward: validate, then hand out a streaming URL."""

from __future__ import annotations

import structlog

from crishim.api.runtime import v1 as api
from crishim.common import errors
from crishim.pods.containers import Containers
from crishim.pods.sandboxes import Sandboxes
from crishim.streaming.remotecommand import Options
from crishim.streaming.server import AttachTarget, ExecTarget, PortForwardTarget, StreamingServer


def _options(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Options:
    if tty and stderr:
        raise errors.InvalidArgument("tty and stderr cannot both be set: a TTY has one output")
    if not (stdin or stdout or stderr):
        raise errors.InvalidArgument("one of stdin, stdout or stderr must be set")
    return Options(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)


def _audit(request_id: str) -> None:
    """The API server's audit id of the kubectl exec/attach, on this call's log lines."""
    if request_id:
        structlog.contextvars.bind_contextvars(audit_request_id=request_id[:128])


class StreamRPCs:
    _containers: Containers
    _sandboxes: Sandboxes
    _streaming: StreamingServer

    def _running(self, container_id: str):
        if not container_id:
            raise errors.InvalidArgument("container_id is required")
        view = self._containers.get(container_id)
        if view.state != "running":
            raise errors.FailedPrecondition(
                f"container {container_id} is not running (state {view.state})"
            )
        return view

    async def exec(self, message: api.ExecRequest) -> api.ExecResponse:
        _audit(message.audit_request_id)
        options = _options(message.stdin, message.stdout, message.stderr, message.tty)
        if not message.cmd or not message.cmd[0]:
            raise errors.InvalidArgument("cmd is required")
        self._running(message.container_id)
        target = ExecTarget(message.container_id, list(message.cmd), options)
        return api.ExecResponse(url=self._streaming.url("exec", target))

    async def attach(self, message: api.AttachRequest) -> api.AttachResponse:
        _audit(message.audit_request_id)
        options = _options(message.stdin, message.stdout, message.stderr, message.tty)
        view = self._running(message.container_id)
        # Docker only wires stdin to a container created with it open.
        stdin = options.stdin and view.record.info.open_stdin
        options = Options(
            stdin=stdin, stdout=options.stdout, stderr=options.stderr, tty=options.tty
        )
        target = AttachTarget(message.container_id, options)
        return api.AttachResponse(url=self._streaming.url("attach", target))

    async def port_forward(self, message: api.PortForwardRequest) -> api.PortForwardResponse:
        if not message.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        bad = [p for p in message.port if not 0 < p < 65536]
        if bad:
            raise errors.InvalidArgument(f"port: {bad[0]} is not a TCP port")
        self._sandboxes.get(message.pod_sandbox_id)  # NotFound for an unknown pod
        target = PortForwardTarget(message.pod_sandbox_id, list(message.port))
        return api.PortForwardResponse(url=self._streaming.url("portforward", target))
