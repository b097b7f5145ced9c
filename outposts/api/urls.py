"""URLs of the Outpost API: every Outpost under /outposts/<slug>/, the default one also at /.

Regular expressions rather than path converters, because the contract has paths with an empty
server name (``services//<start_id>``) and accepts each path with and without a trailing
slash (settings.APPEND_SLASH is off: Hubs do not follow redirects of a POST or DELETE).
"""

from django.urls import include, path, re_path

from outposts.api import views

NAME = r"(?P<name>[^/]*)"  # may be empty: the user's default server
START_ID = r"(?P<start_id>[^/]+)"

# Relative to an Outpost's base URL.
outpost_api_urlpatterns = [
    re_path(r"^ping/?$", views.PingView.as_view(), name="ping"),
    re_path(r"^services/?$", views.services_view, name="services"),
    re_path(
        rf"^services/{NAME}/{START_ID}/events/?$",
        views.ServiceEventsView.as_view(),
        name="service-events",
    ),
    re_path(rf"^services/{NAME}(?:/{START_ID})?/?$", views.service_view, name="service"),
    re_path(r"^flavors/?$", views.FlavorsView.as_view(), name="flavors"),
    re_path(r"^userflavors/?$", views.UserFlavorsView.as_view(), name="userflavors"),
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
]

# The same views under their canonical paths only, for the OpenAPI schema (/api/schema/):
# the slash variants and the root copies above would list every operation several times.
_BASE = "outposts/<slug:outpost_slug>/"
schema_urlpatterns = [
    path(f"{_BASE}ping", views.PingView.as_view()),
    path(f"{_BASE}services", views.services_view),
    path(f"{_BASE}services/<str:name>/<str:start_id>", views.service_view),
    path(f"{_BASE}services/<str:name>/<str:start_id>/events", views.ServiceEventsView.as_view()),
    path(f"{_BASE}flavors", views.FlavorsView.as_view()),
    path(f"{_BASE}userflavors", views.UserFlavorsView.as_view()),
]
