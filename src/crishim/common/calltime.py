"""Where a call's time went: Docker API requests and CNI plugin runs, summed per RPC.

The RPC wrapper starts a tally for each call (a contextvar holding one mutable dict, so
the tasks and worker threads the call starts, which copy its context, add to the same
one); the Docker client, the CNI runner and the log copier's wait for an ended
container's last lines add their time to it, and the call's log line carries it
(docker_ms, cni_ms, log_settle_ms). What is left of the call's duration is crishim's
own. Two caveats, both making the sum larger than what it explains: a run shared by
concurrent callers (a coalesced stop) is in its first caller's tally only, and a call
that runs Docker and a plugin at once (StopPodSandbox's DEL beside the pause's stop)
counts both in full.
"""

from __future__ import annotations

import contextvars

_TALLY: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "crishim_call_tally", default=None
)


def start() -> dict[str, float]:
    """A new, empty tally for the calling task's call."""
    tally: dict[str, float] = {}
    _TALLY.set(tally)
    return tally


def add(kind: str, seconds: float) -> None:
    tally = _TALLY.get()
    if tally is not None:
        tally[kind] = tally.get(kind, 0.0) + seconds
