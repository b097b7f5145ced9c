"""In real Chromium (Playwright): a user logs into a JupyterHub configured like the demo
(demo/jupyterhub_config.py: dummy authenticator, hubclient), picks a flavor in the spawn
form, starts a server and sees it running; an admin then finds that server in the portal's
Django admin.

The portal is the real one (uvicorn web, Celery worker and beat on the test database) with
the demo's Outposts and flavors (demo/portal.yaml); its servers are real
``jupyterhub-singleuser`` processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.jupyterhub import running_jupyterhub
from tests.support.portal import running_portal
from tests.support.processes import alive, free_port

# django_db only makes pytest-django create the test database (see
# tests/hubclient/test_e2e_hubclient.py); the portal's processes commit on their own.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

ROOT = Path(__file__).resolve().parents[2]
USER_PASSWORD = "demo-user-password"
ADMIN_PASSWORD = "demo-admin-password"


def demo_outposts(home: Path) -> list[dict]:
    """demo/portal.yaml's Outposts, as scripts/demo applies them, servers' homes in ``home``."""
    text = (ROOT / "demo" / "portal.yaml").read_text()
    config = yaml.safe_load(text.replace("@VENV_BIN@", str(Path(sys.executable).parent)))
    assert [hub["name"] for hub in config["hubs"]] == ["demo-hub"]
    for outpost in config["outposts"]:
        outpost["spawner_config"]["home_dir_template"] = str(home / "{username}")
    return config["outposts"]


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker):
    directory = tmp_path_factory.mktemp("portal")
    with running_portal(
        directory,
        django_db_blocker=django_db_blocker,
        outposts=demo_outposts(directory / "home"),
        hub_name="demo-hub",
        hub_api_port=free_port(),
    ) as live:
        from django.contrib.auth import get_user_model

        with django_db_blocker.unblock():
            get_user_model().objects.create_superuser(
                username="admin", email="admin@example.org", password=ADMIN_PASSWORD
            )
        yield live


@pytest.fixture(scope="module")
def hub(portal, tmp_path_factory):
    # The demo's own Hub configuration, loaded into the harness's Hub (which keeps its own
    # ports, database and admin token).
    config = f"load_subconfig({str(ROOT / 'demo' / 'jupyterhub_config.py')!r})"
    with running_jupyterhub(
        tmp_path_factory.mktemp("hub"),
        spawner_config=config,
        env={
            "DEMO_PORTAL_URL": portal.url,
            "DEMO_HUB_SECRET": portal.hub_secret,
            "DEMO_USER_PASSWORD": USER_PASSWORD,
            "DEMO_HUB_ADMIN": "hub-admin",
        },
        hub_port=portal.hub_api_port,
    ) as running:
        yield running


def test_a_user_starts_a_server_from_the_spawn_form_and_an_admin_finds_it(
    hub, portal, browser, tmp_path
):
    page = browser.new_page()
    page.set_default_timeout(60_000)

    # given ada logs into the Hub
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", "ada")
    page.fill("#password_input", USER_PASSWORD)
    page.click("#login_submit")

    # then the spawn form offers the demo Outpost's flavors, with free slots
    page.wait_for_selector("#outpost-flavor")
    flavors = page.locator("#outpost-flavor option").all_inner_texts()
    assert any("Small (1 CPU, 1 GB)" in text for text in flavors), flavors
    assert any("Large (2 CPUs, 4 GB)" in text for text in flavors), flavors

    # when she picks the large flavor and starts
    page.select_option("#outpost-flavor", "large")
    page.screenshot(path=str(tmp_path / "1-spawn-form.png"))
    page.click("form#spawn_form [type=submit]")

    # then she lands in JupyterLab on her running server, which reports its status
    page.wait_for_url(f"{hub.url}/user/ada/lab**", timeout=90_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.screenshot(path=str(tmp_path / "2-lab.png"))
    assert (tmp_path / "2-lab.png").stat().st_size > 0
    page.goto(f"{hub.url}/user/ada/api/status")
    status = json.loads(page.inner_text("body"))
    assert "started" in status and "connections" in status, status

    # when the portal's admin looks at the servers
    admin = browser.new_page()
    admin.goto(f"{portal.url}/admin/login/?next=/admin/outposts/server/")
    admin.fill("#id_username", "admin")
    admin.fill("#id_password", ADMIN_PASSWORD)
    admin.click("input[type=submit]")
    admin.wait_for_url(f"{portal.url}/admin/outposts/server/**")
    admin.screenshot(path=str(tmp_path / "3-admin-servers.png"), full_page=True)

    # then ada's server is listed, running, with the flavor she chose
    row = admin.locator("#result_list tbody tr", has_text="ada")
    assert row.count() == 1, admin.inner_text("#content")
    text = row.inner_text()
    assert "Running" in text, text
    assert "large" in text.lower(), text
    assert "demo-hub" in text, text

    # and stopping it from the Hub's home page ends it at the portal too
    pid = portal.server("ada")["state"]["pid"]
    portal.remember_server_processes()
    page.goto(f"{hub.url}/hub/home")
    # The page's script (loaded by require.js after the page) binds Stop: a click before that
    # does nothing, which a loaded machine makes likely.
    page.wait_for_function(
        "() => { const events = window.jQuery"
        " && jQuery._data(document.querySelector('#stop'), 'events');"
        " return Boolean(events && events.click); }",
        timeout=60_000,
    )
    page.click("#stop")
    hub.wait_for(
        lambda: portal.server("ada")["status"] == "stopped",
        timeout=60,
        what="the portal to stop ada's server",
    )
    hub.wait_for(lambda: not alive(pid), timeout=30, what="ada's server process to end")
