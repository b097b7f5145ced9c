"""URLs of the Outpost API: every Outpost under /outposts/<slug>/, the default one also at /.

One table, ``ROUTES``, names every endpoint once; the URL patterns and the OpenAPI schema's
paths are both derived from it, so they cannot drift apart.

Regular expressions rather than path converters, because the contract has paths with an empty
server name (``services//<start_id>``) and accepts each path with and without a trailing
slash (settings.APPEND_SLASH is off: Hubs do not follow redirects of a POST or DELETE).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.urls import include, path, re_path

from outposts.api import views
from outposts.api.exceptions import not_found_view
from tunnels.api.views import TunnelRestartView

NAME = r"(?P<name>[^/]*)"  # may be empty: the user's default server
START_ID = r"(?P<start_id>[^/]+)"


@dataclass(frozen=True)
class Route:
    """One endpoint of an Outpost's API, relative to the Outpost's base URL."""

    name: str
    # What the URL pattern matches, without the optional trailing slash.
    regex: str
    # The canonical path the schema lists (no slash variant, every part present).
    schema_path: str
    view: Callable[..., Any]
    # Served through the lean middleware stack (settings.API_MIDDLEWARE, portal/asgi.py).
    # Off for an endpoint whose writes are audited: the audit middleware records the
    # caller's address on their entries.
    lean: bool = True


ROUTES = (
    Route("ping", r"ping", "ping", views.PingView.as_view()),
    Route("services", r"services", "services", views.services_view),
    Route(
        "service-events",
        rf"services/{NAME}/{START_ID}/events",
        "services/<str:name>/<str:start_id>/events",
        views.ServiceEventsView.as_view(),
    ),
    Route(
        "service",
        rf"services/{NAME}(?:/{START_ID})?",
        "services/<str:name>/<str:start_id>",
        views.service_view,
    ),
    Route("flavors", r"flavors", "flavors", views.FlavorsView.as_view()),
    Route("userflavors", r"userflavors", "userflavors", views.UserFlavorsView.as_view()),
    Route(
        "tunnels-restart",
        r"tunnels/restart",
        "tunnels/restart",
        TunnelRestartView.as_view(),
        lean=False,  # bumps tunnels' generation, an audited field
    ),
)

# Relative to an Outpost's base URL; each path also with a trailing slash.
outpost_api_urlpatterns = [
    re_path(rf"^{route.regex}/?\Z", route.view, name=route.name) for route in ROUTES
]

urlpatterns = [
    re_path(
        r"^outposts/(?P<outpost_slug>[-a-zA-Z0-9_]+)/",
        include((outpost_api_urlpatterns, "outpost-api"), namespace="outpost-api"),
    ),
    # The default Outpost: views see no outpost_slug and use the Hub's default Outpost.
    re_path(
        r"^", include((outpost_api_urlpatterns, "outpost-api"), namespace="default-outpost-api")
    ),
    # Last: whatever no route matched. The API also serves the site root, so every unmatched
    # path is one of its paths, and gets its JSON 404 rather than Django's HTML page.
    re_path(r"^", not_found_view, name="api-not-found"),
]

# The paths portal/asgi.py serves with the lean middleware: a lean route's first segment,
# under an Outpost or at the site root (the default Outpost's API).
_LEAN_SEGMENTS = "|".join(
    sorted({re.escape(route.regex.split("/")[0]) for route in ROUTES if route.lean})
)
_LEAN_PATH = re.compile(rf"^/(?:outposts/[-a-zA-Z0-9_]+/)?(?:{_LEAN_SEGMENTS})(?:/|\Z)")


def lean_path(path: str) -> bool:
    """Whether a request path is one of the Hub API's lean endpoints."""
    return _LEAN_PATH.match(path) is not None


# The same views under their canonical paths only, for the OpenAPI schema (/api/schema/):
# the slash variants and the root copies above would list every operation several times.
_BASE = "outposts/<slug:outpost_slug>/"
schema_urlpatterns = [path(_BASE + route.schema_path, route.view) for route in ROUTES]
