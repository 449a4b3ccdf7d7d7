"""The create marks' journal: what a killed crishim left is found at start, whatever
was cut short, and the file stays small."""

from __future__ import annotations

from crishim import markjournal
from crishim.markjournal import JOURNAL, MarkJournal, read_marks


def test_open_marks_are_those_whose_last_line_is_a_mark(tmp_path) -> None:
    journal = MarkJournal(tmp_path / "creating")
    assert journal.start() == set()
    journal.mark("k8s_POD_a_ns_u_0")
    journal.mark("k8s_app_a_ns_u_0")
    journal.unmark(["k8s_POD_a_ns_u_0"])
    journal.mark("k8s_POD_a_ns_u_0")  # the same name again: marked again
    journal.unmark(["k8s_app_a_ns_u_0"])
    journal.mark('odd"name\nwith a newline')
    journal.close()
    assert read_marks(tmp_path / "creating") == {"k8s_POD_a_ns_u_0", 'odd"name\nwith a newline'}


def test_a_line_cut_short_by_a_kill_is_passed_over(tmp_path) -> None:
    directory = tmp_path / "creating"
    journal = MarkJournal(directory)
    journal.start()
    journal.mark("k8s_POD_a_ns_u_0")
    journal.close()
    with open(directory / JOURNAL, "ab") as f:
        f.write(b'+"k8s_POD_b_n')  # killed mid-write
    assert read_marks(directory) == {"k8s_POD_a_ns_u_0"}


def test_start_returns_what_was_left_and_clear_forgets_it(tmp_path) -> None:
    directory = tmp_path / "creating"
    first = MarkJournal(directory)
    first.start()
    first.mark("k8s_POD_left_ns_u_0")
    first.mark("k8s_POD_done_ns_u_0")
    first.unmark(["k8s_POD_done_ns_u_0"])
    first.close()  # as a killed process: its open mark stays in the file
    (directory / "k8s_app_old_ns_u_0").touch()  # a mark of a crishim with a file per mark

    second = MarkJournal(directory)
    assert second.start() == {"k8s_POD_left_ns_u_0", "k8s_app_old_ns_u_0"}
    second.clear()
    assert read_marks(directory) == set()
    assert [p.name for p in directory.iterdir()] == [JOURNAL]
    second.mark("k8s_POD_new_ns_u_0")  # the cleared journal still takes marks
    second.close()
    assert read_marks(directory) == {"k8s_POD_new_ns_u_0"}


def test_the_file_is_emptied_once_no_mark_is_left(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(markjournal, "LIMIT", 1000)
    directory = tmp_path / "creating"
    journal = MarkJournal(directory)
    journal.start()
    journal.mark("k8s_app_long_lived_ns_u_0")  # open throughout: the file keeps it
    for i in range(100):
        journal.mark(f"k8s_POD_p{i}_ns_u_0")
        journal.unmark([f"k8s_POD_p{i}_ns_u_0"])
    assert (directory / JOURNAL).stat().st_size > 1000
    assert read_marks(directory) == {"k8s_app_long_lived_ns_u_0"}
    journal.unmark(["k8s_app_long_lived_ns_u_0"])
    assert (directory / JOURNAL).stat().st_size == 0
    journal.mark("k8s_POD_next_ns_u_0")
    journal.close()
    assert read_marks(directory) == {"k8s_POD_next_ns_u_0"}
