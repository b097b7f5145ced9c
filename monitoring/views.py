"""/healthz, /readyz and /metrics: for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from health_check.checks import Database
from health_check.views import HealthCheckView
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitoring.access import MetricsAccess, metrics_access
from monitoring.checks import Broker, Workers
from monitoring.collectors import DatabaseCollector, QueueCollector


@never_cache
@require_GET
def healthz_view(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Nothing else is asked, so that a database or broker
    outage never gets every web process restarted."""
    return JsonResponse({"status": "ok"})


class ReadyzView(HealthCheckView):
    """Readiness: the database answers, the broker accepts a connection, and every queue
    with work has a live worker. 200 when all pass, else 503; JSON unless the client asks
    for text (``?format=text``) or OpenMetrics."""

    checks = (Database, Broker, Workers)

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500:  # the library's "some check failed"
            response.status_code = 503
        return response

    def render_to_response(self, context: dict[str, Any], **response_kwargs: Any) -> HttpResponse:
        # The library's HTML page is for browsers; probes and people read the JSON.
        return self.render_to_response_json(response_kwargs.get("status", 200))


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format, for a client with the token or from an allowed network."""
    access = metrics_access(request)
    if access == MetricsAccess.OFF:
        return JsonResponse({"message": "Not found."}, status=404)
    if access == MetricsAccess.UNAUTHENTICATED:
        response = JsonResponse({"message": "A valid metrics token is required."}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if access == MetricsAccess.FORBIDDEN:
        return JsonResponse({"message": "Not allowed from this address."}, status=403)
    # A registry per scrape: nothing is kept in this process between scrapes.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    registry.register(QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
