"""The spawn form: what it shows, that it escapes everything, and what it lets through."""

from __future__ import annotations

import re

import pytest
from outpost_hubclient import InvalidOptions
from outpost_hubclient.form import (
    OutpostOffer,
    check_user_options,
    make_options_form,
    make_user_options,
)
from outpost_hubclient.wire import FlavorOffer, OutpostState, parse_flavors

from tests.support.contract import contract
from tests.support.hubclient import StandInUser

EVIL = '"><script>alert(1)</script>'


def offers() -> list[OutpostOffer]:
    return [
        OutpostOffer(
            "local", "Local", flavors=parse_flavors(contract("userflavors")["response"]["body"])
        ),
        OutpostOffer(
            "hpc",
            "HPC cluster",
            flavors=[
                FlavorOffer("gpu", "GPU node", "One A100", max=2, current=2),
                FlavorOffer("any", "Anything", max=-1, current=40),
            ],
        ),
        OutpostOffer("down", "Down system", error="The Outpost could not be reached."),
    ]


def option_texts(form: str, select_id: str) -> list[str]:
    select = re.search(rf'<select[^>]*id="{select_id}".*?</select>', form, re.S)
    assert select is not None
    return re.findall(r"<option[^>]*>([^<]*)</option>", select.group(0))


def flavor_options(form: str) -> dict[str, tuple[str, bool]]:
    """Each flavor option of the form by value: its text and whether it is disabled."""
    select = re.search(r'<select[^>]*id="outpost-flavor".*?</select>', form, re.S)
    assert select is not None
    return {
        value: (text, " disabled" in attributes)
        for value, attributes, text in re.findall(
            r'<option value="([^"]*)"([^>]*)>([^<]*)</option>', select.group(0)
        )
    }


def one_flavor_form(flavor: FlavorOffer) -> tuple[str, bool]:
    form = make_options_form([OutpostOffer("local", "Local", flavors=[flavor])])
    return flavor_options(form)[flavor.name]


# --- rendering -------------------------------------------------------------------------------


def test_form_shows_systems_flavors_and_free_slots():
    form = make_options_form(offers())

    assert option_texts(form, "outpost-system") == [
        "Local",
        "HPC cluster",
        "Down system (unavailable)",
    ]
    assert option_texts(form, "outpost-flavor") == [
        "Small (1 CPU, 2 GB) (19 free, stops after 2 h)",
        "GPU node (full: all 2 in use)",
        "Anything (unlimited)",
    ]
    assert "For notebooks and light analysis" in form
    assert 'name="project"' not in form  # no projects, no project field


def test_full_flavors_and_unreachable_systems_cannot_be_chosen():
    form = make_options_form(offers())

    assert re.search(r'<option value="gpu" data-outpost="hpc" data-project="" disabled>', form)
    assert re.search(r'<option value="down" disabled>', form)
    assert "The Outpost could not be reached." in form


def test_form_offers_the_users_projects_and_preselects_earlier_choices():
    form = make_options_form(
        offers(),
        projects=["hpc-01", "hpc-02"],
        selected={"outpost": "hpc", "flavor": "any", "project": "hpc-02"},
    )

    assert option_texts(form, "outpost-project") == ["(no project)", "hpc-01", "hpc-02"]
    assert '<option value="hpc" selected>' in form
    assert '<option value="any" data-outpost="hpc" data-project="hpc-02" selected>' in form
    assert '<option value="hpc-02" selected>' in form


def test_form_escapes_everything_from_config_and_portal():
    # given names and texts an admin or a portal could send with markup in them
    evil_offers = [
        OutpostOffer(
            EVIL,
            f"System {EVIL}",
            flavors=[FlavorOffer(EVIL, f"Flavor {EVIL}", f"Description {EVIL}")],
        ),
        OutpostOffer("x", "X", error=f"Error {EVIL}"),
        OutpostOffer("y", "Y", state=OutpostState("draining", f"Message {EVIL}")),
    ]

    form = make_options_form(evil_offers, projects=[EVIL])

    # then no markup of theirs is in the page, only its escaped text
    assert "<script>alert(1)" not in form
    assert '"><' not in form
    assert form.count("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;") >= 8


