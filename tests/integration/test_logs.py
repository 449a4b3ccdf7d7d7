"""Container output in CRI log files: complete, in order, across restarts and rotation."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tests.harness.clients import Official
from tests.harness.paths import LOCK_DIR
from tests.harness.procs import wait_for
from tests.integration.test_containers import create, pod, wait_exited  # noqa: F401  (fixture)
from tests.integration.test_sandboxes import sandbox_config

CRI_LINE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (stdout|stderr) ([FP]) (.*)")


def log_file(pod, name: str) -> Path:  # noqa: F811
    return Path(pod[1].log_directory) / name / "0.log"


def read_lines(path: Path) -> list[tuple[bytes, bytes, bytes]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    # A reader racing the copier can see a write half done; like the kubelet's
    # follower, an unterminated last line is not a line yet.
    data = data[: data.rfind(b"\n") + 1]
    out = []
    for raw in data.splitlines():
        match = CRI_LINE.fullmatch(raw)
        assert match, f"not a CRI log line: {raw[:120]!r}"
        out.append(match.group(2, 3, 4))
    return out


def test_ten_thousand_lines_arrive_complete_and_in_order(official: Official, pod) -> None:  # noqa: F811
    create(official, pod, "printer", ["sh", "-c", "seq 1 10000; echo on-stderr >&2; sleep 300"])
    path = log_file(pod, "printer")
    wait_for(lambda: len(read_lines(path)) >= 10001, 60, "10 001 log lines")
    lines = read_lines(path)
    out = [text for stream, tag, text in lines if stream == b"stdout"]
    assert out == [str(i).encode() for i in range(1, 10001)]
    assert all(tag == b"F" for _, tag, _ in lines)
    assert (b"stderr", b"F", b"on-stderr") in lines
    assert len(lines) == 10001


def test_a_long_line_is_split_into_partial_pieces(official: Official, pod) -> None:  # noqa: F811
    create(
        official, pod, "long", ["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' a; echo; sleep 300"]
    )
    path = log_file(pod, "long")
    wait_for(lambda: any(tag == b"F" for _, tag, _ in read_lines(path)), 30, "the full line")
    lines = read_lines(path)
    assert [tag for _, tag, _ in lines][-1] == b"F"
    assert all(tag == b"P" for _, tag, _ in lines[:-1])
    assert len(lines) > 1
    assert b"".join(text for _, _, text in lines) == b"a" * 40000


def test_reopen_after_rotation_writes_to_a_new_file(official: Official, pod) -> None:  # noqa: F811
    pb = official.pb
    cid = create(
        official,
        pod,
        "ticker",
        ["sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done"],
    )
    path = log_file(pod, "ticker")
    wait_for(lambda: len(read_lines(path)) >= 5, 30, "some ticks")
    rotated = path.with_name("0.log.20261122-000000")
    path.rename(rotated)
    official.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=30)
    size = rotated.stat().st_size
    wait_for(lambda: len(read_lines(path)) >= 5, 30, "ticks in the new file")
    time.sleep(0.5)
    assert rotated.stat().st_size == size, "nothing more goes to the rotated file"
    old, new = read_lines(rotated), read_lines(path)
    numbers = [int(t.split(b"-")[1]) for _, _, t in old + new]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "no tick lost or repeated"


def test_reopen_of_stopped_and_unknown_containers(official: Official, pod) -> None:  # noqa: F811
    pb = official.pb
    cid = create(official, pod, "quick", ["true"])
    wait_for(
        lambda: (
            official.runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=cid), timeout=30
            ).status.state
            == pb.CONTAINER_EXITED
        ),
        30,
        "exit",
    )
    with pytest.raises(grpc.RpcError) as err:
        official.runtime.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id=cid), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        official.runtime.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id="b" * 64), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _pod_of(client: Official):
    """A running pod of `client`'s crishim: (sandbox id, its config)."""
    config = sandbox_config(client.pb)
    sandbox_id = client.runtime.RunPodSandbox(
        client.pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    return sandbox_id, config


def test_nothing_is_lost_while_crishim_is_down(private_node, official_stubs) -> None:
    _, proc, client = private_node
    pb = client.pb
    the_pod = _pod_of(client)
    sandbox_id = the_pod[0]
    create(
        client,
        the_pod,
        "counter",
        [
            "sh",
            "-c",
            "i=0; while [ $i -lt 150 ]; do echo n-$i; i=$((i+1)); sleep 0.04; done; sleep 300",
        ],
    )
    path = log_file(the_pod, "counter")
    wait_for(lambda: len(read_lines(path)) >= 10, 30, "the first lines")
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    down_at = len(read_lines(path))
    time.sleep(3)  # the container keeps printing while crishim is down
    assert len(read_lines(path)) == down_at, "nobody writes while crishim is down"
    proc.start()
    client = Official(proc.socket, *official_stubs)
    try:
        wait_for(lambda: len(read_lines(path)) >= 150, 60, "all 150 lines")
        texts = [t for _, _, t in read_lines(path)]
        assert texts == [f"n-{i}".encode() for i in range(150)], "every line once, in order"
        assert down_at < 150, "some lines were printed while crishim was down"
    finally:
        client.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        client.close()


def test_the_log_file_exists_when_start_returns_even_for_a_silent_container(
    official: Official,
    pod,  # noqa: F811
) -> None:
    create(official, pod, "silent", ["sleep", "300"])
    path = log_file(pod, "silent")
    assert path.exists(), "StartContainer returned before the log file existed"
    assert path.read_bytes() == b""


def test_the_log_file_exists_from_the_create_and_after_a_start_by_a_restarted_crishim(
    private_node, official_stubs
) -> None:
    _, proc, client = private_node
    pb = client.pb
    the_pod = _pod_of(client)
    sandbox_id = the_pod[0]
    cid = create(client, the_pod, "later", ["sleep", "300"], start=False)
    path = log_file(the_pod, "later")
    assert path.exists(), "CreateContainer made the log file"
    path.unlink()  # made by a create this crishim does not remember after its restart
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    proc.start()
    client = Official(proc.socket, *official_stubs)
    try:
        client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        assert path.exists(), "StartContainer made the log file its create made before"
    finally:
        client.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        client.close()


def test_everything_printed_is_in_the_file_before_the_exit_is_reported(
    official: Official,
    pod,  # noqa: F811
) -> None:
    pb = official.pb
    for attempt in range(50):
        name = f"quick{attempt}"
        cid = create(official, pod, name, ["sh", "-c", "seq 1 100; echo done >&2"])
        path = log_file(pod, name)
        assert path.exists()
        wait_exited(official, cid, 30)
        lines = read_lines(path)  # read at once, the moment the exit is visible
        assert [t for s, _, t in lines if s == b"stdout"] == [
            str(i).encode() for i in range(1, 101)
        ], f"attempt {attempt}"
        assert (b"stderr", b"F", b"done") in lines
        official.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)


