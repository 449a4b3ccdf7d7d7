"""Where each setting comes from: flags > CRISHIM_* > TOML file > DOCKER_HOST > defaults."""

from __future__ import annotations

import pytest

from crishim import config
from crishim.common import errors


@pytest.fixture
def toml(tmp_path):
    path = tmp_path / "crishim.toml"
    path.write_text(
        'docker_endpoint = "unix:///from/file.sock"\nlog_level = "debug"\n'
        "shutdown_grace_seconds = 12.5\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        pytest.param({}, {}, "unix:///var/run/docker.sock", id="default"),
        pytest.param({}, {"DOCKER_HOST": "unix:///dh.sock"}, "unix:///dh.sock", id="docker-host"),
        pytest.param(
            {"config": "FILE"},
            {"DOCKER_HOST": "unix:///dh.sock"},
            "unix:///from/file.sock",
            id="file-over-docker-host",
        ),
        pytest.param(
            {"config": "FILE"},
            {"CRISHIM_DOCKER_ENDPOINT": "unix:///env.sock"},
            "unix:///env.sock",
            id="env-over-file",
        ),
        pytest.param(
            {"config": "FILE", "docker_endpoint": "unix:///flag.sock"},
            {"CRISHIM_DOCKER_ENDPOINT": "unix:///env.sock"},
            "unix:///flag.sock",
            id="flag-over-all",
        ),
        pytest.param({}, {"CRISHIM_CONFIG": "FILE"}, "unix:///from/file.sock", id="file-from-env"),
    ],
)
def test_precedence(flags, environ, expected, toml) -> None:
    flags = {k: (toml if v == "FILE" else v) for k, v in flags.items()}
    environ = {k: (toml if v == "FILE" else v) for k, v in environ.items()}
    assert config.load(flags, environ).docker_endpoint == expected


def test_file_values_are_typed_and_recorded(toml) -> None:
    cfg = config.load({"config": toml}, {})
    assert cfg.shutdown_grace_seconds == 12.5
    assert cfg.log_level == "debug"
    assert cfg.config_file == toml


def test_numbers_from_the_environment_are_converted() -> None:
    assert config.load({}, {"CRISHIM_MAX_REQUEST_BYTES": "4096"}).max_request_bytes == 4096


def test_defaults_are_what_the_docs_promise() -> None:
    cfg = config.load({}, {})
    assert cfg.listen == "unix:///run/crishim/crishim.sock"
    assert cfg.state_dir == "/var/lib/crishim"
    assert cfg.streaming_address == "127.0.0.1:0"
    assert cfg.log_format == "json"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"listen": "tcp://0.0.0.0:1"}, "listen", id="listen-scheme"),
        pytest.param({"log_format": "xml"}, "log_format", id="log-format"),
        pytest.param({"streaming_address": "nohost"}, "streaming_address", id="address"),
        pytest.param({"docker_endpoint": "ssh://x"}, "docker_endpoint", id="docker-scheme"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(flags, message) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        config.load(flags, {})


def test_unknown_keys_in_the_file_are_refused(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('listen = "unix:///x.sock"\nlisten_adress = "typo"\n')
    with pytest.raises(errors.InvalidArgument, match="listen_adress"):
        config.load({"config": str(path)}, {})


def test_an_unreadable_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(errors.InvalidArgument, match="No such file"):
        config.load({"config": str(tmp_path / "missing.toml")}, {})
