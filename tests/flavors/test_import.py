"""Importing a flavors file of the existing Outpost service: how its sections become flavors,
Hub policies and user rules (flavors/imports.py), and that after an import ``flavors/``,
``userflavors`` and starts answer as the file says wherever the two layerings agree, while the
import reports where they don't."""

from datetime import timedelta

import pytest
import yaml

from flavors.flavor_file import FlavorFileError
from flavors.imports import flavor_file_plan
from outposts.models import Server
from tests.support.api import ASYNC, BASE, send, start_body
from tests.support.flavor_files import FLAVOR_FILE, client_of, file_hubs, import_flavors

HUBS = {"course1": True, "course2": True, "research": True, "lab-a": True, "public": True}


def plan(text: str, hubs=None):
    return flavor_file_plan(data=yaml.safe_load(text), hubs=HUBS if hubs is None else hubs)


def entries(planned) -> list[dict]:
    return [item.entry for item in planned]


def policies(result, hub: str) -> dict[str, tuple]:
    return {
        entry["flavor"]: (entry["allowed"], entry["cap"], entry["overrides"])
        for entry in entries(result.hub_policies)
        if entry["hub"] == hub
    }


# --- The mapping, without a database ---------------------------------------------------------


def test_flavors_map_to_the_portals_fields():
    result = plan(
        """
        flavors:
          small: {max: -1, maxPerUser: 0, runtime: {hours: 1.5}, weight: 3,
                  display_name: Small, description: One CPU, resources: {cpu_limit: 1}}
          bare: {}
          closed: {max: 0, maxPerUser: 2, runtime: {weeks: 1}}
        """
    )
    assert entries(result.flavors) == [
        {
            "name": "small",
            "display_name": "Small",
            "description": "One CPU",
            "weight": 3,
            "max": None,
            "max_per_user": None,
            "runtime": {"hours": 1, "minutes": 30},
            "resources": {"cpu_limit": 1},
        },
        {
            "name": "bare",
            "display_name": "bare",
            "description": "",
            "weight": 0,
            "max": None,
            "max_per_user": None,
            "runtime": None,
            "resources": {},
        },
        {
            "name": "closed",
            "display_name": "closed",
            "description": "",
            "weight": 0,
            "max": 0,
            "max_per_user": 2,
            "runtime": {"days": 7},
            "resources": {},
        },
    ]
    assert [item.source for item in result.flavors] == [
        "flavors.small",
        "flavors.bare",
        "flavors.closed",
    ]
    assert result.hub_policies == [] and result.user_rules == []


def test_a_hub_set_gives_each_hub_a_policy_row_per_flavor():
    result = plan(
        """
        flavors: {small: {}, large: {max: 10}, gpu: {}}
        hubs:
          courses:
            jupyterhub_name: [course1]
            flavors: [small, large]
            flavorsOverride:
              large: {max: 3, maxPerUser: 0, runtime: {hours: 4}, display_name: L,
                      description: D, weight: 9, resources: {mem_limit: 8G}}
        """
    )
    assert policies(result, "course1") == {
        "small": (True, None, {}),
        "large": (
            True,
            3,
            {
                "max_per_user": None,
                "runtime": {"hours": 4},
                "display_name": "L",
                "description": "D",
                "weight": 9,
                "resources": {"mem_limit": "8G"},
            },
        ),
        "gpu": (False, None, {}),
    }
    # Hubs no set matches get no rows: every flavor, as in the existing service
    assert {entry["hub"] for entry in entries(result.hub_policies)} == {"course1"}


def test_the_first_matching_hub_set_in_the_file_decides_whatever_the_weights():
    result = plan(
        """
        flavors: {small: {}, gpu: {}}
        hubs:
          first: {jupyterhub_name: [research], weight: 1, flavors: [small]}
          heavier: {jupyterhub_name: [research], weight: 50, flavors: [gpu]}
        """
    )
    assert policies(result, "research") == {"small": (True, None, {}), "gpu": (False, None, {})}
    assert result.notes == [
        "hubs.heavier also matches Hub research, but hubs.first comes first in the file and "
        "decides for it, as in the existing service (its weight 50 above 1 does not change "
        "that, though the service's documentation says so)"
    ]


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("lab-[ab]", {"lab-a"}),  # a regular expression over the whole name
        ("*1", {"course1"}),  # no valid regex: a glob
        ("research", {"research"}),  # equal text
        ("course[0-9]", {"course1", "course2"}),
    ],
)
def test_a_pattern_matches_hubs_as_regex_glob_or_equal_text(pattern, matched):
    result = plan(f"flavors: {{small: {{}}}}\nhubs: {{s: {{jupyterhub_name: '{pattern}'}}}}")
    assert {entry["hub"] for entry in entries(result.hub_policies)} == matched
    assert result.differences == []


