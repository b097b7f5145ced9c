"""The mixed-limits race of tests/flavors/test_admission_concurrency.py: one Outpost with every
limit admission knows, three Hubs and many users sending 271 starts at once.

Each group of starts can hit one limit only, so what it must get does not depend on which
start wins the race: how many of the group are admitted, at most how many per user, and the
message of every refusal. ``mixed_limits_run`` makes the rows, runs the starts and reports,
from the database, which servers are active. Also a script, for a database of its own (the
SQLite run, which needs a file database rather than the test runner's in-memory one):
``mixed_limits_report_to``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from outposts.models import Hub, Outpost, Server
from outposts.services import StartRequest
from tests.factories import FlavorFactory, HubFactory, HubPolicyFactory, OutpostFactory
from tests.support.concurrency import starts_at_once

# The limits. hub1 has its own cap on medium and may not use large; hub2 overrides large's
# max_per_user and may not use xl; hub3 has no policy, so gets every flavor as it is.
SERVERS_PER_USER = 4  # the Outpost's max_servers_per_user
SMALL_MAX = 20  # small's max over all Hubs
HUB1_MEDIUM_CAP = 5
LARGE_PER_USER = 1
HUB2_LARGE_PER_USER = 3

HUB1_FLAVORS = ["medium", "small", "xl"]
HUB2_FLAVORS = ["large", "medium", "small"]


@dataclass(frozen=True)
class Group:
    """Each of ``users`` users of each Hub of ``hubs`` sends ``starts`` starts, of ``flavors``
    in turn. ``admitted`` of the group's starts are admitted, at most ``per_user`` of one
    user; every other start is refused with ``refusal`` (``{name}``, ``{hub}``, ``{user_id}``
    filled in)."""

    limit: str
    hubs: tuple[str, ...]
    users: int
    starts: int
    flavors: tuple[str, ...]
    admitted: int
    per_user: int
    refusal: str = ""

    @property
    def size(self) -> int:
        return len(self.hubs) * self.users * self.starts


GROUPS = (
    Group(
        "flavor max over all Hubs",
        hubs=("hub1", "hub2", "hub3"),
        users=25,
        starts=1,
        flavors=("small",),
        admitted=SMALL_MAX,
        per_user=1,
        refusal=f"{{name}} - Start with small for {{hub}} not allowed. "
        f"Maximum ({SMALL_MAX}) already reached.",
    ),
    Group(
        "hub1's cap",
        hubs=("hub1",),
        users=30,
        starts=1,
        flavors=("medium",),
        admitted=HUB1_MEDIUM_CAP,
        per_user=1,
        refusal=f"{{name}} - Start with medium for hub1 not allowed. "
        f"Maximum ({HUB1_MEDIUM_CAP}) already reached.",
    ),
    Group(
        "no cap of other Hubs",
        hubs=("hub2", "hub3"),
        users=10,
        starts=1,
        flavors=("medium",),
        admitted=2 * 10,
        per_user=1,
    ),
    Group(
        "max_per_user as hub2's policy overrides it",
        hubs=("hub2",),
        users=10,
        starts=5,
        flavors=("large",),
        admitted=10 * HUB2_LARGE_PER_USER,
        per_user=HUB2_LARGE_PER_USER,
        refusal=f"{{name}} - Start with flavor large not allowed. "
        f"Each user may only start {HUB2_LARGE_PER_USER} of large",
    ),
    Group(
        "max_per_user",
        hubs=("hub3",),
        users=10,
        starts=3,
        flavors=("large",),
        admitted=10 * LARGE_PER_USER,
        per_user=LARGE_PER_USER,
        refusal=f"{{name}} - Start with flavor large not allowed. "
        f"Each user may only start {LARGE_PER_USER} of large",
    ),
    Group(
        "the Outpost's per-user limit",
        hubs=("hub1",),
        users=6,
        starts=6,
        flavors=("xl",),
        admitted=6 * SERVERS_PER_USER,
        per_user=SERVERS_PER_USER,
        refusal="{name} - User with user id {user_id} of {hub} has reached the maximum limit "
        f"of services ({SERVERS_PER_USER})",
    ),
    Group(
        "the Outpost's per-user limit over flavors",
        hubs=("hub3",),
        users=4,
        starts=6,
        flavors=("xl", "medium"),
        admitted=4 * SERVERS_PER_USER,
        per_user=SERVERS_PER_USER,
        refusal="{name} - User with user id {user_id} of {hub} has reached the maximum limit "
        f"of services ({SERVERS_PER_USER})",
    ),
    Group(
        "hub1's policy does not allow large",
        hubs=("hub1",),
        users=3,
        starts=1,
        flavors=("large",),
        admitted=0,
        per_user=0,
        refusal=f"{{name}} - Start with flavor large not allowed. "
        f"Allowed values for user: {HUB1_FLAVORS}",
    ),
    Group(
        "hub2 has no policy for xl",
        hubs=("hub2",),
        users=3,
        starts=1,
        flavors=("xl",),
        admitted=0,
        per_user=0,
        refusal=f"{{name}} - Start with flavor xl not allowed. "
        f"Allowed values for user: {HUB2_FLAVORS}",
    ),
)


@dataclass(frozen=True)
class Planned:
    """One start of the race, and the message it must get if refused."""

    group: str
    hub: str
    user_id: str
    name: str
    flavor: str
    refusal: str


def mixed_limits_rows(*, outpost: Outpost) -> None:
    """The Outpost's limits, flavors, Hubs and Hub policies (see the constants above)."""
    outpost.max_servers_per_user = SERVERS_PER_USER
    outpost.save()
    small = FlavorFactory(outpost=outpost, name="small", max=SMALL_MAX, weight=4)
    medium = FlavorFactory(outpost=outpost, name="medium", weight=3)
    large = FlavorFactory(outpost=outpost, name="large", max_per_user=LARGE_PER_USER, weight=2)
    xl = FlavorFactory(outpost=outpost, name="xl", weight=1)
    hub1, hub2, _ = (HubFactory(name=f"hub{n}", outposts=[outpost]) for n in (1, 2, 3))
    HubPolicyFactory(hub=hub1, flavor=small)
    HubPolicyFactory(hub=hub1, flavor=medium, cap=HUB1_MEDIUM_CAP)
    HubPolicyFactory(hub=hub1, flavor=large, allowed=False)
    HubPolicyFactory(hub=hub1, flavor=xl)
    HubPolicyFactory(hub=hub2, flavor=small)
    HubPolicyFactory(hub=hub2, flavor=medium)
    HubPolicyFactory(hub=hub2, flavor=large, overrides={"max_per_user": HUB2_LARGE_PER_USER})