@pytest.mark.parametrize(
    ("flavor", "text", "disabled"),
    [
        # the Hub's room (19) and the user's own (2 - 1): the user could take 1
        (
            FlavorOffer("f", "F", max=20, current=1, max_per_user=2, current_per_user=1),
            "1 free",
            False,
        ),
        (FlavorOffer("f", "F", max=-1, max_per_user=3, current_per_user=1), "2 free", False),
        (
            FlavorOffer("f", "F", max=5, current=1, max_per_user=-1, current_per_user=4),
            "4 free",
            False,
        ),
        (FlavorOffer("f", "F", max=-1, max_per_user=-1, current_per_user=9), "unlimited", False),
        # the user's own limit reached, though the Hub has room
        (
            FlavorOffer("f", "F", max=20, current=3, max_per_user=1, current_per_user=1),
            "you already run 1 of 1",
            True,
        ),
        # both reached: the user's own limit is the one they can do something about
        (
            FlavorOffer("f", "F", max=2, current=2, max_per_user=2, current_per_user=2),
            "you already run 2 of 2",
            True,
        ),
        (
            FlavorOffer("f", "F", max=4, current=4, max_per_user=2, current_per_user=0),
            "full: all 4 in use",
            True,
        ),
        (FlavorOffer("f", "F", max=0, max_per_user=2, current_per_user=0), "closed", True),
        (FlavorOffer("f", "F", max=-1, max_per_user=0, current_per_user=0), "closed", True),
        # a stock Outpost service counts no servers per user: what its answer says
        (FlavorOffer("f", "F", max=20, current=1, max_per_user=1), "19 free", False),
        (FlavorOffer("f", "F", max=3, current=3, max_per_user=1), "full: all 3 in use", True),
    ],
)
def test_each_flavor_shows_the_slots_this_user_could_take_and_why_not(flavor, text, disabled):
    assert one_flavor_form(flavor) == (f"F ({text})", disabled)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7200, "F (unlimited, stops after 2 h)"),
        (5400, "F (unlimited, stops after 1 h 30 min)"),
        (45 * 60, "F (unlimited, stops after 45 min)"),
        (86400 + 3600 + 61, "F (unlimited, stops after 1 d 1 h 1 min 1 s)"),
        (None, "F (unlimited)"),
    ],
)
def test_each_flavor_shows_its_runtime(seconds, text):
    assert one_flavor_form(FlavorOffer("f", "F", runtime_seconds=seconds))[0] == text


def test_a_full_flavor_chosen_earlier_is_not_preselected():
    form = make_options_form(
        [
            OutpostOffer(
                "local",
                "Local",
                flavors=[
                    FlavorOffer("gpu", "GPU", max=1, current=1),
                    FlavorOffer("small", "Small"),
                ],
            )
        ],
        selected={"outpost": "local", "flavor": "gpu"},
    )

    assert '<option value="gpu" data-outpost="local" data-project="" disabled>' in form


def draining_offers() -> list[OutpostOffer]:
    return [
        OutpostOffer(
            "hpc",
            "HPC cluster",
            flavors=[FlavorOffer("gpu", "GPU node", max=4, current=1)],
            state=OutpostState("draining", "Maintenance until Monday"),
        ),
        OutpostOffer("cloud", "Cloud", state=OutpostState("disabled")),
        OutpostOffer("local", "Local", flavors=[FlavorOffer("small", "Small")]),
    ]


def test_a_draining_or_disabled_outpost_is_shown_as_such_and_cannot_be_chosen():
    form = make_options_form(draining_offers(), selected={"outpost": "hpc", "flavor": "gpu"})

    # then the systems say so, and only the active one can be chosen (and is chosen)
    assert option_texts(form, "outpost-system") == [
        "HPC cluster (draining: Maintenance until Monday)",
        "Cloud (disabled)",
        "Local",
    ]
    assert '<option value="hpc" disabled>' in form
    assert '<option value="cloud" disabled>' in form
    assert '<option value="local" selected>' in form
    # with a note saying what it means, and the Outpost's message
    assert "HPC cluster: It is draining and starts no new servers. Maintenance until Monday" in form
    assert "Cloud: It is disabled and starts no servers." in form
    # and the draining Outpost's flavors are listed with their slots, not selectable
    assert flavor_options(form)["gpu"] == ("GPU node (3 free)", True)
    assert flavor_options(form)["small"] == ("Small (unlimited)", False)


def test_an_active_outpost_with_a_state_message_is_not_marked():
    form = make_options_form(
        [OutpostOffer("local", "Local", state=OutpostState("active", "All fine"))]
    )

    assert option_texts(form, "outpost-system") == ["Local"]
    assert "All fine" not in form


