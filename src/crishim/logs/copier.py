"""Container output into the kubelet's CRI log files, with nothing lost across restarts.

Mechanism: every container logs to Docker's json-file driver, which is the
durable buffer. One follower per container reads `docker logs` (with Docker's
own timestamps) and appends each message to <log_directory>/<log_path> in the
CRI format `<RFC3339Nano> <stdout|stderr> <F|P> <text>`: F for a complete
line, P for a piece of a longer one (json-file splits lines at 16 KiB, and a
last piece may lack its newline).

Restarts. After every batch the follower records, atomically under the state
dir, the timestamp of the last message written and how many messages carried
that timestamp. The log file says the same by itself: every line starts with
Docker's timestamp of its message. A follower resumes from the later of the
two (so a process with another state dir, taking over from the one that
copied before, continues exactly where the file ends), with Docker's `since`
at that instant (inclusive), skipping the messages already there. Output
printed while crishim was down is copied once it is back.

Rotation. The kubelet renames the file and calls ReopenContainerLog; the
follower then closes its handle and opens a new file at the log path.

Guarantees. The log file exists when StartContainer returns (empty if the
container printed nothing). A container's exit is applied to the store only
after its follower has copied everything (`settle`, the store's exit hook),
so nobody reads "exited" before the last line is in the file. Only one crishim
process copies the logs of a Docker daemon (crishim.logs.owner); another one on
the same daemon stays passive, says so, and takes over if the owner ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from crishim.common import calltime, errors, metrics, rfc3339, tasks
from crishim.engine import labels
from crishim.engine.docker import DockerClient
from crishim.engine.docker.types import ContainerInfo, LogChunk
from crishim.engine.state import Engine
from crishim.engine.store import Record, Store
from crishim.logs import owner as logowner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    last_ns: int = 0  # timestamp of the last message written
    at_last: int = 0  # messages written with exactly that timestamp
    done: bool = False  # the container had exited and all its output was copied


def cri_line(chunk: LogChunk) -> tuple[int, bytes] | None:
    """(timestamp ns, CRI log line) for one Docker log message; None if unreadable."""
    stamp, sep, text = chunk.data.partition(b" ")
    if not sep:
        return None
    try:
        ts = stamp.decode("ascii")
    except UnicodeDecodeError:
        return None
    ns = rfc3339.to_ns(ts)
    if ns == 0:
        return None
    complete = text.endswith(b"\n")
    body = text[:-1] if complete else text
    tag = b"F" if complete else b"P"
    return ns, b"%s %s %s %s\n" % (stamp, chunk.stream.encode(), tag, body)


TAIL_BYTES = 256 * 1024


def file_tail(path: Path) -> Checkpoint:
    """(timestamp of the last line, lines at that timestamp) of a CRI log file (blocking).

    A last line cut short (a crash in the middle of a write) is removed first, so
    its message is written again, whole.
    """
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            f.seek(start)
            data = f.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                f.truncate(start + cut)
                data = data[:cut]
    except OSError:
        return Checkpoint()
    lines = data.split(b"\n")[:-1]
    if start > 0 and lines:
        lines = lines[1:]  # the first may be the end of a line that began before the window
    last_ns, at_last = 0, 0
    for line in reversed(lines):
        ns = rfc3339.to_ns(line.split(b" ", 1)[0].decode("ascii", "replace"))
        if not ns:
            break
        if last_ns and ns != last_ns:
            break
        last_ns, at_last = ns, at_last + 1
    return Checkpoint(last_ns, at_last)


WRITE_RETRY_DELAYS = (0.5, 10.0)  # first and longest wait between write attempts, seconds
# After a log stream's end, how long the store's word on the exit is waited for
# before the follower inspects the container itself.
ENDED_WAIT = 0.5


class _Stopped(Exception):
    """A write the OS refused part way: `rest` is what was not written yet."""

    def __init__(self, rest: memoryview, error: OSError) -> None:
        super().__init__(str(error))
        self.rest = rest
        self.error = error


class Follower:
    def __init__(self, docker: DockerClient, record: Record, state_dir: Path) -> None:
        self.docker = docker
        self.container_id = record.id
        self.tty = record.info.tty
        # As the store last saw it: a later start or exit announces the record again.
        self.running = record.info.state.running
        # The store saw the container end: in this record, or later (LogManager.settle).
        self.ended = asyncio.Event()
        if not self.running:
            self.ended.set()
        self.done = False  # everything it printed is copied
        self.path = Path(record.cri.log_path)
        self.checkpoint_path = state_dir / f"{record.id}.json"
        self._lock = asyncio.Lock()
        self._file: int | None = None
        self._checkpoint_failing = False
        self.task: asyncio.Task[None] | None = None

    def _load(self) -> Checkpoint:
        try:
            return Checkpoint(**json.loads(self.checkpoint_path.read_text()))
        except (OSError, ValueError, TypeError):
            return Checkpoint()

    def _resume_point(self) -> Checkpoint:
        """The later of the checkpoint and what the log file's last lines say (blocking)."""
        saved = self._load()
        tail = file_tail(self.path)
        if (tail.last_ns, tail.at_last) > (saved.last_ns, saved.at_last):
            return Checkpoint(tail.last_ns, tail.at_last, saved.done)
        return saved

    def _save(self, cp: Checkpoint) -> None:
        tmp = self.checkpoint_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last_ns": cp.last_ns, "at_last": cp.at_last, "done": cp.done}))
        os.replace(tmp, self.checkpoint_path)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
        )

    def _close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _write(self, view: memoryview, cp: Checkpoint) -> None:
        """Write `view`, then checkpoint (blocking). On an OS error (disk full,
        read-only, ...) raise _Stopped with what is left: nothing is written twice."""
        try:
            if self._file is None:
                self._open()
            assert self._file is not None
            while view:
                view = view[os.write(self._file, view) :]
        except OSError as exc:
            raise _Stopped(view, exc) from None
        self._checkpoint(cp)

    def _checkpoint(self, cp: Checkpoint) -> None:
        """Save `cp` if the state dir lets us (blocking).

        A checkpoint that cannot be saved does not hold copying up: the log file's
        own last lines say where to resume, and a resume takes the later of the two.
        """
        try:
            self._save(cp)
        except OSError as exc:
            if not self._checkpoint_failing:
                self._checkpoint_failing = True
                log.warning(
                    "log_checkpoint_failing",
                    container_id=self.container_id,
                    path=str(self.checkpoint_path),
                    error=exc.strerror or str(exc),
                )
            return
        if self._checkpoint_failing:
            self._checkpoint_failing = False
            log.info("log_checkpoint_resumed", container_id=self.container_id)

    def _mark_done(self) -> None:
        """Checkpoint that everything the ended container printed is copied (blocking)."""
        last = self._load()  # `done` is what counts here; the position is the file's
        self._checkpoint(Checkpoint(last.last_ns, last.at_last, True))

    async def reopen(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close)
            await asyncio.to_thread(self._open)

    async def run(self) -> None:
        cp = await asyncio.to_thread(self._resume_point)
        if cp.done and not self.running:
            self.done = True
            return  # copied completely before
        queue: asyncio.Queue[tuple[bytes, Checkpoint] | None] = asyncio.Queue(maxsize=4096)
        writer = asyncio.create_task(self._writer(queue))
        try:
            await self._read(cp, queue)
            await queue.put(None)
            await writer
            if await self._has_ended():
                await asyncio.to_thread(self._mark_done)
                self.done = True
        finally:
            await tasks.stop(writer)
            async with self._lock:
                await asyncio.to_thread(self._close)

    async def _has_ended(self) -> bool:
        """After the stream's end: did the container end, or did Docker go away?

        The store's inspect of the exit (which the die event brings) usually follows
        the stream's end by milliseconds: it is waited for briefly rather than
        inspected a second time.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ENDED_WAIT):
                await self.ended.wait()
            return True
        info = await self.docker.inspect_container(self.container_id)
        return not info.state.running

    async def _read(self, cp: Checkpoint, queue: asyncio.Queue) -> None:
        skip = cp.at_last  # messages at cp.last_ns already written
        last_ns, at_last = cp.last_ns, cp.at_last
        async for chunk in self.docker.logs(
            self.container_id, since_ns=cp.last_ns, follow=True, tty=self.tty
        ):
            parsed = cri_line(chunk)
            if parsed is None:
                continue
            ns, line = parsed
            if ns < cp.last_ns or (ns == cp.last_ns and skip > 0):
                skip -= ns == cp.last_ns
                continue
            at_last = at_last + 1 if ns == last_ns else 1
            last_ns = ns
            await queue.put((line, Checkpoint(last_ns, at_last)))

    async def _writer(self, queue: asyncio.Queue) -> None:
        """Write whatever has queued up in one go: bursts become one write and one checkpoint."""
        while True:
            item = await queue.get()
            if item is None:
                return
            lines, cp = [item[0]], item[1]
            ended = False
            while not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    ended = True
                    break
                lines.append(nxt[0])
                cp = nxt[1]
            await self._write_until_done(memoryview(b"".join(lines)), cp)
            if ended:
                return

    async def _write_until_done(self, view: memoryview, cp: Checkpoint) -> None:
        """Write and checkpoint; while the disk refuses, say so at once and retry.

        The reader waits meanwhile (the queue is bounded); Docker's own log file
        keeps the output until the disk has room again.
        """
        failing = False
        delay = WRITE_RETRY_DELAYS[0]
        try:
            while True:
                try:
                    async with self._lock:
                        await asyncio.to_thread(self._write, view, cp)
                except _Stopped as stopped:
                    view = stopped.rest
                    if not failing:
                        failing = True
                        metrics.LOG_COPY_FAILING.inc()
                        log.warning(
                            "log_copy_failing",
                            container_id=self.container_id,
                            path=str(self.path),
                            error=stopped.error.strerror or str(stopped.error),
                            retry_s=delay,
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, WRITE_RETRY_DELAYS[1])
                    continue
                if failing:
                    log.info("log_copy_resumed", container_id=self.container_id)
                return
        finally:
            if failing:
                metrics.LOG_COPY_FAILING.dec()


def touch(path: Path) -> None:
    """Create the log file if absent (blocking), without truncating what is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640))


