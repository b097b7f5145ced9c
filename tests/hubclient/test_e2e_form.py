"""In real Chromium, the spawn form of a real JupyterHub using the hubclient tells each user
the truth, as the real portal (uvicorn web, Celery worker and beat on the test database)
counts it: a flavor with ``max_per_user: 1`` is full for the user who already runs one
(started through the same Hub, for real), while another user still sees a free slot; its
runtime is shown; a draining Outpost is shown draining, with its message, and cannot be chosen.
"""

from __future__ import annotations

import pytest

from tests.support.jupyterhub import running_jupyterhub
from tests.support.portal import LivePortal, local_outpost, running_portal
from tests.support.processes import free_port

# django_db only makes pytest-django create the test database (see test_e2e_hubclient.py);
# the portal's processes commit on their own.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# Not Latin-1: the portal sends it escaped in a header, the form must show it as written.
DRAINING_MESSAGE = "Wartung bis Montag 08:00 – danke"


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker):
    directory = tmp_path_factory.mktemp("portal")
    home = directory / "home"
    outposts = [
        local_outpost(
            "local",
            home,
            flavors=[
                {"name": "small", "display_name": "Small", "weight": 10},
                {
                    "name": "gpu",
                    "display_name": "GPU node",
                    "weight": 5,
                    "max": 3,
                    "max_per_user": 1,
                    "runtime": {"hours": 1, "minutes": 30},
                },
            ],
        ),
        {**local_outpost("cluster", home), "state": "draining"},
    ]
    with running_portal(
        directory,
        django_db_blocker=django_db_blocker,
        outposts=outposts,
        hub_api_port=free_port(),
    ) as live:
        from outposts.models import Outpost

        # apply_config has no state message (yet): the admin's field, written directly.
        with django_db_blocker.unblock():
            Outpost.objects.filter(slug="cluster").update(state_message=DRAINING_MESSAGE)
        yield live


def hubclient_config(portal: LivePortal) -> str:
    return f"""
c.JupyterHub.spawner_class = "outpost-portal"
c.OutpostPortalSpawner.hub_name = {portal.hub_name!r}
c.OutpostPortalSpawner.outposts = {{
    "local": {{
        "url": {portal.outpost_url("local")!r},
        "display_name": "Local",
        "secret_env": "OUTPOST_SECRET",
    }},
    "cluster": {{
        "url": {portal.outpost_url("cluster")!r},
        "display_name": "Cluster",
        "secret_env": "OUTPOST_SECRET",
    }},
}}
c.OutpostPortalSpawner.default_outpost = "local"
c.OutpostPortalSpawner.events_poll_interval = 0.3
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0.01}}
"""


@pytest.fixture(scope="module")
def hub(portal, tmp_path_factory):
    with running_jupyterhub(
        tmp_path_factory.mktemp("hub"),
        spawner_config=hubclient_config(portal),
        env={"OUTPOST_SECRET": portal.hub_secret},
        hub_port=portal.hub_api_port,
    ) as running:
        yield running


def spawn_form(browser, hub, user: str) -> dict[str, dict]:
    """Log ``user`` in (a browser context of their own) and read their spawn form: every
    option of its two selects by value, as the browser has it."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", "any")  # the dummy authenticator takes any password
    page.click("#login_submit")
    page.wait_for_url(f"{hub.url}/hub/**")
    page.goto(f"{hub.url}/hub/spawn/{user}")
    page.wait_for_selector("#outpost-flavor")
    read = """options => options.map(o => ({
        value: o.value, outpost: o.dataset.outpost || null, text: o.textContent,
        disabled: o.disabled }))"""
    form = {
        "systems": {
            o["value"]: o for o in page.eval_on_selector_all("#outpost-system option", read)
        },
        "flavors": {
            (o["outpost"], o["value"]): o
            for o in page.eval_on_selector_all("#outpost-flavor option", read)
        },
        "system": page.input_value("#outpost-system"),
        "notes": page.locator(".text-warning").all_inner_texts(),
    }
    context.close()
    return form


def test_the_form_shows_each_user_their_own_slots_the_runtime_and_a_draining_outpost(
    hub, portal, browser
):
    # given ann runs a server of the gpu flavor (max_per_user 1), started through the Hub
    assert hub.api("POST", "/users/ann")[0] == 201
    status, _ = hub.api("POST", "/users/ann/servers/first", {"outpost": "local", "flavor": "gpu"})
    assert status == 202
    hub.wait_for_server("ann", "first")
    assert portal.server("ann", "first")["flavor"] == "gpu"

    try:
        # when ann and bob each open the spawn form of a (further) server
        ann = spawn_form(browser, hub, "ann")
        bob = spawn_form(browser, hub, "bob")

        # then ann sees gpu as full for her, saying why, and cannot choose it
        gpu = ann["flavors"][("local", "gpu")]
        assert gpu["text"] == "GPU node (you already run 1 of 1, stops after 1 h 30 min)"
        assert gpu["disabled"] is True
        assert ann["flavors"][("local", "small")]["disabled"] is False
        # while bob sees the slot he could take (the Hub has 2 left, he may run 1)
        gpu = bob["flavors"][("local", "gpu")]
        assert gpu["text"] == "GPU node (1 free, stops after 1 h 30 min)"
        assert gpu["disabled"] is False

        # and both see the draining Outpost as such, with its message, not selectable
        for form in (ann, bob):
            cluster = form["systems"]["cluster"]
            assert cluster["text"] == f"Cluster (draining: {DRAINING_MESSAGE})"
            assert cluster["disabled"] is True
            assert form["system"] == "local"
            assert (
                f"Cluster: It is draining and starts no new servers. {DRAINING_MESSAGE}"
                in form["notes"]
            )
            assert form["flavors"][("cluster", "small")]["disabled"] is True
    finally:
        status, _ = hub.api("DELETE", "/users/ann/servers/first")
        assert status in (202, 204)
        hub.wait_gone("ann", "first")
        hub.wait_for(
            lambda: portal.server("ann", "first")["status"] == "stopped",
            timeout=60,
            what="the portal to record the stop of ann's server",
        )