def test_two_crishims_on_one_daemon_write_each_line_once(
    private_node, crishim_factory, official_stubs, workdir
) -> None:
    daemon, first, client = private_node
    second = crishim_factory(daemon.endpoint)
    wait_for(
        lambda: any(e.get("event") == "log_copy_passive" for e in second.events()),
        30,
        "the second process passive",
    )
    pb = client.pb
    config = sandbox_config(pb)
    sandbox_id = client.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    the_pod = (sandbox_id, config)
    script = "i=0; while [ $i -lt 80 ]; do echo n-$i; i=$((i+1)); sleep 0.05; done"
    create(client, the_pod, "counter", ["sh", "-c", script])
    path = log_file(the_pod, "counter")
    wait_for(lambda: len(read_lines(path)) >= 15, 30, "the first lines")
    first.signal(signal.SIGKILL)  # the owner dies: the passive process takes over
    first.wait(30)
    other = Official(second.socket, *official_stubs)
    try:
        wait_for(lambda: len(read_lines(path)) >= 80, 60, "all 80 lines")
        time.sleep(2)  # anything written twice would show up by now
        texts = [t for _, _, t in read_lines(path)]
        assert texts == [f"n-{i}".encode() for i in range(80)], "every line once, in order"
        assert any(e.get("event") == "log_copy_owner" for e in second.events())
        check = subprocess.run(
            [
                sys.executable, "-m", "crishim", "check",
                f"--docker-endpoint={daemon.endpoint}", f"--lock-dir={LOCK_DIR}",
                f"--state-dir={workdir / 'check-logs'}",
                f"--listen=unix://{workdir / 'check-logs' / 'c.sock'}",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert f"WARN log copy: crishim pid {second.proc.pid} copies" in check.stdout
    finally:
        other.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        other.close()


def every_line_once(path: Path, total: int) -> None:
    """n-0 .. n-<total-1>, each once and in order (waited for; then a second for doubles)."""
    wait_for(lambda: len(read_lines(path)) >= total, 120, f"all {total} lines")
    time.sleep(1)  # anything written twice would show up by now
    texts = [t for _, _, t in read_lines(path)]
    assert texts == [f"n-{i}".encode() for i in range(total)], "every line once, in order"


def test_every_line_exactly_once_across_random_sigkills(private_node, official_stubs) -> None:
    _, proc, client = private_node
    pb = client.pb
    config = sandbox_config(pb)
    sandbox_id = client.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    the_pod = (sandbox_id, config)
    total = 6000
    # Bursts with pauses: the copier is often in the middle of a batch when it dies.
    create(
        client,
        the_pod,
        "burst",
        [
            "sh",
            "-c",
            f"i=0; while [ $i -lt {total} ]; do echo n-$i; i=$((i+1));"
            " [ $((i % 20)) -eq 0 ] && sleep 0.02; done; sleep 300",
        ],
    )
    path = log_file(the_pod, "burst")
    client.close()
    rng = random.Random(20261123)
    try:
        for _ in range(8):
            time.sleep(rng.uniform(0.05, 0.6))
            proc.signal(signal.SIGKILL)
            proc.wait(30)
            proc.start()
        every_line_once(path, total)
    finally:
        client = Official(proc.socket, *official_stubs)
        client.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        client.close()


def test_a_full_log_disk_is_reported_at_once_and_copying_resumes_with_room(
    official: Official, crishim, workdir
) -> None:
    pb = official.pb
    disk = workdir / "tiny-log-disk"
    disk.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        filler = disk / "filler"
        # Leave ~16 KiB: the first few hundred lines fit, the rest do not.
        filler.write_bytes(b"\0" * (240 * 1024))
        config = sandbox_config(pb)
        config.log_directory = str(disk / "pod")
        sandbox_id = official.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=config), timeout=120
        ).pod_sandbox_id
        try:
            total = 3000
            create(
                official,
                (sandbox_id, config),
                "chatty",
                ["sh", "-c", f"i=0; while [ $i -lt {total} ]; do echo n-$i; i=$((i+1)); done;"
                 " sleep 300"],
            )  # fmt: skip
            path = disk / "pod" / "chatty" / "0.log"

            def failing() -> bool:
                return any(
                    e.get("event") == "log_copy_failing" and e.get("path") == str(path)
                    for e in crishim.events()
                )

            wait_for(failing, 30, "log_copy_failing in crishim's log")
            assert len(read_lines(path)) < total
            filler.unlink()  # room again: copying resumes by itself
            wait_for(lambda: len(read_lines(path)) >= total, 60, f"all {total} lines")
            texts = [t for _, _, t in read_lines(path)]
            assert texts == [f"n-{i}".encode() for i in range(total)], "every line once, in order"
            assert any(e.get("event") == "log_copy_resumed" for e in crishim.events())
        finally:
            official.runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
            )
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_state_dir_neither_stops_copying_nor_duplicates_after_a_kill(
    private_node, official_stubs
) -> None:
    """Checkpoints that cannot be saved: lines still copied, and once each across SIGKILL."""
    _, proc, client = private_node
    pb = client.pb
    checkpoints = proc.state_dir / "logs"
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(checkpoints)]
    subprocess.run(mount, check=True)
    sandbox_id = ""
    try:
        (checkpoints / "filler").write_bytes(b"\0" * (64 * 1024))  # not one byte left
        config = sandbox_config(pb)
        sandbox_id = client.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=config), timeout=120
        ).pod_sandbox_id
        total = 3000
        create(
            client,
            (sandbox_id, config),
            "steady",
            ["sh", "-c", f"i=0; while [ $i -lt {total} ]; do echo n-$i; i=$((i+1));"
             " [ $((i % 50)) -eq 0 ] && sleep 0.05; done; sleep 300"],
        )  # fmt: skip
        path = log_file((sandbox_id, config), "steady")
        wait_for(lambda: len(read_lines(path)) >= 500, 30, "copying on without checkpoints")
        assert any(e.get("event") == "log_checkpoint_failing" for e in proc.events())
        proc.signal(signal.SIGKILL)  # its checkpoint, if any, is far behind the file
        proc.wait(30)
        proc.start()
        every_line_once(path, total)
    finally:
        if sandbox_id:
            fresh = Official(proc.socket, *official_stubs)
            fresh.runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
            )
            fresh.close()
        subprocess.run(["umount", "-l", str(checkpoints)], check=False)
