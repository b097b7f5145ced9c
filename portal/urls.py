from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from outposts.api.urls import schema_urlpatterns
from outposts.api.usage import usage_csv_view

urlpatterns = [
    path("admin/", admin.site.urls),
    # For site admins' browsers (admin session), not Hubs.
    path("api/usage.csv", usage_csv_view, name="usage-csv"),
    path("api/schema/", SpectacularAPIView.as_view(urlconf=schema_urlpatterns), name="api-schema"),
    # Last: it also serves the default Outpost's API at the site root.
    path("", include("outposts.api.urls")),
]
