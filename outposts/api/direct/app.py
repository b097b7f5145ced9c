"""The direct answers' ASGI app: routes the common requests to them, all else to Django."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from io import BytesIO
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from outposts.api.direct.base import BODY_LIMIT, NotDirect
from outposts.api.direct.reads import (
    answer_flavors,
    answer_list,
    answer_poll,
    answer_userflavors,
)
from outposts.api.direct.start import answer_start

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# The paths outposts.api.urls routes to these views, under an Outpost or at the site root
# (the default Outpost), with or without a trailing slash.
_OUTPOST = r"^/(?:outposts/(?P<slug>[-a-zA-Z0-9_]+)/)?"
POLL_PATH = re.compile(_OUTPOST + r"services/(?P<name>[^/]*)/(?P<start_id>[^/]+)/?\Z")
SERVICES_PATH = re.compile(_OUTPOST + r"services/?\Z")
FLAVORS_PATH = re.compile(_OUTPOST + r"flavors/?\Z")
USERFLAVORS_PATH = re.compile(_OUTPOST + r"userflavors/?\Z")

ROUTES = (
    ("GET", POLL_PATH, answer_poll),
    ("GET", SERVICES_PATH, answer_list),
    ("POST", SERVICES_PATH, answer_start),
    ("GET", FLAVORS_PATH, answer_flavors),
    ("POST", USERFLAVORS_PATH, answer_userflavors),
)


def direct_api(*, api: ASGIApp, middleware: list[str]) -> ASGIApp:
    """An ASGI app answering the common requests itself and passing all else to
    ``api``. ``middleware`` (settings.API_MIDDLEWARE) wraps the direct answers as it wraps
    ``api``'s."""

    async def direct_view(request: HttpRequest) -> HttpResponse:
        return await request.direct_answer(request, request.direct_match)  # type: ignore[attr-defined]

    view: Callable[[HttpRequest], Awaitable[HttpResponse]] = direct_view
    for path in reversed(middleware):
        view = import_string(path)(view)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        route = _route(scope)
        if route is None:
            return await api(scope, receive, send)
        body, received = await read_body(receive, limit=BODY_LIMIT)
        receive = replaying(received, receive)  # for the Django handler, if it answers
        if body is None:
            return await api(scope, receive, send)
        request = ASGIRequest(scope, BytesIO(body))
        request.direct_answer, request.direct_match = route  # type: ignore[attr-defined]
        try:
            response = await view(request)
        except NotDirect:
            return await api(scope, receive, send)
        except SuspiciousOperation:
            return await api(scope, receive, send)  # e.g. a Host not allowed: Django's 400
        except Exception:
            log.exception("A direct answer failed; the API handler answers instead")
            return await api(scope, receive, send)
        await send_response(response, send)

    return app


def _route(scope: Scope) -> tuple[Callable[..., Awaitable[HttpResponse]], re.Match[str]] | None:
    path = scope.get("path", "")
    for method, pattern, answer in ROUTES:
        match = pattern.match(path) if scope["method"] == method else None
        if match is not None:
            return answer, match
    return None


async def read_body(receive: Any, *, limit: int) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The request's body, and the messages it came in; None for the body when it is larger
    than ``limit`` or the client left first."""
    received, body = [], b""
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None, received
        body += message.get("body", b"")
        if len(body) > limit:
            return None, received
        if not message.get("more_body", False):
            return body, received


def replaying(received: list[dict[str, Any]], receive: Any) -> Callable[[], Awaitable[Any]]:
    """A ``receive`` that gives the messages already received again, then the rest."""
    pending = list(received)

    async def replay() -> Any:
        return pending.pop(0) if pending else await receive()

    return replay


async def send_response(response: HttpResponse, send: Any) -> None:
    """Sends a whole (not streaming) response, as Django's ASGI handler would."""
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
