"""Prometheus metrics of crishim, served as text on /metrics.

Per-RPC counters and latency histograms are fed by the server's event hooks;
Docker call latencies by the Docker adapter; CNI plugin run times by
network/cni.py. One registry, owned here.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

RPC_TOTAL = Counter(
    "crishim_rpc_total",
    "CRI calls served, by method and gRPC status code.",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "crishim_rpc_duration_seconds",
    "Time to serve a CRI call.",
    ["method"],
    registry=REGISTRY,
)
LOG_COPY_FAILING = Gauge(
    "crishim_log_copy_failing",
    "Containers whose CRI log copying the OS refuses right now (disk full, read-only...);"
    " retried until it works.",
    registry=REGISTRY,
)
DOCKER_SECONDS = Histogram(
    "crishim_docker_request_duration_seconds",
    "Time of Docker Engine API calls, by operation.",
    ["operation"],
    registry=REGISTRY,
)
LOOP_LAG_SECONDS = Histogram(
    "crishim_event_loop_lag_seconds",
    "How late the event loop ran a timer, sampled each second: how long a call arriving"
    " then waited before crishim could start on it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
CNI_SECONDS = Histogram(
    "crishim_cni_plugin_duration_seconds",
    "Time of CNI plugin runs, by command (ADD, DEL, CHECK, GC, STATUS) and plugin type.",
    ["command", "plugin"],
    registry=REGISTRY,
)


async def _serve(_request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    """Mount /metrics on an aiohttp app (the streaming server's, or its own)."""
    app.router.add_get("/metrics", _serve)
