"""portal/asgi.py: the Hub API's paths go through the lean middleware (settings.API_MIDDLEWARE),
everything else through the full stack, and a Hub cannot tell the two apart.

Requests go to the real ASGI application (asgiref's communicator stands in for the web
server); the handler runs views in threads of its own, so the rows must be committed
(transactional database).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from auditlog.middleware import AuditlogMiddleware
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware

from outposts.models import Server
from portal.asgi import application, site_application
from tests.factories import HUB_SECRET, HubFactory, OutpostFactory

pytestmark = pytest.mark.django_db(transaction=True)

POLL = "/outposts/local/services/lab/s1"


def get(app: Any, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """One GET through ``app``: status, headers (lower-case names), body."""
    return call(app, "GET", path, headers)


def call(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    chunks: int = 1,
) -> tuple[int, dict, bytes]:
    """One request through ``app``, its body sent in ``chunks`` messages (with its
    Content-Length, unless ``headers`` give one): status, headers (lower-case names), body."""
    path, _, query = path.partition("?")
    if body:
        headers = {"Content-Length": str(len(body)), **(headers or {})}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
        ],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 40000),
    }

    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]

    async def exchange() -> tuple[int, dict, bytes]:
        communicator = ApplicationCommunicator(app, scope)
        for i, part in enumerate(parts):
            # The keys the ASGI spec lets a server leave out (an empty body, no more body)
            # are left out.
            message = {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
            await communicator.send_input({key: value for key, value in message.items() if value})
        start = await communicator.receive_output(timeout=20)
        assert start["type"] == "http.response.start", start
        received = b""
        while True:
            message = await communicator.receive_output(timeout=20)
            assert message["type"] == "http.response.body", message
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(timeout=20)
        headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
        return start["status"], headers, received

    return asyncio.run(exchange())


@pytest.fixture
def polled_server(transactional_db) -> None:
    outpost = OutpostFactory(slug="local")
    hub = HubFactory(name="hub1", outposts=[outpost])
    Server.objects.create(
        hub=hub,
        outpost=outpost,
        name="lab",
        start_id="s1",
        user_id="1",
        user_name="u1",
        status=Server.Status.RUNNING,
    )


def basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"hub1:{HUB_SECRET}".encode()).decode()}


@pytest.fixture
def stack_calls(monkeypatch) -> list[str]:
    """Which of the middleware the lean stack leaves out ran, in the order they ran."""
    calls: list[str] = []

    def recording(cls: type, method: str) -> None:
        original = getattr(cls, method)

        def record(self, *args, **kwargs):
            calls.append(cls.__name__)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, record)

    for cls in (SessionMiddleware, CsrfViewMiddleware, AuthenticationMiddleware, MessageMiddleware):
        recording(cls, "process_request")
    recording(AuditlogMiddleware, "__call__")
    return calls


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name not in names}


LEFT_OUT = {
    "SessionMiddleware",
    "AuthenticationMiddleware",
    "MessageMiddleware",
    "CsrfViewMiddleware",
    "AuditlogMiddleware",
}


def test_a_poll_skips_sessions_csrf_auth_audit_and_messages(polled_server, stack_calls):
    # when a Hub polls its server through the ASGI application
    status, _, body = get(application, POLL, basic())
    # then it is answered without any of the browser-session middleware
    assert (status, body) == (200, b'{"status":null,"logs":[]}')
    assert stack_calls == []


@pytest.mark.parametrize("path", ["/admin/login/", "/healthz", "/outposts/local/tunnels/restart"])
def test_everything_else_gets_the_full_stack(polled_server, stack_calls, path):
    # when the admin, monitoring or an audited API write is asked
    get(application, path)
    # then the full middleware stack ran
    assert LEFT_OUT <= set(stack_calls)


@pytest.mark.parametrize(
    "path, auth",
    [(POLL, True), ("/services/lab/s1", True), ("/outposts/local/ping", False), (POLL, False)],
    ids=["poll", "poll-at-root", "ping", "unauthenticated"],
)
def test_the_lean_stack_answers_as_the_full_one(polled_server, path, auth):
    # given the same request through the router and through the full stack alone
    headers = {**(basic() if auth else {}), "X-Request-ID": "req-1234"}
    lean = get(application, path, headers)
    full = get(site_application, path, headers)
    # then status, body and headers are the same, the request id included; Date aside, and
    # the full stack's "Vary: Cookie" (its session middleware's), since no answer of the API
    # depends on a cookie
    assert lean[0] == full[0] and lean[2] == full[2]
    assert without(lean[1], "date") == without(full[1], "date", "vary")
    assert lean[1]["x-request-id"] == "req-1234"
    assert lean[1]["x-frame-options"] == "DENY"
    assert lean[1]["x-content-type-options"] == "nosniff"
