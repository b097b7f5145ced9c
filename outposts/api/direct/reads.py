"""The Hub's polls, lists and flavor reads answered without Django's request handling.

A Hub polls each of its servers every 30 s, lists them all now and then and reads its
flavors for every spawn form, so these reads are most of the portal's traffic, and the
physical cost of a poll is one authenticated read of one row. Through Django's handler and
DRF a poll cost about 6 ms of CPU, a listed server about 40 µs and a flavor answer 8-11 ms;
here a poll costs under 1 ms and a flavor answer about 2 (bench/README.md).

Only the common case is answered here, with HTTP Basic credentials: ``GET
services/<name>/<start_id>`` (a poll), ``GET services/`` (the list), ``GET flavors/`` and
``POST userflavors`` with a JSON body the view's serializers accept, when the query finds the
active Hub, its grant of the Outpost and, for a poll, the server. Everything else goes on to
the Django API handler, which answers it exactly as before: a token (its use is recorded
there), no or wrong credentials, an Outpost or server not found, a body the view would
refuse, a database error. So the rules of who may read what keep their one home
(``selectors``, the authentication class, the views, flavors/selectors.py): this path reads
with the same querysets, compiled once per database, and resolves flavors with the same
functions.

The answers are Django's: the request is a real ``ASGIRequest`` and passes the Hub API's own
middleware (request id, host check, security headers), and the bodies have the serializers'
shapes. tests/outposts/test_api_direct.py compares both paths' answers byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import orjson
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError, connection
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from rest_framework.exceptions import ParseError

from flavors.api.serializers import flavors_answer
from flavors.selectors import FlavorInUse, active_servers_by_flavor_query, flavor_list_for_hub
from outposts import selectors
from outposts.api import serializers, views
from outposts.api.compiled import compiled
from outposts.api.parsers import BoundedJSONParser
from outposts.models import Hub, Outpost, Server
from portal.crypto import credential_digests
from portal.text import control_character

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# The paths outposts.api.urls routes to the poll and the list, under an Outpost or at the site
# root (the default Outpost), with or without a trailing slash.
_OUTPOST = r"^/(?:outposts/(?P<slug>[-a-zA-Z0-9_]+)/)?"
POLL_PATH = re.compile(_OUTPOST + r"services/(?P<name>[^/]*)/(?P<start_id>[^/]+)/?\Z")
LIST_PATH = re.compile(_OUTPOST + r"services/?\Z")
FLAVORS_PATH = re.compile(_OUTPOST + r"flavors/?\Z")
USERFLAVORS_PATH = re.compile(_OUTPOST + r"userflavors/?\Z")
# A userflavors body is a user's attributes: one larger than this goes on to the Django
# handler, which applies DATA_UPLOAD_MAX_MEMORY_SIZE.
BODY_LIMIT = 64 * 1024

# Stand-ins compiled into a query in place of each request's values. No real value can equal
# one: values with control characters never reach a query.
_NAME, _START_ID, _HUB, _SLUG = (f"\x00{part}" for part in ("name", "start_id", "hub", "slug"))
# and for ids, which are positive
_HUB_ID, _OUTPOST_ID = -(2**62) + 1, -(2**62) + 2
_USER_ID = "\x00user_id"


def _digest(i: int) -> str:
    return f"\x00digest{i}"


class NotDirect(Exception):
    """This request is not the common case: the Django API handler answers it."""


# Queries.


def _granted(prefix: str, *, default_outpost: bool, digests: int) -> dict[str, Any]:
    """Filters for "the active Hub of that name, with a secret of one of the digests, was
    granted this Outpost" (selectors.hub_by_secret and selectors.outpost_for_hub), from the
    model ``prefix`` leads to."""
    outpost = f"{prefix}is_default" if default_outpost else f"{prefix}slug"
    return {
        f"{prefix}hubs__name": _HUB,
        f"{prefix}hubs__is_active": True,
        f"{prefix}hubs__secret_digest__in": [_digest(i) for i in range(digests)],
        outpost: True if default_outpost else _SLUG,
    }


def poll_query(*, default_outpost: bool, digests: int) -> QuerySet[Server, tuple[Any, ...]]:
    """The polled server's status and exit code, if it is the granted Hub's and visible
    (selectors.server_get_for_hub), in one statement."""
    return (
        Server.objects.visible()
        .filter(
            name=_NAME,
            start_id=_START_ID,
            hub=F("outpost__hubs"),
            **_granted("outpost__", default_outpost=default_outpost, digests=digests),
        )
        .order_by()
        .values_list("status", "exit_code")[:1]
    )


GRANT_FIELDS = ("pk", "hubs__pk", "hubs__name", "slug", "state", "state_message")


def grant_query(*, default_outpost: bool, digests: int) -> QuerySet[Outpost, tuple[Any, ...]]:
    """The granted Outpost and its Hub: GRANT_FIELDS, and the Outpost's flavor terms token."""
    granted = _granted("", default_outpost=default_outpost, digests=digests)
    return (
        Outpost.objects.filter(**granted)
        .order_by()
        .values_list(*GRANT_FIELDS, "flavor_terms_token")[:1]
    )


