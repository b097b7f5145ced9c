"""Processes, ports and waiting: what every harness of real components needs.

One home for these, used by the portal's processes (portal.py), the JupyterHub harness
(jupyterhub.py) and the tests that start processes themselves. No Django here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests


def free_port() -> int:
    """A loopback port free right now (another process could still take it: rare)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now.

    All sockets are bound before any is closed: ports asked for one by one may repeat.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float = 30,
    what: str = "the condition",
    details: Callable[[], str] = lambda: "",
    every: float = 0.2,
) -> Any:
    """The first truthy value of ``condition()``; fails naming ``what`` with ``details()``
    (a log tail, say) after ``timeout`` seconds. The one wait loop of these tests."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout} s waiting for {what}\n{details()}")
        time.sleep(every)


def response_if_up(url: str, *, timeout: float = 5, **kwargs: Any) -> requests.Response | None:
    """The answer to a GET of ``url``, or None while nothing answers: refused, or no answer
    within ``timeout`` (a loaded machine). One attempt: wait with ``wait_until``."""
    try:
        return requests.get(url, timeout=timeout, **kwargs)
    except (requests.ConnectionError, requests.Timeout):
        return None


def json_if_up(url: str) -> Any:
    """The JSON a server answers at ``url``, or None while it is not (yet) answering 200."""
    response = response_if_up(url)
    return response.json() if response is not None and response.status_code == 200 else None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name in parentheses may contain spaces: the state follows its last ")".
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (servers run in their own sessions, so not by group)."""
    children = _children_by_parent()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL; returns when none of it is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    except ProcessLookupError:
        pass


# Fixtures of tests that run servers as local processes (registered by tests/outposts/conftest.py).


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The folder the test's local servers have their home folders in."""
    return tmp_path / "home"


@pytest.fixture
def killer():
    """Pids a test may leave behind; killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
