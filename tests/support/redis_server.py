"""A private redis-server for fault tests: started in a tmp folder on a free port, stopped and
started again on that same port by the test, so a broker outage is real. Never the shared
Redis on 6379, which other test runs use.

``private_redis`` is the fixture (register it in a conftest); ``celery_app_broker`` points
this test process's own Celery app at another broker for a while. No Django here except in
``celery_app_broker``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.processes import free_port, wait_until


@dataclass
class RedisServer:
    """One redis-server process of a test; ``start`` and ``stop`` it as often as needed."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    # Nothing survives a stop: an outage loses what was queued, as a Redis
                    # without persistence would.
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            self.answers, timeout=20, what=f"redis-server on port {self.port}", details=self.log
        )

    def stop(self) -> None:
        """Stop it and wait until it is gone: connections to it are refused from now on."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server of this test only; stopped at teardown."""
    server = RedisServer(directory=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def celery_app_broker(url: str) -> Iterator[None]:
    """This process's Celery app publishes to ``url`` meanwhile, then to its own broker again.

    The app keeps a connection pool for its broker, made on first use from kombu's registry
    of pools (one per broker URL, never closed here: the registry would hand the closed one
    out again); it is forgotten on the way in and out, so publishes really go to ``url``.
    """
    from portal.celery import app

    def drop_pools() -> None:
        app._pool = None
        app.amqp._producer_pool = None

    # Publishes use the write URL; Celery reads CELERY_BROKER_URL from the environment
    # before its own broker_url setting, but this one from its settings.
    before = app.conf.get("broker_write_url")
    drop_pools()
    app.conf.broker_write_url = url
    try:
        yield
    finally:
        drop_pools()
        app.conf.broker_write_url = before
