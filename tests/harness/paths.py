"""Paths the whole suite shares."""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

# Pods' log directories (the kubelet's /var/log/pods), removed when the session ends.
LOG_ROOT = Path(f"/tmp/crt-logs-{os.getpid()}")

# The log-copier lock directory of every crishim the suite starts (never /run/crishim).
LOCK_DIR = Path(f"/tmp/crt-locks-{os.getpid()}")


@atexit.register
def _remove() -> None:
    """Whatever process used them (the suite, a bench, a script) leaves neither behind."""
    for path in (LOG_ROOT, LOCK_DIR):
        shutil.rmtree(path, ignore_errors=True)
