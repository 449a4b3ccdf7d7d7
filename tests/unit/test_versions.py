"""Docker API version negotiation: the highest version both sides support."""

from __future__ import annotations

import pytest

from crishim.common import errors
from crishim.engine.docker import versions


@pytest.mark.parametrize(
    ("daemon_max", "daemon_min", "expected"),
    [
        pytest.param("1.41", "1.12", "1.41", id="docker-20.10"),
        pytest.param("1.43", "1.12", "1.43", id="docker-24"),
        pytest.param("1.47", "1.24", "1.47", id="docker-27"),
        pytest.param("1.52", "1.44", "1.52", id="docker-29"),
        pytest.param("1.60", "1.44", versions.CLIENT_MAX, id="newer-than-crishim"),
        pytest.param("1.41", None, "1.41", id="no-min-reported"),
    ],
)
def test_negotiates_the_highest_common_version(daemon_max, daemon_min, expected) -> None:
    assert versions.negotiate(daemon_max, daemon_min) == expected


@pytest.mark.parametrize(
    ("daemon_max", "daemon_min"),
    [
        pytest.param("1.40", "1.12", id="docker-19.03-too-old"),
        pytest.param("1.70", "1.60", id="daemon-minimum-above-crishim"),
    ],
)
def test_refuses_clearly_without_overlap(daemon_max, daemon_min) -> None:
    with pytest.raises(errors.Unavailable, match=r"does not overlap .*1\.41\.\.1\.52"):
        versions.negotiate(daemon_max, daemon_min)


def test_compares_numerically_not_as_text() -> None:
    assert versions.negotiate("1.100", "1.9") == versions.CLIENT_MAX
    assert versions.parse("v1.9") < versions.parse("1.41")
