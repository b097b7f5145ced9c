from django.urls import path

from monitoring.views import ReadyzView, healthz_view, metrics_view

urlpatterns = [
    path("healthz", healthz_view, name="healthz"),
    path("readyz", ReadyzView.as_view(), name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
