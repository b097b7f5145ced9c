"""The request id: taken from a client's X-Request-ID if it is safe, else made; set for every
log line of the request (logcontext.py) and returned in the response's X-Request-ID.

No database, no cache: a header read and a context variable, in the sync and the async
stack alike (under ASGI an async middleware costs no thread hop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from monitoring.logcontext import (
    log_context_current,
    log_context_enter,
    log_context_exit,
    request_id_accepted,
    request_id_new,
)

HEADER = "X-Request-ID"


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        request_id = self._request_id(request)
        token = log_context_enter(request_id=request_id, start_id="", task_id="")
        try:
            response = self.get_response(request)
        finally:
            # Django logs a 4xx or 5xx answer after the middleware: with the request's ids.
            request.log_context = log_context_current()  # type: ignore[attr-defined]
            log_context_exit(token)
        response[HEADER] = request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        request_id = self._request_id(request)
        token = log_context_enter(request_id=request_id, start_id="", task_id="")
        try:
            response = await self.get_response(request)
        finally:
            # Django logs a 4xx or 5xx answer after the middleware: with the request's ids.
            request.log_context = log_context_current()  # type: ignore[attr-defined]
            log_context_exit(token)
        response[HEADER] = request_id
        return response

    @staticmethod
    def _request_id(request: HttpRequest) -> str:
        return request_id_accepted(request.headers.get(HEADER)) or request_id_new()
