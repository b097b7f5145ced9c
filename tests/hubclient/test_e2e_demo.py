"""``make demo`` for real: scripts/demo on free ports and a scratch data folder (SQLite and the
private Redis that runportal runs, its defaults), a user starting a server through the demo
Hub's spawn form, then Ctrl-C (SIGINT to the script's process group, as a terminal sends it):
everything stops, the user's server included, and no process is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.processes import alive, descendants, free_ports, response_if_up, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PORT_NAMES = ("DEMO_PORT", "DEMO_HUB_PORT", "DEMO_HUB_API_PORT", "DEMO_PROXY_API_PORT")


def demo_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """scripts/demo's environment as `make demo` gives it, on free ports and a scratch folder,
    with the venv running these tests (the one the hubclient is installed in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({name: str(port) for name, port in zip(PORT_NAMES, free_ports(4), strict=True)})
    env["VENV"] = str(Path(sys.executable).parent.parent)
    env["DEMO_DATA_DIR"] = str(tmp_path / "var")
    env.update(overrides)
    return env


def run_demo(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(ROOT / "scripts" / "demo")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )


def log_tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-60:])


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 within a deadline: the demo says it is up once its ports
    are open, and the Hub's proxy may still be setting up its routes."""
    return wait_until(
        lambda: (answer := response_if_up(url)) is not None and answer.status_code == 200,
        timeout=30,
        what=f"{url} to answer 200",
    )


def test_the_demo_runs_the_portal_and_a_hub_and_ctrl_c_leaves_nothing(tmp_path):
    env = demo_env(tmp_path)
    log = tmp_path / "demo.log"
    demo = run_demo(env, log)
    processes: set[int] = set()
    hub = f"http://127.0.0.1:{env['DEMO_HUB_PORT']}"
    portal = f"http://127.0.0.1:{env['DEMO_PORT']}"
    try:
        # when the demo is up, it says where the Hub and the admin are, with credentials
        wait_until(
            lambda: "Ctrl-C stops everything" in log.read_text(),
            timeout=90,
            what="the demo",
            details=lambda: log_tail(log),
        )
        text = log.read_text()
        assert f"JupyterHub:    {hub}/" in text
        assert f"Portal admin:  {portal}/admin/   user admin, password " in text
        password = re.search(r"any user name, password (\S+)", text).group(1)
        assert answers(f"{hub}/hub/login")
        assert answers(f"{portal}/admin/login/")

        # and the Hub admin it names, with the users' password, opens the Hub's admin page
        hub_admin = re.search(
            rf"Hub admin:\s+{re.escape(hub)}/hub/admin\s+user (\S+), the same password", text
        )
        assert hub_admin, text
        admin_session = requests.Session()
        admin_session.get(f"{hub}/hub/login")
        admin_session.post(
            f"{hub}/hub/login",
            data={
                "username": hub_admin.group(1),
                "password": password,
                "_xsrf": admin_session.cookies["_xsrf"],
            },
        )
        admin_page = admin_session.get(f"{hub}/hub/admin")
        assert admin_page.status_code == 200, admin_page.text[:500]
        assert admin_page.url == f"{hub}/hub/admin", admin_page.url

        # and the API example it prints works as printed: start, poll, stop
        start_body = json.loads(re.search(r"-d '(\{.*?\})'", text, re.DOTALL).group(1))
        services = f"{portal}/outposts/local/services"
        assert f"       {services}\n" in text
        assert f"-X DELETE {services}//try1" in text
        secret = dict(
            line.split("=", 1)
            for line in Path(env["DEMO_DATA_DIR"], "demo.env").read_text().split()
        )["DEMO_HUB_SECRET"]
        auth = ("demo-hub", secret)
        started = requests.post(services, json=start_body, auth=auth, timeout=90)
        assert started.status_code == 200, started.text
        assert re.fullmatch(r"127\.0\.0\.1:\d+", started.json()["service"]), started.text
        poll = requests.get(f"{services}//try1", auth=auth, timeout=10)
        assert poll.json() == {"status": None, "logs": []}
        stopped = requests.delete(f"{services}//try1", auth=auth, timeout=90)
        assert stopped.json() == {"logs": []}

        # and a user starts a server from the Hub's spawn form
        session = requests.Session()
        session.get(f"{hub}/hub/login")
        login = session.post(
            f"{hub}/hub/login",
            data={"username": "zoe", "password": password, "_xsrf": session.cookies["_xsrf"]},
        )
        assert login.url == f"{hub}/hub/spawn", login.url
        assert "Small (1 CPU, 1 GB)" in login.text
        spawn = session.post(
            f"{hub}/hub/spawn",
            data={"outpost": "local", "flavor": "small", "_xsrf": session.cookies["_xsrf"]},
        )
        assert spawn.status_code == 200, spawn.text[:500]

        def server_process() -> list[int]:
            return [pid for pid in descendants(demo.pid) if "jupyterhub-singleuser" in _args(pid)]

        servers = wait_until(
            server_process, timeout=60, what="zoe's server process", details=lambda: log_tail(log)
        )
        processes |= descendants(demo.pid) | {demo.pid}

        # when Ctrl-C is pressed
        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=60)

        # then everything stopped: portal, worker, beat, Hub, proxy, and zoe's server
        assert "demo: stopped" in log.read_text()
        assert "killing leftover" not in log.read_text()
        left = {pid for pid in processes if alive(pid)}
        assert left == set(), {pid: _args(pid) for pid in left}
        assert not any(alive(pid) for pid in servers)
    finally:
        # Found before the script is killed: its JupyterHub runs in a session of its own, so
        # killing the script's group orphans it, and it is no longer a descendant afterwards.
        processes |= descendants(demo.pid)
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in processes:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_demo_refuses_a_port_in_use_and_says_which(tmp_path):
    # given something already listening on the port the Hub's API would use
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = demo_env(tmp_path, DEMO_HUB_API_PORT=str(taken.getsockname()[1]))
        log = tmp_path / "demo.log"

        # when the demo starts
        demo = run_demo(env, log)
        try:
            status = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)

    # then it refuses, naming the port, and started nothing
    assert status != 0
    text = log.read_text()
    assert (
        f"port {env['DEMO_HUB_API_PORT']}, DEMO_HUB_API_PORT (the Hub's API), is already in use"
        in text
    )
    assert "demo: stopping" not in text


def test_a_failing_stage_stops_what_the_demo_started(tmp_path):
    # given a proxy API URL JupyterHub cannot use: the Hub fails after the portal is up
    env = demo_env(tmp_path, DEMO_PROXY_API_PORT="not-a-port")
    log = tmp_path / "demo.log"

    # when the demo runs
    demo = run_demo(env, log)
    processes: set[int] = set()
    try:
        wait_until(
            lambda: demo.poll() is not None or processes.update(descendants(demo.pid)),
            timeout=120,
            what="the demo to give up",
            details=lambda: log_tail(log),
            every=0.1,
        )
        left = {pid for pid in processes if alive(pid)}
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in processes:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    # then it fails, having stopped the portal it had started: no process is left
    text = log.read_text()
    assert demo.returncode != 0, text
    assert "demo: JupyterHub exited" in text, text
    assert "demo: stopped" in text, text
    assert processes, "the portal never started"
    assert left == set(), {pid: _args(pid) for pid in left}


def _args(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
