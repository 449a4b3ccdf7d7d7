"""Exec helpers: every process an exec started (from /proc), its kill, its exit code."""

from __future__ import annotations

import asyncio

import pytest

from crishim.common import errors
from crishim.pods import execsync
from crishim.pods.execsync import descendants


def fake_proc(tmp_path, tree: dict[int, tuple[int, str]]):
    for pid, (ppid, comm) in tree.items():
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
    (tmp_path / "self").mkdir()
    return tmp_path


def test_children_and_grandchildren_parents_first(tmp_path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: (1, "sh"),
            11: (10, "sleep"),
            12: (10, "sh"),
            13: (12, "sleep"),
            20: (1, "other"),
        },
    )
    assert descendants(10, proc) == [10, 11, 12, 13]


def test_command_names_with_spaces_and_parentheses(tmp_path) -> None:
    proc = fake_proc(tmp_path, {30: (1, "odd) name ("), 31: (30, "x y")})
    assert descendants(30, proc) == [30, 31]


class _Execs:
    """Docker's answers to an exec inspect, one after another (the last repeats)."""

    def __init__(self, *answers: tuple[bool, int | None, int]) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def exec_inspect(self, exec_id: str) -> tuple[bool, int | None, int]:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _killed(monkeypatch) -> list[int]:
    killed: list[int] = []
    monkeypatch.setattr(execsync, "kill_tree", lambda pid: killed.append(pid) or 1)
    monkeypatch.setattr(execsync, "PID_POLL", 0.001)
    return killed


async def test_a_kill_waits_for_docker_to_record_the_pid(monkeypatch) -> None:
    # Docker says "running" before it knows the pid; the process may already have run.
    killed = _killed(monkeypatch)
    docker = _Execs((False, None, 0), (True, None, 0), (True, None, 0), (True, None, 4321))
    await execsync.kill_exec(docker, "e1")
    assert killed == [4321]
    assert docker.asked == 4


async def test_an_ended_exec_is_not_killed(monkeypatch) -> None:
    killed = _killed(monkeypatch)
    docker = _Execs((False, 0, 4321))
    await execsync.kill_exec(docker, "e1")
    assert killed == []
    assert docker.asked == 1


async def test_a_pid_that_never_comes_ends_the_wait(monkeypatch) -> None:
    killed = _killed(monkeypatch)
    monkeypatch.setattr(execsync, "PID_WAIT", 0.05)
    docker = _Execs((True, None, 0))
    await execsync.kill_exec(docker, "e1")
    assert killed == []
    assert docker.asked > 1


class _ClosedStream:
    """A hijacked exec whose output has ended."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_eof()

    async def close(self) -> None:
        pass


class _SlowExit(_Execs):
    """Docker records the exec's end only after a while, as on a busy node."""

    async def exec_run(self, container_id: str, cmd, *, stdin: bool, tty: bool):
        return "e1", _ClosedStream()


async def test_exec_sync_waits_for_docker_to_record_the_exit_code(monkeypatch) -> None:
    monkeypatch.setattr(execsync, "EXIT_POLL_MAX", 0.01)
    # Still "running" for 60 looks after the output ended (the old code gave up after
    # 51 looks, ~1 s, and answered 0).
    docker = _SlowExit(*[(True, None, 4321)] * 60, (False, 3, 4321))
    result = await execsync.exec_sync(docker, "c1", ["false"], timeout_s=0)
    assert result.exit_code == 3
    assert docker.asked == 61


async def test_an_exit_never_recorded_is_an_error_not_a_success(monkeypatch) -> None:
    monkeypatch.setattr(execsync, "EXIT_POLL_MAX", 0.01)
    monkeypatch.setattr(execsync, "EXIT_WAIT", 0.1)
    docker = _SlowExit((True, None, 4321))
    with pytest.raises(errors.Unavailable, match="recorded no exit"):
        await execsync.exec_sync(docker, "c1", ["false"], timeout_s=0)
