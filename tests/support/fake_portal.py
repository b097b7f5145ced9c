"""A small real HTTP stand-in for the portal's Outpost API, for the hubclient's unit tests.

It is a stand-in at the unit level only: it speaks the wire contract (answers taken from
tests/contract/*.json) over real HTTP on 127.0.0.1, but admits everything and runs nothing.
The real portal is exercised end-to-end by the tests with a real JupyterHub (portal.py).
No Django here: the hubclient's unit tests use it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tornado import httpserver, netutil, web

from tests.support.contract import contract

HUB_NAME = "hub1"
HUB_SECRET = "fake-portal-secret"
API_KEY = "op_fake-portal-key"


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    name: str
    start_id: str
    body: dict[str, Any]
    status: str = "requested"
    service: str = ""
    exit_code: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    plan_step: int = 0

    def add_event(self, message: str, progress: int, *, failed: bool = False, ready: bool = False):
        self.events.append(
            {
                "id": len(self.events) + 1,
                "progress": progress,
                "message": message,
                "html_message": message,  # deliberately raw: the client must not trust it
                "failed": failed,
                "ready": ready,
            }
        )


#: One step per events request: (message, progress, failed, status, service or None).
Step = tuple[str, int, bool, str, str | None]

READY_PLAN: list[Step] = [
    ("Batch job queued.", 30, False, "pending", None),
    ("Server is running.", 90, False, "running", "127.0.0.1:8888"),
]


class FakePortal:
    """State and scripted behaviour of the stand-in; tests read ``requests`` afterwards."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.servers: dict[tuple[str, str], FakeServer] = {}
        self.plan: list[Step] = list(READY_PLAN)
        self.start_answer: tuple[int, Any] = (202, {"service": ""})
        # A slow portal: seconds before it creates the started server and answers.
        self.start_delay = 0.0
        self.userflavors_delay = 0.0
        self.userflavors_answer: Any = contract("userflavors")["response"]["body"]
        # Headers of the flavors answer, e.g. the Outpost's state; none, as a stock service.
        self.userflavors_headers: dict[str, str] = {}
        self.failures: list[int] = []  # status codes answered before behaving normally
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/outposts/local/"

    def requests_of(self, method: str, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def server(self, name: str, start_id: str) -> FakeServer:
        return self.servers[(name, start_id)]

    def only_server(self) -> FakeServer:
        (server,) = self.servers.values()
        return server


class _Handler(web.RequestHandler):
    portal: FakePortal

    def initialize(self, portal: FakePortal) -> None:
        self.portal = portal

    def check_xsrf_cookie(self) -> None:
        pass

    async def prepare(self) -> None:
        body = json.loads(self.request.body) if self.request.body else None
        self.portal.requests.append(
            Recorded(
                method=self.request.method or "",
                path=self.request.path,
                query=self.request.query,
                headers=dict(self.request.headers),
                body=body,
            )
        )
        self.json_body = body
        if not self._authenticated():
            self.set_header("WWW-Authenticate", "Basic")
            self.answer(401, {"detail": "Authentication credentials were not provided."})
            return
        if self.portal.failures:
            self.answer(self.portal.failures.pop(0), {"detail": "scripted failure"})

    def _authenticated(self) -> bool:
        header = self.request.headers.get("Authorization", "")
        basic = base64.b64encode(f"{HUB_NAME}:{HUB_SECRET}".encode()).decode()
        return header in (f"Basic {basic}", f"token {API_KEY}", f"Bearer {API_KEY}")

    def answer(self, code: int, body: Any) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def find(self, name: str, start_id: str) -> FakeServer | None:
        server = self.portal.servers.get((name, start_id))
        if server is None:
            self.answer(404, contract("poll-unknown")["response"]["body"])
        return server


class StartHandler(_Handler):
    async def post(self) -> None:
        body = self.json_body
        if self.portal.start_delay:
            await asyncio.sleep(self.portal.start_delay)
        code, answer = self.portal.start_answer
        if code < 300:
            options = dict(body["user_options"])
            start_id = options.pop("start_id", "0")
            key = (body["name"], start_id)
            if key not in self.portal.servers:
                server = FakeServer(name=body["name"], start_id=start_id, body=body)
                server.add_event("Start request accepted.", 10)
                self.portal.servers[key] = server
        self.answer(code, answer)


class ServiceHandler(_Handler):
    def get(self, name: str, start_id: str) -> None:
        if server := self.find(name, start_id):
            self.answer(200, {"status": server.exit_code, "logs": []})

    def delete(self, name: str, start_id: str) -> None:
        if server := self.portal.servers.pop((name, start_id), None):
            server.status = "stopped"
            self.answer(202, {})
        else:
            self.find(name, start_id)


class EventsHandler(_Handler):
    def get(self, name: str, start_id: str) -> None:
        server = self.find(name, start_id)
        if server is None:
            return
        after = int(self.get_argument("after", "0"))
        answer = {
            "events": [event for event in server.events if event["id"] > after],
            "status": server.status,
            "service": server.service,
        }
        # Advance the scripted start by one step for the next request.
        if server.plan_step < len(self.portal.plan) and server.status not in ("failed", "stopped"):
            message, progress, failed, status, service = self.portal.plan[server.plan_step]
            server.plan_step += 1
            server.add_event(message, progress, failed=failed, ready=status == "running")
            server.status = status
            if service is not None:
                server.service = service
        self.answer(200, answer)


class UserFlavorsHandler(_Handler):
    async def post(self) -> None:
        if self.portal.userflavors_delay:
            await asyncio.sleep(self.portal.userflavors_delay)
        for name, value in self.portal.userflavors_headers.items():
            self.set_header(name, value)
        self.answer(200, copy.deepcopy(self.portal.userflavors_answer))


def make_app(portal: FakePortal) -> web.Application:
    prefix = r"/outposts/local/"
    # ([^/]*) for the name: the default server's empty name gives services//<start_id>.
    return web.Application(
        [
            (prefix + r"services/?", StartHandler, {"portal": portal}),
            (prefix + r"services/([^/]*)/([^/]+)/events", EventsHandler, {"portal": portal}),
            (prefix + r"services/([^/]*)/([^/]+)", ServiceHandler, {"portal": portal}),
            (prefix + r"userflavors", UserFlavorsHandler, {"portal": portal}),
        ]
    )


async def serve(portal: FakePortal) -> Callable[[], Awaitable[None]]:
    """Listen on a random loopback port; returns the coroutine function that stops it."""
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    portal.port = sockets[0].getsockname()[1]
    server = httpserver.HTTPServer(make_app(portal))
    server.add_sockets(sockets)

    async def stop() -> None:
        server.stop()
        await server.close_all_connections()

    return stop
