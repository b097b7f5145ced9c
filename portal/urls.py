from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from outposts.api.urls import schema_urlpatterns
from outposts.api.usage import usage_csv_view
from tunnels.api.report import server_address_view

# No "View site" link: the portal has no pages of its own for people (users meet it through
# their Hub, and its root is the default Outpost's API, which answers a browser with a JSON
# 404). Everything an admin looks at is in the admin itself.
admin.site.site_url = None

urlpatterns = [
    path("admin/", admin.site.urls),
    # For site admins' browsers (admin session), not Hubs.
    path("api/usage.csv", usage_csv_view, name="usage-csv"),
    # For servers' start wrappers on compute nodes (their own token), not Hubs.
    path("api/servers/<int:server_id>/address", server_address_view, name="server-address"),
    # For load balancers, orchestrators and Prometheus (monitoring/, docs/monitoring.md).
    path("", include("monitoring.urls")),
    path("api/schema/", SpectacularAPIView.as_view(urlconf=schema_urlpatterns), name="api-schema"),
    # Last: it also serves the default Outpost's API at the site root.
    path("", include("outposts.api.urls")),
]