def test_a_glob_that_is_also_a_regex_matches_but_the_import_says_the_service_does_not():
    result = plan(
        """
        flavors: {small: {}}
        hubs:
          courses: {jupyterhub_name: "course*", flavors: []}
          tutors: {jupyterhub_name: [course1]}
        """
    )
    assert {entry["hub"] for entry in entries(result.hub_policies)} == {"course1", "course2"}
    assert result.differences == [
        "Hub course1 gets hubs.courses: its jupyterhub_name 'course*' matches course1 as a "
        "glob, but the existing service tries a glob (or equal text) only when a pattern is no "
        "valid regular expression, so there course1 gets hubs.tutors",
        "Hub course2 gets hubs.courses: its jupyterhub_name 'course*' matches course2 as a "
        "glob, but the existing service tries a glob (or equal text) only when a pattern is no "
        "valid regular expression, so there course2 gets every flavor (no set matches it)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "hubs: {s: {jupyterhub_name: [course1, nohub]}}",
            "hubs.s.jupyterhub_name: no Hub named nohub in the portal; create it first",
        ),
        (
            "users: {u: {hubs: [research, gone, lost]}}",
            "users.u.hubs: no Hub named gone, lost in the portal; create them first",
        ),
    ],
)
def test_a_hub_the_file_names_must_exist(text, message):
    with pytest.raises(FlavorFileError) as error:
        plan(text)
    assert str(error.value).startswith(message)


def test_user_sets_become_rules_in_file_order():
    result = plan(
        """
        flavors: {small: {}, large: {}}
        users:
          staff:
            authentication: {groups: [staff]}
            weight: 10
            flavorsOverride: {large: {maxPerUser: 0, max: 5, runtime: {hours: 8}}}
          outsiders:
            hubs: [public]
            negate_authentication: true
            authentication: {email: ".*@example\\\\.org"}
            flavors: [small, tiny]
            flavorsOverride: {large: {runtime: {hours: 1}}}
          nothing: {authentication: {name: [bob]}, flavors: []}
          blocked: {authentication: {name: [mallory]}, forbidden: true, flavors: [small]}
          nowhere: {hubs: [], authentication: {name: [x]}}
        """
    )
    assert entries(result.user_rules) == [
        {
            "name": "staff",
            "attributes": {"groups": ["staff"]},
            "negate": False,
            "weight": 10,
            "forbidden": False,
            "hubs": [],
            "flavors": [],
            "overrides": {"large": {"max_per_user": None, "runtime": {"hours": 8}}},
        },
        {
            "name": "outsiders",
            "attributes": {"email": ".*@example\\.org"},
            "negate": True,
            "weight": 0,
            "forbidden": False,
            "hubs": ["public"],
            "flavors": ["small"],
            "overrides": {},
        },
        {
            "name": "nothing",
            "attributes": {"name": ["bob"]},
            "negate": False,
            "weight": 0,
            "forbidden": True,
            "hubs": [],
            "flavors": [],
            "overrides": {},
        },
        {
            "name": "blocked",
            "attributes": {"name": ["mallory"]},
            "negate": False,
            "weight": 0,
            "forbidden": True,
            "hubs": [],
            "flavors": [],
            "overrides": {},
        },
    ]
    assert result.notes == [
        "users.staff.flavorsOverride.large.max: a user set's max has no meaning in the portal "
        "(a flavor's max counts all users, a Hub policy's cap a Hub's): not imported",
        "users.outsiders.flavors names tiny, which the file's flavors do not have: ignored, as "
        "by the existing service",
        "users.outsiders.flavorsOverride.large: large is not in users.outsiders.flavors, so the "
        "override has no effect (in the existing service neither): not imported",
        "users.nothing.flavors leaves no flavor: the set's users get none, as in the existing "
        "service: imported as forbidden",
        "users.blocked is forbidden, so its flavors and flavorsOverride have no effect (in the "
        "existing service neither): not imported",
        "users.nowhere.hubs is empty: the set applies to no Hub: not imported",
    ]


