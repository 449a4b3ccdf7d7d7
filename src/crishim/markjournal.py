"""The creates in flight, kept in one append-only file of the state dir.

A create is marked before its Docker create and unmarked after its call has
finished (crishim.creating says why). Each mark is a line appended to
`creating/.journal`: `+"name"` when it is made, `-"name"` when it goes; a name
whose last line is a `+` when crishim starts was left by a killed process.

One file, not a file per mark: creating a file allocates an inode, which cost
a create 0.1-0.5 ms here (ext4 on a VM), where appending a line costs a few
microseconds. The file is emptied whenever no mark is left and it has grown
past LIMIT. Lines are JSON strings, so a name cannot break a line; a line cut
short by a kill mid-write is passed over. Files other than the journal in the
directory are marks from a crishim that kept a file per mark, read once at start.

Everything here blocks (file I/O): crishim calls it in worker threads. Two trips
may run at once (a create's mark, an earlier create's unmark), hence the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

JOURNAL = ".journal"  # Docker names never start with a dot
LIMIT = 64 * 1024  # bytes the file may reach before it is emptied (once no mark is left)


def read_marks(directory: Path) -> set[str]:
    """The names marked in `directory`: its journal's open marks, and the files of an
    older crishim's marks."""
    marks = (
        {p.name for p in directory.iterdir() if p.name != JOURNAL} if directory.is_dir() else set()
    )
    try:
        text = (directory / JOURNAL).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return marks
    for line in text.split("\n"):
        if len(line) < 3 or line[0] not in "+-":
            continue
        try:
            name = json.loads(line[1:])
        except ValueError:
            continue  # cut short by a kill mid-write
        if not isinstance(name, str):
            continue
        if line[0] == "+":
            marks.add(name)
        else:
            marks.discard(name)
    return marks


class MarkJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd = -1
        self._size = 0
        self._open: set[str] = set()  # names marked by this process and not unmarked yet
        self._lock = threading.Lock()

    def start(self) -> set[str]:
        """Open the journal; returns the marks a killed process left (the caller deals
        with each, then `clear`s them)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        left = read_marks(self.directory)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.directory / JOURNAL, flags, 0o600)
        self._size = os.fstat(self._fd).st_size
        return left

    def clear(self) -> None:
        """Forget what a killed process left: its marks have been dealt with."""
        with self._lock:
            for path in self.directory.iterdir():
                if path.name != JOURNAL:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            self._truncate()

    def mark(self, name: str) -> None:
        with self._lock:
            self._write("+" + json.dumps(name) + "\n")
            self._open.add(name)

    def unmark(self, names: Iterable[str]) -> None:
        with self._lock:
            names = list(names)
            if not names:
                return
            self._write("".join("-" + json.dumps(n) + "\n" for n in names))
            self._open.difference_update(names)
            if not self._open and self._size > LIMIT:
                self._truncate()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _write(self, text: str) -> None:
        data = text.encode()
        os.write(self._fd, data)  # O_APPEND: one write, whole lines, even with two trips
        self._size += len(data)

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        self._size = 0
