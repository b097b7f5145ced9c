"""Hub policies and user rules in the admin, and the "who can use what" preview, walked up
the permission ladder: a site admin edits their own Outpost's policies and rules only, with
that Outpost's flavors and Hubs as the only choices, and every save that changes what Hubs
may use pushes them their flavor table."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils.html import escape
from guardian.shortcuts import assign_perm

from flavors.models import Flavor, HubPolicy, UserRule
from flavors.preview import runtime_text
from outposts.admin.policies import UserRuleForm
from outposts.models import Outpost
from tests.factories import (
    FlavorFactory,
    HubFactory,
    HubPolicyFactory,
    ServerFactory,
    UserFactory,
    UserRuleFactory,
)
from tests.support.admin_forms import change_form_data, inline_add, table_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(two_outposts):
    """mine: flavors small and large, granted to hub1 and hub2; theirs: a flavor of its own,
    granted to a Hub that has nothing to do with mine."""
    mine, theirs = two_outposts
    small = FlavorFactory(outpost=mine, name="small", display_name="Small", weight=1)
    large = FlavorFactory(outpost=mine, name="large", display_name="Large", weight=5, max=10)
    foreign = FlavorFactory(outpost=theirs, name="huge", display_name="Their huge")
    hub1 = HubFactory(name="hub1", outposts=[mine])
    hub2 = HubFactory(name="hub2", outposts=[mine])
    stranger = HubFactory(name="stranger-hub", outposts=[theirs])
    return {
        "mine": mine,
        "theirs": theirs,
        "small": small,
        "large": large,
        "foreign": foreign,
        "hub1": hub1,
        "hub2": hub2,
        "stranger": stranger,
    }


def pushes_to_both_hubs(setup) -> list[tuple[int, int]]:
    return sorted((setup[hub].pk, setup["mine"].pk) for hub in ("hub1", "hub2"))


def change_url(outpost: Outpost) -> str:
    return reverse("admin:outposts_outpost_change", args=[outpost.pk])


def preview_url(outpost: Outpost) -> str:
    return reverse("admin:outposts_outpost_preview", args=[outpost.pk])


def errors_of(response, prefix: str) -> list[dict[str, str]]:
    """Each inline form's errors, by field, as one text per field."""
    formset = next(
        inline.formset
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.prefix == prefix
    )
    return [
        {name: " ".join(messages) for name, messages in errors.items()} for errors in formset.errors
    ]


# --- The inlines --------------------------------------------------------------------------


def test_site_admin_sees_policies_and_rules_with_only_their_choices(client, site_admin, setup):
    # given a policy and two rules on "mine", the rules created out of their list order
    HubPolicyFactory(outpost=setup["mine"], hub=setup["hub1"], flavor=setup["large"], cap=3)
    UserRuleFactory(outpost=setup["mine"], name="second-rule", position=2)
    UserRuleFactory(outpost=setup["mine"], name="first-rule", position=1)
    # when the site admin opens their Outpost
    page = client.get(change_url(setup["mine"]))
    html = page.content.decode()
    # then policies and rules are there, with their help texts, rules in list order
    assert page.status_code == 200
    assert "Hub policies" in html
    assert "Once a Hub has a policy on this Outpost" in html  # HubPolicy.allowed's help
    assert "Of matching rules the heaviest decides." in html  # UserRule.weight's help
    assert html.index('value="first-rule"') < html.index('value="second-rule"')
    # and the flavor and Hub choices are this Outpost's only
    assert "Large (large)" in html
    assert "Small (small)" in html
    assert "Their huge" not in html
    assert ">hub1<" in html and ">hub2<" in html
    assert "stranger-hub" not in html
    # and the page links to the preview
    assert preview_url(setup["mine"]) in html


def test_superuser_may_name_any_hub(client, superuser, setup):
    # when a superuser opens "mine"
    html = client.get(change_url(setup["mine"])).content.decode()
    # then every Hub is a choice, the flavors are still this Outpost's only
    assert "stranger-hub" in html
    assert "Their huge" not in html


