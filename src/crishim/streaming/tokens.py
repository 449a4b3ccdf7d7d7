"""Single-use, unguessable, short-lived tokens naming one pending stream request.

An Exec/Attach/PortForward RPC stores its request under a fresh token and
returns a URL holding it; the first connection to that URL takes the request
out. A token is 256 random bits, lives one minute, and works once; a reused,
expired or made-up token finds nothing (the server answers 404). The number
of pending tokens is bounded so a caller cannot grow memory without limit.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crishim.common import errors

TTL_SECONDS = 60.0
MAX_PENDING = 4096


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: str
    request: object
    expires: float


class Tokens:
    def __init__(
        self,
        *,
        ttl: float = TTL_SECONDS,
        limit: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def __len__(self) -> int:
        self._purge()
        return len(self._pending)

    def _purge(self) -> None:
        now = self._clock()
        while self._pending:
            token, first = next(iter(self._pending.items()))
            if first.expires > now:
                break
            del self._pending[token]

    def issue(self, kind: str, request: object) -> str:
        self._purge()
        if len(self._pending) >= self._limit:
            raise errors.ResourceExhausted(
                f"too many pending stream requests ({self._limit}); try again shortly"
            )
        token = secrets.token_urlsafe(32)
        self._pending[token] = _Pending(kind, request, self._clock() + self._ttl)
        return token

    def take(self, kind: str, token: str) -> object | None:
        """The request behind `token`, once; None when unknown, used, expired or another kind."""
        self._purge()
        pending = self._pending.pop(token, None)
        if pending is None or pending.kind != kind:
            return None
        return pending.request
