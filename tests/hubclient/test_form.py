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
from outpost_hubclient.wire import FlavorOffer, parse_flavors

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


# --- rendering -------------------------------------------------------------------------------


def test_form_shows_systems_flavors_and_free_slots():
    form = make_options_form(offers())

    assert option_texts(form, "outpost-system") == [
        "Local",
        "HPC cluster",
        "Down system (unavailable)",
    ]
    assert option_texts(form, "outpost-flavor") == [
        "Small (1 CPU, 2 GB) (19 free)",
        "GPU node (full)",
        "Anything (unlimited)",
    ]
    assert "For notebooks and light analysis" in form
    assert 'name="project"' not in form  # no projects, no project field


def test_full_flavors_and_unreachable_systems_cannot_be_chosen():
    form = make_options_form(offers())

    assert re.search(r'<option value="gpu" data-outpost="hpc" disabled>', form)
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
    assert '<option value="any" data-outpost="hpc" selected>' in form
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
    ]

    form = make_options_form(evil_offers, projects=[EVIL])

    # then no markup of theirs is in the page, only its escaped text
    assert "<script>alert(1)" not in form
    assert '"><' not in form
    assert form.count("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;") >= 6


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
    spawner = make_spawner()

    form = await spawner.get_options_form()

    (request,) = portal.requests
    assert request.path == "/outposts/local/userflavors"
    assert request.body == contract("userflavors")["request"]["body"]
    assert "Small (1 CPU, 2 GB) (19 free)" in form


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