def list_query() -> QuerySet[Server, dict[str, Any]]:
    return selectors.server_list_for_hub(hub=_HUB_ID, outpost=_OUTPOST_ID)


def flavor_counts_query(*, of_user: bool) -> QuerySet[Server, tuple[Any, ...]]:
    user_id = _USER_ID if of_user else None
    return active_servers_by_flavor_query(hub=_HUB_ID, outpost=_OUTPOST_ID, user_id=user_id)


@dataclass(frozen=True)
class Caller:
    """What a direct request names: the Hub's Basic credentials and the Outpost's slug (None
    for the default Outpost)."""

    hub: str
    secret: str
    slug: str | None

    def values(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The queries' shape and the values for their stand-ins."""
        digests = credential_digests(self.secret)
        shape = {"default_outpost": self.slug is None, "digests": len(digests)}
        values = {_HUB: self.hub, _SLUG: self.slug or ""}
        values.update({_digest(i): digest for i, digest in enumerate(digests)})
        return shape, values


def poll_read(caller: Caller, name: str, start_id: str) -> tuple[Any, ...] | None:
    shape, values = caller.values()
    rows = compiled(poll_query, **shape).rows({**values, _NAME: name, _START_ID: start_id})
    return rows[0] if rows else None


def list_read(caller: Caller) -> list[dict[str, Any]] | None:
    shape, values = caller.values()
    grant = compiled(grant_query, **shape).rows(values)
    if not grant:
        return None
    outpost_id, hub_id, *_ = grant[0]
    return compiled(list_query).dicts({_HUB_ID: hub_id, _OUTPOST_ID: outpost_id})


def flavors_read(
    caller: Caller,
    *,
    authentication: dict[str, Any] | None = None,
    user_id: str | None = None,
    project: str | None = None,
) -> tuple[Outpost, list[FlavorInUse]] | None:
    """The granted Outpost and what flavor_list_for_hub lists, with the grant and the counts
    as compiled queries and the terms as flavors/terms.py keeps them."""
    shape, values = caller.values()
    grant = compiled(grant_query, **shape).rows(values)
    if not grant:
        return None
    *fields, token = grant[0]
    row = dict(zip(GRANT_FIELDS, fields, strict=True))
    hub = Hub(pk=row.pop("hubs__pk"), name=row.pop("hubs__name"))
    outpost = Outpost(**row, flavor_terms_token=token)
    counted = compiled(flavor_counts_query, of_user=user_id is not None).rows(
        {_HUB_ID: hub.pk, _OUTPOST_ID: outpost.pk, _USER_ID: user_id}
    )
    listing = flavor_list_for_hub(
        hub=hub,
        outpost=outpost,
        authentication=authentication,
        user_id=user_id,
        project=project,
        counted=counted,
    )
    return outpost, listing


def release_connection() -> None:
    """After a direct read: a pooled connection (PostgreSQL) goes back to its pool; any other
    (SQLite) stays open for the thread's next read, unless an error may have broken it.

    These reads run in the event loop's executor, a few long-lived threads, so one open
    connection per thread is bounded; opening SQLite anew (with its PRAGMAs) for every poll
    cost more than the read.
    """
    if getattr(connection, "pool", None) is not None or connection.errors_occurred:
        connection.close()


async def in_thread(read: Callable[..., Any], *args: Any) -> Any:
    """``read(*args)`` in the loop's executor, with the request's context (its log ids): what
    sync_to_async(thread_sensitive=False) does, without that wrapper's own cost. Not the
    request's thread: a read needs nothing of it, and the executor's few long-lived threads
    keep their connections."""

    def run() -> Any:
        try:
            return read(*args)
        finally:
            release_connection()

    call = functools.partial(contextvars.copy_context().run, run)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, call)
    except DatabaseError as error:
        raise NotDirect from error  # the Django handler answers it as it answers any


# Answers.


def _allowed_methods(view_class: type[views.APIView]) -> str:
    """The Allow header DRF puts on the view's answers (setup() adds HEAD, as for a request)."""
    view = view_class()
    view.setup(None)
    return ", ".join(view.allowed_methods)


def json_answer(
    answer: Any, *, view_class: type[views.APIView], headers: dict[str, str] | None = None
) -> HttpResponse:
    """``answer`` as DRF's JSONRenderer renders it (compact, UTF-8, U+2028/9 escaped), with
    the headers DRF gives the view's answers. orjson writes dates (in UTC, as "...Z") and the
    rest several times faster than the json module (bench/README.md)."""
    body = orjson.dumps(answer, option=orjson.OPT_UTC_Z)
    body = body.replace(LINE_SEPARATOR, b"\\u2028").replace(PARAGRAPH_SEPARATOR, b"\\u2029")
    return HttpResponse(
        body,
        content_type="application/json",
        headers={"Allow": ALLOWED_METHODS[view_class], **(headers or {})},
    )


