"""Spawner settings are checked where they are saved: the class from the operators' allow-list,
trait names and value types from the class itself (outposts/spawner_settings.py)."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from flavors.models import Flavor
from outposts.models import Server
from tests.factories import FlavorFactory, HubFactory, HubPolicyFactory, OutpostFactory
from tests.support.admin_forms import change_form_data, inline_add
from tests.support.api import ASYNC, BASE, send, start_body

pytestmark = pytest.mark.django_db

LOCAL = "jupyterhub.spawner.SimpleLocalProcessSpawner"


def outpost_page(client, outpost):
    url = reverse("admin:outposts_outpost_change", args=[outpost.pk])
    return url, client.get(url)


def form_errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was saved"
    form = response.context["adminform"].form
    errors = {name: list(messages) for name, messages in form.errors.items()}
    for inline in response.context["inline_admin_formsets"]:
        for inline_form in inline.formset.forms:
            for name, messages in inline_form.errors.items():
                errors.setdefault(f"{inline.formset.prefix}.{name}", []).extend(messages)
    return errors


def test_a_site_admin_picks_the_spawner_class_from_the_allow_list(client, site_admin, two_outposts):
    # given a site admin's Outpost page
    mine, _ = two_outposts
    _, page = outpost_page(client, mine)
    # then the spawner class is a choice of the allow-listed classes, not free text
    field = page.context["adminform"].form.fields["spawner_class"]
    choices = [value for value, _ in field.choices]
    assert choices[:4] == [
        LOCAL,
        "jupyterhub.spawner.LocalProcessSpawner",
        "batchspawner.SlurmSpawner",
        "kubespawner.KubeSpawner",
    ]
    assert b'<select name="spawner_class"' in page.content


def test_the_admin_refuses_a_class_that_is_not_allow_listed(client, site_admin, two_outposts):
    # given a site admin's Outpost page
    mine, _ = two_outposts
    url, page = outpost_page(client, mine)
    data = change_form_data(page)
    # when they post a class that is not one of the choices
    data["spawner_class"] = "os.system"
    response = client.post(url, data)
    # then it is refused, naming it, and the Outpost keeps its class
    errors = form_errors(response)
    assert "os.system" in " ".join(errors["spawner_class"])
    mine.refresh_from_db()
    assert mine.spawner_class == LOCAL


def test_a_class_outside_a_narrowed_allow_list_is_shown_and_refused(
    client, site_admin, two_outposts, settings
):
    # given an Outpost saved with a class the operators have since taken off the list
    mine, _ = two_outposts
    settings.SPAWNER_CLASSES = ["batchspawner.SlurmSpawner"]
    url, page = outpost_page(client, mine)
    # then the page shows the class it has, and saving it unchanged says why it must change
    assert page.context["adminform"].form["spawner_class"].value() == LOCAL
    response = client.post(url, change_form_data(page))
    assert form_errors(response)["spawner_class"] == [
        f"'{LOCAL}' is not an allowed spawner class; choose one of batchspawner.SlurmSpawner "
        "(PORTAL_SPAWNER_CLASSES)."
    ]


def test_the_admin_refuses_unknown_traits_and_wrong_types_naming_them(
    client, site_admin, two_outposts
):
    # given a site admin's Outpost page
    mine, _ = two_outposts
    url, page = outpost_page(client, mine)
    data = change_form_data(page)
    # when they save a config with a number for cmd and a trait the class does not have,
    # and allow Hubs to override a trait that does not exist
    data["spawner_config"] = json.dumps({"cmd": 42, "no_such_trait": True})
    data["allowed_overrides"] = json.dumps(["image"])
    response = client.post(url, data)
    # then each is refused with a message naming the trait and the type it wants
    errors = form_errors(response)
    assert errors["spawner_config"] == [
        "'no_such_trait' is not a trait of SimpleLocalProcessSpawner.",
        "'cmd' must be a list or None (Command trait of SimpleLocalProcessSpawner), not int 42.",
    ]
    assert errors["allowed_overrides"] == ["'image' is not a trait of SimpleLocalProcessSpawner."]
    mine.refresh_from_db()
    assert mine.spawner_config == {}


def test_the_admin_refuses_flavor_resources_the_class_does_not_take(
    client, site_admin, two_outposts
):
    # given a site admin's Outpost page
    mine, _ = two_outposts
    url, page = outpost_page(client, mine)
    data = change_form_data(page)
    # when they add a flavor with a Kubernetes trait and a memory size that is none
    inline_add(
        data,
        "flavors",
        name="gpu",
        display_name="GPU",
        weight="0",
        resources=json.dumps({"extra_resource_limits": {"nvidia.com/gpu": 1}, "mem_limit": "2X"}),
    )
    response = client.post(url, data)
    # then the flavor is refused, naming both
    errors = form_errors(response)
    assert errors["flavors.resources"] == [
        "'extra_resource_limits' is not a trait of SimpleLocalProcessSpawner.",
        "'mem_limit' must be an int (ByteSpecification trait of SimpleLocalProcessSpawner), "
        "not str '2X'. 2X is not a valid memory specification. Must be an int or a string "
        "with suffix K, M, G, T",
    ]
    assert not Flavor.objects.filter(outpost=mine, name="gpu").exists()


def test_good_settings_are_saved(client, site_admin, two_outposts):
    # given a site admin's Outpost page
    mine, _ = two_outposts
    url, page = outpost_page(client, mine)
    data = change_form_data(page)
    # when they save traits of the class with values of their types, as JSON has them
    data["spawner_config"] = json.dumps({"cmd": "jupyterhub-singleuser", "start_timeout": 30})
    data["allowed_overrides"] = json.dumps(["default_url"])
    inline_add(
        data, "flavors", name="big", display_name="Big", weight="0", resources='{"mem_limit": "4G"}'
    )
    response = client.post(url, data)
    # then they are saved as given (the runner hands them to traitlets, which converts)
    assert response.status_code == 302, form_errors(response)
    mine.refresh_from_db()
    assert mine.spawner_config == {"cmd": "jupyterhub-singleuser", "start_timeout": 30}
    assert Flavor.objects.get(outpost=mine, name="big").resources == {"mem_limit": "4G"}


def test_a_kubernetes_outpost_takes_kubespawner_traits():
    # given a Kubernetes Outpost
    outpost = OutpostFactory(
        spawner_class="kubespawner.KubeSpawner",
        spawner_config={"namespace": "jupyter", "image": "quay.io/jupyter/base-notebook"},
        allowed_overrides=["image"],
    )
    flavor = FlavorFactory(
        outpost=outpost, resources={"cpu_limit": 2, "extra_resource_limits": {"nvidia.com/gpu": 1}}
    )
    # then its config and flavor pass, and a wrong type is still refused
    outpost.full_clean()
    flavor.full_clean()
    flavor.resources = {"cpu_limit": "two"}
    with pytest.raises(ValidationError) as error:
        flavor.full_clean()
    assert error.value.message_dict["resources"] == [
        "'cpu_limit' must be a float (Float trait of KubeSpawner), not str 'two'."
    ]


def test_a_hub_policy_overriding_resources_is_checked_against_the_class():
    # given a Hub policy that gives its Hub's users other resources of a flavor
    flavor = FlavorFactory()
    policy = HubPolicyFactory(
        outpost=flavor.outpost,
        flavor=flavor,
        hub=HubFactory(outposts=[flavor.outpost]),
        overrides={"resources": {"gpus": 2}},
    )
    # then a trait the class does not have is refused there too
    with pytest.raises(ValidationError) as error:
        policy.full_clean()
    assert error.value.message_dict["overrides"] == [
        "resources: 'gpus' is not a trait of SimpleLocalProcessSpawner."
    ]


def test_a_start_whose_misc_value_does_not_suit_its_trait_answers_400(hub_client, outpost):
    # given an Outpost that lets Hubs set the server's default URL and notebook folder
    outpost.allowed_overrides = ["default_url", "notebook_dir"]
    outpost.save()
    body = start_body()
    body["misc"] = {"default_url": 42, "notebook_dir": "/work", "cmd": 7}
    # when a Hub starts a server with a number for the URL (and an unlisted trait)
    response = send(hub_client, "POST", BASE + "services", body, headers=ASYNC)
    # then the start is refused, naming the trait and its type; the unlisted one is ignored
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["misc"] == [
        "'default_url' must be a unicode string (Unicode trait of SimpleLocalProcessSpawner), "
        "not int 42."
    ]
    assert not Server.objects.exists()
