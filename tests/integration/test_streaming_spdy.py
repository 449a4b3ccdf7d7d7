"""Exec, attach and port-forward over SPDY/3.1, driven by an independent peer.

The client is Node.js's `spdy-transport` package (tests/peers/spdy/client.js),
not crishim's code: it must understand crishim's framing, header compression
and flow control for any of these to pass.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.harness.clients import Official
from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)

PEER = Path(__file__).resolve().parents[1] / "peers" / "spdy" / "client.js"


def node(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["node", str(PEER), *args], input=stdin, capture_output=True, timeout=timeout
    )


def exec_url(official: Official, cid: str, cmd: list[str], **flags) -> str:
    pb = official.pb
    return official.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=cmd, **flags), timeout=30).url


def test_exec_pipes_stdin_separates_stderr_and_reports_the_exit_code(
    official: Official,
    pod,  # noqa: F811
) -> None:
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(
        official,
        cid,
        ["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        stdin=True,
        stdout=True,
        stderr=True,
    )
    assert urlsplit(url).scheme == "http"
    assert urlsplit(url).hostname == "127.0.0.1"
    done = node("exec", url, "--stdin", "--stdout", "--stderr", stdin=b"piped through cat\n")
    assert done.stdout == b"piped through cat\n", done.stderr
    assert b"to-stderr\n" in done.stderr
    assert done.returncode == 3, done.stderr


def test_exec_success_exits_zero(official: Official, pod) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(official, cid, ["echo", "hello"], stdout=True)
    done = node("exec", url, "--stdout")
    assert (done.returncode, done.stdout) == (0, b"hello\n"), done.stderr


@pytest.mark.parametrize(
    "protocol", ["v5.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io"]
)
def test_older_and_newer_protocol_versions(official: Official, pod, protocol) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    url = exec_url(official, cid, ["sh", "-c", "echo out; exit 2"], stdout=True)
    done = node("exec", url, "--stdout", "--protocol", protocol)
    assert done.stdout == b"out\n"
    if protocol.startswith("v5"):
        assert done.returncode == 2  # v5 over SPDY is v4: a JSON Status with the exit code
    else:
        # Before v4 the error stream carries a sentence, not a code.
        assert b"non-zero exit code" in done.stderr


def test_exec_tty_resize_changes_what_stty_reports(official: Official, pod) -> None:  # noqa: F811
    cid = create(official, pod, "sh", ["sleep", "300"])
    script = (
        "for i in $(seq 100); do s=$(stty size); [ \"$s\" = '37 111' ] && break; "
        "sleep 0.1; done; echo size=$s"
    )
    url = exec_url(official, cid, ["sh", "-c", script], stdout=True, tty=True)
    done = node("exec", url, "--stdout", "--tty", "--resize", "111x37")
    assert b"size=37 111" in done.stdout, (done.stdout, done.stderr)
    assert done.returncode == 0


def test_attach_receives_output_and_writes_stdin(official: Official, pod) -> None:  # noqa: F811
    pb = official.pb
    ticker = create(
        official,
        pod,
        "ticker",
        ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done"],
    )
    url = official.runtime.Attach(
        pb.AttachRequest(container_id=ticker, stdout=True), timeout=30
    ).url
    with subprocess.Popen(
        ["node", str(PEER), "attach", url, "--stdout"], stdout=subprocess.PIPE
    ) as proc:
        try:
            lines = [proc.stdout.readline() for _ in range(2)]
        finally:
            proc.kill()
    assert all(line.startswith(b"tick-") for line in lines), lines
    first, second = (int(line.strip().split(b"-")[1]) for line in lines)
    assert second == first + 1

    # stdin_once (as `kubectl run -i` sets it): the client's end of input closes the
    # container's stdin, and its output still flows until it exits.
    echo = create(
        official,
        pod,
        "echo",
        ["sh", "-c", "read line; echo got:$line"],
        stdin=True,
        stdin_once=True,
    )
    url = official.runtime.Attach(
        pb.AttachRequest(container_id=echo, stdin=True, stdout=True), timeout=30
    ).url
    done = node("attach", url, "--stdin", "--stdout", stdin=b"written-by-attach\n")
    assert b"got:written-by-attach" in done.stdout, done.stderr


HTTPD = [
    "sh",
    "-c",
    "mkdir -p /www && echo page-$PORT > /www/index.html && httpd -f -p $PORT -h /www",
]


def _forward(official: Official, sandbox_id: str, *args: str) -> list[dict]:
    url = official.runtime.PortForward(
        official.pb.PortForwardRequest(pod_sandbox_id=sandbox_id), timeout=30
    ).url
    done = node("portforward", url, "--send", "GET / HTTP/1.0\r\n\r\n", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_port_forward_two_ports_ten_connections_each(official: Official, pod) -> None:  # noqa: F811
    for port in ("8080", "8081"):
        create(
            official, pod, f"web{port}", HTTPD, envs=[official.pb.KeyValue(key="PORT", value=port)]
        )
    sandbox_id = pod[0]
    results = _wait_served(
        official, sandbox_id, "--port", "8080", "--port", "8081", "--count", "10"
    )
    assert len(results) == 20
    for r in results:
        assert r["error"] == ""
        assert r["data"].startswith("HTTP/1.")
        assert f"page-{r['port']}" in r["data"]


def test_port_forward_to_an_unused_port_reports_an_error(official: Official, pod) -> None:  # noqa: F811
    create(official, pod, "idle", ["sleep", "300"])
    (result,) = _forward(official, pod[0], "--port", "9")
    assert result["data"] == ""
    error = json.loads(result["error"])
    assert "port 9" in error["message"]
    assert "refused" in error["message"].lower()


def _wait_served(official: Official, sandbox_id: str, *args: str) -> list[dict]:
    """httpd needs a moment to listen: retry while the answer is 'connection refused'."""
    from tests.harness.procs import wait_for

    results: list[dict] = []

    def served() -> bool:
        results[:] = _forward(official, sandbox_id, *args)
        return all(r["error"] == "" for r in results)

    wait_for(served, 30, "httpd serving")
    return results


def test_port_forward_in_a_host_network_pod(official: Official) -> None:
    from tests.integration.test_sandboxes import sandbox_config

    pb = official.pb
    config = sandbox_config(
        pb,
        security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.NODE)
        ),
    )
    sandbox_id = official.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    try:
        create(
            official,
            (sandbox_id, config),
            "web",
            HTTPD,
            envs=[pb.KeyValue(key="PORT", value="18089")],
        )
        results = _wait_served(official, sandbox_id, "--port", "18089")
        assert "page-18089" in results[0]["data"]
    finally:
        official.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