LINE_SEPARATOR, PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()
ALLOWED_METHODS = {
    view: _allowed_methods(view)
    for view in (views.ServiceView, views.ServicesView, views.FlavorsView, views.UserFlavorsView)
}


def list_entries(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """ServerSerializer's entries, built directly from server_list_for_hub's rows: its
    twelve fields per server cost most of a long list (bench/README.md). The dates stay
    dates, in UTC as the database connection gives them: json_answer writes them."""
    return [
        {
            "name": row["name"],
            "start_id": row["start_id"],
            "start_date": row["created_at"],
            "end_date": row["end_at"],
            "last_update": row["updated_at"],
            "jupyterhub": row["hub_name"],
            "jupyterhub_userid": row["user_id"],
            "state_stored": row["state_stored"],
            "start_pending": row["start_pending"],
            "stop_pending": row["stop_pending"],
            "flavor": row["flavor_name"],
            "status": row["status"],
        }
        for row in rows
    ]


def basic_credentials(request: HttpRequest, slug: str | None) -> Caller:
    """The caller of a request with ``Authorization: Basic``, or NotDirect."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise NotDirect
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise NotDirect from error
    hub, colon, secret = decoded.partition(":")
    if not colon or control_character(decoded) is not None:
        raise NotDirect  # the Django handler refuses these (401)
    return Caller(hub=hub, secret=secret, slug=slug)


async def answer_poll(request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    caller = basic_credentials(request, match["slug"])
    name, start_id = match["name"], match["start_id"]
    if control_character(name + start_id) is not None:
        raise NotDirect  # the Django handler refuses these (400)
    row = await in_thread(poll_read, caller, name, start_id)
    if row is None:
        raise NotDirect
    status, exit_code = row
    # PollAnswerSerializer's shape, built directly: the serializer's field copies cost more
    # than the query.
    answer = {"status": Server.poll_status_of(status=status, exit_code=exit_code), "logs": []}
    return json_answer(answer, view_class=views.ServiceView)


async def answer_list(request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    rows = await in_thread(list_read, basic_credentials(request, match["slug"]))
    if rows is None:
        raise NotDirect
    return json_answer(list_entries(rows), view_class=views.ServicesView)


async def answer_flavors(request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    read = functools.partial(flavors_read, basic_credentials(request, match["slug"]))
    return await flavors_response(read, view_class=views.FlavorsView)


async def answer_userflavors(request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    caller = basic_credentials(request, match["slug"])
    authentication, user_id = userflavors_request(request)
    read = functools.partial(
        flavors_read,
        caller,
        authentication=authentication,
        user_id=user_id,
        project=views.UserFlavorsView.project_named(authentication),
    )
    return await flavors_response(read, view_class=views.UserFlavorsView)


def userflavors_request(request: HttpRequest) -> tuple[dict[str, Any], str | None]:
    """The user's attributes and id, validated by the serializers the view validates them
    with; NotDirect for any request the view would refuse, or parse otherwise than as JSON."""
    charset = request.content_params.get("charset", "utf-8").lower()
    if request.content_type != "application/json" or charset != "utf-8" or not request.body:
        raise NotDirect
    if request.META.get("CONTENT_LENGTH") != str(len(request.body)):
        raise NotDirect  # e.g. chunked: DRF reads a body without a Content-Length as empty
    try:
        data = BoundedJSONParser().parse(BytesIO(request.body), parser_context={})
    except ParseError as error:
        raise NotDirect from error
    authentication = serializers.AuthenticationSerializer(data=data)
    user = serializers.FlavorUserSerializer(data=request.GET)
    if not (authentication.is_valid() and user.is_valid()):
        raise NotDirect
    return authentication.validated_data, user.validated_data.get("user_id")


async def flavors_response(
    read: Callable[[], tuple[Outpost, list[FlavorInUse]] | None], *, view_class: type[views.APIView]
) -> HttpResponse:
    answer = await in_thread(read)
    if answer is None:
        raise NotDirect
    outpost, listing = answer
    headers = views.outpost_state_headers(state=outpost.state, state_message=outpost.state_message)
    return json_answer(flavors_answer(listing), view_class=view_class, headers=headers)


ROUTES = (
    ("GET", POLL_PATH, answer_poll),
    ("GET", LIST_PATH, answer_list),
    ("GET", FLAVORS_PATH, answer_flavors),
    ("POST", USERFLAVORS_PATH, answer_userflavors),
)


def direct_api(*, api: ASGIApp, middleware: list[str]) -> ASGIApp:
    """An ASGI app answering the common polls and lists itself and passing all else to
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
