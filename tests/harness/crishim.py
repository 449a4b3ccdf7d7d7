"""crishim itself, run as a real process (`python -m crishim serve`) for the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness.images import PAUSE_IMAGE
from tests.harness.paths import LOCK_DIR
from tests.harness.procs import stop_process, wait_for


class CrishimProcess:
    def __init__(
        self,
        root: Path,
        docker_endpoint: str,
        *extra: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.socket = root / "crishim.sock"
        self.state_dir = root / "state"
        self.log_path = root / "crishim.log"
        self.docker_endpoint = docker_endpoint
        self.extra = extra
        self.env = env or {}
        self.prefix = prefix  # e.g. nsenter into a test network namespace
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, wait: bool = True) -> CrishimProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            *self.prefix,
            sys.executable,
            "-m",
            "crishim",
            "serve",
            f"--listen=unix://{self.socket}",
            f"--docker-endpoint={self.docker_endpoint}",
            f"--state-dir={self.state_dir}",
            f"--lock-dir={LOCK_DIR}",
            "--metrics-address=",
            # Never the default (registry.k8s.io): tests must not reach for the internet.
            f"--pause-image={PAUSE_IMAGE}",
            "--log-format=json",
            "--log-level=debug",
            # Docker's bridge unless a test asks for CNI (extra flags come last and win).
            "--network-plugin=docker",
            *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRISHIM_")}
        # A restart appends to the same log: readiness is judged on the new lines only.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env={**env, **self.env}
            )
        if wait:
            wait_for(self._ready, 30, f"crishim on {self.socket} (see {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"crishim exited {self.proc.returncode}: {self.log_text()[-3000:]}")
        text = self.log_path.read_bytes()[self._log_offset :].decode(errors="replace")
        return '"event": "crishim_serving"' in text

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        """What crishim logged after `offset` (a log_size() taken earlier)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def events(self) -> list[dict]:
        """crishim's own JSON log lines, parsed."""
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout=60)
        self.proc = None
        return code
