"""The poll, the list, flavors and userflavors: the reads that are most of a Hub's traffic."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import ValidationError

from flavors.api.serializers import flavors_answer
from flavors.selectors import FlavorInUse, active_servers_by_flavor_query, flavor_list_for_hub
from outposts import selectors
from outposts.api import serializers, views
from outposts.api.direct.base import (
    Caller,
    NotDirect,
    basic_credentials,
    grant_read,
    granted_filters,
    in_thread,
    json_answer,
    json_body,
)
from outposts.models import Outpost, Server
from portal.compiled import compiled, id_stand_ins, text_stand_in
from portal.text import control_character

# Stand-ins for each request's values (portal/compiled.py).
_NAME, _START_ID, _USER_ID = map(text_stand_in, ("name", "start_id", "user_id"))
_HUB_ID, _OUTPOST_ID = id_stand_ins(2)


def poll_query(*, default_outpost: bool, digests: int) -> QuerySet[Server, tuple[Any, ...]]:
    """The polled server's status and exit code, if it is the granted Hub's and visible
    (selectors.server_get_for_hub), in one statement."""
    return (
        Server.objects.visible()
        .filter(
            name=_NAME,
            start_id=_START_ID,
            hub=F("outpost__hubs"),
            **granted_filters("outpost__", default_outpost=default_outpost, digests=digests),
        )
        .order_by()
        .values_list("status", "exit_code")[:1]
    )


def list_query() -> QuerySet[Server, dict[str, Any]]:
    return selectors.server_list_for_hub(hub=_HUB_ID, outpost=_OUTPOST_ID)


def flavor_counts_query(*, of_user: bool) -> QuerySet[Server, tuple[Any, ...]]:
    user_id = _USER_ID if of_user else None
    return active_servers_by_flavor_query(hub=_HUB_ID, outpost=_OUTPOST_ID, user_id=user_id)


def poll_read(caller: Caller, name: str, start_id: str) -> tuple[Any, ...] | None:
    shape, values = caller.values()
    rows = compiled(poll_query, **shape).rows({**values, _NAME: name, _START_ID: start_id})
    return rows[0] if rows else None


def list_read(caller: Caller) -> list[dict[str, Any]] | None:
    grant = grant_read(caller)
    if grant is None:
        return None
    hub, outpost = grant
    return compiled(list_query).dicts({_HUB_ID: hub.pk, _OUTPOST_ID: outpost.pk})


def flavors_read(
    caller: Caller,
    *,
    authentication: dict[str, Any] | None = None,
    user_id: str | None = None,
    project: str | None = None,
) -> tuple[Outpost, list[FlavorInUse]] | None:
    """The granted Outpost and what flavor_list_for_hub lists, with the grant and the counts
    as compiled queries and the terms as flavors/terms.py keeps them."""
    grant = grant_read(caller)
    if grant is None:
        return None
    hub, outpost = grant
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


# One instance of each serializer validates every direct userflavors request, as one
# StartSerializer every start (direct/start.py): a new one deep-copies its fields.
AUTHENTICATION_SERIALIZER = serializers.AuthenticationSerializer()
FLAVOR_USER_SERIALIZER = serializers.FlavorUserSerializer()


def userflavors_request(request: HttpRequest) -> tuple[dict[str, Any], str | None]:
    """The user's attributes and id, validated by the serializers the view validates them
    with; NotDirect for any request the view would refuse, or parse otherwise than as JSON."""
    try:
        authentication = AUTHENTICATION_SERIALIZER.run_validation(json_body(request))
        user = FLAVOR_USER_SERIALIZER.run_validation(request.GET)
    except ValidationError as error:
        raise NotDirect from error
    return authentication, user.get("user_id")


async def flavors_response(
    read: Callable[[], tuple[Outpost, list[FlavorInUse]] | None], *, view_class: type[views.APIView]
) -> HttpResponse:
    answer = await in_thread(read)
    if answer is None:
        raise NotDirect
    outpost, listing = answer
    headers = views.outpost_state_headers(state=outpost.state, state_message=outpost.state_message)
    return json_answer(flavors_answer(listing), view_class=view_class, headers=headers)