def test_the_layering_differences_are_named_with_flavor_hub_and_field():
    result = plan(
        """
        flavors: {small: {max: 5}, gpu: {}}
        hubs:
          course:
            jupyterhub_name: [course1]
            flavors: [small]
            flavorsOverride: {small: {max: 2, runtime: {hours: 1}, description: Course}}
        users:
          staff:
            authentication: {groups: [staff]}
            flavorsOverride: {small: {runtime: {hours: 3}}}
          elsewhere: {hubs: [public], authentication: {groups: [staff]}}
        """,
        hubs={"course1": True, "public": False},
    )
    assert result.differences == [
        "users.staff on Hub course1 (hubs.course): the existing service gives these users small "
        "without the Hub set's override of description; under the portal's layering they keep it",
        "users.staff on Hub course1 (hubs.course): the existing service holds these users' "
        "starts of small to the flavor's own max (5), not the Hub set's max 2; under the "
        "portal's layering the Hub's cap holds for them too",
        "users.staff grants gpu, which hubs.course excludes for Hub course1: under the portal's "
        "layering those users do not get gpu there (the existing service gives it them)",
    ]


def test_max_counted_per_hub_there_and_over_all_hubs_here_is_said():
    result = plan(
        """
        flavors: {small: {max: 5}, big: {max: 2}, free: {max: -1}}
        hubs:
          raised: {jupyterhub_name: [course1], flavorsOverride: {big: {max: 4}}}
          shut: {jupyterhub_name: [course2], flavors: [free]}
        """,
        hubs={"course1": True, "course2": True, "public": True, "other": False},
    )
    assert result.differences == [
        "hubs.raised.flavorsOverride.big.max 4 is above the flavor's max 2: the existing "
        "service lets Hub course1 run 4; under the portal the flavor's max 2 still holds for "
        "all Hubs together",
        "flavors.small.max 5: the existing service counts it per Hub (each of course1, public "
        "may run 5); the portal counts the servers of all Hubs together. For a share per Hub, "
        "give Hub policies a cap",
        "flavors.big.max 2: the existing service counts it per Hub (each of course1, public may "
        "run 2); the portal counts the servers of all Hubs together. For a share per Hub, give "
        "Hub policies a cap",
    ]


def test_max_per_user_minus_one_refuses_every_start_there_and_is_imported_as_unlimited():
    result = plan("flavors: {small: {maxPerUser: -1}}")
    assert entries(result.flavors)[0]["max_per_user"] is None
    assert result.differences == [
        "flavors.small.maxPerUser is -1: the existing service refuses every start with it (only "
        "0 or no value mean unlimited there); imported as unlimited"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colours: {}", "colours: unknown key; known: flavors, hubs, users"),
        ("flavors: [small]", "flavors: must be a mapping"),
        ("flavors: {small: {gpus: 1}}", "flavors.small.gpus: unknown key; known: max, "),
        ("flavors: {small: {max: -3}}", "flavors.small.max: must be -1 (unlimited) or a number"),
        ("flavors: {small: {max: five}}", "flavors.small.max: must be -1 (unlimited) or a number"),
        ("flavors: {small: {maxPerUser: 1.5}}", "flavors.small.maxPerUser: must be 0"),
        (
            "flavors: {small: {runtime: {fortnights: 1}}}",
            "flavors.small.runtime: unknown runtime units ['fortnights']",
        ),
        ("flavors: {small: {runtime: {hours: 0}}}", "flavors.small.runtime: a runtime must be"),
        ("flavors: {small: {weight: heavy}}", "flavors.small.weight: must be a whole number"),
        ("flavors: {small: {display_name: [a]}}", "flavors.small.display_name: must be text"),
        (
            "flavors: {small: {}}\nhubs: {s: {jupyterhub_name: 5}}",
            "hubs.s.jupyterhub_name: must be a list of Hub names or a pattern",
        ),
        (
            "flavors: {small: {}}\nhubs: {s: {flavorsOverride: {small: {gpus: 2}}}}",
            "hubs.s.flavorsOverride.small.gpus: unknown key; known: max, maxPerUser, runtime",
        ),
        (
            "flavors: {small: {}}\nhubs: {s: {flavorsOverride: {small: {max: -2}}}}",
            "hubs.s.flavorsOverride.small.max: must be -1 (unlimited) or a number of servers",
        ),
        ("hubs: {s: {flavors: small}}", "hubs.s.flavors: must be a list of names"),
        ("users: {u: {forbidden: yes please}}", "users.u.forbidden: must be true or false"),
        ("users: {u: {negate_authentication: 1}}", "users.u.negate_authentication: must be true"),
        ("users: {u: {email: x}}", "users.u.email: unknown key; known: hubs, authentication"),
    ],
)
def test_a_bad_value_fails_with_its_key_path(text, message):
    with pytest.raises(FlavorFileError) as error:
        plan(text)
    assert str(error.value).startswith(message)


