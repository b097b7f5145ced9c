"""Tunnel agents and servers behind them for the tunnel tests: a real ``run_tunnel_agent``
process on the test database, and plain HTTP servers on loopback ports standing in for
Jupyter servers on a node."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from outposts import dispatch
from tests.support.portal import ROOT, e2e_worker_command, portal_process_env
from tests.support.processes import free_port, response_if_up, stop_group, wait_until


@dataclass
class WebServer:
    """``python -m http.server`` on 127.0.0.1:port, serving a page that says ``text``."""

    port: int
    text: str
    proc: subprocess.Popen[bytes]


def page_through(address: str, *, timeout: float = 3) -> str | None:
    """The index page at ``host:port``, or None while nothing answers 200 there."""
    response = response_if_up(f"http://{address}/", timeout=timeout)
    return response.text if response is not None and response.status_code == 200 else None


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[Callable[[str], WebServer]]:
    """Start plain HTTP servers, each with a page of its own text; all stopped at teardown."""
    started: list[WebServer] = []

    def start(text: str) -> WebServer:
        folder = tmp_path / f"www-{len(started)}"
        folder.mkdir()
        (folder / "index.html").write_text(text)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = WebServer(port=port, text=text, proc=proc)
        started.append(server)
        wait_until(lambda: page_through(f"127.0.0.1:{port}") == text, what="the web server")
        return server

    yield start
    for server in started:
        stop_group(server.proc, timeout=5)


@dataclass
class AgentProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_group(self.proc, timeout=15)


def agent_start(
    directory: Path, name: str, *, env: dict[str, str] | None = None, in_worker: bool = False
) -> AgentProcess:
    """Start ``manage.py run_tunnel_agent --name NAME`` on the test database, logging into
    ``directory``; or, ``in_worker``, a Celery worker running the agent in a thread
    (``--tunnel-agent NAME``, as runportal's), on a queue nobody else uses. The caller stops
    it."""
    log_path = directory / f"agent-{name}-{secrets.token_hex(3)}.log"
    if in_worker:
        queue = f"agent-test-{secrets.token_hex(4)}"
        command = [*e2e_worker_command([queue], "agent"), "--tunnel-agent", name]
    else:
        command = [sys.executable, "manage.py", "run_tunnel_agent", "--name", name]
        command += ["--interval", "0.5"]
    env = {**(env or portal_process_env(directory)), "PORTAL_TUNNEL_CHECK_INTERVAL": "0.5"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return AgentProcess(name=name, proc=proc, log_path=log_path)


@pytest.fixture
def agent_runner(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start tunnel agents on the test database (the test must use a transactional
    database), as agent_start does; all stopped at teardown."""
    started: list[AgentProcess] = []

    def start(name: str, *, in_worker: bool = False) -> AgentProcess:
        agent = agent_start(tmp_path, name, in_worker=in_worker)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def queued(monkeypatch):
    """What the services queue, by dispatch function name, instead of Celery."""
    calls: dict[str, list[dict]] = {}
    for name in (
        "queue_outpost_tunnels_restart",
        "queue_hub_forwards_recreate",
        "queue_tunnel_restart_for_node",
    ):
        monkeypatch.setattr(
            dispatch, name, lambda _name=name, **kw: calls.setdefault(_name, []).append(kw)
        )
    return calls
