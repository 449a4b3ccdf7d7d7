"""Shared by the List* and Stream* RPCs: cached wire entries, chunking."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, TypeVar

from crishim.server import protowire

T = TypeVar("T")
STREAM_CHUNK = 500  # items per message: far below the kubelet's 16 MiB message limit


def chunks(items: list[T], size: int = STREAM_CHUNK) -> Iterator[list[T]]:
    """Each item exactly once, in order, at least one item per message (none when empty)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class WireEntries:
    """Each entry of a List* response in wire form, encoded once per version of its object.

    A repeated message field is the concatenation of its entries (tag, length,
    bytes), so a list response is a join of cached bytes: betterproto2 spends
    ~0.1 ms encoding one Container, a cached entry costs a dict lookup. An entry
    is reused while `version` is the very object it was encoded from (store
    records and the views made of them are immutable, replaced on every change).
    Entries of objects no longer listed go once they outnumber the live ones.
    """

    def __init__(self, number: int) -> None:
        self._number = number
        self._entries: dict[str, tuple[object, object, bytes]] = {}
        self._joined: tuple[object, bytes] = (None, b"")

    def join(self, listed: object | None, entries: Callable[[], Iterable[bytes]]) -> bytes:
        """The join of `entries()`. With `listed` (a whole store list, the very same
        object while nothing in it changed) it is kept, and made again only for another
        list; None (a filtered list) is joined each time."""
        if listed is None:
            return b"".join(entries())
        if self._joined[0] is not listed:
            self._joined = (listed, b"".join(entries()))
        return self._joined[1]

    def entry(
        self, key: str, version: object, build: Callable[[], Any], also: object = None
    ) -> bytes:
        """`build()`'s entry, made again unless `version` and `also` (a second object it
        is made from, or None) are the very objects it was made from."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] is version and hit[1] is also:
            return hit[2]
        data = protowire.message(self._number, bytes(build()))
        self._entries[key] = (version, also, data)
        return data

    def selected(
        self,
        items: Iterable[Any],
        matches: Callable[[Any, Any], bool],
        f: Any,
        build: Callable[[Any], Any],
        version: Callable[[Any], object] | None = None,
    ) -> Iterator[bytes]:
        """The entries of the `items` (store views, keyed by id) that filter `f` selects
        (`matches(item, f)`); an entry is made once per item, or per `version(item)`."""
        for item in items:
            if matches(item, f):
                made_from = item if version is None else version(item)
                yield self.entry(item.id, made_from, lambda item=item: build(item))

    def prune(self, alive: Callable[[], Collection[str]], count: int) -> None:
        if len(self._entries) > 2 * count + 64:
            keep = set(alive())
            self._entries = {k: v for k, v in self._entries.items() if k in keep}


class KeptAnswer:
    """A whole response of a polled call, encoded once per distinct `key` (compared
    with ==): Status, Version and ImageFsInfo change far less often than they are asked."""

    def __init__(self) -> None:
        self._kept: tuple[object, bytes] | None = None

    def get(self, key: object, build: Callable[[], Any]) -> bytes:
        kept = self._kept
        if kept is None or kept[0] != key:
            kept = self._kept = (key, bytes(build()))
        return kept[1]