def test_site_admin_adds_a_policy_and_a_rule_and_the_hubs_are_told(
    client, site_admin, setup, pushes
):
    # given the site admin's Outpost page
    data = change_form_data(client.get(change_url(setup["mine"])))
    inline_add(
        data,
        "hub_policies",
        hub=str(setup["hub1"].pk),
        flavor=str(setup["large"].pk),
        allowed="on",
        cap="2",
        overrides='{"max_per_user": 1}',
    )
    inline_add(
        data,
        "user_rules",
        position="0",
        name="staff",
        attributes='{"groups": ["staff"]}',
        weight="0",
        flavors=[str(setup["small"].pk)],
        hubs=[str(setup["hub1"].pk)],
        overrides='{"small": {"runtime": {"hours": 1}}}',
    )
    # when they save it
    pushed = pushes(lambda: client.post(change_url(setup["mine"]), data))
    response = pushes.result
    # then the policy and the rule are saved
    assert response.status_code == 302, response.context and errors_of(response, "user_rules")
    policy = HubPolicy.objects.get()
    assert (policy.outpost, policy.hub, policy.flavor, policy.cap) == (
        setup["mine"],
        setup["hub1"],
        setup["large"],
        2,
    )
    rule = UserRule.objects.get()
    assert (rule.outpost, rule.name, list(rule.flavors.all())) == (
        setup["mine"],
        "staff",
        [setup["small"]],
    )
    # and each Hub granted the Outpost is pushed its flavor table, once
    assert pushed == pushes_to_both_hubs(setup)


def test_site_admin_cannot_choose_another_outposts_flavor(client, site_admin, setup, pushes):
    # given the site admin's Outpost page with a policy and a rule naming "theirs"' flavor
    data = change_form_data(client.get(change_url(setup["mine"])))
    inline_add(
        data,
        "hub_policies",
        hub=str(setup["hub1"].pk),
        flavor=str(setup["foreign"].pk),
        allowed="on",
        overrides="{}",
    )
    inline_add(
        data,
        "user_rules",
        position="0",
        name="sneaky",
        attributes="{}",
        weight="0",
        flavors=[str(setup["foreign"].pk)],
        overrides="{}",
    )
    # when they save it
    pushed = pushes(lambda: client.post(change_url(setup["mine"]), data))
    response = pushes.result
    # then the form refuses both choices, saves nothing and tells no Hub
    assert response.status_code == 200
    assert "Select a valid choice" in (errors_of(response, "hub_policies")[0]["flavor"])
    assert "Select a valid choice" in (errors_of(response, "user_rules")[0]["flavors"])
    assert not HubPolicy.objects.exists()
    assert not UserRule.objects.exists()
    assert pushed == []


def test_site_admin_cannot_name_a_hub_not_granted_their_outpost(client, site_admin, setup):
    # given a policy for a Hub that may not use "mine"
    data = change_form_data(client.get(change_url(setup["mine"])))
    inline_add(
        data,
        "hub_policies",
        hub=str(setup["stranger"].pk),
        flavor=str(setup["small"].pk),
        allowed="on",
        overrides="{}",
    )
    # when they save it
    response = client.post(change_url(setup["mine"]), data)
    # then it is refused
    assert response.status_code == 200
    assert "Select a valid choice" in (errors_of(response, "hub_policies")[0]["hub"])
    assert not HubPolicy.objects.exists()


def test_policy_overrides_are_checked_on_the_form(client, site_admin, setup):
    # given a policy overriding a field that cannot be overridden
    data = change_form_data(client.get(change_url(setup["mine"])))
    inline_add(
        data,
        "hub_policies",
        hub=str(setup["hub1"].pk),
        flavor=str(setup["small"].pk),
        allowed="on",
        overrides='{"max": 100}',
    )
    # when the site admin saves it
    response = client.post(change_url(setup["mine"]), data)
    # then the form says which field, and nothing is saved
    assert response.status_code == 200
    assert "'max' cannot be overridden" in (errors_of(response, "hub_policies")[0]["overrides"])
    assert not HubPolicy.objects.exists()


