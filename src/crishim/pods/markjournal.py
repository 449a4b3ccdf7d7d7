"""The creates crishim has finished, kept in one append-only file of the state dir.

Every Docker create crishim makes carries a token of its own, a label
(labels.CREATE_TOKEN_LABEL): the container is its own mark, made by the create
itself. Once the call has finished, the token is appended here as `="token"`.
A container that never ran and whose token is not here when crishim starts was
left by a killed process mid-create (crishim.pods.creating says why that matters).

A token is worth keeping only while its container exists and has never run: the
file is rewritten with those alone (`rewrite`) at start and whenever it has grown
past LIMIT. Lines are JSON strings, so a token cannot break a line; a line cut
short by a kill mid-write is passed over.

Older crishims marked a create before it (`+"name"`, `-"name"` when done, or a
file per mark): `start` returns the names they left marked, once.

Everything here blocks (file I/O): crishim calls it in worker threads, one trip
at a time; the lock is for start and close.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

JOURNAL = ".journal"  # Docker names never start with a dot
LIMIT = 64 * 1024  # bytes the file may reach before it is rewritten with what is needed


def read(directory: Path) -> tuple[set[str], set[str]]:
    """(names an older crishim left marked, tokens of finished creates) in `directory`."""
    names = (
        {p.name for p in directory.iterdir() if p.name != JOURNAL} if directory.is_dir() else set()
    )
    tokens: set[str] = set()
    try:
        text = (directory / JOURNAL).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return names, tokens
    for line in text.split("\n"):
        if len(line) < 3 or line[0] not in "=+-":
            continue
        try:
            value = json.loads(line[1:])
        except ValueError:
            continue  # cut short by a kill mid-write
        if not isinstance(value, str):
            continue
        if line[0] == "=":
            tokens.add(value)
        elif line[0] == "+":
            names.add(value)
        else:
            names.discard(value)
    return names, tokens


def _lines(tokens: Iterable[str]) -> bytes:
    """Finished tokens as the journal's lines (`read` reads them back)."""
    return "".join("=" + json.dumps(t) + "\n" for t in tokens).encode()


class FinishJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.size = 0  # bytes in the file (read on the event loop: a plain int)
        self._fd = -1
        self._lock = threading.Lock()

    def start(self) -> tuple[set[str], set[str]]:
        """Open the journal; returns what `read` finds in it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = read(self.directory)
        with self._lock:
            self._open()
        return found

    def finished(self, tokens: Iterable[str]) -> None:
        data = _lines(tokens)
        with self._lock:
            os.write(self._fd, data)  # O_APPEND: one write, whole lines
            self.size += len(data)

    def rewrite(self, tokens: Iterable[str]) -> None:
        """The journal holds `tokens` alone (an older crishim's marks go too). Written
        aside and renamed over it: a kill midway leaves one file or the other whole."""
        data = _lines(sorted(tokens))
        aside = self.directory / (JOURNAL + ".new")
        with self._lock:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(aside, self.directory / JOURNAL)
            self._close()
            self._open()
            for path in self.directory.iterdir():
                if path.name not in (JOURNAL, aside.name):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.directory / JOURNAL, flags, 0o600)
        self.size = os.fstat(self._fd).st_size

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
