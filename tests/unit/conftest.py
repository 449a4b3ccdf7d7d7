"""Unit fixtures: the official protobuf classes, without any daemon."""

from __future__ import annotations

import pytest

from tests.harness.clients import generate_official_stubs


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    return generate_official_stubs(tmp_path_factory.mktemp("stubs"))[0]