def test_site_admin_cannot_see_or_post_to_another_outpost(client, site_admin, setup):
    # given the site admin of "mine" and "theirs" with a policy
    HubPolicyFactory(outpost=setup["theirs"], hub=setup["stranger"], flavor=setup["foreign"])
    # when they open "theirs", post a rule to it and open its preview
    page = client.get(change_url(setup["theirs"]))
    post = client.post(
        change_url(setup["theirs"]),
        {
            "user_rules-TOTAL_FORMS": "1",
            "user_rules-INITIAL_FORMS": "0",
            "user_rules-0-name": "mine-now",
            "user_rules-0-attributes": "{}",
        },
    )
    preview = client.post(
        preview_url(setup["theirs"]), {"hub": setup["stranger"].pk, "authentication": "{}"}
    )
    # then the page answers as if it did not exist, and nothing changed
    assert page.status_code == 302
    assert page["Location"] == reverse("admin:index")
    assert post.status_code == 302
    assert not UserRule.objects.exists()
    assert preview.status_code == 404


def test_saving_without_changes_tells_no_hub(client, site_admin, setup, pushes):
    # given the site admin's Outpost page with a policy and a rule on it
    HubPolicyFactory(outpost=setup["mine"], hub=setup["hub1"], flavor=setup["small"])
    UserRuleFactory(outpost=setup["mine"], flavors=[setup["small"]], hubs=[setup["hub1"]])
    data = change_form_data(client.get(change_url(setup["mine"])))
    # when they save it unchanged
    pushed = pushes(lambda: client.post(change_url(setup["mine"]), data))
    response = pushes.result
    # then no Hub is told anything
    assert response.status_code == 302, errors_of(response, "user_rules")
    assert pushed == []


def test_a_state_change_tells_every_granted_hub(client, site_admin, setup, pushes):
    # given the site admin's Outpost page
    data = change_form_data(client.get(change_url(setup["mine"])))
    # when they drain the Outpost with a message
    data.update(state="draining", state_message="Maintenance until Monday")
    pushed = pushes(lambda: client.post(change_url(setup["mine"]), data))
    response = pushes.result
    # then each of its Hubs is pushed its flavor table
    assert response.status_code == 302
    assert pushed == pushes_to_both_hubs(setup)


def test_deleting_a_rule_tells_the_hubs(client, site_admin, setup, pushes):
    # given a rule on the site admin's Outpost
    rule = UserRuleFactory(outpost=setup["mine"], name="gone")
    data = change_form_data(client.get(change_url(setup["mine"])))
    # when they delete it on the Outpost page
    data["user_rules-0-DELETE"] = "on"
    pushed = pushes(lambda: client.post(change_url(setup["mine"]), data))
    response = pushes.result
    # then it is gone and the Hubs are told
    assert response.status_code == 302
    assert not UserRule.objects.filter(pk=rule.pk).exists()
    assert [hub for hub, _ in pushed] == sorted([setup["hub1"].pk, setup["hub2"].pk])


def test_flavor_admin_changes_tell_the_hubs(client, site_admin, setup, pushes):
    # given the site admin's flavor page of "small"
    url = reverse("admin:flavors_flavor_change", args=[setup["small"].pk])
    data = change_form_data(client.get(url))
    # when they save it unchanged, then with a new max
    unchanged = pushes(lambda: client.post(url, data))
    data["max"] = "4"
    changed = pushes(lambda: client.post(url, data))
    response = pushes.result
    # then only the change pushes the Hubs their flavor table
    assert response.status_code == 302
    assert Flavor.objects.get(pk=setup["small"].pk).max == 4
    assert unchanged == []
    assert changed == pushes_to_both_hubs(setup)
    # and deleting it does too
    delete_url = reverse("admin:flavors_flavor_delete", args=[setup["small"].pk])
    deleted = pushes(lambda: client.post(delete_url, {"post": "yes"}))
    assert not Flavor.objects.filter(pk=setup["small"].pk).exists()
    assert [hub for hub, _ in deleted] == sorted([setup["hub1"].pk, setup["hub2"].pk])


