"""Unit fixtures: the official protobuf classes, without any daemon."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.harness.clients import generate_official_stubs


@pytest.fixture(scope="session")
def pb():
    return generate_official_stubs(Path(tempfile.mkdtemp(prefix="crt-stubs-")))[0]
