"""The CRI socket's states, as crishim and `crishim check` see them."""

from __future__ import annotations

import socket
import stat

import pytest

from crishim.server import listen


def test_absent_stale_live_and_not_a_socket(tmp_path) -> None:
    path = tmp_path / "c.sock"
    assert listen.probe(path) == "absent"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    assert listen.probe(path) == "live"
    server.close()
    assert listen.probe(path) == "stale"
    plain = tmp_path / "file"
    plain.write_text("x")
    assert listen.probe(plain) == "not-a-socket"


def test_binding_replaces_a_stale_socket_with_mode_0660(tmp_path) -> None:
    path = tmp_path / "run" / "c.sock"
    path.parent.mkdir()
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(path))
    old.close()
    listener = listen.open_listener(f"unix://{path}")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert listen.probe(path) == "live"
    finally:
        listener.sock.close()
        listener.unlink()
    assert not path.exists()


def test_binding_refuses_a_regular_file(tmp_path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("not a socket")
    with pytest.raises(listen.AddressInUse, match="not a socket"):
        listen.open_listener(f"unix://{path}")
    assert path.read_text() == "not a socket"


def test_fd_listen_without_systemd_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("LISTEN_PID", raising=False)
    with pytest.raises(Exception, match="no socket was passed by systemd"):
        listen.open_listener("fd://")
