"""The finished creates' journal: what it holds is found at start, whatever was cut
short, and a rewrite keeps only what it is given."""

from __future__ import annotations

from crishim.pods.markjournal import JOURNAL, FinishJournal, read


def test_finished_tokens_are_found_and_a_line_cut_short_is_passed_over(tmp_path) -> None:
    directory = tmp_path / "creating"
    journal = FinishJournal(directory)
    assert journal.start() == (set(), set())
    journal.finished(["a1-1", "a1-2"])
    journal.finished(['odd"token\nwith a newline'])
    journal.close()
    with open(directory / JOURNAL, "ab") as f:
        f.write(b'="a1-3')  # killed mid-write
    assert read(directory) == (set(), {"a1-1", "a1-2", 'odd"token\nwith a newline'})


def test_an_older_crishim_s_marks_are_read_and_a_rewrite_drops_them(tmp_path) -> None:
    directory = tmp_path / "creating"
    directory.mkdir()
    (directory / JOURNAL).write_text(
        '+"k8s_POD_left_ns_u_0"\n+"k8s_POD_done_ns_u_0"\n-"k8s_POD_done_ns_u_0"\n="a1-1"\n'
    )
    (directory / "k8s_app_old_ns_u_0").touch()  # a mark of a crishim with a file per mark
    journal = FinishJournal(directory)
    assert journal.start() == ({"k8s_POD_left_ns_u_0", "k8s_app_old_ns_u_0"}, {"a1-1"})
    journal.rewrite({"a1-1"})
    assert read(directory) == (set(), {"a1-1"})
    assert [p.name for p in directory.iterdir()] == [JOURNAL]
    journal.finished(["a1-2"])  # the rewritten journal still takes lines
    assert journal.size == (directory / JOURNAL).stat().st_size
    journal.close()
    assert read(directory) == (set(), {"a1-1", "a1-2"})
