"""The conformance node (tests/harness/conformance.py), shared by critest and crictl tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import conformance


@pytest.fixture(scope="session")
def conformance_node(workdir: Path) -> Iterator[conformance.ConformanceNode]:
    if not conformance.present():
        raise RuntimeError(
            f"the conformance kit is absent at {conformance.KIT}: scripts/test.sh leaves these"
            " tests out where it is missing, and says so"
        )
    root = Path(tempfile.mkdtemp(prefix="conf-", dir=workdir))
    node = conformance.ConformanceNode(root)
    try:
        yield node.start()
    finally:
        node.stop()