def mixed_limits_plan() -> list[Planned]:
    """Every start of every group; each user id belongs to one group only."""
    plan = []
    user_ids = iter(range(1, 10_000))
    for group in GROUPS:
        for hub in group.hubs:
            for _ in range(group.users):
                user_id = str(next(user_ids))
                for n in range(group.starts):
                    name = f"lab{n}"
                    plan.append(
                        Planned(
                            group=group.limit,
                            hub=hub,
                            user_id=user_id,
                            name=name,
                            flavor=group.flavors[n % len(group.flavors)],
                            refusal=group.refusal.format(name=name, hub=hub, user_id=user_id),
                        )
                    )
    return plan


def mixed_limits_run(*, outpost: Outpost) -> dict[str, Any]:
    """Make the rows, send every planned start at once and report, as JSON data: each start
    as planned with its outcome, and from the database the (id, Hub, user id, flavor) of
    every active server and the number of servers."""
    mixed_limits_rows(outpost=outpost)
    plan = mixed_limits_plan()
    hubs = {hub.name: hub for hub in Hub.objects.filter(outposts=outpost)}
    outcomes = starts_at_once(
        outpost=outpost,
        starts=[
            (
                hubs[start.hub],
                StartRequest(
                    name=start.name,
                    start_id=f"{start.user_id}-{start.name}",
                    env={
                        "JUPYTERHUB_USER_ID": start.user_id,
                        "JUPYTERHUB_USER": f"user{start.user_id}",
                    },
                    flavor=start.flavor,
                ),
            )
            for start in plan
        ],
    )
    active = Server.objects.active().filter(outpost=outpost)
    return {
        "starts": [
            {**asdict(start), "outcome": asdict(outcome)}
            for start, outcome in zip(plan, outcomes, strict=True)
        ],
        "active": [
            list(row) for row in active.values_list("pk", "hub__name", "user_id", "flavor__name")
        ],
        "servers": Server.objects.count(),
    }


def mixed_limits_report_to(path: str) -> None:
    """Run the race on the Outpost "local" of an empty, migrated database and write the
    report to ``path`` as JSON (for a test running it in a process of its own)."""
    report = mixed_limits_run(outpost=OutpostFactory(slug="local", name="Local processes"))
    Path(path).write_text(json.dumps(report))
