"""ASGI entry point: the production web server (uvicorn) serves this, so that synchronous
API starts and stops can wait for their task without holding a worker thread.

Two Django handlers behind one router: the Hub API's paths (``outposts.api.urls.lean_path``)
go through ``settings.API_MIDDLEWARE``, a stack without sessions, CSRF, messages, the
logged-in user or the audit actor, none of which a Hub's Basic or token request uses, and
each of which costs a thread hop per request under ASGI (bench/README.md, "Where the time
goes"). Everything else (the admin, monitoring, the servers' address reports) gets the full
``settings.MIDDLEWARE``.
"""

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with ``settings.API_MIDDLEWARE`` as its middleware."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django reads its chain from settings.MIDDLEWARE only; this runs once, at start-up,
        # before any request (so no request sees the swapped value).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full


def api_router(*, api: ASGIApp, site: ASGIApp) -> ASGIApp:
    """An ASGI app sending HTTP requests to the Hub API's paths to ``api``, all else to
    ``site``."""
    from outposts.api.urls import lean_path

    async def route(scope: Scope, receive: Any, send: Any) -> None:
        lean = scope["type"] == "http" and lean_path(scope.get("path", ""))
        await (api if lean else site)(scope, receive, send)

    return route


site_application = get_asgi_application()  # sets Django up: the router imports the URLs
api_application = ApiASGIHandler()


def _application() -> ASGIApp:
    from outposts.api.direct import direct_api

    return api_router(
        api=direct_api(api=api_application, middleware=settings.API_MIDDLEWARE),
        site=site_application,
    )


application = _application()
