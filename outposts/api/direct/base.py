"""What every direct answer shares: the caller and its grant, the database work in a thread,
the JSON of an answer, the request's body."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar

import orjson
from django.db import DatabaseError, connection
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import ParseError

from outposts.api import views
from outposts.api.parsers import BoundedJSONParser
from outposts.models import Hub, Outpost
from outposts.workers import WORKER_SEEN_FIELDS, outposts_with_worker_seen
from portal.compiled import compiled, text_stand_in
from portal.crypto import credential_digests
from portal.text import control_character

ModelT = TypeVar("ModelT", bound=Model)

# A body larger than this goes on to the Django handler, which applies
# DATA_UPLOAD_MAX_MEMORY_SIZE (a start's is its env, options and certificates: a few KiB).
BODY_LIMIT = 64 * 1024


class NotDirect(Exception):
    """This request is not the common case: the Django API handler answers it."""


# The caller and its grant.

# Stand-ins compiled into a query in place of each request's values (portal/compiled.py).
HUB_STAND_IN, SLUG_STAND_IN = text_stand_in("hub"), text_stand_in("slug")


def digest_stand_in(i: int) -> str:
    return text_stand_in(f"digest{i}")


def granted_filters(prefix: str, *, default_outpost: bool, digests: int) -> dict[str, Any]:
    """Filters for "the active Hub of that name, with a secret of one of the digests, was
    granted this Outpost" (selectors.hub_by_secret and selectors.outpost_for_hub), from the
    model ``prefix`` leads to."""
    outpost = f"{prefix}is_default" if default_outpost else f"{prefix}slug"
    return {
        f"{prefix}hubs__name": HUB_STAND_IN,
        f"{prefix}hubs__is_active": True,
        f"{prefix}hubs__secret_digest__in": [digest_stand_in(i) for i in range(digests)],
        outpost: True if default_outpost else SLUG_STAND_IN,
    }


# What a grant read gives of the Outpost (Outpost field attnames; the queue for a start's
# worker stamp) and of the Hub.
OUTPOST_FIELDS = ("id", "slug", "queue", "state", "state_message", "flavor_terms_token")
HUB_FIELDS = ("id", "name")


def grant_query(
    *, default_outpost: bool, digests: int, worker_seen: bool
) -> QuerySet[Outpost, tuple[Any, ...]]:
    """The granted Outpost and its Hub: OUTPOST_FIELDS, then HUB_FIELDS, then with
    ``worker_seen`` the Outpost's worker stamp (WORKER_SEEN_FIELDS), which admission tells
    a user about when no worker is live, in the same query."""
    granted = granted_filters("", default_outpost=default_outpost, digests=digests)
    outposts = Outpost.objects.filter(**granted).order_by()
    if worker_seen:
        outposts = outposts_with_worker_seen(outposts=outposts)
    hub_fields = [f"hubs__{name}" for name in HUB_FIELDS]
    seen_fields = WORKER_SEEN_FIELDS if worker_seen else ()
    return outposts.values_list(*OUTPOST_FIELDS, *hub_fields, *seen_fields)[:1]


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
        values = {HUB_STAND_IN: self.hub, SLUG_STAND_IN: self.slug or ""}
        values.update({digest_stand_in(i): digest for i, digest in enumerate(digests)})
        return shape, values


def grant_read(caller: Caller, *, worker_seen: bool = False) -> tuple[Hub, Outpost] | None:
    """The caller's Hub and the Outpost it names, if granted; None otherwise. Each holds
    only what the grant read: any other field is deferred, so a use of it reads it rather
    than see a default. With ``worker_seen`` the Outpost is annotated as
    outposts_with_worker_seen annotates it."""
    shape, values = caller.values()
    rows = compiled(grant_query, **shape, worker_seen=worker_seen).rows(values)
    if not rows:
        return None
    row = rows[0]
    hub_start, seen_start = len(OUTPOST_FIELDS), len(OUTPOST_FIELDS) + len(HUB_FIELDS)
    hub = partial_instance(Hub, dict(zip(HUB_FIELDS, row[hub_start:seen_start], strict=True)))
    outpost = partial_instance(Outpost, dict(zip(OUTPOST_FIELDS, row[:hub_start], strict=True)))
    if worker_seen:
        for name, value in zip(WORKER_SEEN_FIELDS, row[seen_start:], strict=True):
            setattr(outpost, name, value)
    return hub, outpost


def partial_instance(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """A row of ``model`` as the ORM loads it with only ``values`` (by attname) read."""
    names = [field.attname for field in model._meta.concrete_fields if field.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


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


def json_body(request: HttpRequest) -> Any:
    """The request's JSON body as the view's parser reads it; NotDirect for a body the view
    would refuse, or read otherwise than as JSON."""
    charset = request.content_params.get("charset", "utf-8").lower()
    if request.content_type != "application/json" or charset != "utf-8" or not request.body:
        raise NotDirect
    if request.META.get("CONTENT_LENGTH") != str(len(request.body)):
        raise NotDirect  # e.g. chunked: DRF reads a body without a Content-Length as empty
    try:
        return BoundedJSONParser().parse(BytesIO(request.body), parser_context={})
    except ParseError as error:
        raise NotDirect from error


# The database work.


def release_connection() -> None:
    """After direct database work: a pooled connection (PostgreSQL) goes back to its pool;
    any other (SQLite) stays open for the thread's next request, unless an error may have
    broken it.

    The work runs in the event loop's executor, a few long-lived threads, so one open
    connection per thread is bounded; opening SQLite anew (with its PRAGMAs) for every poll
    cost more than the read.
    """
    if getattr(connection, "pool", None) is not None or connection.errors_occurred:
        connection.close()


async def in_thread(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` in the loop's executor, with the request's context (its log ids): what
    sync_to_async(thread_sensitive=False) does, without that wrapper's own cost. Not the
    request's thread: the work needs nothing of it, and the executor's few long-lived threads
    keep their connections. A database error hands the request on (NotDirect)."""

    def run() -> Any:
        try:
            return work(*args)
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
    answer: Any,
    *,
    view_class: type[views.APIView],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """``answer`` as DRF's JSONRenderer renders it (compact, UTF-8, U+2028/9 escaped), with
    the headers DRF gives the view's answers. orjson writes dates (in UTC, as "...Z") and the
    rest several times faster than the json module (bench/README.md)."""
    body = orjson.dumps(answer, option=orjson.OPT_UTC_Z)
    body = body.replace(LINE_SEPARATOR, b"\\u2028").replace(PARAGRAPH_SEPARATOR, b"\\u2029")
    return HttpResponse(
        body,
        status=status,
        content_type="application/json",
        headers={"Allow": ALLOWED_METHODS[view_class], **(headers or {})},
    )


LINE_SEPARATOR, PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()
ALLOWED_METHODS = {
    view: _allowed_methods(view)
    for view in (views.ServiceView, views.ServicesView, views.FlavorsView, views.UserFlavorsView)
}
