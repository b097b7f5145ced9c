"""A stand-in for a JupyterHub's API: a real HTTP server on 127.0.0.1 in a thread.

It answers the version check of jupyterhub-singleuser and records the portal's calls to the
Hub (progress events, set-up-tunnel calls, flavor updates); tests read ``calls``. The real
JupyterHub is tests/support/jupyterhub.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class HubCall:
    method: str
    path: str
    authorization: str
    body: Any


class FakeHub:
    """A real HTTP server on 127.0.0.1 in a thread, standing in for a JupyterHub's API."""

    def __init__(self) -> None:
        self.calls: list[HubCall] = []
        # GET <hub api>/recreateforward/<system> calls (tunnels).
        self.recreate_calls: list[HubCall] = []
        self.status_for: dict[str, int] = {}  # path prefix -> answer status of a POST
        self.redirect_for: dict[str, str] = {}  # path prefix -> Location of a 307 answer
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if "/recreateforward/" in self.path:
                    # Kept apart from ``calls``: the singleuser's version checks are GETs too.
                    hub.recreate_calls.append(
                        HubCall(
                            method="GET",
                            path=self.path,
                            authorization=self.headers.get("Authorization", ""),
                            body=None,
                        )
                    )
                    self._answer(202, None)
                    return
                # jupyterhub-singleuser checks its Hub's version before it serves.
                self._answer(200, {"version": "6.1.1"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                hub.calls.append(
                    HubCall(
                        method="POST",
                        path=self.path,
                        authorization=self.headers.get("Authorization", ""),
                        body=json.loads(raw) if raw else None,
                    )
                )
                location = next(
                    (u for p, u in hub.redirect_for.items() if self.path.startswith(p)), None
                )
                if location is not None:
                    self.send_response(307)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = next(
                    (s for p, s in hub.status_for.items() if self.path.startswith(p)), 204
                )
                self._answer(status, None)

            def _answer(self, status: int, body: Any) -> None:
                self.send_response(status)
                self.send_header("X-JupyterHub-Version", "6.1.1")
                if body is None:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self, user: str, server_name: str = "", *, token: str = "server-token") -> dict:
        """The env a stock Hub sends for ``user``'s server, pointing at this fake Hub."""
        api = f"{self.url}/hub/api"
        suffix = f"/{server_name}" if server_name else ""
        prefix = f"/user/{user}/{server_name + '/' if server_name else ''}"
        return {
            "JUPYTERHUB_API_TOKEN": token,
            "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_USER_ID": "7",
            "JUPYTERHUB_SERVER_NAME": server_name,
            "JUPYTERHUB_API_URL": api,
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_HOST": "",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            # The stock Hub's own port choice: the portal rewrites host and port.
            "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:51285{prefix}",
            "JUPYTERHUB_EVENTS_URL": f"{api}/users/progress/events/{user}{suffix}",
            "JUPYTERHUB_SETUPTUNNEL_URL": f"{api}/users/setuptunnel/{user}{suffix}",
            "JUPYTERHUB_FLAVORS_UPDATE_URL": f"{api}/outpostflavors/local",
            "JUPYTERHUB_FLAVORS_UPDATE_TOKEN": "flavors-token",
        }

    def posts(self, fragment: str) -> list[HubCall]:
        return [call for call in list(self.calls) if fragment in call.path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Fixture, registered by tests/conftest.py.


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()
