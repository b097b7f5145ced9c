"""A start (``POST services/``): validated by the view's serializer, admitted and queued by
the view's service, answered in the view's shapes.

Whatever the service decides is answered here, since it may have changed something: a
refusal (419) was counted, a start the broker could not take (503) was withdrawn. A start the
service could not run (a rule only the service checks, a database error) goes on to the
Django handler, which runs it again and answers as it would have: it changed nothing, or
(an error after the commit, or in a sync start's wait) the handler finds it as the twin of
its repeat, which is the same start.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import ValidationError

from outposts import services
from outposts.api import serializers, views
from outposts.api.direct.base import (
    Caller,
    NotDirect,
    basic_credentials,
    grant_read,
    in_thread,
    json_answer,
    json_body,
)
from outposts.api.exceptions import service_error_answer
from outposts.errors import PortalError, TaskQueueUnavailable
from outposts.models import Outpost, Server


def start_run(caller: Caller, request: services.StartRequest) -> tuple[Server, Outpost]:
    """The service's start for the caller's Hub, with the Outpost the wait reads its start
    timeout from; NotDirect when the caller has no grant or the service refuses the request's
    shape (a ValidationError: nothing was written)."""
    grant = grant_read(caller, worker_seen=True)  # admission tells of an absent worker
    if grant is None:
        raise NotDirect
    hub, outpost = grant
    try:
        server, _ = services.server_start(hub=hub, outpost=outpost, request=request)
    except DjangoValidationError as error:
        raise NotDirect from error
    return server, server.outpost


# One StartSerializer validates every direct start: a new one deep-copies its declared
# fields, which took 0.22 ms of a validation's 0.35 ms. run_validation leaves the instance as it
# was (is_valid keeps the data and the errors on it, run_validation does not), and the fields
# keep nothing of a validation.
START_SERIALIZER = serializers.StartSerializer()


def start_request_of(body: Any, *, start_async: bool) -> services.StartRequest:
    """The start a body asks for, as the view's serializer reads it; NotDirect for a body
    it refuses (the view answers its 400)."""
    try:
        data = START_SERIALIZER.run_validation(body)
    except ValidationError as error:
        raise NotDirect from error
    return serializers.start_request_of(data, start_async=start_async)


async def answer_start(request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    caller = basic_credentials(request, match["slug"])
    start_async = views.wants_async(request)
    start_request = start_request_of(json_body(request), start_async=start_async)
    try:
        server, outpost = await in_thread(start_run, caller, start_request)
    except (PortalError, TaskQueueUnavailable) as error:
        refused = service_error_answer(error)
        assert refused is not None
        return json_answer(
            refused.body,
            view_class=views.ServicesView,
            status=refused.status,
            headers=refused.headers,
        )
    if start_async:
        # StartAnswerSerializer's shape for an address not known yet, built directly.
        return json_answer({"service": ""}, view_class=views.ServicesView, status=202)
    return await views.StartWait.of(server, outpost=outpost, run=in_thread).answer()
