"""Shared by the Stream* list RPCs (CRIListStreaming, Kubernetes 1.36)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
STREAM_CHUNK = 500  # items per message: far below the kubelet's 16 MiB message limit


def chunks(items: list[T], size: int = STREAM_CHUNK) -> Iterator[list[T]]:
    """Each item exactly once, in order, at least one item per message (none when empty)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