def test_flavor_admin_does_not_move_a_flavor_to_another_outpost(client, superuser, setup):
    # when a superuser posts another Outpost for an existing flavor
    url = reverse("admin:flavors_flavor_change", args=[setup["small"].pk])
    data = change_form_data(client.get(url))
    data["outpost"] = str(setup["theirs"].pk)
    client.post(url, data)
    # then it stays on its Outpost (its policies and servers are that Outpost's)
    assert Flavor.objects.get(pk=setup["small"].pk).outpost == setup["mine"]


def test_user_rule_form_refuses_flavors_of_another_outpost(setup):
    # given a rule form of "mine" whose choices were not narrowed (as outside the Outpost page)
    form = UserRuleForm(
        data={
            "position": "0",
            "name": "rule",
            "attributes": "{}",
            "weight": "0",
            "overrides": "{}",
            "flavors": [str(setup["small"].pk), str(setup["foreign"].pk)],
        },
        instance=UserRule(outpost=setup["mine"]),
    )
    # then it names the foreign flavor
    assert not form.is_valid()
    assert form.errors["flavors"] == ["Choose flavors of this Outpost, not huge."]


# --- The preview --------------------------------------------------------------------------


@pytest.fixture
def policies(setup):
    """hub1 may use small and large (large with a cap of 2 and one server per user), not
    gpu; the rule "students" gives students small only, for an hour."""
    gpu = FlavorFactory(outpost=setup["mine"], name="gpu", display_name="GPU", weight=9)
    setup["large"].display_name = "<b>Large</b>"
    setup["large"].save()
    HubPolicyFactory(outpost=setup["mine"], hub=setup["hub1"], flavor=setup["small"])
    HubPolicyFactory(
        outpost=setup["mine"],
        hub=setup["hub1"],
        flavor=setup["large"],
        cap=2,
        overrides={"max_per_user": 1},
    )
    UserRuleFactory(
        outpost=setup["mine"],
        name="students",
        attributes={"groups": ["students"]},
        flavors=[setup["small"]],
        overrides={"small": {"runtime": {"hours": 1}}},
    )
    ServerFactory(outpost=setup["mine"], hub=setup["hub1"], flavor=setup["large"], user_id="7")
    return {**setup, "gpu": gpu}


def preview(client, outpost, **fields):
    return client.post(preview_url(outpost), fields)


def test_preview_shows_what_each_user_gets_and_why(client, superuser, policies):
    mine, hub1 = policies["mine"], policies["hub1"]
    # when a superuser previews a student and a staff member (Hub user 7) of hub1
    student = preview(
        client, mine, hub=hub1.pk, authentication='{"name": "alice", "groups": ["students"]}'
    )
    staff = preview(client, mine, hub=hub1.pk, authentication='{"groups": ["staff"]}', user_id="7")
    # then the student gets small only, for an hour, as the policy and the rule decided
    assert student.status_code == 200
    html = student.content.decode()
    assert table_rows(html, "preview-flavors") == [
        {
            "flavor-name": "small",
            "flavor-display-name": "Small",
            "flavor-max": "unlimited",
            "flavor-hub-cap": "none",
            "flavor-hub-max": "unlimited / 0",
            "flavor-max-per-user": "unlimited",
            "flavor-runtime": "1 h",
            "flavor-decided-by": "policy of Hub hub1, rule students",
        }
    ]
    assert "Decided by user rule <strong>students</strong>" in html
    assert "<strong>large</strong>: rule students does not list it" in html
    assert "<strong>gpu</strong>: Hub hub1: no policy allows it" in html
    # and the staff member, whom no rule matches, gets both with the Hub's caps and counts
    html = staff.content.decode()
    assert "No user rule matches: the user gets the Hub's answer." in html
    rows = table_rows(html, "preview-flavors")
    assert [row["flavor-name"] for row in rows] == ["large", "small"]
    large = rows[0]
    assert large["flavor-display-name"] == "<b>Large</b>"  # shown as text
    assert (large["flavor-max"], large["flavor-hub-cap"], large["flavor-hub-max"]) == (
        "10",
        "2",
        "2 / 1",
    )
    assert (large["flavor-max-per-user"], large["flavor-user-active"]) == ("1", "1")
    assert (large["flavor-runtime"], large["flavor-decided-by"]) == ("2 h", "policy of Hub hub1")
    assert "&lt;b&gt;Large&lt;/b&gt;" in html
    assert "<b>Large</b>" not in html
    assert "<strong>gpu</strong>: Hub hub1: no policy allows it" in html


