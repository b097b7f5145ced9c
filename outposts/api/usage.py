"""The usage CSV: the admin usage page's figures, one row per group.

Not part of the Hub API (no Hub credentials): a site admin's or a project manager's browser
fetches it with their admin session, so it is a plain Django view. Site admins get their own
Outposts (superusers all), project managers their projects' servers.
"""

from __future__ import annotations

import csv

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from outposts.usage import UsageForm, usage_report
from projects.selectors import usage_servers_visible_to

HOURS_COLUMN = "flavor_hours"


@require_GET
def usage_csv_view(request: HttpRequest) -> HttpResponse:
    """GET /api/usage.csv?from=YYYY-MM-DD&to=YYYY-MM-DD&by=user,flavor (``to`` inclusive)."""
    servers = usage_servers_visible_to(user=request.user)
    if servers is None:
        return HttpResponse(
            "Only site admins and project managers can export usage, of their own Outposts "
            "and projects: log in to the admin first.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    form = UsageForm(request.GET)
    if not form.is_valid():
        return HttpResponse(
            form.error_text() + "\n", status=400, content_type="text/plain; charset=utf-8"
        )
    start, end = form.range()
    report = usage_report(servers=servers, start=start, end=end, by=form.cleaned_data["by"])
    data = form.cleaned_data
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="usage-{data["start"]:%Y-%m-%d}-{data["end"]:%Y-%m-%d}.csv"'
    )
    writer = csv.writer(response)
    writer.writerow([*report.columns, "servers", HOURS_COLUMN])
    for row in report.rows:
        writer.writerow([*row.labels, row.servers, row.hours_text])
    return response
