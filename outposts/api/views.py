"""The Outpost REST API (api-contract.md §1-5): thin views over services and selectors.

Synchronous starts and stops wait for their task's outcome, up to SYNC_WAIT_TIMEOUT. The
wait is a small async view around the DRF view (``waits_for_outcome``): the DRF view
validates and calls the service in Django's sync thread, then hands back what to wait for,
and the async view reads the server's status with the async ORM each time the worker
announces a change (outposts/status_events.py), sleeping on the event loop in between. So
a waiting request never keeps a thread busy, other requests are answered meanwhile
(tests/outposts/test_api_wait.py checks this through uvicorn), and Django cancels the wait
when the Hub hangs up. The wait runs outside DRF, so its errors are answered here in the
contract's JSON shape (DRF's handler never sees them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework import serializers as drf_serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flavors.api.serializers import FlavorSerializer, flavors_answer
from flavors.selectors import flavor_list_for_hub
from monitoring.logcontext import log_context_bind
from outposts import selectors, services, status_events
from outposts.api import serializers
from outposts.api.exceptions import (
    HTTP_419_REFUSED,
    INTERNAL_ERROR,
    NOT_FOUND,
    error_body,
    portal_error_body,
)
from outposts.errors import SpawnerFailed
from outposts.models import Hub, Outpost, Server
from portal.text import log_safe

log = logging.getLogger(__name__)

ASYNC_HEADER = OpenApiParameter(
    "execution-type",
    str,
    OpenApiParameter.HEADER,
    enum=["async", "sync"],
    description="`async`: answer at once (202) instead of waiting for the outcome; `sync` "
    "(or no header, or any other value): wait for it, up to PORTAL_SYNC_WAIT_TIMEOUT.",
)
# A server's path parameters, with the character rule of a start (docs/api.md).
SERVER_PATH = [
    OpenApiParameter(
        "name",
        str,
        OpenApiParameter.PATH,
        pattern=serializers.NAME_PATTERN,
        description="The server name, empty for the default server. " + serializers.NAME_HELP,
    ),
    OpenApiParameter("start_id", str, OpenApiParameter.PATH, pattern=serializers.START_ID_PATTERN),
]
COLLECT_LOGS = OpenApiParameter(
    "collect_logs", bool, description="Accepted for compatibility; logs are always a list."
)
ERRORS = {
    400: serializers.DetailSerializer,
    401: serializers.DetailSerializer,
    404: serializers.DetailSerializer,
    HTTP_419_REFUSED: serializers.ErrorSerializer,
}
# What an endpoint that reads a JSON body answers besides (too large, not JSON).
BODY_ERRORS = {
    **ERRORS,
    413: serializers.DetailSerializer,
    415: serializers.DetailSerializer,
}
# What a start or stop answers when the task broker cannot take its task (with Retry-After).
QUEUE_ERRORS = {503: serializers.ErrorSerializer}


# Keyed by flavor name.
FLAVORS_ANSWER = drf_serializers.DictField(child=FlavorSerializer())


def wants_async(request: Request) -> bool:
    return request.headers.get("execution-type", "").strip().lower() == "async"


class HubAPIView(APIView):
    """A view of one Outpost's API, called by an authenticated Hub.

    ``self.outpost`` is the Outpost the URL names (or the default one at the site root), and
    only if the Hub was granted it: any other Outpost answers 404, as if it did not exist.
    """

    outpost: Outpost

    @property
    def hub(self) -> Hub:
        return self.request.user.hub

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication first: 401 before 404
        outpost = selectors.outpost_for_hub(hub=self.hub, slug=kwargs.get("outpost_slug"))
        if outpost is None:
            raise exceptions.NotFound(NOT_FOUND)
        self.outpost = outpost

    def get_server(self, name: str, start_id: str) -> Server:
        problem = services.lookup_names_problem(name=name, start_id=start_id)
        if problem is not None:
            raise exceptions.ValidationError([problem])
        # The rest of this request logs with the server's start_id (no control characters).
        log_context_bind(start_id=start_id)
        server = selectors.server_get_for_hub(
            hub=self.hub, outpost=self.outpost, name=name, start_id=start_id
        )
        if server is None:
            raise exceptions.NotFound(NOT_FOUND)
        return server


class PingView(APIView):
    """Liveness of the portal; needs no credentials, reads nothing."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: serializers.PingSerializer}, auth=[])
    def get(self, request: Request, **kwargs: Any) -> Response:
        return Response(serializers.PingSerializer("pong!").data)


