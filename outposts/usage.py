"""Usage accounting: flavor-hours of servers over a date range, grouped as the reader asks.

One server of a flavor running for one hour is one flavor-hour of that flavor. A server counts
from ``ready_at`` (when its Jupyter server answered: before that the user could not use it, and
a start that never became ready counts nothing) to ``stopped_at``; an active server (running,
stopping or unknown) counts up to ``now``. An ended server without a ``stopped_at`` (written
before it was recorded, or edited by hand) counts up to its last change, ``updated_at``. Each
interval is clipped to the range [start, end).

Usage survives renames and deletions: rows are grouped by the flavor's and project's ids and
labelled with their current names (a flavor with servers cannot be deleted, Server.flavor is
PROTECT; a deleted project leaves its servers under "(no project)"). A flavor and a project
belong to one Outpost, and a Hub user name to one Hub, so grouping by them also groups by their
Outpost or Hub: two Outposts' "small" flavors stay two rows.

One query, whatever the number of servers: the overlapping servers' times and labels are read
with a values list and summed here, which works the same on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone

from outposts.models import Server

# What a report may be grouped by, in the order its columns appear.
GROUPINGS = ("outpost", "hub", "user", "project", "flavor")
# Grouping by one of these also groups by what it belongs to (see the module's docstring).
_IMPLIES = {"user": "hub", "project": "outpost", "flavor": "outpost"}
NO_PROJECT = "(no project)"
NO_FLAVOR = "(no flavor)"

_FIELDS = (
    "ready_at",
    "stopped_at",
    "updated_at",
    "status",
    "outpost_id",
    "outpost__slug",
    "hub_id",
    "hub__name",
    "user_name",
    "project_id",
    "project__name",
    "flavor_id",
    "flavor__name",
)


def usage_columns(*, by: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The columns of a report grouped ``by``: the groupings, what they imply, in GROUPINGS'
    order."""
    unknown = [name for name in by if name not in GROUPINGS]
    if unknown:
        raise ValueError(f"Unknown grouping {unknown[0]!r}.")
    wanted = set(by) | {_IMPLIES[name] for name in by if name in _IMPLIES}
    return tuple(name for name in GROUPINGS if name in wanted)


@dataclass(frozen=True)
class UsageRow:
    """One group: its labels, one per column, and the seconds its servers ran in the range."""

    columns: tuple[str, ...]
    labels: tuple[str, ...]
    seconds: float
    servers: int

    @property
    def cells(self) -> tuple[tuple[str, str], ...]:
        """(column, label) pairs, for the page's table."""
        return tuple(zip(self.columns, self.labels, strict=True))

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def hours_text(self) -> str:
        """Hours as the page, the chart and the CSV all show them: two decimals."""
        return f"{self.hours:.2f}"


@dataclass(frozen=True)
class UsageReport:
    start: datetime
    end: datetime
    columns: tuple[str, ...]
    # Largest usage first.
    rows: tuple[UsageRow, ...]

    @property
    def total_hours_text(self) -> str:
        return f"{sum(row.seconds for row in self.rows) / 3600:.2f}"


def _labels(values: dict[str, Any], column: str) -> tuple[Any, str]:
    """The grouping key (ids, so renames keep one row) and the label of one column."""
    if column == "outpost":
        return values["outpost_id"], values["outpost__slug"]
    if column == "hub":
        return values["hub_id"], values["hub__name"]
    if column == "user":
        return values["user_name"], values["user_name"]
    if column == "project":
        return values["project_id"], values["project__name"] or NO_PROJECT
    return values["flavor_id"], values["flavor__name"] or NO_FLAVOR


def _seconds_within(
    values: dict[str, Any], *, start: datetime, end: datetime, now: datetime
) -> float:
    """How long a server (its ready_at, stopped_at, status, updated_at) ran in [start, end)."""
    stopped = values["stopped_at"]
    if stopped is None:
        stopped = values["updated_at"] if values["status"] in Server.ENDED else now
    return (min(stopped, end) - max(values["ready_at"], start)).total_seconds()


def _overlapping(queryset: QuerySet[Server], *, start: datetime, end: datetime) -> QuerySet[Server]:
    return queryset.filter(ready_at__isnull=False, ready_at__lt=end).filter(
        Q(stopped_at__isnull=True) | Q(stopped_at__gt=start)
    )


def project_flavor_hours(
    *, project_id: int, flavor_id: int, start: datetime, end: datetime, now: datetime | None = None
) -> float:
    """The flavor-hours the project's servers of one flavor ran within [start, end): what an
    allocation's hours are counted against (flavors.services.flavor_admit)."""
    now = now or timezone.now()
    servers = _overlapping(
        Server.objects.filter(project_id=project_id, flavor_id=flavor_id), start=start, end=end
    ).values("ready_at", "stopped_at", "status", "updated_at")
    return (
        sum(max(0.0, _seconds_within(values, start=start, end=end, now=now)) for values in servers)
        / 3600
    )


