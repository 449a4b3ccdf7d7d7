"""What every RPC gets, without touching its handler.

A grpclib RecvRequest hook wraps each call's handler to:
  - bind the method and the request's ids to structlog's contextvars;
  - convert crishim's domain errors into gRPC status (errors.to_grpc, the one
    mapping), and anything unexpected into INTERNAL with its traceback logged;
  - log one event per call (mutating calls at info, polled ones at debug,
    failures at warning or error), with the time Docker and CNI plugins took
    within it (common/calltime.py), and feed the Prometheus counters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from grpclib import events
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from crishim.common import calltime, deadlines, errors, metrics

log = structlog.get_logger("crishim.rpc")

# Request fields worth a log key, when a request has them.
ID_FIELDS = ("pod_sandbox_id", "container_id")

# Called in a loop by the kubelet: logged at debug so that info stays readable. ExecSync
# is every exec probe's call (one per container and period: 20 lines/s at 200 pods).
POLLED_PREFIXES = (
    "ExecSync",
    "List",
    "Stream",
    "Version",
    "Status",
    "ImageStatus",
    "ImageFsInfo",
    "ContainerStatus",
    "PodSandboxStatus",
    "ContainerStats",
    "PodSandboxStats",
    "RuntimeConfig",
)

# Client-caused codes: logged at warning, not error.
CLIENT_CODES = {
    Status.INVALID_ARGUMENT,
    Status.NOT_FOUND,
    Status.ALREADY_EXISTS,
    Status.UNIMPLEMENTED,
    Status.FAILED_PRECONDITION,
    Status.CANCELLED,
    Status.DEADLINE_EXCEEDED,
    Status.RESOURCE_EXHAUSTED,
    Status.UNAUTHENTICATED,
    Status.OUT_OF_RANGE,
}


def short_method(path: str) -> str:
    """'/runtime.v1.RuntimeService/Version' -> 'Version'."""
    return path.rsplit("/", 1)[-1]


def is_polled(method: str) -> bool:
    return method.startswith(POLLED_PREFIXES)


def bind_request_ids(message: Any) -> None:
    """Put the request's ids on every log line of this call."""
    ids = {f: getattr(message, f) for f in ID_FIELDS if getattr(message, f, "")}
    if ids:
        structlog.contextvars.bind_contextvars(**ids)


class Inflight:
    """Counts calls being served, so that shutdown can wait for them (bounded)."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        if self.draining:
            raise GRPCError(Status.UNAVAILABLE, "crishim is shutting down")
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Refuse new calls; True if the running ones finished within `grace` seconds."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True


class _Series:
    """The Prometheus children of one method, looked up once (a `labels()` call takes a
    lock and builds its key: a quarter of this module's per-call cost)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.seconds = metrics.RPC_SECONDS.labels(method)
        self._total: dict[Status, Any] = {}

    def total(self, code: Status) -> Any:
        child = self._total.get(code)
        if child is None:
            child = self._total[code] = metrics.RPC_TOTAL.labels(self.method, code.name)
        return child


def _wrap(method_name: str, func: Any, inflight: Inflight) -> Any:
    method = short_method(method_name)
    series = _Series(method)
    polled = is_polled(method)

    async def instrumented(stream: Any) -> None:
        # grpclib runs each call in its own task, so these bindings are per call.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method)
        deadlines.set_deadline(stream.deadline)
        tally = calltime.start()
        started = time.perf_counter()
        code, detail = Status.OK, ""
        entered = False
        try:
            inflight.enter()
            entered = True
            await func(stream)
        except GRPCError as exc:
            code, detail = exc.status, exc.message or ""
            raise
        except errors.CrishimError as exc:
            code, detail = errors.to_grpc(exc)
            raise GRPCError(code, detail) from exc
        except asyncio.CancelledError:
            code, detail = Status.CANCELLED, "cancelled by the client or its deadline"
            raise
        except Exception as exc:
            code, detail = errors.to_grpc(exc)
            log.exception("rpc_internal_error", error=repr(exc))
            raise GRPCError(code, detail) from exc
        finally:
            if entered:
                inflight.leave()
            elapsed = time.perf_counter() - started
            series.total(code).inc()
            series.seconds.observe(elapsed)
            fields = {"code": code.name, "duration_ms": round(elapsed * 1000, 2)}
            if detail:
                fields["detail"] = detail
            for kind, spent in tally.items():  # Docker's and CNI plugins' share of it
                fields[f"{kind}_ms"] = round(spent * 1000, 2)
            if code is Status.OK:
                emit = log.debug if polled else log.info
            elif code in CLIENT_CODES:
                emit = log.warning
            else:
                emit = log.error
            emit("rpc", **fields)

    return instrumented


def attach(server: Server, inflight: Inflight) -> None:
    # A method's handler is the same object on every call (grpclib maps paths once):
    # its wrapper is made on the first call and kept.
    wrapped: dict[str, tuple[Any, Any]] = {}

    async def on_recv_request(event: events.RecvRequest) -> None:
        kept = wrapped.get(event.method_name)
        if kept is None or kept[0] is not event.method_func:
            kept = (event.method_func, _wrap(event.method_name, event.method_func, inflight))
            wrapped[event.method_name] = kept
        event.method_func = kept[1]

    events.listen(server, events.RecvRequest, on_recv_request)