# --- validation ------------------------------------------------------------------------------


def test_valid_choice_becomes_user_options():
    user_options = make_user_options(
        {"outpost": ["local"], "flavor": ["small"], "project": ["hpc-01"]},
        offers=offers(),
        projects=["hpc-01"],
    )

    assert user_options == {"outpost": "local", "flavor": "small", "project": "hpc-01"}


def test_no_project_chosen_sends_none():
    user_options = make_user_options(
        {"outpost": ["local"], "flavor": ["small"], "project": [""]}, offers=offers()
    )

    assert "project" not in user_options


@pytest.mark.parametrize(
    ("form_data", "message"),
    [
        ({"outpost": ["mars"], "flavor": ["small"]}, "Unknown system 'mars'"),
        ({"outpost": ["down"], "flavor": ["small"]}, "Down system cannot be used right now"),
        (
            {"outpost": ["hpc"], "flavor": ["small"]},
            "Flavor 'small' is not offered to you on HPC cluster. Offered: gpu, any.",
        ),
        ({"outpost": ["local"], "flavor": [""]}, "Flavor '' is not offered"),
        (
            {"outpost": ["local"], "flavor": ["small"], "project": ["../etc"]},
            "not a valid project name",
        ),
        (
            {"outpost": ["local"], "flavor": ["small"], "project": ["hpc-99"]},
            "not a member of project 'hpc-99'",
        ),
    ],
)
def test_invalid_choices_are_rejected_with_a_clear_message(form_data, message):
    with pytest.raises(InvalidOptions, match=re.escape(message)):
        make_user_options(form_data, offers=offers(), projects=["hpc-01"])


def test_a_draining_outpost_is_refused_before_any_request():
    with pytest.raises(InvalidOptions) as refused:
        make_user_options({"outpost": ["hpc"], "flavor": ["gpu"]}, offers=draining_offers())

    assert str(refused.value) == (
        "HPC cluster cannot be used right now: It is draining and starts no new servers. "
        "Maintenance until Monday"
    )


def test_user_options_from_the_rest_api_are_checked_for_form():
    check_user_options({"outpost": "local", "flavor": "small"}, outpost_names=["local"])

    with pytest.raises(InvalidOptions, match="Unknown system"):
        check_user_options({"flavor": "small"}, outpost_names=["local"])
    with pytest.raises(InvalidOptions, match="not a valid flavor"):
        check_user_options({"outpost": "local", "flavor": "a/b"}, outpost_names=["local"])
    with pytest.raises(InvalidOptions, match="not a valid project"):
        check_user_options({"outpost": "local", "project": 5}, outpost_names=["local"])


@pytest.mark.parametrize("flavor", ["small\n", "small\nrm -rf /", " small"])
def test_a_flavor_name_is_checked_whole(flavor):
    with pytest.raises(InvalidOptions, match="not a valid flavor"):
        check_user_options({"outpost": "local", "flavor": flavor}, outpost_names=["local"])


def test_only_system_flavor_and_project_are_accepted():
    check_user_options(
        {"outpost": "local", "flavor": "small", "project": "hpc-01"}, outpost_names=["local"]
    )

    with pytest.raises(InvalidOptions, match="Unknown options cmd, partition"):
        check_user_options(
            {"outpost": "local", "partition": "gpu", "cmd": ["sh"]}, outpost_names=["local"]
        )


# --- the spawner's form, against the fake portal ---------------------------------------------


@pytest.mark.anyio
async def test_spawner_form_asks_the_portal_for_this_users_flavors(portal, make_spawner):
    # given the portal counts the user's own servers (its answer to ?user_id=)
    exchange = contract("userflavors-user")
    portal.userflavors_answer = exchange["response"]["body"]
    portal.userflavors_headers = exchange["response"]["headers"]
    spawner = make_spawner(user=StandInUser(user_id=7))

    form = await spawner.get_options_form()

    # then it asked for the flavors of this Hub user, by id, as the contract example does
    (request,) = portal.requests
    path, query = exchange["request"]["path"].split("?")
    assert (request.path, request.query) == (f"/outposts/local/{path}", query)
    assert request.body == exchange["request"]["body"]
    # and the user sees the slots they could take: their own limit (2, 1 in use) is less
    # than the Hub's room (20, 1 in use)
    assert "Small (1 CPU, 2 GB) (1 free, stops after 2 h)" in form
    assert option_texts(form, "outpost-system") == ["Local"]


