"""The crishim process: its socket, signals, systemd integration, check, metrics and logs."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from tests.harness import images
from tests.harness.clients import Official
from tests.harness.paths import LOCK_DIR
from tests.harness.procs import free_port, wait_for
from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)
from tests.integration.test_sandboxes import sandbox_config


def test_the_socket_is_created_with_mode_0660(crishim) -> None:
    mode = os.stat(crishim.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def test_a_stale_socket_file_is_replaced(dockerd, crishim_factory, workdir, official_stubs) -> None:
    root = workdir / "stale"
    root.mkdir()
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(root / "crishim.sock"))
    leftover.close()  # the file stays, nobody listens: what a crash leaves behind
    proc = crishim_factory(dockerd.endpoint, f"--listen=unix://{root / 'crishim.sock'}")
    client = Official(root / "crishim.sock", *official_stubs)
    try:
        assert (
            client.runtime.Version(client.pb.VersionRequest(), timeout=10).runtime_name == "docker"
        )
    finally:
        client.close()
    assert proc.proc.poll() is None


def test_a_socket_served_by_a_live_process_is_refused(dockerd, crishim_factory, crishim) -> None:
    second = crishim_factory(dockerd.endpoint, f"--listen=unix://{crishim.socket}", wait=False)
    assert second.wait(30) != 0
    assert "served by another live process" in second.log_text()
    assert os.path.exists(crishim.socket), "the first crishim's socket must stay"


def test_sigterm_lets_a_slow_call_finish_then_removes_the_socket_and_exits_0(
    dockerd_factory, crishim_factory, official_stubs, workdir
) -> None:
    daemon = dockerd_factory()
    images.build(daemon, workdir / f"build-{daemon.name}")
    proc = crishim_factory(daemon.endpoint, "--shutdown-grace-seconds=30")
    client = Official(proc.socket, *official_stubs)
    pb = client.pb
    result = {}

    def slow_run() -> None:
        try:
            request = pb.RunPodSandboxRequest(config=sandbox_config(pb))
            result["response"] = client.runtime.RunPodSandbox(request, timeout=60)
        except grpc.RpcError as exc:
            result["error"] = exc

    # A frozen Docker daemon holds RunPodSandbox at its container create.
    daemon.pause()
    try:
        caller = threading.Thread(target=slow_run)
        caller.start()
        time.sleep(1)
        assert caller.is_alive(), result
        proc.signal(signal.SIGTERM)
        wait_for(lambda: not proc.socket.exists(), 10, "the socket removed on SIGTERM")
        time.sleep(1)
        assert caller.is_alive(), "the call in flight must not be cut short"
        daemon.resume()
        caller.join(60)
        code = proc.wait(60)
    finally:
        daemon.resume()
        client.close()
    assert "error" not in result, result.get("error")
    assert result["response"].pod_sandbox_id
    assert code == 0
    assert not proc.socket.exists()
    assert any(e.get("event") == "crishim_stopped" for e in proc.events())


def test_readiness_and_stopping_are_sent_to_systemd(dockerd, crishim_factory, workdir) -> None:
    notify_path = workdir / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(30)
    try:
        proc = crishim_factory(dockerd.endpoint, env={"NOTIFY_SOCKET": str(notify_path)})
        assert listener.recv(256) == b"READY=1"
        proc.signal(signal.SIGTERM)
        assert listener.recv(256) == b"STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        listener.close()


def test_serves_a_socket_passed_by_systemd(dockerd, workdir, official_stubs) -> None:
    path = workdir / "activated.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen()
    # What systemd does: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID=<the service's pid>.
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); "
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
        "os.execv(sys.executable, [sys.executable, '-m', 'crishim', 'serve', *sys.argv[2:]])"
    )
    log = (workdir / "activated.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launcher,
            str(sock.fileno()),
            "--listen=fd://",
            f"--docker-endpoint={dockerd.endpoint}",
            f"--state-dir={workdir / 'activated-state'}",
            f"--lock-dir={LOCK_DIR}",
            "--network-plugin=docker",
            "--metrics-address=",
        ],
        pass_fds=(sock.fileno(),),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sock.close()
    client = Official(path, *official_stubs)
    try:
        response = client.runtime.Version(client.pb.VersionRequest(), timeout=30)
        assert response.runtime_name == "docker"
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
    assert path.exists(), "systemd owns the socket path: crishim must leave it"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crishim", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_against_the_private_daemon_reports_every_check(dockerd, workdir) -> None:
    version = dockerd.docker("version", "--format", "{{.Server.Version}}").strip()
    result = run_check(
        f"--docker-endpoint={dockerd.endpoint}",
        f"--state-dir={workdir / 'cs'}",
        f"--listen=unix://{workdir / 'cs' / 'c.sock'}",
    )
    lines = result.stdout.splitlines()
    names = {line[5:].split(":")[0] for line in lines if line[:4].strip() in ("OK", "WARN", "FAIL")}
    assert {
        "docker",
        "storage driver",
        "cgroup driver",
        "cgroup version",
        "state dir",
        "socket dir",
        "socket",
        "network",
    } <= names
    assert f"OK   docker: Docker {version}" in result.stdout
    assert "OK   storage driver: overlay2" in result.stdout
    assert result.returncode == 0, result.stdout


def test_check_reports_the_cni_network_and_cni_config_writes_the_default(workdir) -> None:
    conf_dir = workdir / "check-net.d"
    flags = (f"--cni-conf-dir={conf_dir}", "--cni-bin-dir=/usr/lib/cni")
    empty = run_check(*flags)
    assert (
        f"WARN network: cni mode, NetworkReady stays false: no network config found in {conf_dir}"
        in empty.stdout
    )
    written = subprocess.run(
        [sys.executable, "-m", "crishim", "cni-config", *flags], capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    assert (conf_dir / "90-crishim.conflist").exists()
    found = run_check(*flags)
    assert (
        f"OK   network: cni network 'crishim' from {conf_dir / '90-crishim.conflist'} "
        "(cniVersion 1.0.0; plugins bridge, portmap, found on /usr/lib/cni)"
    ) in found.stdout
    again = subprocess.run(
        [sys.executable, "-m", "crishim", "cni-config", *flags], capture_output=True, text=True
    )
    assert "already has a network config" in again.stdout
    docker_mode = run_check(*flags, "--network-plugin=docker")
    assert "OK   network: docker mode: pods use Docker's default bridge" in docker_mode.stdout


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        (
            "--metrics-address=127.0.0.1:{port}",
            "metrics_address 127.0.0.1:{port}: Address already in use",
        ),
        (
            "--streaming-address=127.0.0.1:{port}",
            "streaming_address 127.0.0.1:{port}: Address already in use",
        ),
        (
            "--listen=unix:///proc/no/such.sock",
            "listen unix:///proc/no/such.sock: No such file or directory",
        ),
        ("--state-dir=/proc/no/such", "state_dir /proc/no/such: No such file or directory"),
    ],
    ids=["metrics-port-taken", "streaming-port-taken", "socket-path", "state-dir"],
)
def test_a_startup_error_is_one_clear_line(workdir, flag, says) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        root = workdir / f"startup-{port}"
        result = subprocess.run(
            [
                sys.executable, "-m", "crishim", "serve",
                f"--listen=unix://{root}/c.sock", f"--state-dir={root}/state",
                f"--docker-endpoint=unix://{root}/no-docker.sock", "--metrics-address=",
                f"--lock-dir={root}/locks", "--network-plugin=docker",
                "--log-level=error", flag.format(port=port),
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"crishim: {says.format(port=port)}"
    assert "Traceback" not in result.stderr + result.stdout
    assert "Unclosed" not in result.stderr + result.stdout


def test_check_against_a_dead_endpoint_fails_with_a_reason(workdir) -> None:
    result = run_check(
        f"--docker-endpoint=unix://{workdir / 'nothing.sock'}", f"--state-dir={workdir / 'cs2'}"
    )
    assert result.returncode != 0
    assert "FAIL docker: docker: cannot connect to" in result.stdout
    assert "No such file or directory" in result.stdout


def test_check_refuses_a_socket_in_use(dockerd, crishim) -> None:
    result = run_check(
        f"--docker-endpoint={dockerd.endpoint}",
        f"--listen=unix://{crishim.socket}",
        f"--state-dir={crishim.state_dir}",
    )
    assert result.returncode == 1
    assert f"FAIL socket: {crishim.socket} is served by another live process" in result.stdout


def test_metrics_count_rpcs_and_time_docker_calls(dockerd, crishim_factory, official_stubs) -> None:
    port = free_port()
    proc = crishim_factory(dockerd.endpoint, f"--metrics-address=127.0.0.1:{port}")
    client = Official(proc.socket, *official_stubs)
    try:
        for _ in range(3):
            client.runtime.Version(client.pb.VersionRequest(), timeout=10)
        with pytest.raises(grpc.RpcError):
            client.runtime.ContainerStatus(
                client.pb.ContainerStatusRequest(container_id="f" * 64), timeout=10
            )
    finally:
        client.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert 'crishim_rpc_total{code="OK",method="Version"} 3.0' in text
    assert 'crishim_rpc_total{code="NOT_FOUND",method="ContainerStatus"} 1.0' in text
    assert 'crishim_rpc_duration_seconds_count{method="Version"} 3.0' in text
    assert 'crishim_docker_request_duration_seconds_count{operation="version"}' in text

    def lag_samples() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read()
        (line,) = [
            x
            for x in text.decode().splitlines()
            if x.startswith("crishim_event_loop_lag_seconds_count")
        ]
        return float(line.split()[-1])

    wait_for(lambda: lag_samples() >= 2, 30, "two loop-lag samples (one a second)")


def test_one_log_event_per_rpc_with_method_code_duration_and_ids(
    official: Official, crishim
) -> None:
    pb = official.pb
    with pytest.raises(grpc.RpcError):
        official.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id="c0ffee"), timeout=10
        )
    official.runtime.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(), timeout=10)
    events = [e for e in crishim.events() if e.get("event") == "rpc"]
    status = [e for e in events if e["rpc"] == "ContainerStatus"][-1]
    assert status["container_id"] == "c0ffee"
    assert status["code"] == "NOT_FOUND"
    assert status["level"] == "warning", "client errors log at warning"
    assert isinstance(status["duration_ms"], float)
    update = [e for e in events if e["rpc"] == "UpdateRuntimeConfig" and e["code"] == "OK"][-1]
    assert update["level"] == "info", "mutating calls log at info"
    version = [e for e in events if e["rpc"] == "Version"]
    assert all(e["level"] == "debug" for e in version if e["code"] == "OK"), "polled calls at debug"


def test_an_exec_probe_is_a_debug_line_and_its_failure_a_warning(
    official: Official,
    crishim,
    pod,  # noqa: F811
) -> None:
    """The kubelet's exec probes call ExecSync every period, as it polls: at info they
    would be a line per container and period."""
    pb = official.pb
    container_id = create(official, pod, "probed", ["sleep", "300"])
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=10)
    assert official.runtime.ExecSync(request, timeout=30).exit_code == 0
    with pytest.raises(grpc.RpcError):
        official.runtime.ExecSync(
            pb.ExecSyncRequest(container_id="c0ffee", cmd=["true"]), timeout=30
        )
    execs = [e for e in crishim.events() if e.get("event") == "rpc" and e["rpc"] == "ExecSync"]
    ok = [e for e in execs if e["code"] == "OK"][-1]
    assert (ok["level"], ok["container_id"]) == ("debug", container_id)
    assert [e for e in execs if e["code"] == "NOT_FOUND"][-1]["level"] == "warning"


def test_the_rpc_line_of_a_create_names_what_it_made(official: Official, crishim, pod) -> None:  # noqa: F811
    sandbox_id, _ = pod
    container_id = create(official, pod, "named", ["true"], start=False)
    events = [e for e in crishim.events() if e.get("event") == "rpc"]
    run = [e for e in events if e["rpc"] == "RunPodSandbox" and e["code"] == "OK"][-1]
    assert run["pod_sandbox_id"] == sandbox_id
    assert run["name"].startswith("k8s_POD_")
    made = [e for e in events if e["rpc"] == "CreateContainer" and e["code"] == "OK"][-1]
    assert made["container_id"] == container_id
    assert made["pod_sandbox_id"] == sandbox_id
    assert made["name"].startswith("k8s_named_")
    assert made["level"] == "info"


def test_a_read_only_state_dir_is_refused_in_one_line(workdir) -> None:
    state = workdir / "ro-state"
    state.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(state)], check=True)
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "crishim", "serve",
                f"--listen=unix://{workdir}/ro.sock", f"--state-dir={state}",
                f"--docker-endpoint=unix://{workdir}/no-docker.sock", "--metrics-address=",
                f"--lock-dir={workdir}/ro-locks", "--network-plugin=docker",
                "--log-level=error",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(state)], check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"crishim: state_dir {state}: Read-only file system"
    )
    assert "Traceback" not in result.stderr + result.stdout