class ServicesView(HubAPIView):
    @extend_schema(
        summary="List this Hub's active servers",
        responses={200: serializers.ServerSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, **kwargs: Any) -> Response:
        servers = selectors.server_list_for_hub(hub=self.hub, outpost=self.outpost)
        return Response(serializers.ServerSerializer(servers, many=True).data)

    @extend_schema(
        summary="Start a server",
        request=serializers.StartSerializer,
        parameters=[ASYNC_HEADER],
        responses={
            200: serializers.StartAnswerSerializer,
            202: serializers.StartAnswerSerializer,
            **BODY_ERRORS,
            **QUEUE_ERRORS,
        },
    )
    def post(self, request: Request, **kwargs: Any) -> Response:
        serializer = serializers.StartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        start_async = wants_async(request)
        server, _ = services.server_start(
            hub=self.hub,
            outpost=self.outpost,
            request=serializer.to_start_request(start_async=start_async),
        )
        if start_async:
            return Response(
                serializers.StartAnswerSerializer("").data, status=status.HTTP_202_ACCEPTED
            )
        return AwaitOutcome(StartWait.of(server, outpost=self.outpost))


class ServiceView(HubAPIView):
    @extend_schema(
        summary="Poll a server",
        parameters=[*SERVER_PATH, COLLECT_LOGS],
        responses={200: serializers.PollAnswerSerializer, **ERRORS},
    )
    def get(self, request: Request, name: str, start_id: str = "0", **kwargs: Any) -> Response:
        # Answered from the portal's record, kept fresh by the reconciler: never a spawner call.
        server = self.get_server(name, start_id)
        return Response(serializers.PollAnswerSerializer(server).data)

    @extend_schema(
        summary="Stop and delete a server",
        parameters=[*SERVER_PATH, ASYNC_HEADER, COLLECT_LOGS],
        responses={
            200: serializers.StopAnswerSerializer,
            202: OpenApiTypes.OBJECT,
            **ERRORS,
            **QUEUE_ERRORS,
        },
    )
    def delete(self, request: Request, name: str, start_id: str = "0", **kwargs: Any) -> Response:
        server = services.server_remove(server=self.get_server(name, start_id))
        if wants_async(request):
            return Response({}, status=status.HTTP_202_ACCEPTED)
        return AwaitOutcome(StopWait(server_id=server.pk, timeout=settings.SYNC_WAIT_TIMEOUT))


class ServiceEventsView(HubAPIView):
    @extend_schema(
        summary="A server's progress events",
        description="For the portal's own hubclient: the start's progress steps in order.",
        parameters=[
            *SERVER_PATH,
            OpenApiParameter("after", int, description="Only events after this id."),
        ],
        responses={200: serializers.EventsAnswerSerializer, **ERRORS},
    )
    def get(self, request: Request, name: str, start_id: str, **kwargs: Any) -> Response:
        server = self.get_server(name, start_id)
        query = serializers.EventsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data.get("after")
        events = selectors.spawn_events_for_server(
            server=server, after=None if after is None else int(after)
        )
        answer = serializers.EventsAnswerSerializer({"server": server, "events": events})
        return Response(answer.data)


USER_ID = OpenApiParameter(
    "user_id",
    str,
    description="A Hub user id: each flavor then also has currentPerUser, that user's own "
    "active servers of it (an addition of this portal; stock Hubs do not send it).",
)
STATE_HEADERS = {
    "Outpost-State": OpenApiTypes.STR,
    "Outpost-State-Message": OpenApiTypes.STR,
}


def outpost_state_headers(*, state: str, state_message: str) -> dict[str, str]:
    """Flavor answers carry the Outpost's state in headers (the body's keys are flavor
    names), so a spawn form can show a draining or disabled Outpost before Start is pressed."""
    headers = {"Outpost-State": state}
    if state_message:
        # Header values are Latin-1 on the wire: anything else is sent as an escape.
        headers["Outpost-State-Message"] = state_message.encode("unicode_escape").decode("ascii")
    return headers


class FlavorsAnswerMixin:
    outpost: Outpost

    def flavors_response(self, listing: list[Any]) -> Response:
        headers = outpost_state_headers(
            state=self.outpost.state, state_message=self.outpost.state_message
        )
        return Response(flavors_answer(listing), headers=headers)


class FlavorsView(FlavorsAnswerMixin, HubAPIView):
    @extend_schema(
        summary="The flavors this Hub may use, with how many of each are active",
        responses={200: FLAVORS_ANSWER, **ERRORS},
    )
    def get(self, request: Request, **kwargs: Any) -> Response:
        return self.flavors_response(flavor_list_for_hub(hub=self.hub, outpost=self.outpost))


class UserFlavorsView(FlavorsAnswerMixin, HubAPIView):
    @extend_schema(
        summary="The flavors one user of this Hub may use",
        request=serializers.AuthenticationSerializer,
        parameters=[USER_ID],
        responses={200: FLAVORS_ANSWER, **BODY_ERRORS},
    )
    def post(self, request: Request, **kwargs: Any) -> Response:
        authentication = serializers.AuthenticationSerializer(data=request.data)
        authentication.is_valid(raise_exception=True)
        user = serializers.FlavorUserSerializer(data=request.query_params)
        user.is_valid(raise_exception=True)
        listing = flavor_list_for_hub(
            hub=self.hub,
            outpost=self.outpost,
            authentication=authentication.validated_data,
            user_id=user.validated_data.get("user_id"),
            project=self.project_named(authentication.validated_data),
        )
        return self.flavors_response(listing)

    @staticmethod
    def project_named(authentication: dict[str, Any]) -> str | None:
        return str(authentication.get("project") or "") or None


# Waiting for a synchronous start or stop.


# How a wait runs its database work: in the request's thread (Django's path), or as the
# direct path runs it (outposts/api/direct/base.py).
RunSync = Callable[..., Awaitable[Any]]


async def in_request_thread(work: Callable[..., Any], *args: Any) -> Any:
    return await sync_to_async(work)(*args)


async def wait_for_status(
    server_id: int,
    *,
    until: Collection[str],
    timeout: float,
    run: RunSync = in_request_thread,
) -> tuple[str, str, str] | None:
    """The server's (status, address, error) once its status is one of ``until``, or None
    when ``timeout`` seconds pass first. Woken by the worker's announcement (subscribed
    before the first read, so none is missed), with a slower safety re-read."""
    deadline = time.monotonic() + timeout
    async with status_events.server_status_watch(server_id) as watch:
        while True:
            row = await run(partial(selectors.server_status, server_id=server_id))
            if row is not None and row[0] in until:
                return row
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await watch.changed(remaining)


# Named *Wait, not *Outcome: outposts.runner.StartOutcome is the spawner's result, a
# different thing; these are what an API request waits for.


def _address_deferred(server_id: int) -> None:
    services.server_address_deferred(server=Server.objects.get(pk=server_id))


@dataclass(frozen=True)
class StartWait:
    """A synchronous start: answers the address once running, 419 once ended, "" past the
    bound."""

    server_id: int
    timeout: float
    run: RunSync = in_request_thread

    @classmethod
    def of(cls, server: Server, *, outpost: Outpost, run: RunSync = in_request_thread) -> StartWait:
        """The wait for ``server`` on ``outpost``: SYNC_WAIT_TIMEOUT at most, and never past
        the Outpost's start timeout."""
        timeout = min(settings.SYNC_WAIT_TIMEOUT, outpost.start_timeout.total_seconds())
        return cls(server_id=server.pk, timeout=timeout, run=run)

    async def answer(self) -> HttpResponse:
        row = await wait_for_status(
            self.server_id,
            until={Server.Status.RUNNING, *Server.ENDED},
            timeout=self.timeout,
            run=self.run,
        )
        if row is None:
            # Still starting: an empty service makes the Hub wait for the set-up-tunnel call,
            # which the portal makes once the server runs (at once if it just got there).
            await self.run(_address_deferred, self.server_id)
            return JsonResponse(serializers.StartAnswerSerializer("").data)
        server_status, address, error = row
        if server_status == Server.Status.RUNNING:
            return JsonResponse(serializers.StartAnswerSerializer(address).data)
        failure = SpawnerFailed(error or "The server ended before it was ready.")
        return JsonResponse(portal_error_body(failure), status=HTTP_419_REFUSED)


@dataclass(frozen=True)
class StopWait:
    """A synchronous stop: answers once the server ended or the bound passed."""

    server_id: int
    timeout: float

    async def answer(self) -> HttpResponse:
        await wait_for_status(self.server_id, until=Server.ENDED, timeout=self.timeout)
        # 200 even when the bound passed first: the server is already gone for this Hub (polls
        # answer 404) and its stop task goes on, retried, in the background. A failure answer
        # would only make the Hub report a failed stop for a server it can no longer reach.
        return JsonResponse(serializers.StopAnswerSerializer(self).data)


class AwaitOutcome(Response):
    """What a DRF view returns to have ``waits_for_outcome`` wait and answer for it."""

    def __init__(self, wait: StartWait | StopWait) -> None:
        super().__init__()
        self.wait = wait


def waits_for_outcome(view_class: type[APIView]) -> Callable[..., Any]:
    """An async Django view running ``view_class`` and, if it asks to, waiting for an outcome.

    The DRF view runs through sync_to_async in the request's sync thread, as Django would run
    it anyway; only the wait itself is async.
    """
    drf_view = view_class.as_view()
    run_drf_view = sync_to_async(drf_view)

    async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = await run_drf_view(request, *args, **kwargs)
        if not isinstance(response, AwaitOutcome):
            return response
        try:
            return await response.wait.answer()
        except Exception as error:
            # Not asyncio.CancelledError (a BaseException): a Hub hanging up ends the wait.
            # The request body is never logged: it carries the server's API token.
            log.exception(
                "Unhandled error waiting in %s %s", request.method, log_safe(request.path)
            )
            body = error_body(module="", cls="InternalError", message=INTERNAL_ERROR, exc=error)
            return JsonResponse(body, status=500)

    # drf-spectacular finds the DRF view class through these, as on any as_view() function.
    view.cls = drf_view.cls  # type: ignore[attr-defined]
    view.initkwargs = drf_view.initkwargs  # type: ignore[attr-defined]
    return csrf_exempt(view)


services_view = waits_for_outcome(ServicesView)
service_view = waits_for_outcome(ServiceView)