# --- After an import, the API answers as the file says ----------------------------------------

STAFF = {"name": "ada", "email": "ada@example.org", "groups": ["staff"]}
STUDENT = {"name": "bob", "email": "bob@students.example.org"}
GUEST = {"name": "eve", "email": "eve@gmail.com"}
BLOCKED = {"name": "mallory", "email": "mallory@example.org"}
MEMBER = {"name": "carol", "email": "carol@example.org"}


@pytest.fixture
def imported(outpost, tmp_path):
    """The realistic file imported into the ``outpost`` fixture's Outpost; the output and an
    API client per Hub."""
    hubs = file_hubs(outpost)
    out = import_flavors(tmp_path, FLAVOR_FILE)
    return out, {name: client_of(hub) for name, hub in hubs.items()}


def listed(client) -> dict:
    return client.get(BASE + "flavors").json()


def for_user(client, authentication: dict) -> dict:
    response = send(client, "POST", BASE + "userflavors", authentication)
    assert response.status_code == 200, response.content
    return response.json()


def limits(answer: dict) -> dict:
    return {
        name: (item["max"], item["maxPerUser"], item["runtime"]) for name, item in answer.items()
    }


_starts = iter(range(1, 10_000))


def start(client, flavor: str, authentication: dict, user_id: int):
    n = next(_starts)
    body = start_body(name=f"s{n}", start_id=str(n), user_id=str(user_id))
    body["user_options"]["flavor"] = flavor
    body["authentication"] = authentication
    return send(client, "POST", BASE + "services", body, headers=ASYNC)


def refusal(response) -> str:
    assert response.status_code == 419, response.content
    return response.json()["args"][0].split(" - ", 1)[1]


@pytest.mark.django_db
def test_each_hub_lists_the_flavors_its_hub_set_gives_it(imported):
    _, clients = imported
    # a Hub no set matches gets every flavor as the flavors section has it
    public = listed(clients["public"])
    assert list(public) == ["small", "large", "gpu"]
    assert public["small"] == {
        "display_name": "Small (1 CPU)",
        "description": "For trying things out",
        "weight": 10,
        "max": -1,
        "maxPerUser": -1,
        "runtime": {"hours": 2},
        "resources": {"cpu_limit": 1, "mem_limit": "2G"},
        "current": 0,
    }
    assert limits(public) == {
        "small": (-1, -1, {"hours": 2}),
        "large": (10, 2, {"hours": 8}),
        "gpu": (4, 1, {"days": 1}),
    }
    assert public["gpu"]["resources"] == {"extra_resource_limits": {"nvidia.com/gpu": 1}}
    # research (a list) gets every flavor, gpu with its own maxPerUser
    assert limits(listed(clients["research"]))["gpu"] == (4, 2, {"days": 1})
    # lab-a (a regex) only small
    assert list(listed(clients["lab-a"])) == ["small"]
    # the course Hubs (a glob): small and large, large with their cap, runtime and name
    for hub in ("course1", "course2"):
        course = listed(clients[hub])
        assert limits(course) == {"small": (-1, -1, {"hours": 2}), "large": (3, 2, {"hours": 4})}
        assert course["large"]["display_name"] == "Large (course)"


@pytest.mark.django_db
def test_userflavors_answer_as_the_user_sets_say_where_the_layerings_agree(imported):
    _, clients = imported
    # a forbidden set (the heaviest) gets nothing anywhere
    for hub in ("public", "course1", "research"):
        assert for_user(clients[hub], BLOCKED) == {}
    # the negated set: users outside example.org get small only, for 30 minutes
    for hub in ("public", "research", "course2"):
        assert limits(for_user(clients[hub], GUEST)) == {"small": (-1, -1, {"minutes": 30})}
    # students get small on the course Hubs, which their set names, and elsewhere the Hub's
    assert list(for_user(clients["course1"], STUDENT)) == ["small"]
    assert for_user(clients["public"], STUDENT) == listed(clients["public"])
    # a user no set matches gets the Hub's answer
    assert for_user(clients["research"], MEMBER) == listed(clients["research"])
    # staff get every flavor where no Hub set restricts, large without a per-user limit
    staff = limits(for_user(clients["public"], STAFF))
    assert staff == {
        "small": (-1, -1, {"hours": 2}),
        "large": (10, -1, {"hours": 8}),
        "gpu": (4, 1, {"days": 1}),
    }


