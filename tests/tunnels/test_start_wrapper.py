"""outpost-start-server as a process: it reports, then becomes the server (signals and exit
status are the server's), and it refuses to start a server the portal refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import wait_until

WRAPPER = Path(__file__).resolve().parents[2] / "startserver" / "outpost_start_server.py"

# The "server": says where it was told to listen and which env it got, exits 42 on SIGTERM
# and with the status given as its argument otherwise.
SERVER = r"""
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))
print(json.dumps({"pid": os.getpid(), "service_url": os.environ.get("JUPYTERHUB_SERVICE_URL"),
                  "port": os.environ.get("OUTPOST_SERVER_PORT"),
                  "has_token": "OUTPOST_CALLBACK_TOKEN" in os.environ}), flush=True)
if len(sys.argv) > 1:
    sys.exit(int(sys.argv[1]))
while True:
    time.sleep(0.1)
"""


class Receiver:
    """The portal's call-back endpoint, standing in: records reports, answers ``answers``
    in turn (then 200)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.reports.append(
                    {"body": body, "authorization": self.headers.get("Authorization")}
                )
                status, answer = receiver.answers.pop(0) if receiver.answers else (200, {})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/servers/7/address"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def run_wrapper(receiver: Receiver, *server_args: str, **env: str) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "OUTPOST_CALLBACK_URL": receiver.url,
        "OUTPOST_CALLBACK_TOKEN": "osr_secret",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:0/user/olga/lab/",
        "OUTPOST_REPORT_TIMEOUT": "20",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, str(WRAPPER), "--", sys.executable, "-c", SERVER, *server_args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_it_reports_a_free_port_in_range_then_runs_the_server_there(receiver):
    # when
    proc = run_wrapper(receiver, "0", OUTPOST_PORT_RANGE="23000-23999")
    out, err = proc.communicate(timeout=30)
    # then the portal got host:port with the server's token
    assert proc.returncode == 0, err
    (report,) = receiver.reports
    assert report["authorization"] == "token osr_secret"
    assert report["body"]["host"] == "127.0.0.1"
    port = report["body"]["port"]
    assert 23000 <= port <= 23999
    # and the server was told to listen there, under its prefix, without the token
    seen = json.loads(out)
    assert seen["service_url"] == f"http://127.0.0.1:{port}/user/olga/lab/"
    assert seen["port"] == str(port)
    assert seen["has_token"] is False


def test_the_server_replaces_the_wrapper_so_signals_reach_it(receiver):
    # given a running server
    proc = run_wrapper(receiver)
    line = proc.stdout.readline()
    seen = json.loads(line)
    # then it is the wrapper's own process (exec), not a child of it
    assert seen["pid"] == proc.pid
    # when the spawner sends the wrapper's pid SIGTERM
    proc.send_signal(signal.SIGTERM)
    # then the server's handler ran: its exit status comes back
    assert proc.wait(timeout=10) == 42


@pytest.mark.parametrize("status", [0, 3, 17])
def test_the_exit_status_is_the_servers(receiver, status):
    proc = run_wrapper(receiver, str(status))
    proc.communicate(timeout=30)
    assert proc.returncode == status


def test_a_refused_address_starts_no_server_and_says_why(receiver):
    # given a portal that refuses the address
    receiver.answers = [(403, {"detail": "Host '127.0.0.1' is not one of this Outpost's nodes."})]
    # when
    proc = run_wrapper(receiver, "0")
    out, err = proc.communicate(timeout=30)
    # then
    assert proc.returncode == 77
    assert out == ""  # the server never ran
    assert "refused the address 127.0.0.1:" in err
    assert "HTTP 403" in err and "not one of this Outpost's nodes" in err
    assert len(receiver.reports) == 1  # a refusal is final: no retry


def test_a_portal_that_fails_at_first_is_tried_again(receiver):
    receiver.answers = [(503, {}), (502, {})]
    proc = run_wrapper(receiver, "0")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(receiver.reports) == 3
    assert "retrying" in err
    assert json.loads(out)["port"] == str(receiver.reports[-1]["body"]["port"])


def test_a_portal_that_never_answers_fails_after_the_deadline(tmp_path):
    # given a call-back URL where nothing listens
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        url = f"http://127.0.0.1:{closed.server_address[1]}/api/servers/7/address"
    environ = {**os.environ, "OUTPOST_CALLBACK_URL": url, "OUTPOST_CALLBACK_TOKEN": "t"}
    # when
    proc = subprocess.run(
        [sys.executable, str(WRAPPER), "--report-timeout", "2", sys.executable, "-c", SERVER],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    # then
    assert proc.returncode == 75
    assert proc.stdout == ""
    assert "could not report the address" in proc.stderr and "within 2 s" in proc.stderr


def test_without_the_portals_environment_it_refuses_to_start():
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    proc = subprocess.run(
        [sys.executable, str(WRAPPER), sys.executable, "-c", SERVER],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "OUTPOST_CALLBACK_URL and OUTPOST_CALLBACK_TOKEN must be set" in proc.stderr


def test_a_missing_command_is_reported(receiver):
    environ = {
        **os.environ,
        "OUTPOST_CALLBACK_URL": receiver.url,
        "OUTPOST_CALLBACK_TOKEN": "t",
    }
    proc = subprocess.run(
        [sys.executable, str(WRAPPER), "--", "/nonexistent/jupyterhub-singleuser"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 127
    assert "cannot run '/nonexistent/jupyterhub-singleuser'" in proc.stderr


def test_the_installed_package_has_the_console_script_and_no_dependencies(tmp_path):
    # given the wheel `pip install ./startserver` builds, installed into an empty folder
    source = WRAPPER.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + [str(source), "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("outpost_start_server-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    # then it declares no dependencies and its entry point is the wrapper's main
    (metadata,) = target.glob("outpost_start_server-*.dist-info/METADATA")
    assert "Requires-Dist" not in metadata.read_text()
    (entry_points,) = target.glob("outpost_start_server-*.dist-info/entry_points.txt")
    assert "outpost-start-server = outpost_start_server:main" in entry_points.read_text()
    # and the script runs from the installed copy alone, with no portal on the path
    script = target / "bin" / "outpost-start-server"
    assert script.exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "import outpost_start_server as w; print(w.__file__); sys.argv=['x', '--help'];"
            "w.main()",
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.startswith(str(target)), proc.stderr
    assert "report host:port to the Outpost portal" in proc.stdout


def test_signals_before_the_report_end_it_without_a_server(receiver):
    # given a portal that keeps failing, so the wrapper waits to retry
    receiver.answers = [(503, {})] * 50
    proc = run_wrapper(receiver)
    wait_until(lambda: receiver.reports, timeout=10)
    # when the spawner stops it while it still reports
    proc.send_signal(signal.SIGTERM)
    # then it ends by that signal, and no server ever ran
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert proc.stdout.read() == ""
