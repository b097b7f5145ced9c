from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from outposts.api.urls import schema_urlpatterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(urlconf=schema_urlpatterns), name="api-schema"),
    # Last: it also serves the default Outpost's API at the site root.
    path("", include("outposts.api.urls")),
]
