"""Errors in the contract's shapes (api-contract.md §5).

Refusals and spawner failures answer 419 with the body the stock Hub spawner builds its
message from; malformed input answers 400 with a readable ``detail``, whether a serializer
found it or a service (which raises Django's ValidationError); a task broker that cannot take
a start or stop answers 503 with Retry-After in the same shape; anything unexpected is
logged here with its traceback and the client gets a safe message, never server internals.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from outposts.errors import PortalError, TaskQueueUnavailable
from portal.text import log_safe

log = logging.getLogger(__name__)

# The contract's status for a refusal or a spawner failure (not a standard HTTP code).
HTTP_419_REFUSED = 419
NOT_FOUND = "Item not found"
INTERNAL_ERROR = "Internal error of the Outpost portal; its administrators can find it in the log."
# When a Hub may try again after a 503 (the task broker was down): a restarted Redis is back
# within seconds, and the start is withdrawn, so a retry is a new start.
RETRY_AFTER_SECONDS = 10


def error_body(*, module: str, cls: str, message: str, exc: BaseException) -> dict[str, Any]:
    # Tracebacks only in debug mode: they show server internals (paths, code, settings).
    trace = "".join(traceback.format_exception(exc)) if settings.DEBUG else ""
    return {
        "module": module,
        "class": cls,
        "traceback": trace,
        "args": [message],
        "kwargs": {},
        "detail": message,
    }


def portal_error_body(exc: PortalError) -> dict[str, Any]:
    return error_body(
        module=type(exc).__module__, cls=type(exc).__name__, message=exc.message, exc=exc
    )


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """DRF's nested validation errors as "field: message" lines."""
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else f"{prefix}{key}"
            lines += _flatten(value, f"{name}." if name else "")
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix.rstrip('.')}: {detail}" if prefix else str(detail)]


@dataclass(frozen=True)
class ServiceErrorAnswer:
    body: dict[str, Any]
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def service_error_answer(exc: Exception) -> ServiceErrorAnswer | None:
    """The answer to a refusal or spawner failure (419) or a task queue that could not take
    a start or stop (503); None for any other error."""
    if isinstance(exc, PortalError):
        return ServiceErrorAnswer(portal_error_body(exc), HTTP_419_REFUSED)
    if isinstance(exc, TaskQueueUnavailable):
        # Logged where it happened (outposts.dispatch), without a traceback: not a bug.
        body = error_body(
            module=type(exc).__module__, cls=type(exc).__name__, message=exc.message, exc=exc
        )
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return ServiceErrorAnswer(body, status.HTTP_503_SERVICE_UNAVAILABLE, headers)
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """REST_FRAMEWORK.EXCEPTION_HANDLER: every error of an API view goes through here."""
    set_rollback()  # as DRF's own handler does, should ATOMIC_REQUESTS ever be turned on
    answer = service_error_answer(exc)
    if answer is not None:
        return Response(answer.body, status=answer.status, headers=answer.headers)
    if isinstance(exc, Http404 | exceptions.NotFound):
        return Response({"detail": NOT_FOUND}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, RequestDataTooBig):
        # Raised when a view first reads the body (request.data): the client's mistake.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is larger than {limit} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        # A service's rule (services do not depend on DRF): the same 400 as a serializer's.
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, exceptions.ValidationError):
        message = "Invalid request: " + "; ".join(_flatten(exc.detail))
        return Response(
            {"detail": message, "errors": exc.detail}, status=status.HTTP_400_BAD_REQUEST
        )
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response  # DRF's own: 401, 405, 415, parse errors (400), ...
    request = context.get("request")
    # The request body is never logged: it carries the server's API token and certificates.
    log.error(
        "Unhandled error in %s %s",
        log_safe(getattr(request, "method", "?")),
        log_safe(getattr(request, "path", "?")),
        exc_info=exc,
    )
    body = error_body(module="", cls="InternalError", message=INTERNAL_ERROR, exc=exc)
    return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def not_found_view(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Every path under the API's prefixes that no route matches: the API's own 404 shape,
    not Django's HTML page (the API serves the site root too, for the default Outpost)."""
    return JsonResponse({"detail": NOT_FOUND}, status=status.HTTP_404_NOT_FOUND)