def month_start(now: datetime) -> datetime:
    """The first microsecond of ``now``'s calendar month: where monthly allocations count from."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def project_flavor_hours_this_month(
    *, project_id: int, flavor_id: int, now: datetime | None = None
) -> float:
    """The flavor-hours a project used of one flavor since its month began (UTC)."""
    now = now or timezone.now()
    return project_flavor_hours(
        project_id=project_id, flavor_id=flavor_id, start=month_start(now), end=now, now=now
    )


def usage_report(
    *,
    servers: QuerySet[Server],
    start: datetime,
    end: datetime,
    by: tuple[str, ...] | list[str],
    now: datetime | None = None,
) -> UsageReport:
    """Flavor-hours of ``servers`` within [start, end), grouped ``by`` any of GROUPINGS.
    ``now`` (default: the current time) ends the intervals of active servers."""
    columns = usage_columns(by=by)
    now = now or timezone.now()
    overlapping = _overlapping(servers, start=start, end=end).order_by().values(*_FIELDS)
    seconds: dict[tuple[Any, ...], float] = defaultdict(float)
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    labels: dict[tuple[Any, ...], tuple[str, ...]] = {}
    for values in overlapping:
        ran = _seconds_within(values, start=start, end=end, now=now)
        if ran <= 0:
            continue
        pairs = [_labels(values, column) for column in columns]
        key = tuple(key for key, _ in pairs)
        seconds[key] += ran
        counts[key] += 1
        labels[key] = tuple(label for _, label in pairs)
    rows = sorted(
        (UsageRow(columns, labels[key], seconds[key], counts[key]) for key in seconds),
        key=lambda row: (-row.seconds, row.labels),
    )
    return UsageReport(start=start, end=end, columns=columns, rows=tuple(rows))


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


# The browser's date picker; it sends YYYY-MM-DD, as the CSV's query does.
DATE_INPUT = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


class UsageForm(forms.Form):
    """The range and grouping of a report, from the admin page's form or the CSV's query.

    ``to`` is inclusive, as a reader says "from 1 to 30 November": the report covers
    [from 00:00, the day after ``to`` 00:00) in the portal's time zone.
    """

    start = forms.DateField(label="From", help_text="YYYY-MM-DD", widget=DATE_INPUT)
    end = forms.DateField(label="To (inclusive)", help_text="YYYY-MM-DD", widget=DATE_INPUT)
    by = forms.MultipleChoiceField(
        label="Group by",
        choices=[(name, name.capitalize()) for name in GROUPINGS],
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "invalid_choice": f"Unknown grouping '%(value)s': choose from {', '.join(GROUPINGS)}."
        },
    )

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        # The CSV's query may also list the groupings comma-separated: by=user,flavor.
        if data is not None:
            data = data.copy()
            data.setlist(
                "by",
                [
                    name.strip()
                    for value in data.getlist("by")
                    for name in value.split(",")
                    if name.strip()
                ],
            )
        super().__init__(data, **kwargs)

    def add_prefix(self, field_name: str) -> str:
        # The inputs are named from and to ("from" is a Python keyword, hence start/end
        # here): the page's form and the CSV take the same query.
        return {"start": "from", "end": "to"}.get(field_name, field_name)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end < start:
            raise forms.ValidationError("The range ends before it starts: 'to' is before 'from'.")
        return cleaned

    def range(self) -> tuple[datetime, datetime]:
        """[start, end) of a valid form."""
        data = self.cleaned_data
        return _day_start(data["start"]), _day_start(data["end"] + timedelta(days=1))

    def error_text(self) -> str:
        """Every error in one line, naming the query parameter it is about."""
        names = {"start": "from", "end": "to", "by": "by"}
        return " ".join(
            (f"{names[field]}: " if field in names else "") + " ".join(messages)
            for field, messages in self.errors.items()
        )


CHART_ROWS = 30
CHART_BAR_WIDTH = 400
CHART_ROW_HEIGHT = 24
# Where the bars start: the labels are written left of it.
CHART_LABEL_WIDTH = 380


@dataclass(frozen=True)
class UsageBar:
    """One bar of the page's chart, in the SVG's user units."""

    label: str
    hours_text: str
    y: int
    width: float

    @property
    def text_x(self) -> float:
        """Where the hours are written: just right of the bar."""
        return CHART_LABEL_WIDTH + self.width + 6


@dataclass(frozen=True)
class UsageChart:
    bars: tuple[UsageBar, ...]
    height: int
    # Rows the chart leaves out (the table lists them all).
    left_out: int
    label_width: int = CHART_LABEL_WIDTH


def usage_chart(*, report: UsageReport, rows: int = CHART_ROWS) -> UsageChart:
    """The bars of the report's largest ``rows`` groups, scaled to the largest one."""
    shown = report.rows[:rows]
    largest = max((row.seconds for row in shown), default=0) or 1
    bars = tuple(
        UsageBar(
            label=" · ".join(row.labels) or "all",
            hours_text=row.hours_text,
            y=index * CHART_ROW_HEIGHT,
            width=round(CHART_BAR_WIDTH * row.seconds / largest, 1),
        )
        for index, row in enumerate(shown)
    )
    return UsageChart(
        bars=bars, height=len(bars) * CHART_ROW_HEIGHT, left_out=len(report.rows) - len(shown)
    )
