"""The embedded default's broker: a private redis-server on a unix socket in PORTAL_DATA_DIR.

With CELERY_BROKER_URL unset the portal's processes talk to ``redis+socket://<socket>``
(portal/settings.py) and ``manage.py runportal`` runs this server as its first child and
stops it last. Nothing listens on TCP; the socket is the owner's only (mode 700). Messages
survive a restart of the server (append-only file in the same folder, written every
second). Why Redis and not kombu's filesystem or SQL transport: bench/README.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

# A unix socket's path is at most 107 bytes (sun_path holds 108 with its NUL).
SOCKET_PATH_MAX = 107


class EmbeddedBrokerUnavailable(Exception):
    """The private Redis cannot be run here; the message says what to do."""


def redis_server_command(*, folder: Path, socket: Path) -> list[str]:
    """The private redis-server's command line; ``folder`` holds its append-only file."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise EmbeddedBrokerUnavailable(
            "redis-server is not installed: `apt-get install redis-server` (make demo does "
            "it), or set CELERY_BROKER_URL to a broker of your own."
        )
    if len(str(socket).encode()) > SOCKET_PATH_MAX:
        raise EmbeddedBrokerUnavailable(
            f"The embedded broker's socket path {socket} is longer than {SOCKET_PATH_MAX} "
            "bytes, the limit of a unix socket: pick a shorter PORTAL_DATA_DIR."
        )
    return [
        executable,
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        "--unixsocketperm",
        "700",
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]


def broker_answers(socket: Path) -> bool:
    """Whether a Redis answers on ``socket`` now."""
    client = redis.Redis(unix_socket_path=str(socket), socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()
