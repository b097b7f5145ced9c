"""Concurrent starts can never overbook a flavor, a Hub's cap or a per-user limit
(architecture.md §Flavors, step 2), on PostgreSQL and on SQLite."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from outposts.models import Server
from outposts.services import StartRequest
from tests.factories import FlavorFactory
from tests.support.admission import (
    GROUPS,
    HUB1_MEDIUM_CAP,
    HUB2_LARGE_PER_USER,
    LARGE_PER_USER,
    SERVERS_PER_USER,
    SMALL_MAX,
    mixed_limits_run,
)
from tests.support.concurrency import starts_at_once

REPO = Path(__file__).resolve().parents[2]

STARTS = 100
MAX = 20


def skip_unless_postgresql() -> None:
    # The test runner's SQLite database is in memory, where threads cannot wait for a lock:
    # the SQLite race runs on a file of its own (test_..._on_sqlite).
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks and real concurrent connections")


@pytest.mark.django_db(transaction=True)
def test_100_simultaneous_starts_admit_exactly_max(hub, outpost):
    skip_unless_postgresql()
    # given a flavor with room for 20 servers
    FlavorFactory(outpost=outpost, name="small", max=MAX)
    starts = [
        (
            hub,
            StartRequest(
                name=f"s{n}",
                start_id=str(n),
                env={"JUPYTERHUB_USER_ID": str(n), "JUPYTERHUB_USER": f"user{n}"},
                flavor="small",
            ),
        )
        for n in range(STARTS)
    ]
    # when 100 different users start a server at the same moment, each on its own connection
    outcomes = starts_at_once(outpost=outpost, starts=starts)
    # then exactly 20 are admitted and 80 refused with the contract's message
    assert [outcome.error for outcome in outcomes if outcome.error] == []
    admitted = [n for n, outcome in enumerate(outcomes) if outcome.server_id]
    refused = {n: outcome.refusal for n, outcome in enumerate(outcomes) if outcome.refusal}
    assert (len(admitted), len(refused)) == (MAX, STARTS - MAX)
    assert refused == {
        n: f"s{n} - Start with small for hub1 not allowed. Maximum ({MAX}) already reached."
        for n in refused
    }
    # and the database holds exactly 20 active servers of the flavor
    assert Server.objects.active().filter(flavor__name="small").count() == MAX
    assert Server.objects.count() == MAX


def assert_every_limit_held(report: dict) -> None:
    """What tests/support/admission.py's race must end with: no limit exceeded, counted from
    the database; exactly as many admitted as the limits allow; every refusal with the
    message of the limit it hit (api-contract.md §4)."""
    starts, active = report["starts"], report["active"]
    assert len(starts) == sum(group.size for group in GROUPS) == 271
    assert [start["outcome"]["error"] for start in starts if start["outcome"]["error"]] == []

    # no limit exceeded, each reached
    of_flavor = Counter(flavor for _, _, _, flavor in active)
    of_hub = Counter((hub, flavor) for _, hub, _, flavor in active)
    of_user = Counter((hub, user_id) for _, hub, user_id, _ in active)
    of_user_and_flavor = Counter((hub, user_id, flavor) for _, hub, user_id, flavor in active)
    assert of_flavor["small"] == SMALL_MAX
    assert of_hub["hub1", "medium"] == HUB1_MEDIUM_CAP
    assert max(of_user.values()) == SERVERS_PER_USER
    large_per_user = {
        hub: {
            n for (on, _, flavor), n in of_user_and_flavor.items() if (on, flavor) == (hub, "large")
        }
        for hub in ("hub2", "hub3")
    }
    assert large_per_user == {"hub2": {HUB2_LARGE_PER_USER}, "hub3": {LARGE_PER_USER}}

    # exactly as many admitted as the limits allow, no user of a group past its share:
    # 20 of small, 5 of hub1's medium, the 20 of the others, 30 and 10 of large, 24 and 16
    # for the Outpost's per-user limit, none of a flavor a Hub may not use
    for group in GROUPS:
        users = {
            (start["hub"], start["user_id"]) for start in starts if start["group"] == group.limit
        }
        assert sum(of_user[user] for user in users) == group.admitted, group.limit
        assert max(of_user[user] for user in users) == group.per_user, group.limit
    assert len(active) == report["servers"] == 125

    # each start admitted with an active server, or refused with its limit's message
    admitted = [start["outcome"]["server_id"] for start in starts if start["outcome"]["server_id"]]
    assert sorted(admitted) == sorted(server_id for server_id, *_ in active)
    wrong = [
        (start["outcome"]["refusal"], start["refusal"])
        for start in starts
        if start["outcome"]["server_id"] is None and start["outcome"]["refusal"] != start["refusal"]
    ]
    assert wrong == []


@pytest.mark.django_db(transaction=True)
def test_271_simultaneous_starts_of_three_hubs_exceed_no_limit_on_postgresql(outpost):
    skip_unless_postgresql()
    # given an Outpost with a flavor max, a Hub's cap, a max_per_user a Hub policy overrides
    # and a per-user limit, and three Hubs
    # when their users send 271 starts at the same moment, each on its own connection
    report = mixed_limits_run(outpost=outpost)
    # then no limit is exceeded and every refusal names its limit
    assert_every_limit_held(report)


def test_271_simultaneous_starts_of_three_hubs_exceed_no_limit_on_sqlite(tmp_path):
    # given the portal's embedded default, a SQLite file (its IMMEDIATE transactions are
    # admission's lock there), migrated
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PORTAL_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
    }
    manage = [sys.executable, "manage.py", "migrate", "-v0"]
    subprocess.run(manage, cwd=REPO, env=env, check=True, timeout=180)
    # when the same race runs on it, in a process of its own
    code = (
        "import sys, django; django.setup(); "
        "from tests.support.admission import mixed_limits_report_to; "
        "mixed_limits_report_to(sys.argv[1])"
    )
    report_file = tmp_path / "report.json"
    race = [sys.executable, "-c", code, str(report_file)]
    subprocess.run(race, cwd=REPO, env=env, check=True, timeout=300)
    # then no limit is exceeded and every refusal names its limit
    assert_every_limit_held(json.loads(report_file.read_text()))
