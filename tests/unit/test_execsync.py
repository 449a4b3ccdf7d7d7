"""Finding every process an exec started, from /proc."""

from __future__ import annotations

from crishim.execsync import descendants


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
