"""Only JupyterHub's variables and those the Outpost allow-lists (allowed_env) of a Hub's env
reach the spawner (issue 11, item 3; docs/api.md, "The server's environment")."""

from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from outposts import tasks
from outposts.models import Outpost, Server
from outposts.services import start_env_allowed
from tests.factories import OutpostFactory
from tests.support.admin_forms import change_form_data
from tests.support.api import ASYNC, BASE, send
from tests.support.lifecycle import hub_env
from tests.support.processes import json_if_up, wait_until
from tests.support.spawners import serve_config

pytestmark = pytest.mark.django_db

#: What a Hub might send besides JupyterHub's own variables.
HOSTILE = {
    "LD_PRELOAD": "/tmp/evil-preload.so",
    "PATH": "/tmp/evil-bin",
    "PYTHONSTARTUP": "/tmp/evil.py",
    "PYTHONPATH": "/tmp/evil-lib",
    "BASH_ENV": "/tmp/evil.sh",
}


def test_only_jupyterhub_variables_and_allow_listed_ones_pass():
    # given an Outpost that allow-lists TZ and SITE_* variables
    outpost = OutpostFactory.build(allowed_env=["TZ", "SITE_*"])
    env = {
        "JUPYTERHUB_API_TOKEN": "t",
        "JUPYTER_CONFIG_DIR": "/c",
        "TZ": "Europe/Berlin",
        "SITE_COLOUR": "blue",
        "TZX": "no",
        "site_colour": "no: patterns are case-sensitive",
        "JUPYTERHUB_X=Y": "no: not a variable name",
        **HOSTILE,
    }
    # when the env is filtered for it
    allowed = start_env_allowed(env=env, outpost=outpost)
    # then
    assert allowed == {
        "JUPYTERHUB_API_TOKEN": "t",
        "JUPYTER_CONFIG_DIR": "/c",
        "TZ": "Europe/Berlin",
        "SITE_COLOUR": "blue",
    }


def test_the_stored_server_holds_only_the_allowed_env(hub_client, outpost):
    # given an Outpost with the default allow-list (none)
    env = {**hub_env("olga", "lab"), **HOSTILE, "TZ": "UTC"}
    # when a Hub starts a server with hostile variables
    body = {"name": "lab", "env": env, "user_options": {"start_id": "s1"}}
    assert send(hub_client, "POST", BASE + "services", body, headers=ASYNC).status_code == 202
    # then the row holds JupyterHub's variables only
    stored = Server.objects.get().env
    assert stored == hub_env("olga", "lab")
    assert not set(HOSTILE) & set(stored)


def test_ld_preload_and_path_from_the_request_do_not_reach_the_server(
    hub_client, outpost, home, stopper
):
    # given an Outpost running real (stand-in) servers, allow-listing TZ
    outpost.spawner_config = serve_config(home)
    outpost.allowed_env = ["TZ"]
    outpost.save()
    env = {**hub_env("olga", "lab"), **HOSTILE, "TZ": "Pacific/Auckland"}
    body = {"name": "lab", "env": env, "user_options": {"start_id": "s1"}}
    # when the Hub starts it and the worker runs the start
    assert send(hub_client, "POST", BASE + "services", body, headers=ASYNC).status_code == 202
    server = Server.objects.get()
    stopper.append(server.pk)
    tasks.server_start_run_task(server.pk)
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING, server.error
    # then the server's own environment has none of the Hub's hostile variables
    seen = wait_until(lambda: json_if_up(f"http://{server.address}/user/olga/lab/"))["env"]
    assert "LD_PRELOAD" not in seen
    assert seen.get("PATH") != HOSTILE["PATH"]
    for key in ("PYTHONSTARTUP", "PYTHONPATH", "BASH_ENV"):
        assert seen.get(key) != HOSTILE[key]
    # and what JupyterHub sets and the allow-list names does
    assert seen["TZ"] == "Pacific/Auckland"
    assert seen["JUPYTERHUB_API_TOKEN"] == "server-token"
    assert seen["JUPYTERHUB_USER"] == "olga"


# --- the field: model rule, admin, apply_config ----------------------------------------------


@pytest.mark.parametrize("value", [["LD PRELOAD"], ["TZ="], "TZ", [5], ["A;B"], [""]])
def test_allowed_env_must_be_a_list_of_names_or_globs(value):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        OutpostFactory.build(slug="x", allowed_env=value).full_clean()
    assert "allowed_env" in error.value.message_dict


def test_a_site_admin_sets_allowed_env_in_the_admin(client, site_admin, two_outposts):
    # given a site admin of "mine" on its change page, which shows the field
    mine, _ = two_outposts
    url = reverse("admin:outposts_outpost_change", args=[mine.pk])
    page = client.get(url)
    assert b'name="allowed_env"' in page.content
    # when they allow-list TZ and SITE_* and save
    data = change_form_data(page)
    data["allowed_env"] = '["TZ", "SITE_*"]'
    response = client.post(url, data)
    # then it is saved
    assert response.status_code == 302, response.context["adminform"].form.errors
    mine.refresh_from_db()
    assert mine.allowed_env == ["TZ", "SITE_*"]


def test_the_admin_refuses_a_malformed_allowed_env(client, site_admin, two_outposts):
    mine, _ = two_outposts
    url = reverse("admin:outposts_outpost_change", args=[mine.pk])
    data = change_form_data(client.get(url))
    data["allowed_env"] = '["LD_PRELOAD; rm -rf /"]'
    response = client.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "environment variable names or glob patterns" in str(errors["allowed_env"])
    mine.refresh_from_db()
    assert mine.allowed_env == []


CONFIG = {
    "outposts": [
        {
            "slug": "local",
            "spawner_class": "jupyterhub.spawner.SimpleLocalProcessSpawner",
            "allowed_env": ["TZ", "SITE_*"],
        }
    ]
}


def _apply(tmp_path, data) -> None:
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(data))
    call_command("apply_config", str(path), stdout=StringIO())


def test_apply_config_sets_allowed_env_and_leaving_it_out_empties_it(tmp_path):
    # when a file names an allow-list
    _apply(tmp_path, CONFIG)
    # then the Outpost has it
    assert Outpost.objects.get(slug="local").allowed_env == ["TZ", "SITE_*"]
    # and a file without it takes the default, as every field left out does
    _apply(tmp_path, {"outposts": [{**CONFIG["outposts"][0], "allowed_env": None}]})
    assert Outpost.objects.get(slug="local").allowed_env == []


def test_apply_config_refuses_a_malformed_allowed_env_naming_it(tmp_path):
    data = {"outposts": [{**CONFIG["outposts"][0], "allowed_env": ["PATH=/x"]}]}
    with pytest.raises(CommandError) as error:
        _apply(tmp_path, data)
    assert "Outpost 'local': field 'allowed_env': Must be a JSON list of environment" in str(
        error.value
    )
    assert not Outpost.objects.exists()