CLAIM_TIMEOUT = 5.0  # seconds to learn the daemon's data root (from memory once known)


class LogManager:
    """Keeps one follower per container that has a log path and output to copy."""

    def __init__(
        self,
        docker: DockerClient,
        store: Store,
        state_dir: Path,
        lock_dir: str = "/run/crishim",
        *,
        engine: Engine,
    ) -> None:
        self.docker = docker
        self.engine = engine  # Docker's root dir, from memory: the claim retries cost nothing
        self.store = store
        self.state_dir = state_dir / "logs"
        self.lock_dir = lock_dir
        self.ownership = logowner.Ownership()
        self._followers: dict[str, Follower] = {}
        # Ended containers whose output is all copied: their exit is not followed again.
        self._copied: set[str] = set()
        self._claim: asyncio.Task[None] | None = None
        self.owner_pid: int | None = None  # the other process that copies, while passive

    async def start(self) -> None:
        await asyncio.to_thread(self.state_dir.mkdir, parents=True, exist_ok=True)
        self.store.subscribe(self._changed)
        self.store.on_exit = self.settle
        # Claimed in the background: a Docker that hangs must not keep crishim from serving.
        self._claim = asyncio.create_task(self._claim_forever(), name="log-ownership")

    async def _try_claim(self) -> None:
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT):
                info = await self.engine.current_info()
        except (errors.CrishimError, TimeoutError):
            return  # Docker is away: try again later
        path = logowner.lock_path(self.lock_dir, info.docker_root_dir or self.docker.endpoint)
        if not await asyncio.to_thread(self.ownership.try_acquire, path):
            pid = await asyncio.to_thread(logowner.owner_pid, path)
            if pid != self.owner_pid:
                log.warning(
                    "log_copy_passive",
                    owner_pid=pid,
                    lock=str(path),
                    reason="another crishim process copies this Docker daemon's container logs",
                )
            self.owner_pid = pid
            return
        self.owner_pid = None
        log.info("log_copy_owner", lock=str(path))
        for record in self.store.records(labels.TYPE_CONTAINER):
            self._changed(record.id, record)

    async def _claim_forever(self) -> None:
        while True:
            try:
                await self._try_claim()
            except OSError as exc:
                log.warning("log_ownership_failed", error=str(exc))
            if self.ownership.owned:
                return
            await asyncio.sleep(logowner.RETRY)

    def _changed(self, container_id: str, record: Record | None) -> None:
        if record is None:
            self._copied.discard(container_id)
            follower = self._followers.pop(container_id, None)
            if follower is not None and follower.task is not None:
                follower.task.cancel()
            if self.ownership.owned:
                with contextlib.suppress(OSError):
                    (self.state_dir / f"{container_id}.json").unlink()
            return
        if not self.ownership.owned:
            return
        if record.cri.kind != labels.TYPE_CONTAINER or not record.cri.log_path:
            return
        if container_id in self._followers:
            return
        if record.info.state.status == "created":
            return  # nothing printed yet; the start event brings us back
        if container_id in self._copied:
            if not record.info.state.running:
                return  # its exit, announced after the copy ended: nothing more to copy
            self._copied.discard(container_id)  # started again by another client
        self._follow(record)

    def _follow(self, record: Record) -> Follower:
        follower = Follower(self.docker, record, self.state_dir)
        self._followers[record.id] = follower
        follower.task = asyncio.create_task(self._run(follower), name=f"logs {record.id[:12]}")
        return follower

    async def settle(self, info: ContainerInfo) -> None:
        """Return once everything the ended container printed is in its log file."""
        cri = labels.read(info.labels)
        if not self.ownership.owned or cri.kind != labels.TYPE_CONTAINER or not cri.log_path:
            return
        follower = self._followers.get(info.id)
        if follower is None:
            follower = self._follow(Record(info=info, cri=cri, seq=0))
        follower.ended.set()
        assert follower.task is not None
        started = time.perf_counter()
        await asyncio.wait({follower.task})  # Docker's stream end, then the file's last write
        calltime.add("log_settle", time.perf_counter() - started)

    async def started(self, log_path: str) -> None:
        """The container's log file exists from now on, even before its first line."""
        if log_path:
            await asyncio.to_thread(touch, Path(log_path))

    async def _run(self, follower: Follower) -> None:
        # A follower that ends while its container still runs (Docker went away)
        # is replaced when the store resyncs: every record is announced again.
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except errors.CrishimError as exc:
            log.warning("log_follower_stopped", container_id=follower.container_id, error=str(exc))
        except Exception:
            log.exception("log_follower_failed", container_id=follower.container_id)
        finally:
            if self._followers.get(follower.container_id) is follower:
                del self._followers[follower.container_id]
                if follower.done:
                    self._copied.add(follower.container_id)

    async def reopen(self, container_id: str, running: bool, log_path: str) -> None:
        if not running:
            raise errors.FailedPrecondition(f"container {container_id[:12]} is not running")
        follower = self._followers.get(container_id)
        if follower is not None:
            await follower.reopen()
        else:  # copied by another process (or about to be): the new file exists anyway
            await self.started(log_path)

    async def close(self) -> None:
        await tasks.stop(self._claim)
        followers = [f.task for f in self._followers.values() if f.task is not None]
        for task in followers:
            task.cancel()
        for task in followers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.ownership.release()
