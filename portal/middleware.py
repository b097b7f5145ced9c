"""The Hub API's stand-in for Django's security, common and clickjacking middleware
(settings.API_MIDDLEWARE, portal/asgi.py).

Under ASGI each of Django's own middleware runs its ``process_request`` and
``process_response`` through a thread hop. Theirs are pure header and host checks (no
database, no I/O), so this runs the very same methods in the event loop: the API's answers
keep exactly the headers, redirects and refusals those middleware give, without the hops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware

# In the order settings.MIDDLEWARE lists them: requests pass them in this order, responses
# in the reverse one.
INLINE = (SecurityMiddleware, CommonMiddleware, XFrameOptionsMiddleware)


class ApiHeadersMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        # Their get_response is never called: only their process_* methods are.
        self.inline = [middleware(get_response) for middleware in INLINE]
        self.request_steps = [
            m.process_request for m in self.inline if hasattr(m, "process_request")
        ]
        self.response_steps = [
            m.process_response for m in reversed(self.inline) if hasattr(m, "process_response")
        ]

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        response = self._before(request) or self.get_response(request)
        return self._after(request, response)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = self._before(request) or await self.get_response(request)
        return self._after(request, response)

    def _before(self, request: HttpRequest) -> HttpResponse | None:
        for step in self.request_steps:
            response = step(request)
            if response is not None:
                return response
        return None

    def _after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        for step in self.response_steps:
            response = step(request, response)
        return response
