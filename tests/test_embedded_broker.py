"""The embedded default's private Redis (portal/embedded_broker.py) and runportal's back-off
(portal/supervisor.py): what they refuse and how long they wait. Real redis-server."""

from __future__ import annotations

import subprocess

import pytest

from portal.embedded_broker import (
    SOCKET_PATH_MAX,
    EmbeddedBrokerUnavailable,
    broker_answers,
    redis_server_command,
)
from portal.supervisor import BACKOFF_MAX_SECONDS, restart_delay
from tests.support.processes import wait_until


def test_the_private_redis_answers_on_a_socket_only_its_owner_may_use(tmp_path):
    # given the embedded broker's command line for a folder
    socket = tmp_path / "redis.sock"
    # when it runs
    server = subprocess.Popen(
        redis_server_command(folder=tmp_path, socket=socket), stdout=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: broker_answers(socket), timeout=30, what="the private Redis")
        # then it answers on the socket, which only its owner may use
        assert oct(socket.stat().st_mode & 0o777) == "0o700"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not broker_answers(socket)


def test_a_socket_path_too_long_for_a_unix_socket_is_refused_naming_the_data_folder(tmp_path):
    # given a data folder so deep that the socket's path passes the limit
    socket = tmp_path / ("d" * SOCKET_PATH_MAX) / "redis.sock"
    # when / then the command line is refused, saying what to change
    with pytest.raises(EmbeddedBrokerUnavailable, match="shorter PORTAL_DATA_DIR"):
        redis_server_command(folder=tmp_path, socket=socket)


def test_a_missing_redis_server_is_refused_saying_how_to_install_it(tmp_path, monkeypatch):
    # given no redis-server on PATH
    monkeypatch.setenv("PATH", str(tmp_path))
    # when / then the command line is refused, saying how to install it or what else to set
    with pytest.raises(EmbeddedBrokerUnavailable, match="apt-get install redis-server"):
        redis_server_command(folder=tmp_path, socket=tmp_path / "redis.sock")


def test_the_restart_back_off_doubles_up_to_its_cap():
    # given / when a part exits again and again / then the waits double, then stay capped
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, BACKOFF_MAX_SECONDS, 30]
