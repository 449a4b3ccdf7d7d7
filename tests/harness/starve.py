"""A busy machine on demand: CPU hogs on every core while a test (or the session) runs.

`stress-ng --cpu N` with two workers per core keeps every core busy, as a node
packed with pods is (load average well over the core count): crishim's and
dockerd's processes then wait for the CPU between every step, which is when a
kubelet's deadline passes mid-call and the races of creation, cancellation, log
copy and events show. The hogs run at the default priority, as pods do. Stopping
ends exactly the stress-ng process started (it ends its own workers).
"""

from __future__ import annotations

import os
import subprocess

from tests.harness.procs import stop_process

PER_CORE = 2
LONGEST = "1800s"  # a bound of its own, should a session die without stopping it


class CpuHogs:
    def __init__(self, per_core: int = PER_CORE) -> None:
        self.workers = per_core * (os.cpu_count() or 1)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CpuHogs:
        self.proc = subprocess.Popen(
            ["stress-ng", "--cpu", str(self.workers), "--timeout", LONGEST, "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
            self.proc = None
