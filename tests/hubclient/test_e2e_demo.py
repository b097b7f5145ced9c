"""``make demo`` for real: scripts/demo on free ports and a scratch data folder (SQLite and the
filesystem broker, its defaults), a user starting a server through the demo Hub's spawn form,
then Ctrl-C (SIGINT to the script's process group, as a terminal sends it): everything stops,
the user's server included, and no process is left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.hubclient.jupyterhub_harness import alive, descendants, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, *, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.3)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_demo_runs_the_portal_and_a_hub_and_ctrl_c_leaves_nothing(tmp_path):
    ports = {
        "DEMO_PORT": free_port(),
        "DEMO_HUB_PORT": free_port(),
        "DEMO_HUB_API_PORT": free_port(),
        "DEMO_PROXY_API_PORT": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({key: str(value) for key, value in ports.items()})
    env["DEMO_DATA_DIR"] = str(tmp_path / "var")
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [str(ROOT / "scripts" / "demo")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    processes: set[int] = set()
    hub = f"http://127.0.0.1:{ports['DEMO_HUB_PORT']}"
    portal = f"http://127.0.0.1:{ports['DEMO_PORT']}"
    try:
        # when the demo is up, it says where the Hub and the admin are, with credentials
        wait_for(
            lambda: "Ctrl-C stops everything" in log.read_text(),
            timeout=90,
            what="the demo",
            log=log,
        )
        text = log.read_text()
        assert f"JupyterHub:    {hub}/" in text
        assert f"Portal admin:  {portal}/admin/   user admin, password " in text
        password = re.search(r"any user name, password (\S+)", text).group(1)
        assert answers(f"{hub}/hub/login")
        assert answers(f"{portal}/admin/login/")

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

        servers = wait_for(server_process, timeout=60, what="zoe's server process", log=log)
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
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in processes | descendants(demo.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _args(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