@pytest.mark.anyio
async def test_spawner_form_of_a_stock_outpost_service_shows_what_its_answer_says(
    portal, make_spawner
):
    # given an answer without currentPerUser and without state headers
    form = await make_spawner().get_options_form()

    assert "Small (1 CPU, 2 GB) (19 free, stops after 2 h)" in form
    assert '<option value="local" selected>' in form


@pytest.mark.anyio
async def test_spawner_form_shows_a_draining_outpost_with_its_message(portal, make_spawner):
    # given the portal says the Outpost is draining, its message escaped as the portal does
    message = "Wartung bis Montag – danke"
    portal.userflavors_headers = {
        "Outpost-State": "draining",
        "Outpost-State-Message": message.encode("unicode_escape").decode("ascii"),
    }
    spawner = make_spawner()

    form = await spawner.get_options_form()

    # then the system is shown draining with the message, and cannot be chosen
    assert option_texts(form, "outpost-system") == [f"Local (draining: {message})"]
    assert '<option value="local" disabled>' in form
    assert flavor_options(form)["small"][1] is True
    # and a submitted choice is refused before any start request
    with pytest.raises(InvalidOptions, match="Local cannot be used right now: It is draining"):
        await spawner.run_options_from_form({"outpost": ["local"], "flavor": ["small"]})
    assert portal.requests_of("POST", "/services") == []


@pytest.mark.anyio
async def test_projects_come_from_auth_state(portal, make_spawner):
    spawner = make_spawner(user=StandInUser(auth_state={"projects": ["hpc-01"]}))

    form = await spawner.get_options_form()

    assert option_texts(form, "outpost-project") == ["(no project)", "hpc-01"]


@pytest.mark.anyio
async def test_options_from_form_rejects_before_any_start_request(portal, make_spawner):
    # given the form was shown
    spawner = make_spawner()
    await spawner.get_options_form()

    # when the user submits a flavor the portal did not offer
    with pytest.raises(InvalidOptions, match="Flavor 'huge' is not offered"):
        await spawner.run_options_from_form({"outpost": ["local"], "flavor": ["huge"]})

    # then no start request left the Hub
    assert portal.requests_of("POST", "/services") == []


@pytest.mark.anyio
async def test_options_from_form_asks_again_after_a_hub_restart(portal, make_spawner):
    # given a fresh spawner that never rendered the form
    spawner = make_spawner()

    user_options = await spawner.run_options_from_form({"outpost": ["local"], "flavor": ["small"]})

    assert user_options == {"outpost": "local", "flavor": "small"}
    assert len(portal.requests_of("POST", "/userflavors")) == 1


@pytest.mark.anyio
async def test_unreachable_outpost_is_shown_unavailable_not_a_broken_form(portal, make_spawner):
    portal.failures = [503, 503, 503]

    form = await make_spawner(retries=2).get_options_form()

    assert "Local (unavailable)" in form
    assert "could not be reached" in form


def project_offers() -> list[OutpostOffer]:
    """hpc offers small and large without a project; climate's grants give only large."""
    small, large = FlavorOffer("small", "Small"), FlavorOffer("large", "Large")
    return [
        OutpostOffer(
            "hpc",
            "HPC cluster",
            flavors=[small, large],
            project_flavors={"climate": [large], "ocean": []},
        )
    ]


def test_each_project_lists_the_flavors_its_grants_allow():
    form = make_options_form(project_offers(), projects=["climate", "ocean"])
    listed = re.findall(r'<option value="(\w+)" data-outpost="hpc" data-project="(\w*)"', form)
    assert listed == [("small", ""), ("large", ""), ("large", "climate")]


def test_a_flavor_must_be_one_the_chosen_project_allows():
    choose = {"outpost": ["hpc"], "flavor": ["small"], "project": ["climate"]}
    with pytest.raises(InvalidOptions, match="not offered to you on HPC cluster in project"):
        make_user_options(choose, offers=project_offers(), projects=["climate", "ocean"])
    choose["flavor"] = ["large"]
    assert make_user_options(choose, offers=project_offers(), projects=["climate"]) == {
        "outpost": "hpc",
        "flavor": "large",
        "project": "climate",
    }
    choose["project"] = ["ocean"]
    with pytest.raises(InvalidOptions, match="HPC cluster in project ocean offers you no flavor"):
        make_user_options(choose, offers=project_offers(), projects=["ocean"])
