"""The API's routes: one table (outposts.api.urls.ROUTES) gives both the URL patterns and the
OpenAPI schema's paths, so a row's pattern must serve the path its schema entry names."""

import re

import pytest
from django.urls import resolve

from outposts.api.urls import ROUTES

# Values for the schema path's parameters, as a Hub would fill them in.
EXAMPLE = {"name": "lab", "start_id": "7c1d0a52"}


@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize(
    ("base", "namespace"), [("/outposts/local/", "outpost-api"), ("/", "default-outpost-api")]
)
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_every_route_serves_the_path_its_schema_entry_names(route, base, namespace, slash):
    # given the path the schema documents for this route, filled in
    path = re.sub(r"<str:(\w+)>", lambda part: EXAMPLE[part[1]], route.schema_path)
    # when a Hub requests it, with or without a trailing slash
    match = resolve(base + path + slash)
    # then the route's own pattern answers it, with the parameters the schema names
    assert (match.namespace, match.url_name, match.func) == (namespace, route.name, route.view)
    assert {key: match.kwargs[key] for key in EXAMPLE if key in match.kwargs} == {
        key: EXAMPLE[key] for key in re.findall(r"<str:(\w+)>", route.schema_path)
    }
