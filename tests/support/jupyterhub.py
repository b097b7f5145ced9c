"""A real JupyterHub with configurable-http-proxy as a subprocess, for end-to-end tests.

Usage::

    with running_jupyterhub(tmp_path, spawner_config=SPAWNER_CONFIG) as hub:
        hub.api("POST", "/users/alice")
        ...

The Hub uses the dummy authenticator, random loopback ports and a temporary folder
(database, cookie secret, log), and has an admin service whose token is ``hub.token``.
Stopping it leaves no process behind: the Hub stops its servers and its proxy itself;
whatever survives (a crashed Hub's children) is killed and reported. With
``external_proxy=True`` the proxy is a process of its own, as in production deployments that
keep users' connections while the Hub restarts: ``restart_jupyterhub`` then restarts the Hub
only. No Django here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import alive, descendants, free_ports, wait_until

VENV_BIN = Path(sys.executable).parent
JUPYTERHUB = VENV_BIN / "jupyterhub"
SINGLEUSER = VENV_BIN / "jupyterhub-singleuser"
ADMIN_SERVICE = "harness-admin"

#: Spawner configuration of the harness's own test: JupyterHub's SimpleLocalProcessSpawner.
SIMPLE_LOCAL_SPAWNER_CONFIG = f"""
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{str(SINGLEUSER)!r}]
# The tests run as root; jupyter-server refuses root without this.
c.Spawner.args = ["--allow-root"]
c.SimpleLocalProcessSpawner.home_dir_template = HARNESS_DIR + "/home/{{username}}"
"""


@dataclass
class RunningHub:
    """A started JupyterHub: its public URL (through the proxy), admin token and folder."""

    url: str
    token: str
    directory: Path
    process: subprocess.Popen[bytes]
    known_processes: set[int] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    #: configurable-http-proxy, when it runs apart from the Hub (external_proxy).
    proxy: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def log_path(self) -> Path:
        return self.directory / "jupyterhub.log"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def request(
        self, method: str, url: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """One HTTP request with the admin token; returns (status, JSON body or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"token {token or self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A Hub REST API call, e.g. ``hub.api("POST", "/users/alice/server")``."""
        return self.request(method, self.api_url + path, body)

    def progress(self, user: str, server: str = "", *, timeout: float = 90) -> list[dict]:
        """The events of the Hub's progress stream of a server, read until the Hub ends it.

        What the spawn page shows: ``GET /hub/api/users/<user>/server/progress`` (or
        ``/servers/<name>/progress``), an event stream, read with the admin token.
        """
        server_path = f"servers/{server}" if server else "server"
        path = f"/users/{user}/{server_path}/progress"
        request = urllib.request.Request(self.api_url + path)
        request.add_header("Authorization", f"token {self.token}")
        request.add_header("Accept", "text/event-stream")
        events = []
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                for raw in response:
                    line = raw.decode("utf-8", "replace").strip()
                    if line.startswith("data:"):
                        events.append(json.loads(line[len("data:") :]))
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            pytest.fail(f"{path} answered {error.code} {body}\n{self.log_tail(120)}")
        return events

    def remember_processes(self) -> None:
        self.known_processes |= descendants(self.process.pid)

    def wait_for(
        self, condition: Callable[[], Any], *, timeout: float = 60, what: str = "condition"
    ) -> Any:
        """Poll ``condition`` until it returns something truthy; fails with the Hub's log."""

        def hub_condition() -> Any:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterHub exited while waiting for {what}:\n{self.log_tail()}")
            return condition()

        result = wait_until(hub_condition, timeout=timeout, what=what, details=self.log_tail)
        self.remember_processes()
        return result

    def wait_for_server(self, user: str, server: str = "", *, timeout: float = 120) -> dict:
        """Wait until the user's server is ready; returns the Hub's model of it."""

        def ready() -> dict | None:
            status, model = self.api("GET", f"/users/{user}")
            if status != 200:
                return None
            server_model = model.get("servers", {}).get(server)
            return server_model if server_model and server_model.get("ready") else None

        return self.wait_for(ready, timeout=timeout, what=f"server {user!r}/{server!r}")

    def wait_gone(self, user: str, server: str = "", *, timeout: float = 60) -> None:
        """Wait until the Hub no longer lists the user's server (stopped or cancelled)."""

        def gone() -> bool:
            status, model = self.api("GET", f"/users/{user}")
            return status == 200 and server not in model["servers"]

        self.wait_for(gone, timeout=timeout, what=f"{user}'s server {server!r} to be gone")


def _proxy_command() -> str:
    chp = shutil.which("configurable-http-proxy")
    if chp is None:
        pytest.fail(
            "configurable-http-proxy is not installed: npm install -g configurable-http-proxy"
        )
    return chp


def _write_config(
    directory: Path,
    *,
    ports: dict[str, int],
    token: str,
    spawner_config: str,
    external_proxy: bool = False,
) -> Path:
    config = directory / "jupyterhub_config.py"
    chp = _proxy_command()
    config.write_text(
        f"""# Written by tests/support/jupyterhub.py
HARNESS_DIR = {str(directory)!r}
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {ports["public"]}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {ports["hub"]}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["proxy_api"]}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///" + HARNESS_DIR + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = HARNESS_DIR + "/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = HARNESS_DIR + "/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.services = [{{"name": {ADMIN_SERVICE!r}, "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "harness-admin-role",
        "scopes": ["admin:users", "admin:servers", "access:servers", "read:hub"],
        "services": [{ADMIN_SERVICE!r}],
    }}
]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
c.ConfigurableHTTPProxy.should_start = {not external_proxy!r}

# --- spawner configuration of the test ---
{spawner_config}
"""
    )
    return config


def _launch(directory: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Appends: a restarted Hub's log follows the first one's.
    with (directory / "jupyterhub.log").open("ab") as log:
        return subprocess.Popen(
            [str(JUPYTERHUB), "-f", str(directory / "jupyterhub_config.py")],
            cwd=directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_until_up(hub: RunningHub, timeout: float) -> None:
    def api_up() -> bool:
        try:
            return hub.api("GET", "/")[0] == 200
        except OSError:
            return False

    try:
        hub.wait_for(api_up, timeout=timeout, what="the Hub API through the proxy")
    except BaseException:
        stop_jupyterhub(hub)
        raise


def start_jupyterhub(
    directory: Path,
    *,
    spawner_config: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    hub_port: int | None = None,
    external_proxy: bool = False,
) -> RunningHub:
    """Start a JupyterHub in ``directory`` and wait until its API answers through the proxy.

    ``hub_port``: the port of the Hub's own API (``http://127.0.0.1:<hub_port>/hub/api``,
    the JUPYTERHUB_API_URL servers and the portal call), when it must be known beforehand.
    ``external_proxy``: run configurable-http-proxy as a process of its own, before the Hub.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "home").mkdir(exist_ok=True)
    ports = dict(zip(("public", "hub", "proxy_api"), free_ports(3), strict=True))
    if hub_port is not None:
        ports["hub"] = hub_port
    token = secrets.token_hex(24)
    _write_config(
        directory,
        ports=ports,
        token=token,
        spawner_config=spawner_config,
        external_proxy=external_proxy,
    )
    process_env = dict(os.environ)
    process_env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(24)
    process_env["PATH"] = f"{VENV_BIN}{os.pathsep}{process_env.get('PATH', '')}"
    process_env.update(env or {})
    proxy = _launch_proxy(directory, ports, process_env) if external_proxy else None
    hub = RunningHub(
        url=f"http://127.0.0.1:{ports['public']}",
        token=token,
        directory=directory,
        process=_launch(directory, process_env),
        env=process_env,
        proxy=proxy,
    )
    _wait_until_up(hub, timeout)
    return hub


def _launch_proxy(
    directory: Path, ports: dict[str, int], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    hub = f"http://127.0.0.1:{ports['hub']}"
    with (directory / "proxy.log").open("ab") as log:
        return subprocess.Popen(
            [
                _proxy_command(),
                *("--ip", "127.0.0.1", "--port", str(ports["public"])),
                *("--api-ip", "127.0.0.1", "--api-port", str(ports["proxy_api"])),
                *("--default-target", hub, "--error-target", f"{hub}/hub/error"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def hub_process_stop(hub: RunningHub) -> None:
    """Stop the Hub process only (SIGTERM): with an external proxy, the proxy stays."""
    hub.remember_processes()
    hub.process.send_signal(signal.SIGTERM)
    try:
        hub.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()


def hub_process_start(hub: RunningHub, *, timeout: float = 60) -> None:
    """Start the Hub process again: same config, database, cookie secret, ports."""
    hub.process = _launch(hub.directory, hub.env)
    _wait_until_up(hub, timeout)


def restart_jupyterhub(hub: RunningHub, *, timeout: float = 60) -> None:
    """Stop the Hub process and start it again.

    Servers survive only if the config keeps them (``c.JupyterHub.cleanup_servers = False``);
    a proxy the Hub runs is restarted with it and its routes are rebuilt from the database.
    """
    hub_process_stop(hub)
    hub_process_start(hub, timeout=timeout)


def stop_jupyterhub(hub: RunningHub, *, grace: float = 30) -> set[int]:
    """Stop the Hub (it stops its servers and proxy); kill and return whatever survived."""
    hub.remember_processes()
    if hub.process.poll() is None:
        hub.process.send_signal(signal.SIGTERM)
        try:
            hub.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            hub.process.kill()
            hub.process.wait()
    if hub.proxy is not None and hub.proxy.poll() is None:
        hub.proxy.terminate()
        try:
            hub.proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            hub.proxy.kill()
            hub.proxy.wait()
    deadline = time.monotonic() + 5
    survivors = {pid for pid in hub.known_processes if alive(pid)}
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = {pid for pid in survivors if alive(pid)}
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return survivors


@contextmanager
def running_jupyterhub(
    directory: Path,
    *,
    spawner_config: str,
    env: dict[str, str] | None = None,
    hub_port: int | None = None,
    external_proxy: bool = False,
) -> Iterator[RunningHub]:
    hub = start_jupyterhub(
        directory,
        spawner_config=spawner_config,
        env=env,
        hub_port=hub_port,
        external_proxy=external_proxy,
    )
    try:
        yield hub
    finally:
        survivors = stop_jupyterhub(hub)
        if survivors:
            # Killed above; still a defect of the Hub or spawner under test.
            print(f"JupyterHub left processes behind, killed: {sorted(survivors)}")  # noqa: T201