def test_preview_for_a_hub_without_policies(client, site_admin, policies):
    # when the site admin previews a user of hub2, which has no policies
    response = preview(client, policies["mine"], hub=policies["hub2"].pk, authentication="")
    # then every flavor is offered, as the flavors' own settings say
    html = response.content.decode()
    rows = table_rows(html, "preview-flavors")
    assert [row["flavor-name"] for row in rows] == ["gpu", "large", "small"]
    assert {row["flavor-decided-by"] for row in rows} == {"the flavor's own settings"}
    assert "Hub hub2 has no policies on this Outpost" in html


def test_preview_shows_a_draining_outpost(client, site_admin, policies):
    # given "mine" draining
    Outpost.objects.filter(pk=policies["mine"].pk).update(
        state="draining", state_message="Back on <Monday>"
    )
    # when the site admin previews a user
    response = preview(client, policies["mine"], hub=policies["hub1"].pk, authentication="")
    # then the page says the Outpost admits no starts, and why, escaped
    html = response.content.decode()
    assert "Outpost mine is draining and accepts no starts. Back on &lt;Monday&gt;" in html


def test_preview_permission_ladder(client, policies):
    mine, theirs, hub1 = policies["mine"], policies["theirs"], policies["hub1"]
    fields = {"hub": hub1.pk, "authentication": "{}"}
    # anonymous: sent to log in
    anonymous = client.post(preview_url(mine), fields)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("admin:login"))
    # staff without any Outpost: refused
    client.force_login(UserFactory(username="nobody", is_staff=True))
    assert client.post(preview_url(mine), fields).status_code == 403
    # the site admin of "theirs": "mine" does not exist for them
    other = UserFactory(username="theirs-admin", is_staff=True)
    assign_perm("outposts.change_outpost", other, theirs)
    client.force_login(other)
    assert client.post(preview_url(mine), fields).status_code == 404
    assert client.get(preview_url(theirs)).status_code == 200
    # a superuser: the answer
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    answer = client.post(preview_url(mine), fields)
    assert answer.status_code == 200
    assert table_rows(answer.content.decode(), "preview-flavors")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ('{"name": "alice"', "Not valid JSON. Type the attributes as a JSON object"),
        ('["staff"]', "Must be a JSON object of attribute names to values, not a list."),
    ],
)
def test_preview_with_bad_attributes_is_a_form_error(client, site_admin, policies, typed, message):
    # when the site admin types attributes that are not a JSON object
    response = preview(client, policies["mine"], hub=policies["hub1"].pk, authentication=typed)
    # then the form says so, keeps what they typed, and shows no answer
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert escape(typed) in html
    assert 'id="preview-flavors"' not in html


def test_preview_offers_only_the_hubs_granted_the_outpost(client, superuser, policies):
    # when a superuser opens the preview, then picks a Hub not granted "mine"
    page = client.get(preview_url(policies["mine"])).content.decode()
    response = preview(client, policies["mine"], hub=policies["stranger"].pk, authentication="{}")
    # then only the granted Hubs are offered, and the other is refused
    assert ">hub1<" in page and ">hub2<" in page
    assert "stranger-hub" not in page
    assert "Select a valid choice" in response.content.decode()
    assert 'id="preview-flavors"' not in response.content.decode()


def test_runtime_text():
    assert runtime_text(None) == "no limit"
    assert runtime_text(timedelta(hours=1, minutes=30)) == "1 h 30 min"
    assert runtime_text(timedelta(days=1, seconds=5)) == "1 d 5 s"