@pytest.mark.django_db
def test_where_the_layerings_differ_the_hub_set_bounds_the_user_set_and_the_import_says_so(
    imported,
):
    out, clients = imported
    # staff on lab-a: the existing service would give them large and gpu; the Hub set wins
    assert list(for_user(clients["lab-a"], STAFF)) == ["small"]
    assert (
        "differs: users.staff grants large, which hubs.labs excludes for Hub lab-a: under the "
        "portal's layering those users do not get large there (the existing service gives it "
        "them)"
    ) in out
    # staff on the course Hubs keep the Hub's cap, runtime and name under their own override
    course = for_user(clients["course1"], STAFF)
    assert limits(course) == {"small": (-1, -1, {"hours": 2}), "large": (3, -1, {"hours": 4})}
    assert course["large"]["display_name"] == "Large (course)"
    assert (
        "differs: users.staff grants gpu, which hubs.courses excludes for Hubs course1, course2"
    ) in out
    assert (
        "differs: users.staff on Hubs course1, course2 (hubs.courses): the existing service "
        "gives these users large without the Hub set's override of runtime, display_name; under "
        "the portal's layering they keep it"
    ) in out
    assert (
        "differs: users.staff on Hubs course1, course2 (hubs.courses): the existing service "
        "holds these users' starts of large to the flavor's own max (10), not the Hub set's max "
        "3; under the portal's layering the Hub's cap holds for them too"
    ) in out
    # staff on research keep the Hub's maxPerUser of gpu
    assert limits(for_user(clients["research"], STAFF))["gpu"] == (4, 2, {"days": 1})
    assert "differs: users.staff on Hub research (hubs.research)" in out
    # the course glob, which the existing service reads as a regex, and max per Hub
    assert "differs: Hub course1 gets hubs.courses: its jupyterhub_name 'course*'" in out
    assert "differs: flavors.large.max 10: the existing service counts it per Hub" in out
    # and what was not imported
    assert "note: users.staff.flavorsOverride.large.max: a user set's max" in out
    assert "note: hubs.courses.flavorsOverride.gpu: gpu is not in hubs.courses.flavors" in out


@pytest.mark.django_db
def test_starts_are_admitted_and_refused_as_the_file_says(imported):
    _, clients = imported
    public, research, course = clients["public"], clients["research"], clients["course1"]
    # staff may start large without a per-user limit; another user twice only
    for _ in range(3):
        assert start(public, "large", STAFF, user_id=1).status_code == 202
    assert start(public, "large", MEMBER, user_id=2).status_code == 202
    assert start(public, "large", MEMBER, user_id=2).status_code == 202
    assert refusal(start(public, "large", MEMBER, user_id=2)) == (
        "Start with flavor large not allowed. Each user may only start 2 of large"
    )
    # outsiders get small only, with its 30 minutes frozen onto the server; blocked users nothing
    assert refusal(start(public, "large", GUEST, user_id=3)) == (
        "Start with flavor large not allowed. Allowed values for user: ['small']"
    )
    assert start(public, "small", GUEST, user_id=3).status_code == 202
    assert Server.objects.get(user_id="3").runtime == timedelta(minutes=30)
    assert refusal(start(course, "small", BLOCKED, user_id=4)) == (
        "Start with flavor small not allowed. Allowed values for user: []"
    )
    # research users may start gpu twice (their Hub set's maxPerUser), public ones once
    assert start(research, "gpu", MEMBER, user_id=5).status_code == 202
    assert start(research, "gpu", MEMBER, user_id=5).status_code == 202
    assert "Each user may only start 2 of gpu" in refusal(start(research, "gpu", MEMBER, user_id=5))
    assert start(public, "gpu", MEMBER, user_id=6).status_code == 202
    assert "Each user may only start 1 of gpu" in refusal(start(public, "gpu", MEMBER, user_id=6))
    # a course Hub may run 3 of large, its set's max, and no gpu
    for user_id in (7, 8, 9):
        assert start(course, "large", MEMBER, user_id=user_id).status_code == 202
    assert refusal(start(course, "large", MEMBER, user_id=10)) == (
        "Start with large for course1 not allowed. Maximum (3) already reached."
    )
    assert "Allowed values for user: ['large', 'small']" in refusal(
        start(course, "gpu", MEMBER, user_id=10)
    )
