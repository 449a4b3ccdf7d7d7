"""ExecSync: output, exit code, the 16 MiB cap, and timeouts that leave nothing behind."""

from __future__ import annotations

import grpc
import pytest

from tests.harness.clients import Official
from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)


def exec_sync(official: Official, container_id: str, cmd: list[str], timeout: int = 0):
    return official.runtime.ExecSync(
        official.pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
        timeout=120,
    )


@pytest.fixture
def sleeper(official: Official, pod):  # noqa: F811
    return create(official, pod, "sleeper", ["sleep", "600"])


def test_output_and_exit_code(official: Official, sleeper) -> None:
    result = exec_sync(official, sleeper, ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"])
    assert result.stdout == b"to-out\n"
    assert result.stderr == b"to-err\n"
    assert result.exit_code == 3
    assert exec_sync(official, sleeper, ["true"]).exit_code == 0


def test_output_is_capped_at_16_mib_without_hanging(official: Official, sleeper) -> None:
    result = exec_sync(official, sleeper, ["sh", "-c", "head -c 20000000 /dev/zero; echo done >&2"])
    assert len(result.stdout) == 16 * 1024 * 1024
    assert result.stderr == b"done\n"
    assert result.exit_code == 0


def test_a_timeout_kills_the_command_and_leaves_nothing_behind(
    official: Official, sleeper, dockerd
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(official, sleeper, ["sleep", "60"], timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    processes = dockerd.docker("exec", sleeper, "ps", "-o", "args").splitlines()
    assert "sleep 60" not in processes
    assert "sleep 600" in processes, "the container itself keeps running"


def test_a_timeout_also_kills_what_the_command_started(
    official: Official, sleeper, dockerd
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(official, sleeper, ["sh", "-c", "sleep 61 & sleep 62; wait"], timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    processes = dockerd.docker("exec", sleeper, "ps", "-o", "args").splitlines()
    assert "sleep 61" not in processes
    assert "sleep 62" not in processes


def test_unknown_and_stopped_containers(official: Official, pod) -> None:  # noqa: F811
    pb = official.pb
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(official, "a" * 64, ["true"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    stopped = create(official, pod, "stopped", ["true"], start=False)
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(official, stopped, ["true"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        official.runtime.ExecSync(pb.ExecSyncRequest(container_id=stopped), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
