"""The kubelet's deadline, carried from the gRPC call down to Docker calls.

The RPC wrapper records the call's deadline in a contextvar; code that calls
Docker asks `budget(default)` for how long it may wait, so a Docker call never
outlives the request it serves (cri-dockerd gives each Docker call a fresh
background context instead, and keeps working for callers long gone).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from grpclib.metadata import Deadline

from crishim.common import errors

T = TypeVar("T")

_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "crishim_rpc_deadline", default=None
)


def set_deadline(deadline: Deadline | None) -> None:
    _DEADLINE.set(deadline)


def budget(default: float) -> float:
    """Seconds a step may take: `default`, or less when the caller's deadline is nearer."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return default
    remaining = deadline.time_remaining()
    if remaining <= 0:
        raise errors.DeadlineExceeded("the caller's deadline has passed")
    return min(default, remaining)


def detached(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """`coro` in a task of its own, with no caller's deadline: the undo of a call cut short
    is bounded by its own time, never by the deadline that cut the call short."""
    context = contextvars.copy_context()
    context.run(_DEADLINE.set, None)
    return asyncio.get_running_loop().create_task(coro, context=context)


@asynccontextmanager
async def limit(default: float, what: str) -> AsyncIterator[None]:
    """Bound a block by `budget(default)`; running out is DeadlineExceeded naming `what`."""
    seconds = budget(default)
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise errors.DeadlineExceeded(f"{what} did not finish within {seconds:.1f}s") from None
